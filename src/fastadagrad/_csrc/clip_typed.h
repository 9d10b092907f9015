/* Clipping by value (Keras' clipvalue, torch's clip_grad_value_) fused into the plain AdaGrad
 * loops, for one floating type (issue 14); included at the end of loops_typed.h (same macros).
 *
 * Per element, before anything else: g = grad > hi ? hi : grad;  g = g < lo ? lo : g, with
 * hi = (FA_T)clipvalue and lo = -hi (NaN stays NaN, +-inf become +-hi); then the unclipped
 * element step of loops_typed.h (maximize's sign, weight decay, ...). No copy of the grads:
 * the clip is two selects in the loop. The switches are compile-time constants of the loop
 * copies, as in loops_typed.h. Bit-identical to reference.clip_values + the NumPy step.
 */

/* clipg(g, lo, hi): family_typed.h */

static FA_ALWAYS_INLINE void FA_TFN(dense_clip_loop)(fa_ssize_t n, FA_T *param, const FA_T *grad,
                                                     FA_T *accum, const FA_TFN(coef_t) *c0,
                                                     FA_T lo, FA_T hi, int skip, int decay,
                                                     int decoupled, int zero_mask)
{
    const FA_TFN(coef_t) c = *c0;
    fa_ssize_t i;
    if (skip) {
        for (i = 0; i < n; i++)
            param[i] = FA_TFN(apply_element)(param[i], FA_TFN(clipg)(grad[i], lo, hi), accum[i],
                                             &c, decay, decoupled, zero_mask);
    } else {
        for (i = 0; i < n; i++)
            param[i] = FA_TFN(element)(param[i], FA_TFN(clipg)(grad[i], lo, hi), &accum[i], &c,
                                       decay, decoupled, zero_mask);
    }
}

#define FA_CLIP_CASE(k, s, d, w, z) \
    case k: FA_TFN(dense_clip_loop)(n, param, grad, accum, &c, lo, hi, s, d, w, z); break;

/* Contiguous AdaGrad step with the grads clipped to [-clipvalue, clipvalue]. */
static void FA_TFN(dense_clip)(fa_ssize_t n, FA_T *param, const FA_T *grad, FA_T *accum,
                               const DenseOpts *o, double clipvalue)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    FA_T hi = (FA_T)clipvalue, lo = -hi;
    int variant = ((o->skip_accumulate != 0) << 3) | ((o->weight_decay != 0) << 2)
                  | ((o->decoupled_weight_decay != 0) << 1) | (o->zero_if_accum_zero != 0);
    switch (variant) {
    FA_CLIP_CASE(0, 0, 0, 0, 0) FA_CLIP_CASE(1, 0, 0, 0, 1)
    FA_CLIP_CASE(2, 0, 0, 1, 0) FA_CLIP_CASE(3, 0, 0, 1, 1)
    FA_CLIP_CASE(4, 0, 1, 0, 0) FA_CLIP_CASE(5, 0, 1, 0, 1)
    FA_CLIP_CASE(6, 0, 1, 1, 0) FA_CLIP_CASE(7, 0, 1, 1, 1)
    FA_CLIP_CASE(8, 1, 0, 0, 0) FA_CLIP_CASE(9, 1, 0, 0, 1)
    FA_CLIP_CASE(10, 1, 0, 1, 0) FA_CLIP_CASE(11, 1, 0, 1, 1)
    FA_CLIP_CASE(12, 1, 1, 0, 0) FA_CLIP_CASE(13, 1, 1, 0, 1)
    FA_CLIP_CASE(14, 1, 1, 1, 0)
    default: FA_TFN(dense_clip_loop)(n, param, grad, accum, &c, lo, hi, 1, 1, 1, 1); break;
    }
}
#undef FA_CLIP_CASE

/* The same over byte-strided operands (views updated in place). */
static void FA_TFN(strided_clip)(fa_ssize_t n, FA_T *param, fa_ssize_t sp, const FA_T *grad,
                                 fa_ssize_t sg, FA_T *accum, fa_ssize_t sa, const DenseOpts *o,
                                 double clipvalue)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    FA_T hi = (FA_T)clipvalue, lo = -hi;
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0;
    int zero_mask = o->zero_if_accum_zero != 0, skip = o->skip_accumulate != 0;
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        FA_T *p = (FA_T *)((char *)param + i * sp);
        FA_T *a = (FA_T *)((char *)accum + i * sa);
        FA_T g = FA_TFN(clipg)(*(const FA_T *)((const char *)grad + i * sg), lo, hi);
        if (skip)
            *p = FA_TFN(apply_element)(*p, g, *a, &c, decay, decoupled, zero_mask);
        else
            *p = FA_TFN(element)(*p, g, a, &c, decay, decoupled, zero_mask);
    }
}

