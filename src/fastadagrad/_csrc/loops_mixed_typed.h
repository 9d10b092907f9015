/* The mixed-precision loops for one storage combination, as a macro that loops_mixed.h
 * expands once per entry of its combination list (FA_MX_COMBOS):
 *   FA_MX_LOOPS(P, G, A, sfx)   defines FA_FN(loop_<sfx>), FA_FN(dense_<sfx>), FA_FN(strided_<sfx>)
 * with P, G, A the storage of param (F16 | BF16), grad and accum (P or F32): FA_MX_TYPE_<X> is
 * its C type, FA_LOAD_<X>(x) / FA_STORE_<X>(f) convert it to / from float (loops_mixed.h,
 * rounding to nearest even in half.h).
 *
 * Per element: load every operand into float32, run the float32 loop's element step
 * (loops_typed.h: the formula in the documented order, each operation rounded in float32),
 * store each result once. The update uses the float32 accumulator as computed, before its
 * store rounds it (as torch's fused kernel does for float16 state: a float16 accumulator
 * that underflows to 0 must not turn the step into clr * g / eps). With a float32 `master`
 * copy the step reads and writes `master` instead of loading `param`, and `param` receives
 * the rounded result in the same pass.
 *
 * FA_MX_DENSE_LOOPS: the contiguous step, whose option switches and master copy become
 * compile-time constants of 16 loop copies (no branch in any loop, as in loops_typed.h).
 * FA_MX_STRIDED_LOOP: the same element step over operands with byte strides (views updated
 * in place).
 */

#define FA_MX_TYPE_F16 uint16_t
#define FA_MX_TYPE_BF16 uint16_t
#define FA_MX_TYPE_F32 float

/* One of the 16 loop copies of dense_<sfx>: variant v = (decay, decoupled, zero_mask, master). */
#define FA_MX_CASE(sfx, v) \
    case v: FA_FN(loop_##sfx)(n, param, grad, accum, master, &c, (v >> 3) & 1, (v >> 2) & 1, \
                              (v >> 1) & 1, v & 1); break;

#define FA_MX_LOOPS(P, G, A, sfx) \
static FA_ALWAYS_INLINE void FA_FN(loop_##sfx)(fa_ssize_t n, FA_MX_TYPE_##P *param, \
                                               const FA_MX_TYPE_##G *grad, \
                                               FA_MX_TYPE_##A *accum, float *master, \
                                               const FA_FN(coef_t_f32) *c0, int decay, \
                                               int decoupled, int zero_mask, int has_master) \
{ \
    const FA_FN(coef_t_f32) c = *c0; \
    fa_ssize_t i; \
    for (i = 0; i < n; i++) { \
        float p = has_master ? master[i] : FA_LOAD_##P(param[i]); \
        float a = FA_LOAD_##A(accum[i]); \
        p = FA_FN(element_f32)(p, FA_LOAD_##G(grad[i]), &a, &c, decay, decoupled, zero_mask); \
        accum[i] = FA_STORE_##A(a); \
        if (has_master) \
            master[i] = p; \
        param[i] = FA_STORE_##P(p); \
    } \
} \
\
static void FA_FN(dense_##sfx)(fa_ssize_t n, void *param_, const void *grad_, void *accum_, \
                               float *master, const DenseOpts *o) \
{ \
    FA_MX_TYPE_##P *param = (FA_MX_TYPE_##P *)param_; \
    const FA_MX_TYPE_##G *grad = (const FA_MX_TYPE_##G *)grad_; \
    FA_MX_TYPE_##A *accum = (FA_MX_TYPE_##A *)accum_; \
    FA_FN(coef_t_f32) c = FA_FN(coefficients_f32)(o); \
    int variant = ((o->weight_decay != 0) << 3) | ((o->decoupled_weight_decay != 0) << 2) \
                  | ((o->zero_if_accum_zero != 0) << 1) | (master != NULL); \
    switch (variant) { \
    FA_MX_CASE(sfx, 0) FA_MX_CASE(sfx, 1) FA_MX_CASE(sfx, 2) FA_MX_CASE(sfx, 3) \
    FA_MX_CASE(sfx, 4) FA_MX_CASE(sfx, 5) FA_MX_CASE(sfx, 6) FA_MX_CASE(sfx, 7) \
    FA_MX_CASE(sfx, 8) FA_MX_CASE(sfx, 9) FA_MX_CASE(sfx, 10) FA_MX_CASE(sfx, 11) \
    FA_MX_CASE(sfx, 12) FA_MX_CASE(sfx, 13) FA_MX_CASE(sfx, 14) default: FA_MX_CASE(sfx, 15) \
    } \
} \
\
static void FA_FN(strided_##sfx)(fa_ssize_t n, void *param, fa_ssize_t sp, const void *grad, \
                                 fa_ssize_t sg, void *accum, fa_ssize_t sa, float *master, \
                                 fa_ssize_t sm, const DenseOpts *o) \
{ \
    FA_FN(coef_t_f32) c = FA_FN(coefficients_f32)(o); \
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0; \
    int zero_mask = o->zero_if_accum_zero != 0; \
    fa_ssize_t i; \
    for (i = 0; i < n; i++) { \
        FA_MX_TYPE_##P *p = (FA_MX_TYPE_##P *)((char *)param + i * sp); \
        FA_MX_TYPE_##A *a = (FA_MX_TYPE_##A *)((char *)accum + i * sa); \
        float *m = master ? (float *)((char *)master + i * sm) : NULL; \
        float pv = m ? *m : FA_LOAD_##P(*p); \
        float av = FA_LOAD_##A(*a); \
        pv = FA_FN(element_f32)(pv, \
                                FA_LOAD_##G(*(const FA_MX_TYPE_##G *)((const char *)grad + i * sg)), \
                                &av, &c, decay, decoupled, zero_mask); \
        *a = FA_STORE_##A(av); \
        if (m) \
            *m = pv; \
        *p = FA_STORE_##P(pv); \
    } \
}
