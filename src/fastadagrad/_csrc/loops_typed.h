/* The AdaGrad loops for one floating type, included twice by loops.h (float, then double).
 * Before inclusion: FA_T (float|double), FA_U (uint32_t|uint64_t, same size), FA_SFX (f32|f64),
 * FA_SQRT (sqrtf|sqrt), FA_EXP_MASK (the exponent bits), FA_FN(name) (ISA-prefixed names).
 *
 * Per element, bit-identical to the NumPy twin (reference.py), in this order:
 *     g = grad * sign (-1 when maximizing);  g = g + wd * param (wd != 0)
 *     param = param - param * dwd * clr (dwd != 0)
 *     accum = accum + g * g;  denom = sqrt(accum + eps_in) + eps_out  (one eps is 0: exact)
 *     param = param - (clr * g) / denom   (unchanged where accum == 0 if zero_if_accum_zero)
 * The three switches become compile-time constants of eight loop copies: no branch is left in
 * any loop, which gcc then vectorises for float and double on every ISA (runtime switches left
 * some float64 combinations scalar, 8x slower; bitwise selects vectorised but ran 1.5-2x slower).
 * After changing a loop, run benchmarks/loop_variants.py: it times every combination on every ISA.
 */

#define FA_TN_(name, sfx) name##_##sfx
#define FA_TN(name, sfx) FA_TN_(name, sfx)
#define FA_TFN(name) FA_FN(FA_TN(name, FA_SFX))

/* (c ? a : b) on the bits: no branch for gcc to if-convert (it does not if-convert the plain
   ternary of the optax zero mask for SSE2/AVX2, leaving that loop scalar). */
static inline FA_T FA_TFN(select)(int c, FA_T a, FA_T b)
{
    FA_U ia, ib, m = (FA_U)0 - (FA_U)(c != 0);
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    ia = (ia & m) | (ib & ~m);
    memcpy(&a, &ia, sizeof a);
    return a;
}

/* Every option folded into constants of the element type. */
typedef struct {
    FA_T sign, clr, wd, dwd, eps_in, eps_out;
} FA_TFN(coef_t);

static inline FA_TFN(coef_t) FA_TFN(coefficients)(const DenseOpts *o)
{
    FA_TFN(coef_t) c;
    c.sign = (FA_T)((o->maximize ? -1.0 : 1.0) * o->grad_scale);   /* clipping folded in */
    c.clr = (FA_T)o->lr;
    c.wd = (FA_T)o->weight_decay;
    c.dwd = (FA_T)o->decoupled_weight_decay;
    c.eps_in = (FA_T)(o->eps_inside ? o->eps : 0.0);
    c.eps_out = (FA_T)(o->eps_inside ? 0.0 : o->eps);
    return c;
}

/* One element: update *a, return the new param. */
static FA_ALWAYS_INLINE FA_T FA_TFN(element)(FA_T p, FA_T g, FA_T *a, const FA_TFN(coef_t) *c,
                                              int decay, int decoupled, int zero_mask)
{
    FA_T acc, upd;
    g = g * c->sign;
    if (decay)
        g = g + c->wd * p;
    if (decoupled)
        p = p - p * c->dwd * c->clr;
    acc = *a + g * g;
    *a = acc;
    upd = p - (c->clr * g) / (FA_SQRT(acc + c->eps_in) + c->eps_out);
    if (zero_mask)
        upd = FA_TFN(select)(acc == 0, p, upd);
    return upd;
}

#include "family_typed.h"   /* issue 14: update_slots=False, Keras duplicates, family rules */

static FA_ALWAYS_INLINE void FA_TFN(dense_loop)(fa_ssize_t n, FA_T *param, const FA_T *grad,
                                                FA_T *accum, const FA_TFN(coef_t) *c0,
                                                int decay, int decoupled, int zero_mask)
{
    const FA_TFN(coef_t) c = *c0;
    fa_ssize_t i;
    for (i = 0; i < n; i++)
        param[i] = FA_TFN(element)(param[i], grad[i], &accum[i], &c, decay, decoupled, zero_mask);
}

