/* The mixed-precision loops for one storage combination, as a macro that loops_mixed.h
 * expands once per entry of its combination list (FA_MX_COMBOS):
 *   FA_MX_LOOPS(P, G, A, sfx)   defines FA_FN(<name>_<sfx>) for name in tail, loop, dense,
 *                               dense_sr, strided
 * with P, G, A the storage of param (F16 | BF16), grad (P | F32) and accum (P | F32):
 * FA_MX_TYPE_<X> is its C type, FA_LOAD_<X>(x) / FA_STORE_<X>(f) convert one element to / from
 * float32, FA_LOAD_<X>_V8 / FA_STORE_<X>_V8 eight lanes, FA_LOAD_<X>_ROWS / FA_STORE_<X>_ROWS
 * rows through a float32 buffer, FA_STORE_<X>_SR a stochastically rounded store (loops_mixed.h,
 * half.h).
 *
 * Per element: load every operand into float32, run the float32 loop's element step
 * (loops_typed.h: the formula in the documented order, each operation rounded in float32),
 * store each result once. The update uses the float32 accumulator as computed, before its
 * store rounds it (as torch's fused kernel does for float16 state: a float16 accumulator
 * that underflows to 0 must not turn the step into clr * g / eps). With a float32 `master`
 * copy the step reads and writes `master` instead of loading `param`, and `param` receives
 * the rounded result in the same pass.
 */

#define FA_MX_TYPE_F16 uint16_t
#define FA_MX_TYPE_BF16 uint16_t
#define FA_MX_TYPE_F32 float

/* One pass over n elements (loop_<sfx>). AVX2/AVX-512 units: eight lanes at a time, every
 * operand converted in registers (half.h) around the float32 step (element_f32x8), the last
 * n % 8 elements by the scalar step (tail_<sfx>). Generic unit: blocks of FA_MX_BLOCK elements
 * widened into float32 buffers, the float32 loop on them (float32 operands in place: the
 * accumulator, the master copy), the results narrowed back: each loop stays simple enough for
 * gcc to vectorise for SSE2. Every element takes the same operations either way (the bytes are
 * the same). FA_MX_BLOCKS(P, G, A) is that blocked part of loop_<sfx>. The AVX2 loop also
 * prefetches FA_MX_AHEAD elements ahead (loops_mixed.h): with half-precision operands one core
 * is nearly compute-bound out of cache, and the hardware prefetcher alone left 5-10% of the
 * bandwidth unused (benchmarks/mixed_precision.py). */
#ifndef FA_MX_BLOCK
#define FA_MX_BLOCK 512
#endif

#if defined(__AVX2__)
/* eight elements from j: p the new param (stored to master when there is one), a the new
   float32 accumulator, both left in registers for the stores */
#define FA_MX_STEP8(P, G, A, j, p, a) \
    p = has_master ? _mm256_loadu_ps(master + (j)) : FA_LOAD_##P##_V8(param + (j)); \
    a = FA_LOAD_##A##_V8(accum + (j)); \
    p = FA_FN(element_f32x8)(p, FA_LOAD_##G##_V8(grad + (j)), &a, &v, decay, decoupled, \
                             zero_mask, plain); \
    if (has_master) \
        _mm256_storeu_ps(master + (j), p);
/* FA_MX_PREFETCH(i): prefetch FA_MX_AHEAD elements ahead, once per 32 elements */
#define FA_MX_PREFETCH(i) \
    if (((i) & 31) == 0 && (i) + FA_MX_AHEAD < n) { \
        FA_FN(mx_prefetch32)(param + (i) + FA_MX_AHEAD, sizeof *param); \
        FA_FN(mx_prefetch32)(grad + (i) + FA_MX_AHEAD, sizeof *grad); \
        FA_FN(mx_prefetch32)(accum + (i) + FA_MX_AHEAD, sizeof *accum); \
        if (has_master) \
            FA_FN(mx_prefetch32)(master + (i) + FA_MX_AHEAD, sizeof *master); \
    }
