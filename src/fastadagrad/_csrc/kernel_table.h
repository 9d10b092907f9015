/* The C types shared by the per-ISA loop units (isa_*.c) and the dispatcher (kernels.pyx).
 *
 * Each isa_<level>.c compiles the loops of loops.h with that level's -m flags and defines one
 * `const KernelTable fa_table_<level>`: static data (function pointers), no code runs to fill it,
 * so linking an ISA unit into the extension never executes an instruction the CPU may lack.
 * fa_kernel_table() (dispatch.c, baseline flags) hands out a table only if the CPU supports it.
 */
#ifndef FASTADAGRAD_KERNEL_TABLE_H
#define FASTADAGRAD_KERNEL_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef ptrdiff_t fa_ssize_t;   /* Py_ssize_t without Python.h */

typedef struct DenseOpts {
    double lr;                     /* the effective rate clr = lr / (1 + (step - 1) * lr_decay) */
    double eps;
    double weight_decay;           /* coupled (torch): g = g + weight_decay * param; skipped when 0 */
    double decoupled_weight_decay; /* Keras 3: param = param - param * wd * clr first; skipped when 0 */
    int maximize;                  /* g = -grad */
    int eps_inside;                /* denom = sqrt(accum + eps) instead of sqrt(accum) + eps */
    int zero_if_accum_zero;        /* optax: no update where the new accumulator is exactly 0 */
    int skip_accumulate;           /* TF update_slots=False: accum is read, not updated */
    double grad_scale;             /* clipping by norm: g = grad * grad_scale (1: none) */
} DenseOpts;

typedef void (*dense_f32_t)(fa_ssize_t n, float *param, const float *grad, float *accum,
                            const DenseOpts *o);
typedef void (*dense_f64_t)(fa_ssize_t n, double *param, const double *grad, double *accum,
                            const DenseOpts *o);
typedef void (*strided_f32_t)(fa_ssize_t n, float *param, fa_ssize_t sp, const float *grad,
                              fa_ssize_t sg, float *accum, fa_ssize_t sa, const DenseOpts *o);
typedef void (*strided_f64_t)(fa_ssize_t n, double *param, fa_ssize_t sp, const double *grad,
                              fa_ssize_t sg, double *accum, fa_ssize_t sa, const DenseOpts *o);
/* sparse rows: row u's gradient is src[u], or grads + u * d when src is NULL (contiguous) */
typedef void (*rows_f32_t)(fa_ssize_t count, const int64_t *rows, const float **src,
                           const float *grads, float *table, float *accum, fa_ssize_t d,
                           int is_rowwise, fa_ssize_t ahead, const DenseOpts *o);
typedef void (*rows_f64_t)(fa_ssize_t count, const int64_t *rows, const double **src,
                           const double *grads, double *table, double *accum, fa_ssize_t d,
                           int is_rowwise, fa_ssize_t ahead, const DenseOpts *o);
typedef void (*add_f32_t)(fa_ssize_t n, float *dst, const float *src);
typedef void (*add_f64_t)(fa_ssize_t n, double *dst, const double *src);
typedef int (*finite_f32_t)(fa_ssize_t n, const float *x);
typedef int (*finite_f64_t)(fa_ssize_t n, const double *x);
typedef void (*probe_f32_t)(fa_ssize_t n, float *x, const float *y, float *z);
typedef void (*probe_f64_t)(fa_ssize_t n, double *x, const double *y, double *z);
/* dst[0..b) = idx (int64 / int32 widened), checked as copied: 1 if all in [0, n), else 0 */
typedef int (*copy_checked_i64_t)(fa_ssize_t b, const int64_t *idx, fa_ssize_t n, int64_t *dst);
typedef int (*copy_checked_i32_t)(fa_ssize_t b, const int32_t *idx, fa_ssize_t n, int64_t *dst);

#include "family_table.h"

/* ---- mixed precision (issue 15): float16 / bfloat16 storage with float32 arithmetic ---- */
enum { FA_DT_F32 = 0, FA_DT_F16 = 1, FA_DT_BF16 = 2 };   /* storage types */
typedef struct MixedTypes {
    int param;     /* FA_DT_F16 or FA_DT_BF16 */
    int grad;      /* the param's type or FA_DT_F32 */
    int accum;     /* the param's type or FA_DT_F32 */
} MixedTypes;
/* (n, param, grad, accum, master or NULL, types, opts): contiguous; master is float32 */
typedef void (*dense_mixed_t)(fa_ssize_t n, void *param, const void *grad, void *accum,
                              float *master, const MixedTypes *t, const DenseOpts *o);
