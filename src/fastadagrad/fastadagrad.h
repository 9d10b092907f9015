/* fastadagrad's C API: the compiled kernels, for C and C++ extensions (plain C API, pybind11,
 * nanobind, ...), in the spirit of NumPy's import_array().
 *
 *     #include "fastadagrad/fastadagrad.h"     // include_dirs=[fastadagrad.get_include()]
 *
 *     // once, in the module init (with the GIL held); -1 and a Python ImportError on failure:
 *     if (fastadagrad_import() < 0) return NULL;
 *
 *     DenseOpts opts;
 *     FastAdagrad_API->options(&opts, lr, eps, 0, weight_decay, lr_decay, step, 0);
 *     FastAdagrad_API->dense_f32(n, param, grad, accum, &opts);   // GIL not needed
 *
 * Nothing to link: fastadagrad_import() imports fastadagrad.kernels and takes a pointer to its
 * table of functions from the capsule `fastadagrad.kernels._C_API`. They are the very functions
 * the Python API runs (and `cimport fastadagrad.kernels` gives Cython): the same runtime ISA
 * choice (AVX-512/AVX2/generic, fastadagrad.kernels.set_isa), the same OpenMP split and thread
 * count (fastadagrad.set_num_threads), bit-identical results.
 *
 * What these functions do NOT check (the Python API does; here the caller owns it): pointer
 * validity and bounds, sizes, that the arrays are contiguous, aligned (to their element type)
 * and do not overlap, that sparse indices are in [0, n), and the hyper-parameters (finite,
 * >= 0, step >= 1). They never raise, never touch Python objects and need no GIL: call them
 * from any thread, with the GIL released for large arrays.
 *
 * ABI promise. The table starts with its version and its size in bytes; fields are only ever
 * APPENDED (never removed, reordered or changed in meaning or signature), and DenseOpts never
 * changes layout. So an extension built against this header keeps working with every later
 * fastadagrad, and fastadagrad_import() refuses, with an ImportError and no crash, a fastadagrad
 * older than the header (a smaller version or table). FASTADAGRAD_ABI_VERSION is bumped
 * whenever fields are appended.
 *
 * FastAdagrad_API is `static`: one pointer per translation unit. Call fastadagrad_import() in
 * each .c/.cpp file that uses it (the module import is cached, so later calls are cheap), or
 * pass the pointer around.
 */
#ifndef FASTADAGRAD_FASTADAGRAD_H
#define FASTADAGRAD_FASTADAGRAD_H

#include <Python.h>   /* first, as Python requires */
#include <stdint.h>

#include "_csrc/kernel_table.h"   /* DenseOpts: its single definition */

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the table this header declares. */
#define FASTADAGRAD_ABI_VERSION 2u
/* The capsule holding a `const FastAdagradAPI *`, attribute _C_API of fastadagrad.kernels. */
#define FASTADAGRAD_CAPSULE_NAME "fastadagrad.kernels._C_API"

typedef struct FastAdagradAPI {
    /* ---- version 1 ---- */
    uint32_t abi_version;  /* FASTADAGRAD_ABI_VERSION of the fastadagrad that filled the table */
    uint32_t size;         /* sizeof(FastAdagradAPI) there: the fields it holds */

    /* Fill `opts` for one step: opts->lr = lr / (1 + (step - 1) * lr_decay) (in double); eps
     * outside the sqrt (torch) unless eps_inside; coupled weight decay (g += weight_decay * param)
     * when weight_decay != 0; g = -grad if maximize. Booleans are 0/1. */
    void (*options)(DenseOpts *opts, double lr, double eps, int eps_inside, double weight_decay,
                    double lr_decay, long long step, int maximize);

    /* One contiguous array of n elements: accum += g*g; param -= clr*g / (sqrt(accum) + eps). */
    void (*dense_f32)(Py_ssize_t n, float *param, const float *grad, float *accum,
                      const DenseOpts *opts);
    void (*dense_f64)(Py_ssize_t n, double *param, const double *grad, double *accum,
                      const DenseOpts *opts);

    /* k contiguous arrays in one parallel region; array i has offsets[i+1] - offsets[i]
     * elements (offsets[0] = 0, k + 1 entries), split across threads by elements. */
    void (*multi_f32)(Py_ssize_t k, float **params, float **grads, float **accums,
                      const Py_ssize_t *offsets, const DenseOpts *opts);
    void (*multi_f64)(Py_ssize_t k, double **params, double **grads, double **accums,
                      const Py_ssize_t *offsets, const DenseOpts *opts);

    /* Index of the first of the k arrays (laid out as for multi_*) holding NaN or inf, or -1.
     * Reads only: call it before multi_* to skip or refuse a step. */
    Py_ssize_t (*first_nonfinite_f32)(Py_ssize_t k, float **grads, const Py_ssize_t *offsets);
    Py_ssize_t (*first_nonfinite_f64)(Py_ssize_t k, double **grads, const Py_ssize_t *offsets);

    /* Sparse rows of a C-contiguous (n, d) table: idx[0..b) each in [0, n) (NOT checked),
     * grads (b, d) C-contiguous; accum (n, d) element-wise (rowwise = 0) or (n,) row-wise
     * (rowwise = 1: accum[r] += mean(g*g) over the row). Duplicate indices are summed in order
     * of appearance. Returns the number of unique rows, or -1 when out of memory (then nothing
     * was written). */
    Py_ssize_t (*sparse_f32)(float *table, float *accum, int rowwise, Py_ssize_t d,
                             const int64_t *idx, Py_ssize_t b, const float *grads,
                             const DenseOpts *opts);
    Py_ssize_t (*sparse_f64)(double *table, double *accum, int rowwise, Py_ssize_t d,
                             const int64_t *idx, Py_ssize_t b, const double *grads,
                             const DenseOpts *opts);

    /* Mixed precision, one contiguous array of n elements: param of storage type types->param
     * (FA_DT_F16 or FA_DT_BF16, 2 bytes each), grad of types->grad (the param's type or
     * FA_DT_F32), accum of types->accum (the param's type or FA_DT_F32); master NULL or n float32
     * master weights (read and updated; param receives their rounded copy). Every element is
     * widened to float32, the formula runs in float32, each stored result is rounded once to
     * nearest even. opts as for dense_*; its update_slots/clipping fields must be left as
     * options() sets them. */
    void (*dense_mixed)(Py_ssize_t n, void *param, const void *grad, void *accum, float *master,
                        const MixedTypes *types, const DenseOpts *opts);

    /* ---- version 2 ---- */

    /* dense_mixed with the param's store rounded stochastically (FBGEMM's stochastic_rounding):
     * the bytes of adagrad_update(..., stochastic_rounding=True, seed=seed, step=step). The
     * random bits of element j are keyed by (seed, step, index0 + j): index0 = 0 for a whole
     * C-contiguous param, or the C-order index of param[0] in a larger param (row * D for a row
     * of an (N, D) table). `step` keys the bits only: pass the same step to options() for the
     * rate. Only the param's store is stochastic (a float16/bfloat16 accum rounds to nearest
     * even). Same thread split and bytes for every thread count and ISA path. */
    void (*dense_mixed_sr)(Py_ssize_t n, void *param, const void *grad, void *accum,
                           float *master, const MixedTypes *types, const DenseOpts *opts,
                           uint64_t seed, long long step, int64_t index0);

    /* ---- later versions append their fields here ---- */
} FastAdagradAPI;

