# The C types shared by the per-ISA loop units and the dispatcher (kernels.pyx), declared from
# their single C definition: _csrc/kernel_table.h (see that file). Code that cimports this (or
# kernels.pxd) must have fastadagrad.get_include() on its C include path.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef extern from "fastadagrad/_csrc/kernel_table.h" nogil:
    ctypedef struct DenseOpts:
        double lr             # the effective learning rate clr = lr / (1 + (step - 1) * lr_decay)
        double eps
        double weight_decay   # coupled (torch): g = g + weight_decay * param; skipped when 0
        double decoupled_weight_decay  # Keras 3: param = param - param * wd * clr first
        bint maximize         # g = -grad
        bint eps_inside       # denom = sqrt(accum + eps) instead of sqrt(accum) + eps
        bint zero_if_accum_zero  # optax: no update where the new accumulator is exactly 0
        bint skip_accumulate  # TF update_slots=False: accum is read, not updated
        double grad_scale     # clipping by norm: g = grad * grad_scale (1: none)

    # issue 14: the AdaGrad family (_csrc/family_table.h)
    enum:
        FA_RULE_PROXIMAL
        FA_RULE_DA
        FA_RULE_LAGGED
    enum:
        FA_CLIP_BLOCK
    ctypedef double (*sumsq_f32_t)(Py_ssize_t n, const float* x) noexcept nogil
    ctypedef double (*sumsq_f64_t)(Py_ssize_t n, const double* x) noexcept nogil
    ctypedef struct FamilyOpts:
        int rule
        double lr
        double l1
        double l2
        double step
        double grad_scale    # clipnorm: g = grad * grad_scale (1: none)
        double clipvalue     # clipvalue: g = min(max(g, -v), v) when > 0 (0: none)
    ctypedef void (*fam_dense_f32_t)(Py_ssize_t n, float* param, const float* grad, float* s1,
                                     float* s2, const FamilyOpts* o) noexcept nogil
    ctypedef void (*fam_dense_f64_t)(Py_ssize_t n, double* param, const double* grad, double* s1,
                                     double* s2, const FamilyOpts* o) noexcept nogil
    ctypedef void (*fam_strided_f32_t)(Py_ssize_t n, float* param, Py_ssize_t sp,
                                       const float* grad, Py_ssize_t sg, float* s1, Py_ssize_t ss1,
                                       float* s2, Py_ssize_t ss2, const FamilyOpts* o) noexcept nogil
    ctypedef void (*fam_strided_f64_t)(Py_ssize_t n, double* param, Py_ssize_t sp,
                                       const double* grad, Py_ssize_t sg, double* s1,
                                       Py_ssize_t ss1, double* s2, Py_ssize_t ss2,
                                       const FamilyOpts* o) noexcept nogil
    ctypedef void (*fam_rows_f32_t)(Py_ssize_t count, const int64_t* rows, const float** src,
                                    const float* grads, float* table, float* s1, float* s2,
                                    Py_ssize_t d, Py_ssize_t ahead,
                                    const FamilyOpts* o) noexcept nogil
    ctypedef void (*fam_rows_f64_t)(Py_ssize_t count, const int64_t* rows, const double** src,
                                    const double* grads, double* table, double* s1, double* s2,
                                    Py_ssize_t d, Py_ssize_t ahead,
                                    const FamilyOpts* o) noexcept nogil
    ctypedef void (*keras_rows_f32_t)(Py_ssize_t nu, const int64_t* rows, const Py_ssize_t* start,
                                      const float** src, float* table, float* accum, Py_ssize_t d,
                                      Py_ssize_t ahead, const DenseOpts* o) noexcept nogil
    ctypedef void (*keras_rows_f64_t)(Py_ssize_t nu, const int64_t* rows, const Py_ssize_t* start,
                                      const double** src, double* table, double* accum,
                                      Py_ssize_t d, Py_ssize_t ahead, const DenseOpts* o) noexcept nogil

    # clipping by value: the plain loops with an extra bound (DenseOpts is frozen)
    ctypedef void (*dense_clip_f32_t)(Py_ssize_t n, float* param, const float* grad,
                                      float* accum, const DenseOpts* o, double v) noexcept nogil
    ctypedef void (*dense_clip_f64_t)(Py_ssize_t n, double* param, const double* grad,
                                      double* accum, const DenseOpts* o, double v) noexcept nogil
    ctypedef void (*strided_clip_f32_t)(Py_ssize_t n, float* param, Py_ssize_t sp,
                                        const float* grad, Py_ssize_t sg, float* accum,
                                        Py_ssize_t sa, const DenseOpts* o, double v) noexcept nogil
    ctypedef void (*strided_clip_f64_t)(Py_ssize_t n, double* param, Py_ssize_t sp,
                                        const double* grad, Py_ssize_t sg, double* accum,
                                        Py_ssize_t sa, const DenseOpts* o, double v) noexcept nogil
    ctypedef void (*clip_rows_f32_t)(Py_ssize_t count, const int64_t* rows, const float** src,
                                     float* table, float* accum, Py_ssize_t d, Py_ssize_t ahead,
                                     const DenseOpts* o, double v) noexcept nogil
    ctypedef void (*clip_rows_f64_t)(Py_ssize_t count, const int64_t* rows, const double** src,
                                     double* table, double* accum, Py_ssize_t d, Py_ssize_t ahead,
                                     const DenseOpts* o, double v) noexcept nogil
    ctypedef void (*keras_clip_rows_f32_t)(Py_ssize_t nu, const int64_t* rows,
                                           const Py_ssize_t* start, const float** src,
                                           float* table, float* accum, Py_ssize_t d,
                                           Py_ssize_t ahead, const DenseOpts* o,
                                           double v) noexcept nogil
    ctypedef void (*keras_clip_rows_f64_t)(Py_ssize_t nu, const int64_t* rows,
                                           const Py_ssize_t* start, const double** src,
                                           double* table, double* accum, Py_ssize_t d,
                                           Py_ssize_t ahead, const DenseOpts* o,
                                           double v) noexcept nogil
    ctypedef void (*clip_into_f32_t)(Py_ssize_t n, float* dst, const float* src, double v,
                                     int accumulate) noexcept nogil
    ctypedef void (*clip_into_f64_t)(Py_ssize_t n, double* dst, const double* src, double v,
                                     int accumulate) noexcept nogil

    ctypedef void (*dense_f32_t)(Py_ssize_t n, float* param, const float* grad, float* accum,
                                 const DenseOpts* o) noexcept nogil
    ctypedef void (*dense_f64_t)(Py_ssize_t n, double* param, const double* grad, double* accum,
                                 const DenseOpts* o) noexcept nogil
    ctypedef void (*strided_f32_t)(Py_ssize_t n, float* param, Py_ssize_t sp, const float* grad,
                                   Py_ssize_t sg, float* accum, Py_ssize_t sa,
                                   const DenseOpts* o) noexcept nogil
    ctypedef void (*strided_f64_t)(Py_ssize_t n, double* param, Py_ssize_t sp, const double* grad,
                                   Py_ssize_t sg, double* accum, Py_ssize_t sa,
                                   const DenseOpts* o) noexcept nogil
    # sparse rows: row u's gradient is src[u], or grads + u * d when src is NULL (contiguous)
    ctypedef void (*rows_f32_t)(Py_ssize_t count, const int64_t* rows, const float** src,
                                const float* grads, float* table, float* accum, Py_ssize_t d,
                                bint is_rowwise, Py_ssize_t ahead, const DenseOpts* o) noexcept nogil
    ctypedef void (*rows_f64_t)(Py_ssize_t count, const int64_t* rows, const double** src,
                                const double* grads, double* table, double* accum, Py_ssize_t d,
                                bint is_rowwise, Py_ssize_t ahead, const DenseOpts* o) noexcept nogil
    ctypedef void (*add_f32_t)(Py_ssize_t n, float* dst, const float* src) noexcept nogil
    ctypedef void (*add_f64_t)(Py_ssize_t n, double* dst, const double* src) noexcept nogil
    ctypedef bint (*finite_f32_t)(Py_ssize_t n, const float* x) noexcept nogil
    ctypedef bint (*finite_f64_t)(Py_ssize_t n, const double* x) noexcept nogil
    ctypedef void (*probe_f32_t)(Py_ssize_t n, float* x, const float* y, float* z) noexcept nogil
    ctypedef void (*probe_f64_t)(Py_ssize_t n, double* x, const double* y, double* z) noexcept nogil
    # dst[0..b) = idx (int64 / int32 widened), checked as copied: 1 if all in [0, n), else 0
    ctypedef int (*copy_checked_i64_t)(Py_ssize_t b, const int64_t* idx, Py_ssize_t n,
                                       int64_t* dst) noexcept nogil
    ctypedef int (*copy_checked_i32_t)(Py_ssize_t b, const int32_t* idx, Py_ssize_t n,
                                       int64_t* dst) noexcept nogil

    # ---- mixed precision (issue 15): float16 / bfloat16 storage, float32 arithmetic
    enum:
        FA_DT_F32
        FA_DT_F16
        FA_DT_BF16
    ctypedef struct MixedTypes:
        int param     # FA_DT_F16 or FA_DT_BF16
        int grad      # the param's type or FA_DT_F32
        int accum     # the param's type or FA_DT_F32
    ctypedef void (*dense_mixed_t)(Py_ssize_t n, void* param, const void* grad, void* accum,
                                   float* master, const MixedTypes* t,
                                   const DenseOpts* o) noexcept nogil
    ctypedef void (*strided_mixed_t)(Py_ssize_t n, void* param, Py_ssize_t sp, const void* grad,
                                     Py_ssize_t sg, void* accum, Py_ssize_t sa, float* master,
                                     Py_ssize_t sm, const MixedTypes* t,
                                     const DenseOpts* o) noexcept nogil
    ctypedef void (*to_float_t)(Py_ssize_t n, float* dst, const void* src, int type) noexcept nogil
    ctypedef struct SrKey:
        uint32_t k0
        uint32_t k1
        int64_t index0
    ctypedef void (*dense_mixed_sr_t)(Py_ssize_t n, void* param, const void* grad, void* accum,
                                      float* master, const MixedTypes* t, const DenseOpts* o,
                                      const SrKey* k) noexcept nogil
    # ---- end mixed precision types

    ctypedef struct KernelTable:
        const char* isa
        dense_f32_t dense_f32
        dense_f64_t dense_f64
        strided_f32_t strided_f32
        strided_f64_t strided_f64
        dense_f32_t rowwise_f32      # same signature: (d, row, grad, &accum_of_row, opts)
        dense_f64_t rowwise_f64
        rows_f32_t sparse_rows_f32   # (count, rows, src, grads, table, accum, d, rowwise, ahead, opts)
        rows_f64_t sparse_rows_f64
        add_f32_t add_into_f32
        add_f64_t add_into_f64
        finite_f32_t all_finite_f32
        finite_f64_t all_finite_f64
        probe_f32_t probe_f32
        probe_f64_t probe_f64
        # issue 14: the AdaGrad family
        fam_dense_f32_t family_dense_f32
        fam_dense_f64_t family_dense_f64
        fam_strided_f32_t family_strided_f32
        fam_strided_f64_t family_strided_f64
        fam_rows_f32_t family_rows_f32
        fam_rows_f64_t family_rows_f64
        keras_rows_f32_t keras_rows_f32
        keras_rows_f64_t keras_rows_f64
        sumsq_f32_t sumsq_f32
        sumsq_f64_t sumsq_f64
        # mixed precision (issue 15)
        dense_mixed_t dense_mixed
        strided_mixed_t strided_mixed
        to_float_t to_float
        # issue 14: clipping by value
        dense_clip_f32_t dense_clip_f32
        dense_clip_f64_t dense_clip_f64
        strided_clip_f32_t strided_clip_f32
        strided_clip_f64_t strided_clip_f64
        clip_rows_f32_t clip_rows_f32
        clip_rows_f64_t clip_rows_f64
        keras_clip_rows_f32_t keras_clip_rows_f32
        keras_clip_rows_f64_t keras_clip_rows_f64
        clip_into_f32_t clip_into_f32
        clip_into_f64_t clip_into_f64
        dense_mixed_sr_t dense_mixed_sr
        copy_checked_i64_t copy_checked_i64   # the sparse indices' private, range-checked copy
        copy_checked_i32_t copy_checked_i32

    const char* const* fa_isa_compiled    # ISA levels in this build, best first, NULL-terminated
    int fa_cpu_supports(const char* isa) noexcept nogil
    const KernelTable* fa_kernel_table(const char* isa) noexcept nogil
    void fa_sr_keys(uint64_t seed, int64_t step, SrKey* key) noexcept nogil
