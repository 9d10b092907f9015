/* Mixed-precision loops (issue 15): float16 / bfloat16 params, grads of the param's type or
 * float32, accumulators float32 or the param's type, optional float32 master weights.
 * Included from loops.h after the float loops (it reuses their float32 element step), so it is
 * compiled once per ISA level like them. Every operand is widened to float32 (exactly), the
 * float32 formula runs, each result is rounded once to its storage type (half.h).
 */
#include "half.h"

#define FA_LOAD_F32(x) (x)
#define FA_STORE_F32(x) (x)
#define FA_LOAD_F16(x) FA_FN(f16_to_f32)(x)
#define FA_STORE_F16(x) FA_FN(f32_to_f16)(x)
#define FA_LOAD_BF16(x) FA_FN(bf16_to_f32)(x)
#define FA_STORE_BF16(x) FA_FN(f32_to_bf16)(x)
/* stochastic rounding of a param store: FA_SR(FA_MX_PSTORE)(f, random bits) */
#define FA_SR_(x) x##_SR
#define FA_SR(x) FA_SR_(x)
#define FA_STORE_F16_SR(x, r) FA_FN(f32_to_f16_sr)((x), (r))
#define FA_STORE_BF16_SR(x, r) FA_FN(f32_to_bf16_sr)((x), (r))
/* The same on rows of m elements through a float32 buffer `buf` (half.h's row conversions):
   FA_ROWS(FA_MX_GLOAD)(m, buf, src) is a float32 pointer to the row (src itself when it is
   float32), FA_ROWS(FA_MX_ASTORE)(m, dst, buf) writes it back (nothing to do for float32). */
#define FA_ROWS_(x) x##_ROWS
#define FA_ROWS(x) FA_ROWS_(x)
#define FA_LOAD_F32_ROWS(m, buf, src) ((float *)(src))
#define FA_STORE_F32_ROWS(m, dst, buf) ((void)0)
#define FA_LOAD_F16_ROWS(m, buf, src) (FA_FN(widen_f16)((m), (buf), (src)), (buf))
#define FA_STORE_F16_ROWS(m, dst, buf) FA_FN(narrow_f16)((m), (dst), (buf))
#define FA_LOAD_BF16_ROWS(m, buf, src) (FA_FN(widen_bf16)((m), (buf), (src)), (buf))
#define FA_STORE_BF16_ROWS(m, dst, buf) FA_FN(narrow_bf16)((m), (dst), (buf))

#if defined(__AVX2__)
/* Eight elements at a time (half.h): FA_V8(FA_MX_GLOAD)(ptr) loads eight elements of that
   storage type as float32 lanes, FA_V8(FA_MX_ASTORE)(ptr, v) stores them rounded. */
#define FA_V8_(x) x##_V8
#define FA_V8(x) FA_V8_(x)
#define FA_LOAD_F32_V8 FA_FN(ld8_f32)
#define FA_STORE_F32_V8 FA_FN(st8_f32)
#define FA_LOAD_F16_V8 FA_FN(ld8_f16)
#define FA_STORE_F16_V8 FA_FN(st8_f16)
#define FA_LOAD_BF16_V8 FA_FN(ld8_bf16)
#define FA_STORE_BF16_V8 FA_FN(st8_bf16)
/* FA_V16(FA_MX_ASTORE)(ptr, v0, v1, quiet_known): sixteen elements stored rounded (v0 the
   first eight; quiet_known: every NaN among them is already quiet, half.h) */
#define FA_STORE_F32_V16 FA_FN(st16_f32)
#define FA_STORE_F16_V16 FA_FN(st16_f16)
#define FA_STORE_BF16_V16 FA_FN(st16_bf16)

/* Software prefetch of the 32 elements at p (itemsize 2 or 4: one or two 64-byte lines),
   FA_MX_AHEAD elements ahead of the loop (1024: 2 KiB of a half-precision stream). */
#ifndef FA_MX_AHEAD
#define FA_MX_AHEAD 1024
#endif
static inline void FA_FN(mx_prefetch32)(const void *p, size_t itemsize)
{
    FA_PREFETCH(p);
    if (itemsize == 4)
        FA_PREFETCH((const char *)p + 64);
}

/* The float32 coefficients in every lane. */
typedef struct {
    __m256 sign, clr, wd, dwd, eps_in, eps_out;
} FA_FN(coef8_t);

static inline FA_FN(coef8_t) FA_FN(coef8)(const FA_FN(coef_t_f32) *c)
{
    FA_FN(coef8_t) v;
    v.sign = _mm256_set1_ps(c->sign);
    v.clr = _mm256_set1_ps(c->clr);
    v.wd = _mm256_set1_ps(c->wd);
    v.dwd = _mm256_set1_ps(c->dwd);
    v.eps_in = _mm256_set1_ps(c->eps_in);
    v.eps_out = _mm256_set1_ps(c->eps_out);
    return v;
}

/* loops_typed.h's element step (element_f32) on eight lanes: the same operations in the same
   order, each rounded in float32 (IEEE: the same bits as the scalar step, lane by lane).
   plain (a constant): sign is 1 and eps_in is 0, and the step leaves out g * 1 and acc + 0,
   which change no bit: g * 1 is g (a signalling NaN comes out quiet, as it does from g * g and
   clr * g, the only places g goes without decay or the zero mask), and acc + 0 is acc because
   acc = a + g * g is never -0. Two of the step's nine float operations: one core runs the
   bfloat16 step compute-bound (in L1: 2.1 -> 2.5 G elements/s on Zen 3). */