/* DenseOpts is part of the ABI: a consumer allocates it, the library fills and reads it. Its
 * layout is frozen; this fails to compile if anyone changes it (add a new struct and new
 * table entries instead). */
typedef char fastadagrad_dense_opts_layout_is_frozen[
    (sizeof(DenseOpts) == 56 && offsetof(DenseOpts, lr) == 0 && offsetof(DenseOpts, eps) == 8
     && offsetof(DenseOpts, weight_decay) == 16
     && offsetof(DenseOpts, decoupled_weight_decay) == 24
     && offsetof(DenseOpts, maximize) == 32 && offsetof(DenseOpts, eps_inside) == 36
     && offsetof(DenseOpts, zero_if_accum_zero) == 40
     && offsetof(DenseOpts, skip_accumulate) == 44 && offsetof(DenseOpts, grad_scale) == 48)
    ? 1 : -1];

#ifndef FASTADAGRAD_NO_IMPORT   /* defined only by fastadagrad itself, which fills the table */

/* The table, once fastadagrad_import() has succeeded in this translation unit; else NULL. */
static const FastAdagradAPI *FastAdagrad_API = NULL;

/* The provider's table if it holds at least `version` and `size` bytes; else NULL with a Python
 * exception set (ImportError if fastadagrad is missing or older than asked). Needs the GIL.
 * fastadagrad_import() asks for this header's version and struct size; code written against a
 * prefix of the table (an older header) may ask for less. */
static inline const FastAdagradAPI *fastadagrad_import_api(unsigned int version, size_t size)
{
    const FastAdagradAPI *api = (const FastAdagradAPI *)PyCapsule_Import(FASTADAGRAD_CAPSULE_NAME, 0);
    if (api == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {  /* a fastadagrad without a C API */
            PyErr_Clear();
            PyErr_SetString(PyExc_ImportError,
                            "fastadagrad.kernels has no _C_API capsule: the installed fastadagrad "
                            "predates its C API (or is the pure-NumPy install); upgrade it");
        }
        return NULL;
    }
    if (api->abi_version < version || api->size < size) {
        PyErr_Format(PyExc_ImportError,
                     "this extension needs fastadagrad C API version %u (a %zu-byte table) but "
                     "the installed fastadagrad provides version %u (%u bytes): upgrade fastadagrad",
                     version, size, (unsigned int)api->abi_version, (unsigned int)api->size);
        return NULL;
    }
    return api;
}

/* Import fastadagrad's C API into FastAdagrad_API: 0 on success, -1 with a Python exception
 * set (ImportError) on failure. Call once with the GIL held, e.g. in PyInit_<module>. */
static inline int fastadagrad_import(void)
{
    FastAdagrad_API = fastadagrad_import_api(FASTADAGRAD_ABI_VERSION, sizeof(FastAdagradAPI));
    return FastAdagrad_API == NULL ? -1 : 0;
}

#endif /* FASTADAGRAD_NO_IMPORT */

#ifdef __cplusplus
}
#endif
#endif /* FASTADAGRAD_FASTADAGRAD_H */
