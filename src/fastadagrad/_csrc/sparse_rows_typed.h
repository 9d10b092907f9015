/* Sparse rows of a few fixed widths (issue 12 §4: small D), element-wise and row-wise,
 * included by loops_typed.h for one floating type (FA_T, FA_SFX, FA_TFN as there).
 *
 * The dense loop on one short row pays a fixed prologue per row: gcc's runtime check that
 * param, grad and accum do not overlap, then the vector loop and its scalar tail; at D = 8-32
 * that costs as much as the arithmetic. Here the row width is a compile-time constant (one copy
 * of the loop per width of the switches below) and the row loop carries `GCC ivdep` (no
 * dependence between its iterations, which holds: in a validated call the table, accumulator
 * and gradient rows are pairwise disjoint, the merged gradients live in private scratch), so
 * gcc emits straight vector code: no overlap check, no tail. Per element it is the dense
 * loop's element step in the same order: the same bytes.
 */

/* Rows rows[0..count) of constant width w, plain AdaGrad (coupled weight decay when `decay`),
 * prefetching the lines of the table and accumulator rows `ahead` rows ahead (prefetch_row: a
 * short row may straddle two cache lines). */
static FA_ALWAYS_INLINE void FA_TFN(sparse_fixed_loop)(fa_ssize_t count, const int64_t *rows,
                                                       const FA_T **src, const FA_T *grads,
                                                       FA_T *table, FA_T *accum,
                                                       const fa_ssize_t w, fa_ssize_t ahead,
                                                       const FA_TFN(coef_t) *c0, int decay)
{
    const FA_TFN(coef_t) c = *c0;
    const fa_ssize_t nbytes = w * (fa_ssize_t)sizeof(FA_T);
    const int t_last = fa_rows_straddle(table, nbytes), a_last = fa_rows_straddle(accum, nbytes);
    fa_ssize_t u, i;
    for (u = 0; u < count; u++) {
        FA_T *row = table + rows[u] * w, *acc = accum + rows[u] * w;
        const FA_T *g = FA_GRAD_ROW(src, grads, u, w);
        if (ahead > 0 && u + ahead < count) {
            const char *t = (const char *)(table + rows[u + ahead] * w);
            const char *s = (const char *)(accum + rows[u + ahead] * w);
            fa_prefetch_row(t, nbytes, t_last);
            fa_prefetch_row(s, nbytes, a_last);
        }
        FA_IVDEP
        for (i = 0; i < w; i++)
            row[i] = FA_TFN(element)(row[i], g[i], &acc[i], &c, decay, 0, 0);
    }
}

/* Row-wise rows of constant width w: rowwise_loop (the same operations in the same order, so
 * the same bytes) with w a compile-time constant, prefetching the table row `ahead` rows ahead
 * and its accumulator. */
static FA_ALWAYS_INLINE void FA_TFN(sparse_rowwise_fixed_loop)(fa_ssize_t count,
                                                               const int64_t *rows,
                                                               const FA_T **src,
                                                               const FA_T *grads, FA_T *table,
                                                               FA_T *accum, const fa_ssize_t w,
                                                               fa_ssize_t ahead,
                                                               const FA_TFN(coef_t) *c0,
                                                               int decay)
{
    const FA_TFN(coef_t) c = *c0;
    const fa_ssize_t nbytes = w * (fa_ssize_t)sizeof(FA_T);
    const int t_last = fa_rows_straddle(table, nbytes);
    fa_ssize_t u;
    for (u = 0; u < count; u++) {
        if (ahead > 0 && u + ahead < count) {
            const char *t = (const char *)(table + rows[u + ahead] * w);
            fa_prefetch_row(t, nbytes, t_last);
            FA_PREFETCH(accum + rows[u + ahead]);
        }
        FA_TFN(rowwise_loop)(w, table + rows[u] * w, FA_GRAD_ROW(src, grads, u, w),
                             accum + rows[u], &c, decay);
    }
}

/* One case of a width switch below: `loop` (sparse_fixed_loop or sparse_rowwise_fixed_loop)
 * with the width w and the decay flag as compile-time constants. */
#define FA_SPARSE_WIDTH(loop, w)                                                              \
    case w:                                                                                   \
        if (decay)                                                                            \
            FA_TFN(loop)(count, rows, src, grads, table, accum, w, ahead, c, 1);              \
        else                                                                                  \
            FA_TFN(loop)(count, rows, src, grads, table, accum, w, ahead, c, 0);              \
        return 1;

/* 1 (rows done) if sparse_rows can take a fixed-width row-wise loop: plain or coupled weight
 * decay, d one of the widths below; else 0 (nothing done). */
static int FA_TFN(sparse_rowwise_fixed)(fa_ssize_t count, const int64_t *rows,
                                        const FA_T **src, const FA_T *grads, FA_T *table,
                                        FA_T *accum, fa_ssize_t d, fa_ssize_t ahead,
                                        const FA_TFN(coef_t) *c, const DenseOpts *o)
{
    int decay = o->weight_decay != 0;
    if (o->skip_accumulate)
        return 0;
    switch (d) {
    FA_SPARSE_WIDTH(sparse_rowwise_fixed_loop, 8)
    FA_SPARSE_WIDTH(sparse_rowwise_fixed_loop, 16)
    FA_SPARSE_WIDTH(sparse_rowwise_fixed_loop, 32)
    FA_SPARSE_WIDTH(sparse_rowwise_fixed_loop, 64)
    FA_SPARSE_WIDTH(sparse_rowwise_fixed_loop, 128)
    default:
        return 0;
    }
}

/* 1 (rows done) if sparse_rows can take a fixed-width loop: element-wise, plain or coupled
 * weight decay, d one of the widths below; else 0 (nothing done). Instructions per row at
 * D = 8/16/32/64/128 (AVX2, float32, callgrind): 33/45/84/148/276 against the dense loop's
 * 108/123/161/237/389; other widths keep the dense loop. */
static int FA_TFN(sparse_rows_fixed)(fa_ssize_t count, const int64_t *rows, const FA_T **src,
                                     const FA_T *grads, FA_T *table, FA_T *accum, fa_ssize_t d,
                                     fa_ssize_t ahead, const FA_TFN(coef_t) *c,
                                     const DenseOpts *o)
{
    int decay = o->weight_decay != 0;
    if (o->skip_accumulate || o->zero_if_accum_zero || o->decoupled_weight_decay != 0)
        return 0;
    switch (d) {
    FA_SPARSE_WIDTH(sparse_fixed_loop, 4)
    FA_SPARSE_WIDTH(sparse_fixed_loop, 8)
    FA_SPARSE_WIDTH(sparse_fixed_loop, 16)
    FA_SPARSE_WIDTH(sparse_fixed_loop, 32)
    FA_SPARSE_WIDTH(sparse_fixed_loop, 64)
    FA_SPARSE_WIDTH(sparse_fixed_loop, 128)
    default:
        return 0;
    }
}

#undef FA_SPARSE_WIDTH
