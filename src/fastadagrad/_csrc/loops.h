/* The AdaGrad loops, written once and compiled once per ISA level: isa_<level>.c defines FA_ISA
 * (the level's name as a token) and includes this file; setup.py compiles each unit with that
 * level's -m flags plus -O3 -fno-math-errno (so sqrt vectorises) and -ffp-contract=off (no FMA:
 * NumPy's rounding). A unit holds these loops and one const table of pointers to them, nothing
 * else: no code of it runs unless the dispatcher chose its table for this CPU.
 */
#include <math.h>
#include <string.h>
#include "kernel_table.h"

#define FA_CAT3_(a, b, c) a##_##b##_##c
#define FA_CAT3(a, b, c) FA_CAT3_(a, b, c)
#define FA_FN(name) FA_CAT3(fa, FA_ISA, name)          /* fa_<isa>_<name> */
#define FA_STR_(x) #x
#define FA_STR(x) FA_STR_(x)

#if defined(__GNUC__) || defined(__clang__)
#define FA_ALWAYS_INLINE inline __attribute__((always_inline))
#define FA_MAYBE_UNUSED __attribute__((unused))   /* a helper one ISA unit's loops do not call */
#define FA_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
#else
#define FA_ALWAYS_INLINE inline
#define FA_MAYBE_UNUSED
#define FA_PREFETCH(p) ((void)0)
#endif

/* gcc/clang vector extensions (vector_size): the row-wise step's 8 summation lanes. */
#if defined(__GNUC__) || defined(__clang__)
#define FA_VECTOR_EXT 1
#else
#define FA_VECTOR_EXT 0
#endif

/* A loop with no dependence between its iterations (FA_IVDEP; the caller's guarantee: in a
 * validated call the arrays it writes share no byte with those it reads), and a loop that must
 * stay a loop (FA_NO_UNROLL): with a small constant trip count (a fixed row width) gcc
 * otherwise unrolls it completely before the vectoriser sees it, and leaves it scalar. */
#if defined(__GNUC__) && !defined(__clang__)
#define FA_NO_UNROLL _Pragma("GCC unroll 1")
#define FA_IVDEP _Pragma("GCC ivdep") FA_NO_UNROLL
#elif defined(__clang__)
#define FA_NO_UNROLL
#define FA_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define FA_NO_UNROLL
#define FA_IVDEP
#endif

/* Row u's gradient in the sparse loops: src[u], or row u of the contiguous grads when src is
 * NULL (the caller's (b, d) array as passed; no pointer array to build). */
#define FA_GRAD_ROW(src, grads, u, d) ((src) != NULL ? (src)[u] : (grads) + (u) * (d))

static inline void FA_FN(prefetch_bytes)(const void *p, fa_ssize_t nbytes)
{
    fa_ssize_t off;
    for (off = 0; off < nbytes; off += 64)
        FA_PREFETCH((const char *)p + off);
}
#define fa_prefetch_bytes FA_FN(prefetch_bytes)

/* 1 if some row r of an array of rows of nbytes at `base` (base + r * nbytes) reaches into one
 * more line than (nbytes - 1) / 64 + 1, the lines prefetch_bytes asks for; 0 if none does. The
 * row offsets within a line are base % g + k * g with g = gcd(nbytes, 64), the largest
 * 64 - g + base % g, so none straddles iff base % g + (nbytes - 1) % 64 < g: e.g. rows of 32
 * bytes on a 32-byte boundary, or rows of 64k bytes on a line boundary. */
static inline int FA_FN(rows_straddle)(const void *base, fa_ssize_t nbytes)
{
    uintptr_t n = (uintptr_t)nbytes, g = n & (0 - n);     /* the lowest set bit of nbytes */
    if (g == 0 || g > 64)
        g = 64;
    return (uintptr_t)base % g + ((n - 1) & 63) >= g;
}
#define fa_rows_straddle FA_FN(rows_straddle)

/* A row's lines: prefetch_bytes' line starts, and, when `last_line` (rows_straddle of its
 * array, fixed for a loop: a predictable branch), the line of its last byte (a row need not
 * start on a cache line, so it may reach into one more line). Issue 12 §4, float32, 4,096
 * rows, 1 thread, AVX-512 Xeon; medians in one process, FBGEMM in the same runs:
 * - session 13: asking for the last line only when the line starts missed it took a compare
 *   and a branch per row that rows at random offsets mispredict half the time (D = 8, table in
 *   L2: 44-52 us against 23 us without prefetching and 22-23 us for FBGEMM);
 * - session 14: always asking for it asks twice for one line when no row straddles (rows of
 *   32 or 64 bytes on such a boundary), and out of cache a prefetch of a line already being
 *   filled stalls. 1e6 rows on 64-byte lines: D = 8 52.6-54.0 -> 46.0-47.7 us (FBGEMM
 *   41.5-47.8), D = 16 60.7-64.2 -> 50.4-53.1 us (FBGEMM 48.0-53.3); in L2 level. When only
 *   some rows straddle (32-byte rows 16 bytes past a line) the second prefetch stays on every
 *   row (level with any per-row choice there). A per-row choice without a branch (a cmov, the
 *   spare prefetch sent to an address in L1) ran faster still out of cache (D = 8: 38-42 us),
 *   for a reason not found, but up to 25% slower in L2 in some processes: not kept. */