/* sixteen elements per iteration (bfloat16 stores pack sixteen at once), then eight. Every
   NaN a store sees is quiet (a float operation's result: acc is a sum, p a difference),
   except a param kept by the zero mask (it may be the loaded, signalling, param).
   Software-pipelined by one iteration: the rounded param store of elements i - 16 .. i - 1
   comes after the step of i .. i + 15. One Zen 3 core runs this loop compute-bound, limited
   by vsqrtps/vdivps; stored right away, the rounding (ready only after the divide) queued
   behind the divides and the next iteration's loads and square roots could not start: the
   bfloat16 step in L1 ran at 0.78-0.81x the float32 step's speed, 0.85-0.88x pipelined
   (benchmarks/mixed_loops_c.py at 2048 elements; splitting the step itself before the
   divide gained nothing more). The loads of an iteration never touch the elements whose store
   is pending (the operands do not overlap: the Python checks refuse it, kernels.pxd leaves it
   to the caller), so the bytes are those of the unpipelined order. */
#define FA_MX_BLOCKS(P, G, A) \
    const FA_FN(coef8_t) v = FA_FN(coef8)(&c); \
    __m256 p0, p1, a0, a1, q0, q1; \
    if (i + 16 <= n) { \
        FA_MX_PREFETCH(i) \
        FA_MX_STEP8(P, G, A, i, q0, a0) \
        FA_MX_STEP8(P, G, A, i + 8, q1, a1) \
        FA_STORE_##A##_V16(accum + i, a0, a1, 1); \
        for (i += 16; i + 16 <= n; i += 16) { \
            FA_MX_PREFETCH(i) \
            FA_MX_STEP8(P, G, A, i, p0, a0) \
            FA_MX_STEP8(P, G, A, i + 8, p1, a1) \
            FA_STORE_##P##_V16(param + i - 16, q0, q1, !zero_mask); \
            FA_STORE_##A##_V16(accum + i, a0, a1, 1); \
            q0 = p0; \
            q1 = p1; \
        } \
        FA_STORE_##P##_V16(param + i - 16, q0, q1, !zero_mask); \
    } \
    for (; i + 8 <= n; i += 8) { \
        FA_MX_STEP8(P, G, A, i, p0, a0) \
        FA_STORE_##A##_V8(accum + i, a0); \
        FA_STORE_##P##_V8(param + i, p0); \
    }
#else
#define FA_MX_BLOCKS(P, G, A) \
    float pbuf[FA_MX_BLOCK], gbuf[FA_MX_BLOCK], abuf[FA_MX_BLOCK]; \
    fa_ssize_t m; \
    (void)gbuf; (void)abuf;   /* unused when grad / accum are float32 (read in place) */ \
    (void)plain;              /* the float32 loop keeps every operation */ \
    for (; i + 8 <= n; i += m) { \
        float *p, *a; \
        const float *g; \
        m = n - i < FA_MX_BLOCK ? (n - i) & ~(fa_ssize_t)7 : FA_MX_BLOCK; \
        p = has_master ? master + i : FA_LOAD_##P##_ROWS(m, pbuf, param + i); \
        g = FA_LOAD_##G##_ROWS(m, gbuf, grad + i); \
        a = FA_LOAD_##A##_ROWS(m, abuf, accum + i); \
        FA_FN(dense_loop_f32)(m, p, g, a, &c, decay, decoupled, zero_mask); \
        FA_STORE_##A##_ROWS(m, accum + i, a); \
        FA_STORE_##P##_ROWS(m, param + i, p); \
    }
#endif

/* dense_<sfx>, the contiguous step: the option switches and the master copy become
 * compile-time constants of 18 loop copies (no branch in any loop, as in loops_typed.h);
 * FA_MX_CASE(sfx, v) is the copy of variant v = (plain, decay, decoupled, zero_mask, master),
 * plain (element_f32x8) only without decay, decoupled decay and the zero mask: the defaults.
 * dense_sr_<sfx>: the contiguous step with the param's store rounded stochastically (half.h):
 * element i of the call has counter k->index0 + i; runtime switches (one scalar loop).
 * strided_<sfx>: the same element step over operands with byte strides (views updated in
 * place). */
#define FA_MX_CASE(sfx, v) \
    case v: FA_FN(loop_##sfx)(n, param, grad, accum, master, &c, (v >> 3) & 1, (v >> 2) & 1, \
                              (v >> 1) & 1, v & 1, (v >> 4) & 1); break;