static FA_ALWAYS_INLINE __m256 FA_FN(element_f32x8)(__m256 p, __m256 g, __m256 *a,
                                                    const FA_FN(coef8_t) *c, int decay,
                                                    int decoupled, int zero_mask, int plain)
{
    __m256 acc, upd;
    if (!plain)
        g = _mm256_mul_ps(g, c->sign);
    if (decay)
        g = _mm256_add_ps(g, _mm256_mul_ps(c->wd, p));
    if (decoupled)
        p = _mm256_sub_ps(p, _mm256_mul_ps(_mm256_mul_ps(p, c->dwd), c->clr));
    acc = _mm256_add_ps(*a, _mm256_mul_ps(g, g));
    *a = acc;
    upd = _mm256_sub_ps(p, _mm256_div_ps(_mm256_mul_ps(c->clr, g),
                                         _mm256_add_ps(_mm256_sqrt_ps(plain ? acc
                                                                      : _mm256_add_ps(acc, c->eps_in)),
                                                       c->eps_out)));
    if (zero_mask)
        upd = _mm256_blendv_ps(upd, p, _mm256_cmp_ps(acc, _mm256_setzero_ps(), _CMP_EQ_OQ));
    return upd;
}
#endif

#include "loops_mixed_typed.h"

/* Every supported (param, grad, accum) storage combination, X(P, G, A, suffix): the loops are
 * defined (FA_MX_LOOPS), and the three switches below dispatch, from this one list. */
#define FA_MX_COMBOS(X) \
    X(F16, F16, F16, f16_gf16_af16) \
    X(F16, F16, F32, f16_gf16_af32) \
    X(F16, F32, F16, f16_gf32_af16) \
    X(F16, F32, F32, f16_gf32_af32) \
    X(BF16, BF16, BF16, bf16_gbf16_abf16) \
    X(BF16, BF16, F32, bf16_gbf16_af32) \
    X(BF16, F32, BF16, bf16_gf32_abf16) \
    X(BF16, F32, F32, bf16_gf32_af32)

FA_MX_COMBOS(FA_MX_LOOPS)

/* The combination code of (param, grad, accum) types, for the switches below. */
#define FA_MX_KEY(p, g, a) (((p) << 4) | ((g) << 2) | (a))
/* The case of one combination: FA_MX_CASE_OF(P, G, A) */
#define FA_MX_CASE_OF(P, G, A) case FA_MX_KEY(FA_DT_##P, FA_DT_##G, FA_DT_##A)

/* Contiguous mixed step: n elements of the combination `t` (unsupported combinations, which
 * the validators never let through, do nothing). */
static void FA_FN(dense_mixed)(fa_ssize_t n, void *param, const void *grad, void *accum,
                               float *master, const MixedTypes *t, const DenseOpts *o)
{
    switch (FA_MX_KEY(t->param, t->grad, t->accum)) {
#define FA_MX_DENSE(P, G, A, sfx) \
    FA_MX_CASE_OF(P, G, A): FA_FN(dense_##sfx)(n, param, grad, accum, master, o); break;
    FA_MX_COMBOS(FA_MX_DENSE)
#undef FA_MX_DENSE
    default: break;
    }
}

/* The same over byte-strided operands (master may be NULL; sm is its stride). */
static void FA_FN(strided_mixed)(fa_ssize_t n, void *param, fa_ssize_t sp, const void *grad,
                                 fa_ssize_t sg, void *accum, fa_ssize_t sa, float *master,
                                 fa_ssize_t sm, const MixedTypes *t, const DenseOpts *o)
{
    switch (FA_MX_KEY(t->param, t->grad, t->accum)) {
#define FA_MX_STRIDED(P, G, A, sfx) \
    FA_MX_CASE_OF(P, G, A): \
        FA_FN(strided_##sfx)(n, param, sp, grad, sg, accum, sa, master, sm, o); break;
    FA_MX_COMBOS(FA_MX_STRIDED)
#undef FA_MX_STRIDED
    default: break;
    }
}

/* dense_mixed with the param's store rounded stochastically (key k; scalar loops). */
static void FA_FN(dense_mixed_sr)(fa_ssize_t n, void *param, const void *grad, void *accum,
                                  float *master, const MixedTypes *t, const DenseOpts *o,
                                  const SrKey *k)
{
    switch (FA_MX_KEY(t->param, t->grad, t->accum)) {
#define FA_MX_DENSE_SR(P, G, A, sfx) \
    FA_MX_CASE_OF(P, G, A): FA_FN(dense_sr_##sfx)(n, param, grad, accum, master, o, k); break;
    FA_MX_COMBOS(FA_MX_DENSE_SR)
#undef FA_MX_DENSE_SR
    default: break;
    }
}

/* Widen n storage elements of type `type` to float32 (the sparse path's gradient rows). */
static void FA_FN(to_float)(fa_ssize_t n, float *dst, const void *src, int type)
{
    if (type == FA_DT_F16)
        FA_FN(widen_f16)(n, dst, (const uint16_t *)src);
    else if (type == FA_DT_BF16)
        FA_FN(widen_bf16)(n, dst, (const uint16_t *)src);
    else
        memcpy(dst, src, (size_t)n * sizeof(float));
}
