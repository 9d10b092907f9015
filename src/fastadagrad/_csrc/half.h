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