#define FA_MX_LOOPS(P, G, A, sfx) \
static FA_ALWAYS_INLINE void FA_FN(tail_##sfx)(fa_ssize_t n, FA_MX_TYPE_##P *param, \
                                               const FA_MX_TYPE_##G *grad, \
                                               FA_MX_TYPE_##A *accum, float *master, \
                                               const FA_FN(coef_t_f32) *c, int decay, \
                                               int decoupled, int zero_mask, int has_master) \
{ \
    fa_ssize_t i; \
    for (i = 0; i < n; i++) { \
        float p = has_master ? master[i] : FA_LOAD_##P(param[i]); \
        float a = FA_LOAD_##A(accum[i]); \
        p = FA_FN(element_f32)(p, FA_LOAD_##G(grad[i]), &a, c, decay, decoupled, zero_mask); \
        accum[i] = FA_STORE_##A(a); \
        if (has_master) \
            master[i] = p; \
        param[i] = FA_STORE_##P(p); \
    } \
} \
\
static FA_ALWAYS_INLINE void FA_FN(loop_##sfx)(fa_ssize_t n, FA_MX_TYPE_##P *param, \
                                               const FA_MX_TYPE_##G *grad, \
                                               FA_MX_TYPE_##A *accum, float *master, \
                                               const FA_FN(coef_t_f32) *c0, int decay, \
                                               int decoupled, int zero_mask, int has_master, \
                                               int plain) \
{ \
    const FA_FN(coef_t_f32) c = *c0; \
    fa_ssize_t i = 0; \
    FA_MX_BLOCKS(P, G, A) \
    FA_FN(tail_##sfx)(n - i, param + i, grad + i, accum + i, has_master ? master + i : NULL, \
                      &c, decay, decoupled, zero_mask, has_master); \
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
    if (variant <= 1 && c.sign == 1.0f && c.eps_in == 0.0f) \
        variant |= 16; \
    switch (variant) { \
    FA_MX_CASE(sfx, 0) FA_MX_CASE(sfx, 1) FA_MX_CASE(sfx, 2) FA_MX_CASE(sfx, 3) \
    FA_MX_CASE(sfx, 4) FA_MX_CASE(sfx, 5) FA_MX_CASE(sfx, 6) FA_MX_CASE(sfx, 7) \
    FA_MX_CASE(sfx, 8) FA_MX_CASE(sfx, 9) FA_MX_CASE(sfx, 10) FA_MX_CASE(sfx, 11) \
    FA_MX_CASE(sfx, 12) FA_MX_CASE(sfx, 13) FA_MX_CASE(sfx, 14) FA_MX_CASE(sfx, 15) \
    FA_MX_CASE(sfx, 16) default: FA_MX_CASE(sfx, 17) \
    } \
} \
\
static void FA_FN(dense_sr_##sfx)(fa_ssize_t n, void *param_, const void *grad_, void *accum_, \
                                  float *master, const DenseOpts *o, const SrKey *k) \
{ \
    FA_MX_TYPE_##P *param = (FA_MX_TYPE_##P *)param_; \
    const FA_MX_TYPE_##G *grad = (const FA_MX_TYPE_##G *)grad_; \
    FA_MX_TYPE_##A *accum = (FA_MX_TYPE_##A *)accum_; \
    FA_FN(coef_t_f32) c = FA_FN(coefficients_f32)(o); \
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0; \
    int zero_mask = o->zero_if_accum_zero != 0; \
    fa_ssize_t i; \
    for (i = 0; i < n; i++) { \
        float p = master ? master[i] : FA_LOAD_##P(param[i]); \
        float a = FA_LOAD_##A(accum[i]); \
        p = FA_FN(element_f32)(p, FA_LOAD_##G(grad[i]), &a, &c, decay, decoupled, zero_mask); \
        accum[i] = FA_STORE_##A(a); \
        if (master) \
            master[i] = p; \
        param[i] = FA_STORE_##P##_SR(p, FA_FN(sr_bits)(k->k0, k->k1, \
                                                       (uint64_t)(k->index0 + i))); \
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