/* Contiguous AdaGrad step over n elements. */
static void FA_TFN(dense)(fa_ssize_t n, FA_T *param, const FA_T *grad, FA_T *accum,
                          const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    int variant = ((o->weight_decay != 0) << 2) | ((o->decoupled_weight_decay != 0) << 1)
                  | (o->zero_if_accum_zero != 0);
    if (o->skip_accumulate) {
        FA_TFN(apply_dense)(n, param, grad, accum, o);
        return;
    }
    switch (variant) {
    case 0: FA_TFN(dense_loop)(n, param, grad, accum, &c, 0, 0, 0); break;
    case 1: FA_TFN(dense_loop)(n, param, grad, accum, &c, 0, 0, 1); break;
    case 2: FA_TFN(dense_loop)(n, param, grad, accum, &c, 0, 1, 0); break;
    case 3: FA_TFN(dense_loop)(n, param, grad, accum, &c, 0, 1, 1); break;
    case 4: FA_TFN(dense_loop)(n, param, grad, accum, &c, 1, 0, 0); break;
    case 5: FA_TFN(dense_loop)(n, param, grad, accum, &c, 1, 0, 1); break;
    case 6: FA_TFN(dense_loop)(n, param, grad, accum, &c, 1, 1, 0); break;
    default: FA_TFN(dense_loop)(n, param, grad, accum, &c, 1, 1, 1); break;
    }
}

/* The same element step over operands with byte strides sp, sg, sa (views updated in place). */
static void FA_TFN(strided)(fa_ssize_t n, FA_T *param, fa_ssize_t sp, const FA_T *grad,
                            fa_ssize_t sg, FA_T *accum, fa_ssize_t sa, const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0;
    int zero_mask = o->zero_if_accum_zero != 0;
    fa_ssize_t i;
    if (o->skip_accumulate) {
        FA_TFN(apply_strided)(n, param, sp, grad, sg, accum, sa, o);
        return;
    }
    for (i = 0; i < n; i++) {
        FA_T *p = (FA_T *)((char *)param + i * sp);
        *p = FA_TFN(element)(*p, *(const FA_T *)((const char *)grad + i * sg),
                             (FA_T *)((char *)accum + i * sa), &c, decay, decoupled, zero_mask);
    }
}

#if FA_VECTOR_EXT
typedef FA_T FA_TFN(lanes_t) __attribute__((vector_size(8 * sizeof(FA_T))));
#endif

/* Row-wise AdaGrad on one row of d elements with one accumulator:
 *     accum += mean(g*g); row -= (clr * g) / (sqrt(accum) + eps)   [or sqrt(accum + eps)]
 * The sum of squares has a fixed order on every ISA: 8 lanes, lane k sums the elements
 * j = k, k + 8, k + 16, ... left to right, then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7));
 * mean = sum / d. (reference.py does the same.) */
static FA_ALWAYS_INLINE void FA_TFN(rowwise_loop)(fa_ssize_t d, FA_T *row, const FA_T *grad,
                                                  FA_T *accum, const FA_TFN(coef_t) *c,
                                                  int decay)
{
    FA_T lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    FA_T t, acc, denom;
    fa_ssize_t j, d8 = d - d % 8;
#if FA_VECTOR_EXT
    /* The 8 lanes as one vector of 8 (gcc/clang vector extensions: element-wise IEEE
     * operations, the same as the scalar loop below, lane by lane). Left to gcc, the scalar
     * loop became a shuffle-heavy outer-loop vectorisation with 512-bit vectors (2x slower
     * than AVX2 at D = 128 on an Intel Xeon), and scalar code at some constant widths. */
    FA_TFN(lanes_t) lv = {0, 0, 0, 0, 0, 0, 0, 0}, gv, rv;
    FA_NO_UNROLL
    for (j = 0; j < d8; j += 8) {
        memcpy(&gv, grad + j, sizeof gv);
        gv = gv * c->sign;
        if (decay) {
            memcpy(&rv, row + j, sizeof rv);
            gv = gv + c->wd * rv;
        }
        lv = lv + gv * gv;
    }
    memcpy(lane, &lv, sizeof lane);
#else
    fa_ssize_t k;
    for (j = 0; j < d8; j += 8) {
        for (k = 0; k < 8; k++) {
            t = grad[j + k] * c->sign;
            if (decay)
                t = t + c->wd * row[j + k];
            lane[k] = lane[k] + t * t;
        }
    }
#endif
    for (j = d8; j < d; j++) {
        t = grad[j] * c->sign;
        if (decay)
            t = t + c->wd * row[j];
        lane[j - d8] = lane[j - d8] + t * t;
    }
    acc = *accum + (((lane[0] + lane[1]) + (lane[2] + lane[3]))
                    + ((lane[4] + lane[5]) + (lane[6] + lane[7]))) / (FA_T)d;
    *accum = acc;
    denom = FA_SQRT(acc + c->eps_in) + c->eps_out;
    FA_IVDEP
    for (j = 0; j < d; j++) {
        t = grad[j] * c->sign;
        if (decay)
            t = t + c->wd * row[j];
        row[j] = row[j] - (c->clr * t) / denom;
    }
}

