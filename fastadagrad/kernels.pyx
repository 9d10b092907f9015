# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled backend: argument gate, runtime ISA dispatch, OpenMP split, the GIL released.

The loops themselves live in _loops.pxi and are compiled once per ISA level (_isa_generic,
_isa_avx2, _isa_avx512); at import this module picks the best table the CPU supports (override
with FASTADAGRAD_ISA=generic|avx2|avx512). Work is split across threads only above
PARALLEL_MIN_ELEMENTS, in chunks that are multiples of 16 elements; every element is computed by
the same scalar formula, so results are bit-identical for every thread count and ISA.
"""

import os
import warnings

import numpy as _np

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange
from libc.math cimport isfinite

from fastadagrad._kernel_table cimport DenseOpts, KernelTable

from fastadagrad import _validation
from fastadagrad import reference as _reference

cnp.import_array()

cdef extern from *:
    """
    #include <string.h>
    #ifdef _OPENMP
    #include <omp.h>
    #define FA_OPENMP 1
    static int fa_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FA_OPENMP 0
    static int fa_omp_max_threads(void) { return 1; }
    #endif
    static int fa_cpu_supports(const char *isa) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        if (strcmp(isa, "avx2") == 0)
            return __builtin_cpu_supports("avx2");
        if (strcmp(isa, "avx512") == 0)
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    #endif
        return strcmp(isa, "generic") == 0;
    }
    """
    const int FA_OPENMP
    int fa_omp_max_threads() noexcept nogil
    int fa_cpu_supports(const char* isa) noexcept nogil

ctypedef fused floating:
    float
    double

#: Below this many elements a call runs on one thread (an OpenMP region costs ~1 us).
PARALLEL_MIN_ELEMENTS = 32768
#: Below this many elements the GIL is kept (releasing it costs more than the loop).
NOGIL_MIN_ELEMENTS = 4096
cdef Py_ssize_t _parallel_min = PARALLEL_MIN_ELEMENTS
cdef Py_ssize_t _nogil_min = NOGIL_MIN_ELEMENTS
cdef Py_ssize_t _CHUNK_ALIGN = 16

ISA_LEVELS = ("avx512", "avx2", "generic")   # best first

# ----------------------------------------------------------------------------- ISA dispatch
cdef KernelTable _table
_isa_modules = {}
for _name in ISA_LEVELS:
    try:
        _isa_modules[_name] = __import__(f"fastadagrad._isa_{_name}", fromlist=["TABLE"])
    except ImportError:
        pass


def isa_compiled():
    """ISA levels this build contains, best first."""
    return tuple(name for name in ISA_LEVELS if name in _isa_modules)


def isa_available():
    """ISA levels this build contains and this CPU can run, best first."""
    return tuple(name for name in isa_compiled() if fa_cpu_supports(name.encode()))


def set_isa(name):
    """Use the loops compiled for ISA level `name` (one of isa_available())."""
    global _table
    if name not in isa_available():
        raise ValueError(f"`name` must be one of {isa_available()} on this CPU/build, got {name!r}")
    _table = (<KernelTable*>PyCapsule_GetPointer(_isa_modules[name].TABLE,
                                                  b"fastadagrad.KernelTable"))[0]


def get_isa():
    """The ISA level in use."""
    return _table.isa.decode()


_requested = os.environ.get("FASTADAGRAD_ISA", "").strip().lower()
if _requested and _requested in isa_available():
    set_isa(_requested)
else:
    if _requested:
        warnings.warn(f"FASTADAGRAD_ISA={_requested!r} is not available here "
                      f"(available: {isa_available()}); using {isa_available()[0]!r}",
                      RuntimeWarning, stacklevel=2)
    set_isa(isa_available()[0])


# ----------------------------------------------------------------------------- threads
def _default_threads():
    return max(1, fa_omp_max_threads())   # honours OMP_NUM_THREADS

cdef int _num_threads = _default_threads()


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(FA_OPENMP)


def set_num_threads(n):
    """Threads used for large arrays (no effect without OpenMP); returns the previous value."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"`n` must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    old = _num_threads
    _num_threads = n if FA_OPENMP else 1
    return old


def get_num_threads():
    """Threads used for arrays of at least PARALLEL_MIN_ELEMENTS elements."""
    return _num_threads


