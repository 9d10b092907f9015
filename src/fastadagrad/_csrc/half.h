/* float16 / bfloat16 <-> float32 conversions as integer bit operations: branch-free (every
 * choice is a bit mask), so gcc vectorises the loops that use them on every ISA level, the
 * generic x86-64 baseline included (no F16C instruction needed). Included from loops_mixed.h
 * inside each ISA unit; every function is static inline and ISA-prefixed through FA_FN.
 *
 * Widening is exact. Narrowing rounds to nearest, ties to even (NumPy's float32 -> float16
 * cast and ml_dtypes' float32 -> bfloat16 cast), overflowing to +-inf; subnormal results are
 * kept (no flush to zero). A NaN stays a NaN (quiet, sign and top payload bits kept; IEEE
 * leaves the bits of a converted NaN open, the tests compare NaN positions only). No float
 * operation here sees a subnormal operand, so the results do not depend on the CPU's
 * denormals-are-zero / flush-to-zero modes either.
 */

/* c ? a : b on 32-bit words, through a mask. */
static inline uint32_t FA_FN(sel32)(uint32_t c, uint32_t a, uint32_t b)
{
    uint32_t m = 0u - (uint32_t)(c != 0);
    return (a & m) | (b & ~m);
}

static inline float FA_FN(bits_to_f32)(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t FA_FN(f32_to_bits)(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* bfloat16 is the top half of a float32. */
static inline float FA_FN(bf16_to_f32)(uint16_t h)
{
    return FA_FN(bits_to_f32)((uint32_t)h << 16);
}

static inline uint16_t FA_FN(f32_to_bf16)(float f)
{
    uint32_t u = FA_FN(f32_to_bits)(f);
    uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   /* carries into the exponent */
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    return (uint16_t)FA_FN(sel32)(nan, (u >> 16) | 0x40u, rne);
}

/* float16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static inline float FA_FN(f16_to_f32)(uint16_t h)
{
    uint32_t u = h;
    uint32_t sign = (u & 0x8000u) << 16;
    uint32_t exp = u & 0x7c00u;
    uint32_t em = (u & 0x7fffu) << 13;                    /* exponent and mantissa in place */
    uint32_t normal = em + 0x38000000u;                   /* rebias: + (127 - 15) << 23 */
    uint32_t special = em | 0x7f800000u;                  /* inf, NaN (payload kept) */
    /* subnormal: mantissa * 2^-24, exact (an integer below 2^10 times a power of two) */
    uint32_t sub = FA_FN(f32_to_bits)((float)(int32_t)(u & 0x3ffu) * 0x1p-24f);
    uint32_t r = FA_FN(sel32)(exp == 0, sub, FA_FN(sel32)(exp == 0x7c00u, special, normal));
    return FA_FN(bits_to_f32)(r | sign);
}

static inline uint16_t FA_FN(f32_to_f16)(float f)
{
    uint32_t u = FA_FN(f32_to_bits)(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    /* |f| >= 2^-14 (normal float16 or overflow): rebias, round the 13 dropped bits to
       nearest even; a carry rolls into the exponent (65520 <= |f| < 65536 gives inf) */
    uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
    /* |f| < 2^-14: adding 0.5 lines the float16 subnormal grid up with the float32 ulp at
       0.5 (2^-24), so the hardware add rounds to nearest even, exactly once */
    uint32_t sub = FA_FN(f32_to_bits)(FA_FN(bits_to_f32)(a) + 0.5f) - 0x3f000000u;
    uint32_t r = FA_FN(sel32)(a < 0x38800000u, sub, normal);
    r = FA_FN(sel32)(a >= 0x47800000u, 0x7c00u, r);                    /* >= 65536: inf */
    r = FA_FN(sel32)(a > 0x7f800000u, 0x7e00u | ((a >> 13) & 0x3ffu), r);   /* NaN */
    return (uint16_t)(r | sign);
}

/* ---- Stochastic rounding (issue 15 §1; _stochastic.py is the NumPy twin, the definition).
 * Random bits: a counter hash, r = h(h(lo32(i) ^ k0) ^ hi32(i) ^ k1) with i the element's
 * counter (its C-order index in the param) and k0, k1 derived from (seed, step) once per call;
 * h is a 32-bit integer finaliser (x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
 * x *= 0x846ca68b; x ^= x >> 16). The same bits for every thread split and ISA path. */
static inline uint32_t FA_FN(hash32)(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

static inline uint32_t FA_FN(sr_bits)(uint32_t k0, uint32_t k1, uint64_t i)
{
    return FA_FN(hash32)(FA_FN(hash32)((uint32_t)i ^ k0) ^ (uint32_t)(i >> 32) ^ k1);
}

/* bfloat16: the 16 dropped bits plus 16 random bits, truncated: rounds away from zero with
   probability (dropped bits) / 2^16, exactly. NaN as in f32_to_bf16. */
static inline uint16_t FA_FN(f32_to_bf16_sr)(float f, uint32_t r)
{
    uint32_t u = FA_FN(f32_to_bits)(f);
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    return (uint16_t)FA_FN(sel32)(nan, (u >> 16) | 0x40u, (u + (r >> 16)) >> 16);
}

/* float16: normal results add 13 random bits to the 13 dropped ones (probability exact);
   subnormal results (|f| < 2^-14) round q = |f| * 2^24 (exact) up when the top 24 random
   bits are below frac(q) * 2^24 (probability ceil(frac * 2^24) / 2^24). Overflow, inf, NaN
   as in f32_to_f16. */
static inline uint16_t FA_FN(f32_to_f16_sr)(float f, uint32_t r)
{
    uint32_t u = FA_FN(f32_to_bits)(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    uint32_t normal = (a + 0xc8000000u + (r >> 19)) >> 13;
    float q = FA_FN(bits_to_f32)(FA_FN(sel32)(a < 0x38800000u, a, 0u)) * 0x1p24f;
    int32_t qi = (int32_t)q;
    uint32_t sub = (uint32_t)qi + (uint32_t)((float)(r >> 8) < (q - (float)qi) * 0x1p24f);
    uint32_t res = FA_FN(sel32)(a < 0x38800000u, sub, normal);
    res = FA_FN(sel32)(a >= 0x47800000u, 0x7c00u, res);
    res = FA_FN(sel32)(a > 0x7f800000u, 0x7e00u | ((a >> 13) & 0x3ffu), res);
    return (uint16_t)(res | sign);
}

/* ---- Eight lanes and rows. On the AVX2/AVX-512 units (compiled with -mf16c; dispatch.c
 * checks F16C too) float16 converts with F16C's vcvtph2ps / vcvtps2ph (round to nearest even,
 * subnormals kept, overflow to inf: the scalar functions' results) and bfloat16 with the
 * scalar functions' integer operations on eight lanes. The generic unit runs the scalar
 * functions (gcc vectorises their row loops for SSE2). Loops finish their last n % 8 elements
 * with the scalar functions: both give NumPy's / ml_dtypes' bits for every value that is not a
 * NaN (tests/test_mixed_precision.py, every ISA path), so where an element falls does not
 * matter. */
#if defined(__AVX2__)
#include <immintrin.h>
#if !defined(__F16C__)
#error "the AVX2/AVX-512 units are compiled with -mf16c (setup.py ISA_FLAGS)"
#endif

static inline __m256 FA_FN(ld8_f32)(const float *p) { return _mm256_loadu_ps(p); }
static inline void FA_FN(st8_f32)(float *p, __m256 f) { _mm256_storeu_ps(p, f); }

static inline __m256 FA_FN(ld8_f16)(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline void FA_FN(st8_f16)(uint16_t *p, __m256 f)
{
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
}

/* bfloat16 -> float32: the eight halves of a 16-byte load broadcast to both 128-bit lanes, each
   moved into the top half of its 32-bit lane by one byte shuffle (zeros below). */
static inline __m256 FA_FN(ld8_bf16)(const uint16_t *p)
{
    const __m256i to_top = _mm256_setr_epi8(-1, -1, 0, 1, -1, -1, 2, 3, -1, -1, 4, 5, -1, -1, 6, 7,
                                            -1, -1, 8, 9, -1, -1, 10, 11, -1, -1, 12, 13, -1, -1,
                                            14, 15);
    __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(b, to_top));
}

/* f32_to_bf16 on eight lanes, the same bits in fewer operations (one Zen 3 core runs the mixed
   loop compute-bound: every integer operation competes with vsqrtps/vdivps for the vector
   pipes): u + 0x7fff + lsb, with lsb (bit 16) as a compare mask (u + 0x7fff - mask, no shift);
   a NaN lane takes u | 0x400000 instead (bit 22, the quiet bit), blended before the one shift:
   (u >> 16) | 0x40 as in the scalar function. quiet_known (a constant): every NaN of f is
   already quiet (f is the result of a float operation, which on x86 returns quiet NaNs), so
   u | 0x400000 is u and the OR is skipped. Returns the bfloat16 bits in 32-bit lanes. */
static FA_ALWAYS_INLINE __m256i FA_FN(bf16x8_bits)(__m256 f, int quiet_known)
{
    const __m256i bit16 = _mm256_set1_epi32(0x10000);
    __m256i u = _mm256_castps_si256(f);
    __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(u, bit16), bit16);     /* -1: lsb set */
    __m256i rne = _mm256_sub_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd);
    __m256i quiet = quiet_known ? u : _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    return _mm256_srli_epi32(_mm256_blendv_epi8(rne, quiet, nan), 16);        /* <= 0xffff */
}

static inline void FA_FN(st8_bf16)(uint16_t *p, __m256 f)
{
    __m256i r = FA_FN(bf16x8_bits)(f, 0);
    _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(r),
                                                    _mm256_extracti128_si256(r, 1)));
}