/* Element-wise sparse rows, each occurrence in order, grads clipped (sparse_rows' contract). */
static void FA_TFN(clip_rows)(fa_ssize_t count, const int64_t *rows, const FA_T **src,
                              FA_T *table, FA_T *accum, fa_ssize_t d, fa_ssize_t ahead,
                              const DenseOpts *o, double clipvalue)
{
    fa_ssize_t u, nbytes = d * (fa_ssize_t)sizeof(FA_T);
    const int t_last = fa_rows_straddle(table, nbytes), a_last = fa_rows_straddle(accum, nbytes);
    for (u = 0; u < count; u++) {
        int64_t r = rows[u];
        if (ahead > 0 && u + ahead < count) {
            fa_prefetch_row(table + rows[u + ahead] * d, nbytes, t_last);
            fa_prefetch_row(accum + rows[u + ahead] * d, nbytes, a_last);
        }
        FA_TFN(dense_clip)(d, table + r * d, src[u], accum + r * d, o, clipvalue);
    }
}

/* Keras 3's sparse duplicates: for each unique row, every occurrence's g*g into the
   accumulator (in order; g = grad * (+-scale), clipped first when `clip`), then every
   occurrence's update with the accumulator after all the additions. */
static FA_ALWAYS_INLINE void FA_TFN(keras_rows_impl)(fa_ssize_t nu, const int64_t *rows,
                                                     const fa_ssize_t *start, const FA_T **src,
                                                     FA_T *table, FA_T *accum, fa_ssize_t d,
                                                     fa_ssize_t ahead, const DenseOpts *o,
                                                     int clip, double clipvalue)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    FA_T hi = (FA_T)clipvalue, lo = -hi, t;
    DenseOpts apply = *o;
    fa_ssize_t u, k, j, nbytes = d * (fa_ssize_t)sizeof(FA_T);
    const int t_last = fa_rows_straddle(table, nbytes), a_last = fa_rows_straddle(accum, nbytes);
    apply.skip_accumulate = 1;
    for (u = 0; u < nu; u++) {
        FA_T *row = table + rows[u] * d, *acc = accum + rows[u] * d;
        if (ahead > 0 && u + ahead < nu) {
            fa_prefetch_row(table + rows[u + ahead] * d, nbytes, t_last);
            fa_prefetch_row(accum + rows[u + ahead] * d, nbytes, a_last);
        }
        for (k = start[u]; k < start[u + 1]; k++) {
            const FA_T *g = src[k];
            for (j = 0; j < d; j++) {     /* g * (+-1) squared == g*g; clipnorm's scale */
                t = (clip ? FA_TFN(clipg)(g[j], lo, hi) : g[j]) * c.sign;
                acc[j] = acc[j] + t * t;
            }
        }
        for (k = start[u]; k < start[u + 1]; k++) {
            if (clip)
                FA_TFN(dense_clip)(d, row, src[k], acc, &apply, clipvalue);
            else
                FA_TFN(apply_dense)(d, row, src[k], acc, o);
        }
    }
}

static void FA_TFN(keras_rows)(fa_ssize_t nu, const int64_t *rows, const fa_ssize_t *start,
                               const FA_T **src, FA_T *table, FA_T *accum, fa_ssize_t d,
                               fa_ssize_t ahead, const DenseOpts *o)
{
    FA_TFN(keras_rows_impl)(nu, rows, start, src, table, accum, d, ahead, o, 0, 0.0);
}

static void FA_TFN(keras_clip_rows)(fa_ssize_t nu, const int64_t *rows, const fa_ssize_t *start,
                                    const FA_T **src, FA_T *table, FA_T *accum, fa_ssize_t d,
                                    fa_ssize_t ahead, const DenseOpts *o, double clipvalue)
{
    FA_TFN(keras_rows_impl)(nu, rows, start, src, table, accum, d, ahead, o, 1, clipvalue);
}

/* dst = clip(src) (accumulate = 0) or dst + clip(src): merging clipped duplicate rows. */
static void FA_TFN(clip_into)(fa_ssize_t n, FA_T *dst, const FA_T *src, double clipvalue,
                              int accumulate)
{
    FA_T hi = (FA_T)clipvalue, lo = -hi;
    fa_ssize_t i;
    if (accumulate) {
        for (i = 0; i < n; i++)
            dst[i] = dst[i] + FA_TFN(clipg)(src[i], lo, hi);
    } else {
        for (i = 0; i < n; i++)
            dst[i] = FA_TFN(clipg)(src[i], lo, hi);
    }
}
