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

/* One pass over n elements. AVX2/AVX-512 units: eight lanes at a time, every operand
 * converted in registers (half.h) around the float32 step (element_f32x8), the last n % 8
 * elements by the scalar step. Generic unit: blocks of FA_MX_BLOCK elements widened into
 * float32 buffers, the float32 loop on them (float32 operands in place: the accumulator, the
 * master copy), the results narrowed back: each loop stays simple enough for gcc to vectorise
 * for SSE2. Every element takes the same operations either way (the bytes are the same). */
#ifndef FA_MX_BLOCK
#define FA_MX_BLOCK 512
#endif

static FA_ALWAYS_INLINE void FA_MFN(tail)(fa_ssize_t n, FA_MX_PT *param, const FA_MX_GT *grad,
                                          FA_MX_AT *accum, float *master,
                                          const FA_FN(coef_t_f32) *c, int decay,
                                          int decoupled, int zero_mask, int has_master)
{
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        float p = has_master ? master[i] : FA_MX_PLOAD(param[i]);
        float a = FA_MX_ALOAD(accum[i]);
        p = FA_FN(element_f32)(p, FA_MX_GLOAD(grad[i]), &a, c, decay, decoupled, zero_mask);
        accum[i] = FA_MX_ASTORE(a);
        if (has_master)
            master[i] = p;
        param[i] = FA_MX_PSTORE(p);
    }
}

static FA_ALWAYS_INLINE void FA_MFN(loop)(fa_ssize_t n, FA_MX_PT *param, const FA_MX_GT *grad,
                                          FA_MX_AT *accum, float *master,
                                          const FA_FN(coef_t_f32) *c0, int decay,
                                          int decoupled, int zero_mask, int has_master)
{
    const FA_FN(coef_t_f32) c = *c0;
    fa_ssize_t i = 0;
#if defined(__AVX2__)
    const FA_FN(coef8_t) v = FA_FN(coef8)(&c);
    for (; i + 8 <= n; i += 8) {
        __m256 p = has_master ? _mm256_loadu_ps(master + i) : FA_V8(FA_MX_PLOAD)(param + i);
        __m256 a = FA_V8(FA_MX_ALOAD)(accum + i);
        p = FA_FN(element_f32x8)(p, FA_V8(FA_MX_GLOAD)(grad + i), &a, &v, decay, decoupled,
                                 zero_mask);
        FA_V8(FA_MX_ASTORE)(accum + i, a);
        if (has_master)
            _mm256_storeu_ps(master + i, p);
        FA_V8(FA_MX_PSTORE)(param + i, p);
    }
#else
    float pbuf[FA_MX_BLOCK], gbuf[FA_MX_BLOCK], abuf[FA_MX_BLOCK];
    fa_ssize_t m;
    for (; i + 8 <= n; i += m) {
        float *p, *a;
        const float *g;
        m = n - i < FA_MX_BLOCK ? (n - i) & ~(fa_ssize_t)7 : FA_MX_BLOCK;
        p = has_master ? master + i : FA_ROWS(FA_MX_PLOAD)(m, pbuf, param + i);
        g = FA_ROWS(FA_MX_GLOAD)(m, gbuf, grad + i);
        a = FA_ROWS(FA_MX_ALOAD)(m, abuf, accum + i);
        FA_FN(dense_loop_f32)(m, p, g, a, &c, decay, decoupled, zero_mask);
        FA_ROWS(FA_MX_ASTORE)(m, accum + i, a);
        FA_ROWS(FA_MX_PSTORE)(m, param + i, p);
    }
#endif
    FA_MFN(tail)(n - i, param + i, grad + i, accum + i, has_master ? master + i : NULL, &c,
                 decay, decoupled, zero_mask, has_master);
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

/* The contiguous step with the param's store rounded stochastically (half.h): element i of
 * the call has counter k->index0 + i. Runtime switches (one scalar loop per combination). */
static void FA_MFN(dense_sr)(fa_ssize_t n, void *param_, const void *grad_, void *accum_,
                             float *master, const DenseOpts *o, const SrKey *k)
{
    FA_MX_PT *param = (FA_MX_PT *)param_;
    const FA_MX_GT *grad = (const FA_MX_GT *)grad_;
    FA_MX_AT *accum = (FA_MX_AT *)accum_;
    FA_FN(coef_t_f32) c = FA_FN(coefficients_f32)(o);
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0;
    int zero_mask = o->zero_if_accum_zero != 0;
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        float p = master ? master[i] : FA_MX_PLOAD(param[i]);
        float a = FA_MX_ALOAD(accum[i]);
        p = FA_FN(element_f32)(p, FA_MX_GLOAD(grad[i]), &a, &c, decay, decoupled, zero_mask);
        accum[i] = FA_MX_ASTORE(a);
        if (master)
            master[i] = p;
        param[i] = FA_SR(FA_MX_PSTORE)(p, FA_FN(sr_bits)(k->k0, k->k1,
                                                         (uint64_t)(k->index0 + i)));
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