/* the same with byte strides (sp, sg, sa, sm) */
typedef void (*strided_mixed_t)(fa_ssize_t n, void *param, fa_ssize_t sp, const void *grad,
                                fa_ssize_t sg, void *accum, fa_ssize_t sa, float *master,
                                fa_ssize_t sm, const MixedTypes *t, const DenseOpts *o);
/* dst[0..n) = src widened to float32 (src of storage type `type`) */
typedef void (*to_float_t)(fa_ssize_t n, float *dst, const void *src, int type);
/* stochastic rounding of the param's store: keys from (seed, step) (_stochastic.py) and the
   counter (C-order element index) of the call's first element */
typedef struct SrKey {
    uint32_t k0, k1;
    int64_t index0;
} SrKey;
typedef void (*dense_mixed_sr_t)(fa_ssize_t n, void *param, const void *grad, void *accum,
                                 float *master, const MixedTypes *t, const DenseOpts *o,
                                 const SrKey *k);
/* ---- end mixed precision types ---- */

typedef struct KernelTable {
    const char *isa;
    dense_f32_t dense_f32;
    dense_f64_t dense_f64;
    strided_f32_t strided_f32;
    strided_f64_t strided_f64;
    dense_f32_t rowwise_f32;       /* same signature: (d, row, grad, &accum_of_row, opts) */
    dense_f64_t rowwise_f64;
    rows_f32_t sparse_rows_f32;    /* (count, rows, src, grads, table, accum, d, rowwise, ahead, opts) */
    rows_f64_t sparse_rows_f64;
    add_f32_t add_into_f32;
    add_f64_t add_into_f64;
    finite_f32_t all_finite_f32;
    finite_f64_t all_finite_f64;
    probe_f32_t probe_f32;
    probe_f64_t probe_f64;
    /* issue 14: the AdaGrad family (family_table.h, family_typed.h) */
    fam_dense_f32_t family_dense_f32;
    fam_dense_f64_t family_dense_f64;
    fam_strided_f32_t family_strided_f32;
    fam_strided_f64_t family_strided_f64;
    fam_rows_f32_t family_rows_f32;
    fam_rows_f64_t family_rows_f64;
    keras_rows_f32_t keras_rows_f32;
    keras_rows_f64_t keras_rows_f64;
    sumsq_f32_t sumsq_f32;         /* clipping: sum of squares of one block, fixed order */
    sumsq_f64_t sumsq_f64;
    /* mixed precision (issue 15) */
    dense_mixed_t dense_mixed;
    strided_mixed_t strided_mixed;
    to_float_t to_float;
    /* issue 14: clipping by value (family_table.h, clip_typed.h) */
    dense_clip_f32_t dense_clip_f32;
    dense_clip_f64_t dense_clip_f64;
    strided_clip_f32_t strided_clip_f32;
    strided_clip_f64_t strided_clip_f64;
    clip_rows_f32_t clip_rows_f32;
    clip_rows_f64_t clip_rows_f64;
    keras_clip_rows_f32_t keras_clip_rows_f32;
    keras_clip_rows_f64_t keras_clip_rows_f64;
    clip_into_f32_t clip_into_f32;
    clip_into_f64_t clip_into_f64;
    dense_mixed_sr_t dense_mixed_sr;   /* stochastic rounding (issue 15 §1) */
    copy_checked_i64_t copy_checked_i64;   /* the sparse indices' private, range-checked copy */
    copy_checked_i32_t copy_checked_i32;
} KernelTable;

/* ISA levels compiled into this build, best first, NULL-terminated (dispatch.c). */
extern const char *const fa_isa_compiled[];
/* 1 if this CPU (and OS) can run ISA level `isa` ("avx512", "avx2", "generic"), else 0. */
int fa_cpu_supports(const char *isa);
/* The table of ISA level `isa` if it is compiled in and this CPU supports it, else NULL. */
const KernelTable *fa_kernel_table(const char *isa);
/* key->k0, key->k1 of one stochastic-rounding call from (seed, step): _stochastic.keys (the
   definition) in C, built on half.h's hash32 (isa_generic.c); key->index0 is left alone. */
void fa_sr_keys(uint64_t seed, int64_t step, SrKey *key);

#ifdef __cplusplus
}
#endif
#endif