static void FA_TFN(rowwise)(fa_ssize_t d, FA_T *row, const FA_T *grad, FA_T *accum,
                            const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    if (o->skip_accumulate)
        FA_TFN(apply_rowwise)(d, row, grad, accum, o);
    else if (o->weight_decay != 0)
        FA_TFN(rowwise_loop)(d, row, grad, accum, &c, 1);
    else
        FA_TFN(rowwise_loop)(d, row, grad, accum, &c, 0);
}

#include "sparse_rows_typed.h"   /* issue 12: rows of fixed widths */

/* Update table rows rows[0..count) with the gradient rows src[0..count), or, when src is NULL,
 * the contiguous rows grads[0..count * d) (element-wise: accum rows of d; row-wise: one
 * accumulator per row), prefetching `ahead` rows ahead (ahead >= 0).
 * The options are decoded once for the whole run of rows. Rows (element-wise or row-wise)
 * whose width is one of a few fixed widths take a loop of sparse_rows_typed.h (same bytes). */
static void FA_TFN(sparse_rows)(fa_ssize_t count, const int64_t *rows, const FA_T **src,
                                const FA_T *grads, FA_T *table, FA_T *accum, fa_ssize_t d,
                                int is_rowwise, fa_ssize_t ahead, const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    int decay = o->weight_decay != 0;
    int general = o->zero_if_accum_zero || o->decoupled_weight_decay != 0;
    fa_ssize_t u, nbytes = d * (fa_ssize_t)sizeof(FA_T);
    int t_last, a_last;
    if (!is_rowwise
            && FA_TFN(sparse_rows_fixed)(count, rows, src, grads, table, accum, d, ahead, &c, o))
        return;
    if (is_rowwise
            && FA_TFN(sparse_rowwise_fixed)(count, rows, src, grads, table, accum, d, ahead, &c,
                                            o))
        return;
    t_last = fa_rows_straddle(table, nbytes);
    a_last = fa_rows_straddle(accum, nbytes);
    for (u = 0; u < count; u++) {
        int64_t r = rows[u];
        const FA_T *g = FA_GRAD_ROW(src, grads, u, d);
        if (ahead > 0 && u + ahead < count) {
            fa_prefetch_row(table + rows[u + ahead] * d, nbytes, t_last);
            if (is_rowwise)
                FA_PREFETCH(accum + rows[u + ahead]);
            else
                fa_prefetch_row(accum + rows[u + ahead] * d, nbytes, a_last);
        }
        if (o->skip_accumulate) {
            if (is_rowwise)
                FA_TFN(apply_rowwise)(d, table + r * d, g, accum + r, o);
            else
                FA_TFN(apply_dense)(d, table + r * d, g, accum + r * d, o);
        } else if (is_rowwise) {
            if (decay)
                FA_TFN(rowwise_loop)(d, table + r * d, g, accum + r, &c, 1);
            else
                FA_TFN(rowwise_loop)(d, table + r * d, g, accum + r, &c, 0);
        } else if (general) {
            FA_TFN(dense)(d, table + r * d, g, accum + r * d, o);
        } else if (decay) {
            FA_TFN(dense_loop)(d, table + r * d, g, accum + r * d, &c, 1, 0, 0);
        } else {
            FA_TFN(dense_loop)(d, table + r * d, g, accum + r * d, &c, 0, 0, 0);
        }
    }
}

/* dst += src (merging the gradients of duplicate indices, in order of appearance). */
static void FA_TFN(add_into)(fa_ssize_t n, FA_T *dst, const FA_T *src)
{
    fa_ssize_t i;
    for (i = 0; i < n; i++)
        dst[i] = dst[i] + src[i];
}

/* 1 if no element is NaN or +-inf (exponent bits all ones): a vectorised integer test on the
   bits, read through memcpy (no type punning through pointers). */
static int FA_TFN(all_finite)(fa_ssize_t n, const FA_T *x)
{
    FA_U bad = 0, u;
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        memcpy(&u, &x[i], sizeof u);
        bad |= (FA_U)((u & FA_EXP_MASK) == FA_EXP_MASK);
    }
    return bad == 0;
}

/* Memory-bandwidth probe with AdaGrad's traffic (3 reads, 2 writes) and no sqrt/div. */
static void FA_TFN(probe)(fa_ssize_t n, FA_T *x, const FA_T *y, FA_T *z)
{
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        FA_T t = z[i] + y[i];
        z[i] = t;
        x[i] = x[i] - t;
    }
}

#include "clip_typed.h"   /* issue 14: clipping by value (clipvalue) */

#undef FA_TFN
#undef FA_TN
#undef FA_TN_