cdef inline int _threads_for(Py_ssize_t n) noexcept nogil:
    if n < _parallel_min or _num_threads <= 1:
        return 1
    return _num_threads


# ----------------------------------------------------------------------------- C-level kernels
cdef void dense_update(Py_ssize_t n, floating* param, const floating* grad, floating* accum,
                       const DenseOpts* o) noexcept nogil:
    """Contiguous step over n elements: ISA-dispatched loop, split over threads when large."""
    cdef int nt = _threads_for(n), t
    cdef Py_ssize_t chunk, start, stop
    if nt == 1:
        if floating is float:
            _table.dense_f32(n, param, grad, accum, o)
        else:
            _table.dense_f64(n, param, grad, accum, o)
        return
    chunk = ((n + nt - 1) // nt + _CHUNK_ALIGN - 1) // _CHUNK_ALIGN * _CHUNK_ALIGN
    for t in prange(nt, num_threads=nt, schedule="static"):
        start = t * chunk
        stop = min(n, start + chunk)
        if start < stop:
            if floating is float:
                _table.dense_f32(stop - start, param + start, grad + start, accum + start, o)
            else:
                _table.dense_f64(stop - start, param + start, grad + start, accum + start, o)


cdef void probe_update(Py_ssize_t n, floating* x, const floating* y, floating* z) noexcept nogil:
    """The bandwidth probe with the same dispatch and thread split as dense_update."""
    cdef int nt = _threads_for(n), t
    cdef Py_ssize_t chunk, start, stop
    if nt == 1:
        if floating is float:
            _table.probe_f32(n, x, y, z)
        else:
            _table.probe_f64(n, x, y, z)
        return
    chunk = ((n + nt - 1) // nt + _CHUNK_ALIGN - 1) // _CHUNK_ALIGN * _CHUNK_ALIGN
    for t in prange(nt, num_threads=nt, schedule="static"):
        start = t * chunk
        stop = min(n, start + chunk)
        if start < stop:
            if floating is float:
                _table.probe_f32(stop - start, x + start, y + start, z + start)
            else:
                _table.probe_f64(stop - start, x + start, y + start, z + start)


# ----------------------------------------------------------------------------- argument gate
cdef inline bint _plain_contiguous(cnp.ndarray a, int flags) noexcept:
    """All of `flags` set and native byte order."""
    return (cnp.PyArray_FLAGS(a) & flags) == flags and cnp.PyArray_ISNOTSWAPPED(a)


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int nd = cnp.PyArray_NDIM(a), i
    if cnp.PyArray_NDIM(b) != nd:
        return False
    for i in range(nd):
        if cnp.PyArray_DIMS(a)[i] != cnp.PyArray_DIMS(b)[i]:
            return False
    return True


cdef inline bint _disjoint(cnp.ndarray a, cnp.ndarray b, Py_ssize_t nbytes) noexcept:
    """Byte ranges of two contiguous arrays of nbytes each do not intersect."""
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    return nbytes == 0 or pa + nbytes <= pb or pb + nbytes <= pa


cdef inline bint _real_nonneg(object x, double* out) noexcept:
    """Fast path for plain Python float/int hyper-parameters: finite and >= 0."""
    cdef double v
    if type(x) is float:
        v = x
    elif type(x) is int:
        try:
            v = x
        except OverflowError:
            return False
    else:
        return False
    out[0] = v
    return isfinite(v) and v >= 0


cdef bint _fast_hyper(object lr, object eps, object eps_placement, object weight_decay,
                      object lr_decay, object step, object maximize, DenseOpts* o) noexcept:
    """Plain-Python-number hyper-parameters that pass every check; False sends us to _validation."""
    cdef double lr_, decay
    cdef long long s
    if not (_real_nonneg(lr, &lr_) and _real_nonneg(eps, &o.eps)
            and _real_nonneg(weight_decay, &o.weight_decay) and _real_nonneg(lr_decay, &decay)):
        return False
    if type(step) is not int or maximize is not True and maximize is not False:
        return False
    try:
        s = step
    except OverflowError:
        return False
    if s < 1:
        return False
    if type(eps_placement) is not str:
        return False
    if eps_placement == "outside":
        o.eps_inside = False
    elif eps_placement == "inside":
        o.eps_inside = True
    else:
        return False
    o.maximize = maximize is True
    o.lr = lr_ / (1.0 + <double>(s - 1) * decay)
    return True


cdef object _delegate = None   # the NumPy backend when it is selected, else None


def _set_delegate(fn):
    """Route adagrad_update to `fn` (the NumPy twin) or, with None, to the compiled loops."""
    global _delegate
    _delegate = fn


cdef void _contiguous(int typenum, Py_ssize_t n, void* p, void* g, void* a,
                      const DenseOpts* o) noexcept nogil:
    if typenum == cnp.NPY_FLOAT:
        dense_update(n, <float*>p, <const float*>g, <float*>a, o)
    else:
        dense_update(n, <double*>p, <const double*>g, <double*>a, o)


cdef void _strided(int typenum, Py_ssize_t n, char* p, Py_ssize_t sp, char* g, Py_ssize_t sg,
                   char* a, Py_ssize_t sa, const DenseOpts* o) noexcept nogil:
    if typenum == cnp.NPY_FLOAT:
        _table.strided_f32(n, <float*>p, sp, <const float*>g, sg, <float*>a, sa, o)
    else:
        _table.strided_f64(n, <double*>p, sp, <const double*>g, sg, <double*>a, sa, o)


cdef void _run_contiguous(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray accum,
                          const DenseOpts* o) noexcept:
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef int typenum = cnp.PyArray_TYPE(param)
    cdef void* p = cnp.PyArray_DATA(param)
    cdef void* g = cnp.PyArray_DATA(grad)
    cdef void* a = cnp.PyArray_DATA(accum)
    if n >= _nogil_min:
        with nogil:
            _contiguous(typenum, n, p, g, a, o)
    else:
        _contiguous(typenum, n, p, g, a, o)


cdef void _run_strided(object param, object grad, object accum, const DenseOpts* o) except *:
    """Non-contiguous views, in place: NumPy's iterator hands out 1-D strided runs of the
    original memory (no buffering, so nothing is copied), each run goes to the loops."""
    cdef cnp.ndarray p, g, a
    cdef Py_ssize_t n, sp, sg, sa
    cdef int typenum = cnp.PyArray_TYPE(param)
    it = _np.nditer([param, grad, accum],
                    flags=["external_loop", "zerosize_ok", "refs_ok"],
                    op_flags=[["readwrite"], ["readonly"], ["readwrite"]], order="K")
    with it:
        for p, g, a in it:
            n = cnp.PyArray_DIMS(p)[0]
            sp = cnp.PyArray_STRIDES(p)[0]
            sg = cnp.PyArray_STRIDES(g)[0]
            sa = cnp.PyArray_STRIDES(a)[0]
            if n >= _nogil_min:
                with nogil:
                    _strided(typenum, n, <char*>cnp.PyArray_DATA(p), sp, <char*>cnp.PyArray_DATA(g),
                             sg, <char*>cnp.PyArray_DATA(a), sa, o)
            else:
                _strided(typenum, n, <char*>cnp.PyArray_DATA(p), sp, <char*>cnp.PyArray_DATA(g),
                         sg, <char*>cnp.PyArray_DATA(a), sa, o)


_F32 = _np.dtype(_np.float32)
cdef int _C_FLAGS = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
cdef int _F_FLAGS = cnp.NPY_ARRAY_F_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
cdef int _W_FLAGS = cnp.NPY_ARRAY_WRITEABLE


def adagrad_update(param, grad, accum, *, lr=0.01, eps=1e-10, eps_placement="outside",
                   weight_decay=0.0, lr_decay=0.0, step=1, maximize=False):
    """In-place AdaGrad step: accum += g*g; param -= clr*g / (sqrt(accum) + eps)."""
    if _delegate is not None:
        return _delegate(param, grad, accum, lr=lr, eps=eps, eps_placement=eps_placement,
                         weight_decay=weight_decay, lr_decay=lr_decay, step=step,
                         maximize=maximize)
    cdef DenseOpts o
    cdef cnp.ndarray p, g, a
    cdef int typenum, layout
    # Gate: exact ndarrays of one float type and shape, contiguous in one order, aligned, native
    # byte order, param/accum writable, disjoint, plain-number hyper-parameters.
    if cnp.PyArray_CheckExact(param) and cnp.PyArray_CheckExact(grad) and cnp.PyArray_CheckExact(accum):
        p = param
        g = grad
        a = accum
        typenum = cnp.PyArray_TYPE(p)
        layout = _C_FLAGS if _plain_contiguous(p, _C_FLAGS) else _F_FLAGS
        if ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
                and cnp.PyArray_TYPE(g) == typenum and cnp.PyArray_TYPE(a) == typenum
                and _same_shape(p, g) and _same_shape(p, a)
                and _plain_contiguous(p, layout | _W_FLAGS) and _plain_contiguous(g, layout)
                and _plain_contiguous(a, layout | _W_FLAGS)
                and _disjoint(p, g, cnp.PyArray_NBYTES(p)) and _disjoint(p, a, cnp.PyArray_NBYTES(p))
                and _disjoint(g, a, cnp.PyArray_NBYTES(p))
                and _fast_hyper(lr, eps, eps_placement, weight_decay, lr_decay, step, maximize, &o)):
            _run_contiguous(p, g, a, &o)
            return None
    # Everything else: full validation (raises before any write), then the general path.
    opts = _validation.check_dense(param, grad, accum, lr, eps, eps_placement, weight_decay,
                                   lr_decay, step, maximize)
    o.lr, o.eps, o.weight_decay, o.maximize, o.eps_inside = opts
    if param.size == 0:
        return None
    if not (param.flags.aligned and grad.flags.aligned and accum.flags.aligned
            and param.dtype.isnative and grad.dtype.isnative and accum.dtype.isnative):
        # Unaligned or byte-swapped memory: the C loops cannot address it, the NumPy twin can
        # (it writes through out=, in place, with the same bits).
        _reference._dense_step(param, grad, accum, opts)
    elif ((param.flags.c_contiguous and grad.flags.c_contiguous and accum.flags.c_contiguous)
          or (param.flags.f_contiguous and grad.flags.f_contiguous and accum.flags.f_contiguous)):
        _run_contiguous(param, grad, accum, &o)
    else:
        _run_strided(param, grad, accum, &o)
    return None



adagrad_update.__doc__ = _reference.adagrad_update.__doc__


def bandwidth_probe(x, y, z):
    """z += y; x -= z over C-contiguous arrays of one float dtype and shape: AdaGrad's traffic
    (3 reads, 2 writes) without sqrt/div, what the memory can do (the benchmark's ceiling)."""
    cdef cnp.ndarray cx, cy, cz
    cdef int typenum
    if cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(y) and cnp.PyArray_CheckExact(z):
        cx, cy, cz = x, y, z
        typenum = cnp.PyArray_TYPE(cx)
        if ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
                and cnp.PyArray_TYPE(cy) == typenum and cnp.PyArray_TYPE(cz) == typenum
                and _same_shape(cx, cy) and _same_shape(cx, cz)
                and _plain_contiguous(cx, _C_FLAGS | _W_FLAGS) and _plain_contiguous(cy, _C_FLAGS)
                and _plain_contiguous(cz, _C_FLAGS | _W_FLAGS)):
            _probe(typenum, cnp.PyArray_SIZE(cx), cnp.PyArray_DATA(cx), cnp.PyArray_DATA(cy),
                   cnp.PyArray_DATA(cz))
            return None
    for name, arr in (("x", x), ("y", y), ("z", z)):
        _validation.check_array(name, arr, writable=name != "y")
    raise ValueError("`x`, `y`, `z` must be C-contiguous, aligned, native-endian arrays of one "
                     "dtype and shape")


cdef void _probe(int typenum, Py_ssize_t n, void* x, void* y, void* z) noexcept:
    if n >= _nogil_min:
        with nogil:
            if typenum == cnp.NPY_FLOAT:
                probe_update(n, <float*>x, <const float*>y, <float*>z)
            else:
                probe_update(n, <double*>x, <const double*>y, <double*>z)
    elif typenum == cnp.NPY_FLOAT:
        probe_update(n, <float*>x, <const float*>y, <float*>z)
    else:
        probe_update(n, <double*>x, <const double*>y, <double*>z)
