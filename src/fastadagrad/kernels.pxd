# fastadagrad's C-level API, for Cython code that embeds the kernels (C and C++ code: the same
# functions through fastadagrad/fastadagrad.h, which also documents the ABI promise).
#
#     from fastadagrad.kernels cimport DenseOpts, adagrad_options, adagrad_dense_f32
#
#     cdef DenseOpts opts
#     adagrad_options(&opts, lr, eps, False, weight_decay, lr_decay, step, maximize)
#     with nogil:
#         adagrad_dense_f32(n, param_ptr, grad_ptr, accum_ptr, &opts)
#
# Build your extension with fastadagrad installed and its header directory on the C include
# path, as with numpy.get_include(): Extension(..., include_dirs=[fastadagrad.get_include()])
# (Cython finds this file on sys.path, or pass include_path=[fastadagrad.get_include()] to
# cythonize). Link nothing: the functions are
# imported at run time from fastadagrad.kernels through its C-API capsule, so you get the same
# runtime ISA dispatch (AVX-512/AVX2/generic), worker-pool split and thread count
# (fastadagrad.set_num_threads) as the Python API, and bit-identical results.
#
# What these functions do NOT check (the Python API does; here the caller owns it): pointer
# validity and bounds, sizes, that the arrays are contiguous, aligned and do not overlap, that
# indices are in range, and the hyper-parameters. They never raise and hold no GIL: call them
# inside `with nogil:` from any thread.

from libc.stdint cimport int64_t, uint64_t

from fastadagrad._kernel_table cimport DenseOpts, FA_DT_BF16, FA_DT_F16, FA_DT_F32, MixedTypes


# Fill `opts` for one step: clr = lr / (1 + (step - 1) * lr_decay); eps outside the sqrt
# (torch) unless eps_inside; coupled weight decay (g += weight_decay * param); g = -grad if
# maximize. The optimizer-only options (decoupled weight decay, optax's zero mask) are set to 0.
cdef void adagrad_options(DenseOpts* opts, double lr, double eps, bint eps_inside,
                          double weight_decay, double lr_decay, long long step,
                          bint maximize) noexcept nogil

# One contiguous array of n elements: accum += g*g; param -= clr*g / (sqrt(accum) + eps).
cdef void adagrad_dense_f32(Py_ssize_t n, float* param, const float* grad, float* accum,
                            const DenseOpts* opts) noexcept nogil
cdef void adagrad_dense_f64(Py_ssize_t n, double* param, const double* grad, double* accum,
                            const DenseOpts* opts) noexcept nogil

# k contiguous arrays in one parallel region; array i has offsets[i+1] - offsets[i] elements
# (offsets[0] = 0, k + 1 entries), split across threads by elements.
cdef void adagrad_multi_f32(Py_ssize_t k, float** params, float** grads, float** accums,
                            const Py_ssize_t* offsets, const DenseOpts* opts) noexcept nogil
cdef void adagrad_multi_f64(Py_ssize_t k, double** params, double** grads, double** accums,
                            const Py_ssize_t* offsets, const DenseOpts* opts) noexcept nogil

# Index of the first of the k arrays holding NaN or inf, or -1 (reads only).
cdef Py_ssize_t adagrad_first_nonfinite_f32(Py_ssize_t k, float** grads,
                                            const Py_ssize_t* offsets) noexcept nogil
cdef Py_ssize_t adagrad_first_nonfinite_f64(Py_ssize_t k, double** grads,
                                            const Py_ssize_t* offsets) noexcept nogil

# Sparse rows of a C-contiguous (n, d) table: idx[0..b) in [0, n) (not checked), grads (b, d)
# C-contiguous; accum (n, d) element-wise or, with rowwise, (n,) row-wise. Duplicates are
# summed in order of appearance. Returns the number of unique rows, or -1 when out of memory
# (then nothing was written).
cdef Py_ssize_t adagrad_sparse_f32(float* table, float* accum, bint rowwise, Py_ssize_t d,
                                   const int64_t* idx, Py_ssize_t b, const float* grads,
                                   const DenseOpts* opts) noexcept nogil
cdef Py_ssize_t adagrad_sparse_f64(double* table, double* accum, bint rowwise, Py_ssize_t d,
                                   const int64_t* idx, Py_ssize_t b, const double* grads,
                                   const DenseOpts* opts) noexcept nogil

# Mixed precision (float16 / bfloat16 storage, float32 arithmetic): n contiguous elements;
# types.param is FA_DT_F16 or FA_DT_BF16 (param: uint16_t bit patterns), types.grad and
# types.accum are FA_DT_F32 or types.param (float or uint16_t arrays). Every element is widened
# to float32, the float32 step runs, each result is rounded once to its storage type (to nearest
# even). master: NULL, or n float32 master weights (read and updated; param gets their rounded
# copy). Unsupported type combinations do nothing.
cdef void adagrad_dense_mixed(Py_ssize_t n, void* param, const void* grad, void* accum,
                              float* master, const MixedTypes* types,
                              const DenseOpts* opts) noexcept nogil

# adagrad_dense_mixed with the param's store rounded stochastically (FBGEMM's
# stochastic_rounding): the bytes of adagrad_update(..., stochastic_rounding=True, seed=seed,
# step=step) on the same n elements. The random bits of element j (0 <= j < n) are keyed by
# (seed, step, index0 + j) (README "Mixed precision": the counter hash), so pass index0 = 0 for
# a whole C-contiguous param, or the C-order index of param[0] within a larger param (e.g.
# row * D for a row of an (N, D) table) to get the bits that param's own call would use.
# `step` keys the random bits only: pass the same step to adagrad_options for the rate.
# Neither seed nor step is range-checked (any 64-bit seed; step as a 64-bit two's complement
# value); only the param's store is stochastic (a float16/bfloat16 accum rounds to nearest
# even). Unsupported type combinations do nothing. The loop is scalar, split over the worker
# pool like the others (the bits depend on element indices only: any thread count, same bytes).
cdef void adagrad_dense_mixed_sr(Py_ssize_t n, void* param, const void* grad, void* accum,
                                 float* master, const MixedTypes* types, const DenseOpts* opts,
                                 uint64_t seed, long long step, int64_t index0) noexcept nogil
