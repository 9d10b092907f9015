/* The mixed-precision loops for one storage combination, included by loops_mixed.h once per
 * (param, grad, accum) combination. Before inclusion:
 *   FA_MX_SFX                suffix naming the combination, e.g. bf16_gf32_af32
 *   FA_MX_PT, FA_MX_GT, FA_MX_AT     storage types of param, grad, accum (uint16_t or float)
 *   FA_MX_PLOAD(x), FA_MX_GLOAD(x), FA_MX_ALOAD(x)   storage -> float
 *   FA_MX_PSTORE(f), FA_MX_ASTORE(f)                 float -> storage (round to nearest even)
 *
 * Per element: load every operand into float32, run the float32 loop's element step
 * (loops_typed.h: the formula in the documented order, each operation rounded in float32),
 * store each result once. The update uses the float32 accumulator as computed, before its
 * store rounds it (as torch's fused kernel does for float16 state: a float16 accumulator
 * that underflows to 0 must not turn the step into clr * g / eps). With a float32 `master` copy the step reads and writes `master`
 * instead of loading `param`, and `param` receives the rounded result in the same pass.
 */

#define FA_MN_(name, sfx) name##_##sfx
#define FA_MN(name, sfx) FA_MN_(name, sfx)
#define FA_MFN(name) FA_FN(FA_MN(name, FA_MX_SFX))

static FA_ALWAYS_INLINE void FA_MFN(loop)(fa_ssize_t n, FA_MX_PT *param, const FA_MX_GT *grad,
                                          FA_MX_AT *accum, float *master,
                                          const FA_FN(coef_t_f32) *c0, int decay,
                                          int decoupled, int zero_mask, int has_master)
{
    const FA_FN(coef_t_f32) c = *c0;
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        float p = has_master ? master[i] : FA_MX_PLOAD(param[i]);
        float a = FA_MX_ALOAD(accum[i]);
        p = FA_FN(element_f32)(p, FA_MX_GLOAD(grad[i]), &a, &c, decay, decoupled, zero_mask);
        accum[i] = FA_MX_ASTORE(a);
        if (has_master)
            master[i] = p;
        param[i] = FA_MX_PSTORE(p);
    }
}

/* Contiguous mixed step over n elements: the option switches and the master copy become
 * compile-time constants of 16 loop copies (no branch in any loop, as in loops_typed.h). */
static void FA_MFN(dense)(fa_ssize_t n, void *param_, const void *grad_, void *accum_,
                          float *master, const DenseOpts *o)
{
    FA_MX_PT *param = (FA_MX_PT *)param_;
    const FA_MX_GT *grad = (const FA_MX_GT *)grad_;
    FA_MX_AT *accum = (FA_MX_AT *)accum_;
    FA_FN(coef_t_f32) c = FA_FN(coefficients_f32)(o);
    int variant = ((o->weight_decay != 0) << 3) | ((o->decoupled_weight_decay != 0) << 2)
                  | ((o->zero_if_accum_zero != 0) << 1) | (master != NULL);
    switch (variant) {
#define FA_MX_CASE(v) \
    case v: FA_MFN(loop)(n, param, grad, accum, master, &c, (v >> 3) & 1, (v >> 2) & 1, \
                         (v >> 1) & 1, v & 1); break;
    FA_MX_CASE(0) FA_MX_CASE(1) FA_MX_CASE(2) FA_MX_CASE(3)
    FA_MX_CASE(4) FA_MX_CASE(5) FA_MX_CASE(6) FA_MX_CASE(7)
    FA_MX_CASE(8) FA_MX_CASE(9) FA_MX_CASE(10) FA_MX_CASE(11)
    FA_MX_CASE(12) FA_MX_CASE(13) FA_MX_CASE(14) default: FA_MX_CASE(15)
#undef FA_MX_CASE
    }
}

/* The same element step over operands with byte strides (views updated in place). */
static void FA_MFN(strided)(fa_ssize_t n, void *param, fa_ssize_t sp, const void *grad,
                            fa_ssize_t sg, void *accum, fa_ssize_t sa, float *master,
                            fa_ssize_t sm, const DenseOpts *o)
{
    FA_FN(coef_t_f32) c = FA_FN(coefficients_f32)(o);
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0;
    int zero_mask = o->zero_if_accum_zero != 0;
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        FA_MX_PT *p = (FA_MX_PT *)((char *)param + i * sp);
        FA_MX_AT *a = (FA_MX_AT *)((char *)accum + i * sa);
        float *m = master ? (float *)((char *)master + i * sm) : NULL;
        float pv = m ? *m : FA_MX_PLOAD(*p);
        float av = FA_MX_ALOAD(*a);
        pv = FA_FN(element_f32)(pv, FA_MX_GLOAD(*(const FA_MX_GT *)((const char *)grad + i * sg)),
                                &av, &c, decay, decoupled, zero_mask);
        *a = FA_MX_ASTORE(av);
        if (m)
            *m = pv;
        *p = FA_MX_PSTORE(pv);
    }
}

#undef FA_MFN
#undef FA_MN
#undef FA_MN_
