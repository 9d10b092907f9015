/* Types of the AdaGrad-family loops (issue 14), included by kernel_table.h: the options of the
 * rules other than the plain AdaGrad step, and the signatures of their KernelTable entries.
 *
 * Rules (FamilyOpts.rule), per element, in the arrays' dtype (see family_typed.h):
 *   FA_RULE_PROXIMAL  FOBOS / TF ApplyProximalAdagrad: s1 = accumulator
 *   FA_RULE_DA        AdaGrad dual averaging / TF ApplyAdagradDA: s1 = sum of g, s2 = sum of g*g
 *   FA_RULE_LAGGED    GloVe / LightFM: divide by the accumulator from before this gradient
 */
#ifndef FASTADAGRAD_FAMILY_TABLE_H
#define FASTADAGRAD_FAMILY_TABLE_H

enum { FA_RULE_PROXIMAL = 1, FA_RULE_DA = 2, FA_RULE_LAGGED = 3 };

typedef struct FamilyOpts {
    int rule;        /* FA_RULE_* */
    double lr;
    double l1;       /* proximal, DA */
    double l2;       /* proximal, DA */
    double step;     /* DA: the global step t */
    /* clipping (the gradient, before the rule): g = grad * grad_scale (clipnorm, 1: none),
       then g = min(max(g, -clipvalue), clipvalue) when clipvalue > 0 (0: none) */
    double grad_scale;
    double clipvalue;
} FamilyOpts;

typedef void (*fam_dense_f32_t)(fa_ssize_t n, float *param, const float *grad, float *s1,
                                float *s2, const FamilyOpts *o);
typedef void (*fam_dense_f64_t)(fa_ssize_t n, double *param, const double *grad, double *s1,
                                double *s2, const FamilyOpts *o);
typedef void (*fam_strided_f32_t)(fa_ssize_t n, float *param, fa_ssize_t sp, const float *grad,
                                  fa_ssize_t sg, float *s1, fa_ssize_t ss1, float *s2,
                                  fa_ssize_t ss2, const FamilyOpts *o);
typedef void (*fam_strided_f64_t)(fa_ssize_t n, double *param, fa_ssize_t sp, const double *grad,
                                  fa_ssize_t sg, double *s1, fa_ssize_t ss1, double *s2,
                                  fa_ssize_t ss2, const FamilyOpts *o);
/* Rows rows[0..count) of an (., d) table and its states, gradient rows src[0..count) (or,
   when src is NULL, the contiguous rows grads[0..count * d)), in order (a row may repeat: each
   occurrence is applied in turn). */
typedef void (*fam_rows_f32_t)(fa_ssize_t count, const int64_t *rows, const float **src,
                               const float *grads, float *table, float *s1, float *s2,
                               fa_ssize_t d, fa_ssize_t ahead, const FamilyOpts *o);
typedef void (*fam_rows_f64_t)(fa_ssize_t count, const int64_t *rows, const double **src,
                               const double *grads, double *table, double *s1, double *s2,
                               fa_ssize_t d, fa_ssize_t ahead, const FamilyOpts *o);
/* Keras 3's sparse duplicates: for each unique row u (rows[u]), its occurrences
   src[start[u]..start[u+1]) first all add g*g to the accumulator row, in order, then each
   subtracts its update computed with the accumulator after all the additions. */
typedef void (*keras_rows_f32_t)(fa_ssize_t nu, const int64_t *rows, const fa_ssize_t *start,
                                 const float **src, float *table, float *accum, fa_ssize_t d,
                                 fa_ssize_t ahead, const DenseOpts *o);
typedef void (*keras_rows_f64_t)(fa_ssize_t nu, const int64_t *rows, const fa_ssize_t *start,
                                 const double **src, double *table, double *accum,
                                 fa_ssize_t d, fa_ssize_t ahead, const DenseOpts *o);

/* Sum of squares of n <= FA_CLIP_BLOCK elements in double, in a fixed order: 8 lanes, lane k
   sums x[k]^2, x[k+8]^2, ... left to right, then ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). */
#define FA_CLIP_BLOCK 4096

/* Clipping by value (Keras' clipvalue, torch's clip_grad_value_): the plain AdaGrad loops with
   every gradient element clipped to [-clipvalue, clipvalue] first (NaN kept), in the loop: the
   same options as their unclipped entries (DenseOpts is frozen: the bound is an extra
   argument). Element-wise only (no row-wise accumulator). clip_rows: the rows of a sparse
   batch as sparse_rows with is_rowwise = 0. clip_into: dst = clip(src) (accumulate = 0) or
   dst + clip(src) (the "sum" merge of clipped duplicate rows). */
typedef void (*dense_clip_f32_t)(fa_ssize_t n, float *param, const float *grad, float *accum,
                                 const DenseOpts *o, double clipvalue);
typedef void (*dense_clip_f64_t)(fa_ssize_t n, double *param, const double *grad, double *accum,
                                 const DenseOpts *o, double clipvalue);
typedef void (*strided_clip_f32_t)(fa_ssize_t n, float *param, fa_ssize_t sp, const float *grad,
                                   fa_ssize_t sg, float *accum, fa_ssize_t sa, const DenseOpts *o,
                                   double clipvalue);
typedef void (*strided_clip_f64_t)(fa_ssize_t n, double *param, fa_ssize_t sp,
                                   const double *grad, fa_ssize_t sg, double *accum,
                                   fa_ssize_t sa, const DenseOpts *o, double clipvalue);
typedef void (*clip_rows_f32_t)(fa_ssize_t count, const int64_t *rows, const float **src,
                                float *table, float *accum, fa_ssize_t d, fa_ssize_t ahead,
                                const DenseOpts *o, double clipvalue);
typedef void (*clip_rows_f64_t)(fa_ssize_t count, const int64_t *rows, const double **src,
                                double *table, double *accum, fa_ssize_t d, fa_ssize_t ahead,
                                const DenseOpts *o, double clipvalue);
typedef void (*keras_clip_rows_f32_t)(fa_ssize_t nu, const int64_t *rows,
                                      const fa_ssize_t *start, const float **src, float *table,
                                      float *accum, fa_ssize_t d, fa_ssize_t ahead,
                                      const DenseOpts *o, double clipvalue);
typedef void (*keras_clip_rows_f64_t)(fa_ssize_t nu, const int64_t *rows,
                                      const fa_ssize_t *start, const double **src, double *table,
                                      double *accum, fa_ssize_t d, fa_ssize_t ahead,
                                      const DenseOpts *o, double clipvalue);
typedef void (*clip_into_f32_t)(fa_ssize_t n, float *dst, const float *src, double clipvalue,
                                int accumulate);
typedef void (*clip_into_f64_t)(fa_ssize_t n, double *dst, const double *src, double clipvalue,
                                int accumulate);
typedef double (*sumsq_f32_t)(fa_ssize_t n, const float *x);
typedef double (*sumsq_f64_t)(fa_ssize_t n, const double *x);

#endif
