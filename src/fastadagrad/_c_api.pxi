# The C API of fastadagrad/fastadagrad.h: one static table of the C-level API's functions (the
# same dispatching functions kernels.pxd exports to Cython), handed out in the capsule _C_API.
# Included by kernels.pyx after those functions. Fields are only ever appended (see the header).

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint32_t, uint64_t

cdef extern from *:
    """
    #define FASTADAGRAD_NO_IMPORT
    #include "fastadagrad/fastadagrad.h"
    """
    const unsigned int FASTADAGRAD_ABI_VERSION
    const char* FASTADAGRAD_CAPSULE_NAME
    ctypedef struct FastAdagradAPI:
        uint32_t abi_version
        uint32_t size
        void (*options)(DenseOpts*, double, double, bint, double, double, long long,
                        bint) noexcept nogil
        void (*dense_f32)(Py_ssize_t, float*, const float*, float*, const DenseOpts*) noexcept nogil
        void (*dense_f64)(Py_ssize_t, double*, const double*, double*,
                          const DenseOpts*) noexcept nogil
        void (*multi_f32)(Py_ssize_t, float**, float**, float**, const Py_ssize_t*,
                          const DenseOpts*) noexcept nogil
        void (*multi_f64)(Py_ssize_t, double**, double**, double**, const Py_ssize_t*,
                          const DenseOpts*) noexcept nogil
        Py_ssize_t (*first_nonfinite_f32)(Py_ssize_t, float**, const Py_ssize_t*) noexcept nogil
        Py_ssize_t (*first_nonfinite_f64)(Py_ssize_t, double**, const Py_ssize_t*) noexcept nogil
        Py_ssize_t (*sparse_f32)(float*, float*, bint, Py_ssize_t, const int64_t*, Py_ssize_t,
                                 const float*, const DenseOpts*) noexcept nogil
        Py_ssize_t (*sparse_f64)(double*, double*, bint, Py_ssize_t, const int64_t*, Py_ssize_t,
                                 const double*, const DenseOpts*) noexcept nogil
        void (*dense_mixed)(Py_ssize_t, void*, const void*, void*, float*, const MixedTypes*,
                            const DenseOpts*) noexcept nogil
        void (*dense_mixed_sr)(Py_ssize_t, void*, const void*, void*, float*, const MixedTypes*,
                               const DenseOpts*, uint64_t, long long, int64_t) noexcept nogil

cdef FastAdagradAPI _c_api
_c_api.abi_version = FASTADAGRAD_ABI_VERSION
_c_api.size = sizeof(FastAdagradAPI)
_c_api.options = adagrad_options
_c_api.dense_f32 = adagrad_dense_f32
_c_api.dense_f64 = adagrad_dense_f64
_c_api.multi_f32 = adagrad_multi_f32
_c_api.multi_f64 = adagrad_multi_f64
_c_api.first_nonfinite_f32 = adagrad_first_nonfinite_f32
_c_api.first_nonfinite_f64 = adagrad_first_nonfinite_f64
_c_api.sparse_f32 = adagrad_sparse_f32
_c_api.sparse_f64 = adagrad_sparse_f64
_c_api.dense_mixed = adagrad_dense_mixed
_c_api.dense_mixed_sr = adagrad_dense_mixed_sr

#: The C API table for fastadagrad/fastadagrad.h (fastadagrad_import() reads it).
_C_API = PyCapsule_New(<void*>&_c_api, FASTADAGRAD_CAPSULE_NAME, NULL)


def _c_api_addresses():
    """{field: address} of the C API table's functions, plus its version and size, for code
    that calls them through ctypes/cffi/numba (fastadagrad.numba)."""
    return {
        "abi_version": _c_api.abi_version, "size": _c_api.size,
        "options": <size_t>_c_api.options,
        "dense_f32": <size_t>_c_api.dense_f32, "dense_f64": <size_t>_c_api.dense_f64,
        "multi_f32": <size_t>_c_api.multi_f32, "multi_f64": <size_t>_c_api.multi_f64,
        "first_nonfinite_f32": <size_t>_c_api.first_nonfinite_f32,
        "first_nonfinite_f64": <size_t>_c_api.first_nonfinite_f64,
        "sparse_f32": <size_t>_c_api.sparse_f32, "sparse_f64": <size_t>_c_api.sparse_f64,
        "dense_mixed": <size_t>_c_api.dense_mixed, "dense_mixed_sr": <size_t>_c_api.dense_mixed_sr,
    }