static inline void FA_FN(prefetch_row)(const void *p, fa_ssize_t nbytes, int last_line)
{
    fa_prefetch_bytes(p, nbytes);
    if (last_line)
        FA_PREFETCH((const char *)p + nbytes - 1);
}
#define fa_prefetch_row FA_FN(prefetch_row)

/* Copy the sparse indices idx[0..b) (int64, or int32 widened) into dst, checking each value as
 * it is copied (one read of each, so the value checked is the value stored): 1 if every entry
 * lies in [0, n), else 0. Branch-free: v is in [0, n) exactly when neither v nor n - 1 - v is
 * negative, so the sign bit of the OR of all those says whether any is outside; only adds and
 * ORs, which every ISA level vectorises (SSE2 has no 64-bit compare). */
#define FA_COPY_CHECKED(name, IT)                                                             \
    static int FA_FN(name)(fa_ssize_t b, const IT *idx, fa_ssize_t n, int64_t *dst)           \
    {                                                                                         \
        const uint64_t last = (uint64_t)n - 1;   /* n = 0: every v >= 0 fails via ~v */       \
        uint64_t outside = 0;                                                                 \
        fa_ssize_t i;                                                                         \
        for (i = 0; i < b; i++) {                                                             \
            int64_t v = idx[i];                                                               \
            dst[i] = v;                                                                       \
            outside |= (uint64_t)v | (last - (uint64_t)v);                                    \
        }                                                                                     \
        return (outside >> 63) == 0;                                                          \
    }
FA_COPY_CHECKED(copy_checked_i64, int64_t)
FA_COPY_CHECKED(copy_checked_i32, int32_t)
#undef FA_COPY_CHECKED

#define FA_T float
#define FA_U uint32_t
#define FA_SFX f32
#define FA_SQRT sqrtf
#define FA_EXP_MASK 0x7f800000u
#include "loops_typed.h"
#undef FA_T
#undef FA_U
#undef FA_SFX
#undef FA_SQRT
#undef FA_EXP_MASK

#define FA_T double
#define FA_U uint64_t
#define FA_SFX f64
#define FA_SQRT sqrt
#define FA_EXP_MASK 0x7ff0000000000000ull
#include "loops_typed.h"
#undef FA_T
#undef FA_U
#undef FA_SFX
#undef FA_SQRT
#undef FA_EXP_MASK

#include "loops_mixed.h"   /* float16 / bfloat16 storage (uses the float32 element step) */

const KernelTable FA_CAT3(fa, table, FA_ISA) = {
    FA_STR(FA_ISA),
    FA_FN(dense_f32), FA_FN(dense_f64),
    FA_FN(strided_f32), FA_FN(strided_f64),
    FA_FN(rowwise_f32), FA_FN(rowwise_f64),
    FA_FN(sparse_rows_f32), FA_FN(sparse_rows_f64),
    FA_FN(add_into_f32), FA_FN(add_into_f64),
    FA_FN(all_finite_f32), FA_FN(all_finite_f64),
    FA_FN(probe_f32), FA_FN(probe_f64),
    /* issue 14: the AdaGrad family */
    FA_FN(family_dense_f32), FA_FN(family_dense_f64),
    FA_FN(family_strided_f32), FA_FN(family_strided_f64),
    FA_FN(family_rows_f32), FA_FN(family_rows_f64),
    FA_FN(keras_rows_f32), FA_FN(keras_rows_f64),
    FA_FN(sumsq_f32), FA_FN(sumsq_f64),
    /* mixed precision (issue 15) */
    FA_FN(dense_mixed), FA_FN(strided_mixed), FA_FN(to_float),
    /* issue 14: clipping by value */
    FA_FN(dense_clip_f32), FA_FN(dense_clip_f64),
    FA_FN(strided_clip_f32), FA_FN(strided_clip_f64),
    FA_FN(clip_rows_f32), FA_FN(clip_rows_f64),
    FA_FN(keras_clip_rows_f32), FA_FN(keras_clip_rows_f64),
    FA_FN(clip_into_f32), FA_FN(clip_into_f64),
    FA_FN(dense_mixed_sr),
    FA_FN(copy_checked_i64), FA_FN(copy_checked_i32),
};