/* Sixteen lanes (f0: elements 0-7, f1: 8-15) in one 32-byte store: one pack and one
   cross-lane permute per sixteen elements instead of an extract and a pack per eight.
   quiet_known as in bf16x8_bits (the float16 and float32 stores ignore it). */
static FA_ALWAYS_INLINE void FA_FN(st16_bf16)(uint16_t *p, __m256 f0, __m256 f1, int quiet_known)
{
    __m256i r = _mm256_packus_epi32(FA_FN(bf16x8_bits)(f0, quiet_known),
                                    FA_FN(bf16x8_bits)(f1, quiet_known));
    _mm256_storeu_si256((__m256i *)p, _mm256_permute4x64_epi64(r, 0xd8));
}

static inline void FA_FN(st16_f16)(uint16_t *p, __m256 f0, __m256 f1, int quiet_known)
{
    (void)quiet_known;
    FA_FN(st8_f16)(p, f0);
    FA_FN(st8_f16)(p + 8, f1);
}

static inline void FA_FN(st16_f32)(float *p, __m256 f0, __m256 f1, int quiet_known)
{
    (void)quiet_known;
    _mm256_storeu_ps(p, f0);
    _mm256_storeu_ps(p + 8, f1);
}

#define FA_HALF_ROWS(T)                                                                         \
static void FA_FN(widen_##T)(fa_ssize_t n, float *dst, const uint16_t *src)                    \
{                                                                                               \
    fa_ssize_t i = 0;                                                                           \
    for (; i + 8 <= n; i += 8)                                                                  \
        _mm256_storeu_ps(dst + i, FA_FN(ld8_##T)(src + i));                                    \
    for (; i < n; i++)                                                                          \
        dst[i] = FA_FN(T##_to_f32)(src[i]);                                                     \
}                                                                                               \
FA_MAYBE_UNUSED static void FA_FN(narrow_##T)(fa_ssize_t n, uint16_t *dst, const float *src)   \
{                                                                                               \
    fa_ssize_t i = 0;                                                                           \
    for (; i + 8 <= n; i += 8)                                                                  \
        FA_FN(st8_##T)(dst + i, _mm256_loadu_ps(src + i));                                     \
    for (; i < n; i++)                                                                          \
        dst[i] = FA_FN(f32_to_##T)(src[i]);                                                     \
}
FA_HALF_ROWS(f16)
FA_HALF_ROWS(bf16)
#undef FA_HALF_ROWS

#else   /* generic x86-64 / other architectures: the scalar bit operations */
/* FA_HALF_ROW(name, D, S, conv): dst[i] = conv(src[i]) for i < n, D *dst, const S *src. */
#define FA_HALF_ROW(name, D, S, conv)                                                           \
static void FA_FN(name)(fa_ssize_t n, D *dst, const S *src)                                     \
{                                                                                               \
    fa_ssize_t i;                                                                               \
    for (i = 0; i < n; i++)                                                                     \
        dst[i] = FA_FN(conv)(src[i]);                                                           \
}
FA_HALF_ROW(widen_f16, float, uint16_t, f16_to_f32)
FA_HALF_ROW(widen_bf16, float, uint16_t, bf16_to_f32)
FA_HALF_ROW(narrow_f16, uint16_t, float, f32_to_f16)
FA_HALF_ROW(narrow_bf16, uint16_t, float, f32_to_bf16)
#undef FA_HALF_ROW
#endif
