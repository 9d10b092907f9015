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

#include "loops_mixed_typed.h"

/* Every supported (param, grad, accum) storage combination, X(P, G, A, suffix): the loops are
 * defined, and the two switches below dispatch, from this one list. */
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

/* Contiguous mixed step: n elements of the combination `t` (unsupported combinations, which
 * the validators never let through, do nothing). */
static void FA_FN(dense_mixed)(fa_ssize_t n, void *param, const void *grad, void *accum,
                               float *master, const MixedTypes *t, const DenseOpts *o)
{
    switch (FA_MX_KEY(t->param, t->grad, t->accum)) {
#define FA_MX_DENSE(P, G, A, sfx) \
    case FA_MX_KEY(FA_DT_##P, FA_DT_##G, FA_DT_##A): \
        FA_FN(dense_##sfx)(n, param, grad, accum, master, o); break;
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
    case FA_MX_KEY(FA_DT_##P, FA_DT_##G, FA_DT_##A): \
        FA_FN(strided_##sfx)(n, param, sp, grad, sg, accum, sa, master, sm, o); break;
    FA_MX_COMBOS(FA_MX_STRIDED)
#undef FA_MX_STRIDED
    default: break;
    }
}

/* Widen n storage elements of type `type` to float32 (the sparse path's gradient rows). */
static void FA_FN(widen_f16)(fa_ssize_t n, float *dst, const uint16_t *src)
{
    fa_ssize_t i;
    for (i = 0; i < n; i++)
        dst[i] = FA_FN(f16_to_f32)(src[i]);
}

static void FA_FN(widen_bf16)(fa_ssize_t n, float *dst, const uint16_t *src)
{
    fa_ssize_t i;
    for (i = 0; i < n; i++)
        dst[i] = FA_FN(bf16_to_f32)(src[i]);
}

static void FA_FN(to_float)(fa_ssize_t n, float *dst, const void *src, int type)
{
    if (type == FA_DT_F16)
        FA_FN(widen_f16)(n, dst, (const uint16_t *)src);
    else if (type == FA_DT_BF16)
        FA_FN(widen_bf16)(n, dst, (const uint16_t *)src);
    else
        memcpy(dst, src, (size_t)n * sizeof(float));
}
