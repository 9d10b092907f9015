# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled backend: argument gate, runtime ISA dispatch, thread split, the GIL released.

The loops themselves live in C (_csrc/loops.h) and are compiled once per ISA level
(_csrc/isa_{generic,avx2,avx512}.c, linked into this module); at import this module picks the
best table the CPU supports (override with FASTADAGRAD_ISA=generic|avx2|avx512). Work is split
across threads only above PARALLEL_MIN_ELEMENTS, by our own worker pool (_threadpool.h: many small
chunks claimed dynamically, the calling thread working too, passive waiting, fork-safe); chunks
are multiples of 16 elements (whole rows for the sparse step) and every element is computed by the
same scalar formula, so results are bit-identical for every thread count and ISA.
"""

import os
import warnings

import numpy as _np

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython cimport floating
from libc.math cimport isfinite

from fastadagrad._kernel_table cimport (FA_CLIP_BLOCK, DenseOpts, FamilyOpts, KernelTable, SrKey,
                                        fa_cpu_supports,
                                        fa_isa_compiled,
                                        fa_kernel_table, fa_sr_keys)

from fastadagrad import _clipping, _cpus, _validation

cnp.import_array()

cdef extern from "_threadpool.h":
    ctypedef void (*fa_chunk_fn)(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    const int FA_POOL
    void fa_parallel_for(Py_ssize_t nitems, Py_ssize_t grain, fa_chunk_fn fn, void* ctx,
                         int nthreads, int site, Py_ssize_t elements) noexcept nogil
    int fa_site(int kind, int variant) noexcept nogil
    const int FA_KIND_DENSE, FA_KIND_MULTI, FA_KIND_SCAN, FA_KIND_SPARSE, FA_KIND_PROBE
    const int FA_KIND_CLIP, FA_KIND_FAMILY, FA_KIND_MIXED, FA_KIND_MIXED_MULTI
    const int FA_KIND_SPARSE_DUP, FA_KIND_SPARSE_FAMILY, FA_KIND_SPARSE_CLIP, FA_KIND_NORM
    int fastadagrad_get_num_threads() noexcept nogil
    void fastadagrad_set_num_threads(int n) noexcept nogil
    void fa_set_spin_ns(long long worker, long long caller, long long pure) noexcept nogil
    int fa_pool_workers() noexcept nogil
    void fa_set_adaptive(int on) noexcept nogil
    void fa_pool_stats(long long* out) noexcept nogil
    int fa_pool_history(Py_ssize_t elements, long long* out, int max) noexcept nogil
    int fa_simulate_choices(Py_ssize_t elements, long long serial_ns,
                            const long long* parallel_ns, int ncalls, int* out) noexcept nogil

#: Below this many elements a call runs on one thread (waking a worker costs ~1-5 us).
PARALLEL_MIN_ELEMENTS = 32768
#: Below this many elements the GIL is kept (releasing it costs more than the loop).
NOGIL_MIN_ELEMENTS = 4096
cdef Py_ssize_t _parallel_min = PARALLEL_MIN_ELEMENTS
cdef Py_ssize_t _nogil_min = NOGIL_MIN_ELEMENTS
cdef Py_ssize_t _CHUNK_ALIGN = 16
#: Chunk sizes (elements) of a parallel call: about 8 chunks per thread, within these bounds.
cdef Py_ssize_t _GRAIN_MIN = 4096
cdef Py_ssize_t _GRAIN_MAX = 131072

ISA_LEVELS = ("avx512", "avx2", "generic")   # best first

# ----------------------------------------------------------------------------- ISA dispatch
# The loops live in C units compiled once per ISA level (_csrc/isa_*.c) and linked into this
# module; each holds only loops and a const table of pointers to them. This module is compiled
# for the baseline, so importing it never executes an AVX instruction: a table is used only
# after fa_kernel_table() has checked that this CPU (and OS) supports its level.
cdef KernelTable _table


def isa_compiled():
    """ISA levels this build contains, best first."""
    cdef Py_ssize_t i = 0
    names = []
    while fa_isa_compiled[i] != NULL:
        names.append(fa_isa_compiled[i].decode())
        i += 1
    return tuple(names)


def isa_available():
    """ISA levels this build contains and this CPU can run, best first."""
    return tuple(name for name in isa_compiled() if fa_cpu_supports(name.encode()))


def set_isa(name):
    """Use the loops compiled for ISA level `name` (one of isa_available())."""
    global _table
    cdef const KernelTable* table = NULL
    if isinstance(name, str) and name in isa_compiled():
        table = fa_kernel_table(name.encode())
    if table == NULL:
        raise ValueError(f"`name` must be one of {isa_available()} on this CPU/build, got {name!r}")
    _table = table[0]


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
fastadagrad_set_num_threads(_cpus.default_threads())


def threads_enabled():
    """True when the worker pool is available (pthreads); without it the kernels are serial."""
    return bool(FA_POOL)


def set_num_threads(n):
    """Threads used for large arrays (1 without the pool); returns the previous value."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"`n` must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    old = fastadagrad_get_num_threads()
    fastadagrad_set_num_threads(min(n, 256))
    return old


def get_num_threads():
    """Threads used for arrays of at least PARALLEL_MIN_ELEMENTS elements."""
    return fastadagrad_get_num_threads()


def _pool_workers():
    """Worker threads started in this process (0 before the first parallel call, and in a
    forked child until its first parallel call)."""
    return fa_pool_workers()


def _set_adaptive(on):
    """Benchmark/test knob: False makes every large call parallel (no serial/parallel choice
    from measured times); True (the default) restores it. Either way the history is cleared."""
    fa_set_adaptive(1 if on else 0)


def _pool_stats():
    """Calls the pool ran in parallel and serially (by choice) so far in this process."""
    cdef long long out[2]
    fa_pool_stats(out)
    return {"parallel": out[0], "serial": out[1]}


def _pool_history(elements):
    """Test knob: {site: (serial samples, parallel samples)} of the pool's histories for calls of
    `elements` elements (their size class), one entry per loop (fa_site: kind | variant << 4)."""
    cdef long long out[3 * 64]
    cdef int k = fa_pool_history(elements, out, 64)
    return {int(out[3 * i]): (int(out[3 * i + 1]), int(out[3 * i + 2])) for i in range(k)}


def _simulate_choices(elements, serial_ns, parallel_ns):
    """Test knob: the pool's serial/parallel rule alone, on a fresh history (no job runs): for
    back-to-back calls of `elements` elements, a serial call taking `serial_ns` and call i, if
    parallel, `parallel_ns[i]` nanoseconds, the list of choices (True: parallel). None when
    built without the pool."""
    cdef Py_ssize_t k, n = len(parallel_ns)
    cdef long long* durations = <long long*>PyMem_Malloc((n if n > 0 else 1) * sizeof(long long))
    cdef int* out = <int*>PyMem_Malloc((n if n > 0 else 1) * sizeof(int))
    cdef int ok
    try:
        if durations == NULL or out == NULL:
            raise MemoryError()
        for k in range(n):
            durations[k] = parallel_ns[k]
        ok = fa_simulate_choices(elements, serial_ns, durations, <int>n, out)
        return [out[k] != 0 for k in range(n)] if ok else None
    finally:
        PyMem_Free(durations)
        PyMem_Free(out)


def _set_spin_us(worker=-1.0, caller=-1.0, pure=-1.0):
    """Benchmark knob: how long a worker spins for the next job and the caller for chunks in
    flight before sleeping, and for how much of its spin a worker does not yield
    (microseconds; negative keeps the current value)."""
    fa_set_spin_ns(<long long>(worker * 1000) if worker >= 0 else -1,
                   <long long>(caller * 1000) if caller >= 0 else -1,
                   <long long>(pure * 1000) if pure >= 0 else -1)


cdef inline Py_ssize_t _grain(Py_ssize_t n, int nt) noexcept nogil:
    """Elements per chunk: about 8 chunks per thread, within [_GRAIN_MIN, _GRAIN_MAX], rounded
    up to a multiple of 16 (whole SIMD vectors)."""
    cdef Py_ssize_t g = n // (8 * nt)
    g = max(_GRAIN_MIN, min(_GRAIN_MAX, g))
    return (g + _CHUNK_ALIGN - 1) // _CHUNK_ALIGN * _CHUNK_ALIGN


cdef inline int _threads_for(Py_ssize_t n) noexcept nogil:
    cdef int nt = fastadagrad_get_num_threads()
    if n < _parallel_min or nt <= 1:
        return 1
    return nt


# ----------------------------------------------------------------------------- C-level kernels
cdef inline void _dense_run(Py_ssize_t n, floating* param, const floating* grad,
                            floating* accum, const DenseOpts* o) noexcept nogil:
    if floating is float:
        _table.dense_f32(n, param, grad, accum, o)
    else:
        _table.dense_f64(n, param, grad, accum, o)


ctypedef struct _DenseJob:        # one contiguous step (or the probe), split into chunks
    void* p
    const void* g
    void* a
    const DenseOpts* o
    bint f32


cdef void _dense_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _DenseJob* j = <_DenseJob*>ctx
    if j.f32:
        _table.dense_f32(hi - lo, <float*>j.p + lo, <const float*>j.g + lo, <float*>j.a + lo, j.o)
    else:
        _table.dense_f64(hi - lo, <double*>j.p + lo, <const double*>j.g + lo, <double*>j.a + lo,
                         j.o)


cdef void _probe_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _DenseJob* j = <_DenseJob*>ctx
    if j.f32:
        _table.probe_f32(hi - lo, <float*>j.p + lo, <const float*>j.g + lo, <float*>j.a + lo)
    else:
        _table.probe_f64(hi - lo, <double*>j.p + lo, <const double*>j.g + lo, <double*>j.a + lo)


cdef void dense_update(Py_ssize_t n, floating* param, const floating* grad, floating* accum,
                       const DenseOpts* o) noexcept nogil:
    """Contiguous step over n elements: ISA-dispatched loop, split over threads when large."""
    cdef int nt = _threads_for(n)
    cdef _DenseJob job
    if nt == 1:
        _dense_run(n, param, grad, accum, o)
        return
    job.p = param
    job.g = grad
    job.a = accum
    job.o = o
    job.f32 = floating is float
    fa_parallel_for(n, _grain(n, nt), _dense_chunk, &job, nt,
                    fa_site(FA_KIND_DENSE, floating is double), n)


cdef void probe_update(Py_ssize_t n, floating* x, const floating* y, floating* z) noexcept nogil:
    """The bandwidth probe with the same dispatch and thread split as dense_update."""
    cdef int nt = _threads_for(n)
    cdef _DenseJob job
    job.p = x
    job.g = y
    job.a = z
    job.o = NULL
    job.f32 = floating is float
    if nt == 1:
        _probe_chunk(&job, 0, n)
    else:
        fa_parallel_for(n, _grain(n, nt), _probe_chunk, &job, nt,
                        fa_site(FA_KIND_PROBE, floating is double), n)


# ----------------------------------------------------------------------------- argument gate
cdef int _C_FLAGS = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
cdef int _F_FLAGS = cnp.NPY_ARRAY_F_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
cdef int _W_FLAGS = cnp.NPY_ARRAY_WRITEABLE


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


cdef inline bint _same_layout(cnp.ndarray p, cnp.ndarray g, cnp.ndarray a,
                              bint fortran_ok) noexcept:
    """One shape, aligned, native byte order, contiguous in one order (C, or F when
    `fortran_ok` and `p` is not C-contiguous), `p` and `a` writable: the layout part of the
    C-level gates (dtypes are each gate's own rule)."""
    cdef int layout = _C_FLAGS if not fortran_ok or _plain_contiguous(p, _C_FLAGS) else _F_FLAGS
    return (_same_shape(p, g) and _same_shape(p, a)
            and _plain_contiguous(p, layout | _W_FLAGS) and _plain_contiguous(g, layout)
            and _plain_contiguous(a, layout | _W_FLAGS))


cdef inline bint _contiguous_gate(cnp.ndarray p, cnp.ndarray g, cnp.ndarray a, int typenum,
                                  bint fortran_ok) noexcept:
    """The C-level fast-path condition of a three-operand step (adagrad_update, ArrayGroup,
    bandwidth_probe): all three of dtype `typenum` and _same_layout. Overlap is each caller's
    own check (disjoint ranges, or a table's guard)."""
    return (cnp.PyArray_TYPE(p) == typenum and cnp.PyArray_TYPE(g) == typenum
            and cnp.PyArray_TYPE(a) == typenum and _same_layout(p, g, a, fortran_ok))


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
    adagrad_options(o, lr_, o.eps, o.eps_inside, o.weight_decay, decay, s, maximize is True)
    return True


cdef void _set_opts(DenseOpts* o, object opts) except *:
    """Fill the C struct from a _validation.DenseOptions."""
    o.lr = opts.clr
    o.eps = opts.eps
    o.weight_decay = opts.weight_decay
    o.decoupled_weight_decay = opts.decoupled_weight_decay
    o.maximize = opts.maximize
    o.eps_inside = opts.eps_inside
    o.zero_if_accum_zero = opts.zero_if_accum_zero
    o.skip_accumulate = not opts.update_slots
    o.grad_scale = opts.grad_scale


# The NumPy twin, handed in by the backend layer (fastadagrad._backend.NumpyBackend): this
# module never imports it (dependencies point one way: backend -> kernels / twin). `_twin`
# updates the memory the C loops cannot address (unaligned or byte-swapped arrays:
# _twin.update_validated, update_mixed_validated, family_validated, sum_of_squares), runs the
# float16/bfloat16 sparse widening (_twin.sparse_mixed_step, with this module's float32 step),
# and, while the NumPy backend is selected (`_forward`), takes the public entry points, so
# that early-bound references (`from fastadagrad import adagrad_update`) follow the backend.
cdef object _twin = None
cdef bint _forward = False


def _bind_twin(twin, forward):
    """Called by fastadagrad._backend only: the twin's functions, and whether the public
    entry points forward to them (the NumPy backend is selected)."""
    global _twin, _forward
    _twin = twin
    _forward = bool(forward)


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


def adagrad_update(param, grad, accum, *, lr=0.01, eps=1e-10, eps_placement="outside",
                   weight_decay=0.0, lr_decay=0.0, step=1, maximize=False, update_slots=True,
                   clipnorm=None, master=None, clipvalue=None, stochastic_rounding=False,
                   seed=0):
    """In-place AdaGrad step: accum += g*g; param -= clr*g / (sqrt(accum) + eps)."""
    if _forward:
        return _twin.adagrad_update(param, grad, accum, lr=lr, eps=eps, eps_placement=eps_placement,
                         weight_decay=weight_decay, lr_decay=lr_decay, step=step,
                         maximize=maximize, update_slots=update_slots, clipnorm=clipnorm,
                         master=master, clipvalue=clipvalue,
                         stochastic_rounding=stochastic_rounding, seed=seed)
    cdef DenseOpts o
    cdef cnp.ndarray p, g, a
    cdef int typenum
    cdef double cv = 0.0
    # Gate: exact ndarrays of one float type and shape, contiguous in one order, aligned, native
    # byte order, param/accum writable, disjoint, plain-number hyper-parameters (clipvalue: a
    # plain number > 0, the clipped loop of _clip.pxi).
    if (update_slots is True and clipnorm is None and master is None
            and (clipvalue is None or _real_nonneg(clipvalue, &cv) and cv > 0)
            and stochastic_rounding is False
            and cnp.PyArray_CheckExact(param) and cnp.PyArray_CheckExact(grad)
            and cnp.PyArray_CheckExact(accum)):
        p = param
        g = grad
        a = accum
        typenum = cnp.PyArray_TYPE(p)
        if ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
                and _contiguous_gate(p, g, a, typenum, True)
                and _disjoint(p, g, cnp.PyArray_NBYTES(p)) and _disjoint(p, a, cnp.PyArray_NBYTES(p))
                and _disjoint(g, a, cnp.PyArray_NBYTES(p))
                and _fast_hyper(lr, eps, eps_placement, weight_decay, lr_decay, step, maximize, &o)):
            if cv > 0:
                _run_clip_contiguous(p, g, a, &o, cv)
            else:
                _run_contiguous(p, g, a, &o)
            return None
        if cv == 0 and _mixed_gate(p, g, a, lr, eps, eps_placement, weight_decay, lr_decay,
                                   step, maximize):
            return None   # float16/bfloat16 (_mixed.pxi)
    # Everything else: full validation (raises before any write), then the general path.
    opts = _validation.check_dense(param, grad, accum, lr, eps, eps_placement, weight_decay,
                                   lr_decay, step, maximize, master, update_slots=update_slots,
                                   stochastic_rounding=stochastic_rounding, seed=seed)
    clip = _validation.check_dense_clipnorm(clipnorm, param, grad, master)
    cv = _clipping.check_dense_clipvalue(clipvalue, clip, param, grad, master)
    if clip is not None:   # a reduction pass over grad, then the step with the scale folded in
        opts = opts._replace(grad_scale=_validation.clip_scale(sum_of_squares(grad), clip))
    if cv > 0:             # clipped element by element inside the loop
        update_clip_validated(param, grad, accum, opts, cv)
        return None
    update_validated(param, grad, accum, opts, master)
    return None


cdef inline bint _is_f32_or_f64(object x) noexcept:
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    return typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE


def update_validated(param, grad, accum, opts, master=None):
    """The general path for arrays that passed _validation: any layout, updated in place.
    `opts` is a _validation.DenseOptions. Used by adagrad_update and the optimizer."""
    cdef DenseOpts o
    # Validated arrays are float32/float64 or mixed precision (float16/bfloat16: _mixed.pxi).
    # A C-level test, no Python call: apply_steps relies on running no Python bytecode between
    # its first write and its last count (that is where a pending KeyboardInterrupt lands).
    if master is not None or not _is_f32_or_f64(param):
        update_mixed_validated(param, grad, accum, opts, master)
        return
    _set_opts(&o, opts)
    if param.size == 0:
        return
    if not (param.flags.aligned and grad.flags.aligned and accum.flags.aligned
            and param.dtype.isnative and grad.dtype.isnative and accum.dtype.isnative):
        # Unaligned or byte-swapped memory: the C loops cannot address it, the NumPy twin can
        # (it writes through out=, in place, with the same bits), without warnings as ever.
        with _np.errstate(all="ignore"):
            _twin.update_validated(param, grad, accum, opts)
    elif ((param.flags.c_contiguous and grad.flags.c_contiguous and accum.flags.c_contiguous)
          or (param.flags.f_contiguous and grad.flags.f_contiguous and accum.flags.f_contiguous)):
        _run_contiguous(param, grad, accum, &o)
    else:
        _run_strided(param, grad, accum, &o)


def apply_steps(list steps):
    """The optimizer's writes for one step, validated beforehand: for each group
    `(counter, group, grads, opts, clr, items)`, one ArrayGroup call (`group`, when not None
    and its gate passes) or one call per item `(param, grad, accum, idx, duplicates)` (`idx`
    None: dense, else a sparse step with `grad` the values and that duplicates rule; a dense
    item may carry a 6th element, the float32 master weights or None; an item whose `param`
    is a list is a batch `(params, grads, accums, None, None, masters)` of one dtype
    combination: one update_multi_validated call), then `counter.step += 1`. Compiled code from
    the first write to the last count (no Python bytecode, where pending signals are handled),
    so a KeyboardInterrupt arrives before or after the whole step, never inside it (except
    for unaligned/byte-swapped arrays, which the NumPy twin updates)."""
    cdef object counter, table, grads, opts, items, item, p, g, a, idx, dup
    cdef double clr
    for counter, table, grads, opts, clr, items in steps:
        if table is None or table.step(grads, opts, clr, False) != -1:
            for item in items:
                p, g, a, idx, dup = item[:5]
                if type(p) is list:
                    update_multi_validated(p, g, a, item[5], opts)
                elif idx is None:
                    update_validated(p, g, a, opts, item[5] if len(item) > 5 else None)
                else:
                    sparse_dup_validated(p, a, idx, g, opts, dup)
        counter.step += 1


def all_finite(a):
    """True if no element of the array `a` is NaN or inf: np.isfinite(a).all(), with a
    C-contiguous, aligned, native float32/float64 array scanned by the ISA loop (split across
    threads like the update); any other array goes to NumPy."""
    cdef cnp.ndarray arr
    cdef Py_ssize_t offsets[2]
    cdef void* data
    cdef int typenum
    cdef Py_ssize_t bad
    if not (cnp.PyArray_Check(a) and _plain_contiguous(<cnp.ndarray>a, _C_FLAGS)):
        return bool(_np.isfinite(a).all())
    arr = a
    typenum = cnp.PyArray_TYPE(arr)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        return bool(_np.isfinite(a).all())
    offsets[0] = 0
    offsets[1] = cnp.PyArray_SIZE(arr)
    data = cnp.PyArray_DATA(arr)
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            bad = multi_first_nonfinite(1, <float**>&data, offsets)
        else:
            bad = multi_first_nonfinite(1, <double**>&data, offsets)
    return bad == -1


def data_address(a):
    """The address of `a`'s first element (a.__array_interface__['data'][0], without building
    that dict: ~50 ns instead of ~1.3 us)."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"expected a NumPy array, got {type(a).__name__}")
    return <size_t>cnp.PyArray_DATA(<cnp.ndarray>a)


def bandwidth_probe(x, y, z):
    """z += y; x -= z over C-contiguous arrays of one float dtype and shape: AdaGrad's traffic
    (3 reads, 2 writes) without sqrt/div, what the memory can do (the benchmark's ceiling)."""
    cdef cnp.ndarray cx, cy, cz
    cdef int typenum
    if cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(y) and cnp.PyArray_CheckExact(z):
        cx, cy, cz = x, y, z
        typenum = cnp.PyArray_TYPE(cx)
        if ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
                and _contiguous_gate(cx, cy, cz, typenum, False)):
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


# ----------------------------------------------------------------------------- many arrays
cdef inline Py_ssize_t _first_array(Py_ssize_t k, const Py_ssize_t* offsets, Py_ssize_t pos) noexcept nogil:
    """Index i with offsets[i] <= pos < offsets[i + 1] (offsets non-decreasing, offsets[0] = 0)."""
    cdef Py_ssize_t lo = 0, hi = k, mid
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offsets[mid] <= pos:
            lo = mid
        else:
            hi = mid
    return lo


cdef void _multi_range(Py_ssize_t k, floating** params, floating** grads, floating** accums,
                       const Py_ssize_t* offsets, Py_ssize_t lo, Py_ssize_t hi,
                       const DenseOpts* o) noexcept nogil:
    """Update global elements [lo, hi) of the concatenation of the k arrays."""
    cdef Py_ssize_t i = _first_array(k, offsets, lo), s, e
    while i < k and offsets[i] < hi:
        s = max(lo, offsets[i]) - offsets[i]
        e = min(hi, offsets[i + 1]) - offsets[i]
        if e > s:
            _dense_run(e - s, params[i] + s, grads[i] + s, accums[i] + s, o)
        i += 1


ctypedef struct _MultiJob:        # k arrays as one concatenation, split into chunks
    Py_ssize_t k
    void** params
    void** grads
    void** accums
    const Py_ssize_t* offsets
    const DenseOpts* o
    bint f32
    int bad                       # set by a chunk of the non-finite scan that found NaN/inf


cdef void _multi_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _MultiJob* j = <_MultiJob*>ctx
    if j.f32:
        _multi_range(j.k, <float**>j.params, <float**>j.grads, <float**>j.accums, j.offsets,
                     lo, hi, j.o)
    else:
        _multi_range(j.k, <double**>j.params, <double**>j.grads, <double**>j.accums, j.offsets,
                     lo, hi, j.o)


cdef void _nonfinite_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _MultiJob* j = <_MultiJob*>ctx
    cdef int found
    if j.f32:
        found = _range_has_nonfinite(j.k, <float**>j.grads, j.offsets, lo, hi)
    else:
        found = _range_has_nonfinite(j.k, <double**>j.grads, j.offsets, lo, hi)
    if found:
        j.bad = 1


cdef void multi_dense_update(Py_ssize_t k, floating** params, floating** grads,
                             floating** accums, const Py_ssize_t* offsets,
                             const DenseOpts* o) noexcept nogil:
    """One step over k contiguous arrays (array i has offsets[i+1] - offsets[i] elements),
    split across threads by elements of their concatenation, not by arrays."""
    cdef Py_ssize_t total = offsets[k]
    cdef int nt = _threads_for(total)
    cdef _MultiJob job
    if nt == 1:
        _multi_range(k, params, grads, accums, offsets, 0, total, o)
        return
    job.k = k
    job.params = <void**>params
    job.grads = <void**>grads
    job.accums = <void**>accums
    job.offsets = offsets
    job.o = o
    job.f32 = floating is float
    fa_parallel_for(total, _grain(total, nt), _multi_chunk, &job, nt,
                    fa_site(FA_KIND_MULTI, floating is double), total)


cdef Py_ssize_t multi_first_nonfinite(Py_ssize_t k, floating** grads,
                                      const Py_ssize_t* offsets) noexcept nogil:
    """Index of the first array whose grad holds NaN or inf, or -1: a vectorised scan that
    reads only the grads, split across threads like the update."""
    cdef Py_ssize_t total = offsets[k], i
    cdef int nt = _threads_for(total)
    cdef _MultiJob job
    if nt > 1:
        job.k = k
        job.grads = <void**>grads
        job.offsets = offsets
        job.f32 = floating is float
        job.bad = 0
        fa_parallel_for(total, _grain(total, nt), _nonfinite_chunk, &job, nt,
                        fa_site(FA_KIND_SCAN, floating is double), total)
        if job.bad == 0:
            return -1
    for i in range(k):   # serial: find which array (only reached when something is bad)
        if _range_has_nonfinite(k, grads, offsets, offsets[i], offsets[i + 1]):
            return i
    return -1


cdef int _range_has_nonfinite(Py_ssize_t k, floating** grads, const Py_ssize_t* offsets,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i = _first_array(k, offsets, lo), s, e
    while i < k and offsets[i] < hi:
        s = max(lo, offsets[i]) - offsets[i]
        e = min(hi, offsets[i + 1]) - offsets[i]
        if e > s:
            if floating is float:
                if not _table.all_finite_f32(e - s, grads[i] + s):
                    return 1
            else:
                if not _table.all_finite_f64(e - s, grads[i] + s):
                    return 1
        i += 1
    return 0


cdef class _Guard:
    """The byte ranges of arrays no grad may touch (an optimizer's params, accumulators and
    master weights), sorted by start with the running maximum of their ends: one binary search
    per grad. Holds no reference: its owner keeps the arrays alive."""

    cdef Py_ssize_t n
    cdef Py_ssize_t* lo
    cdef Py_ssize_t* reach

    def __cinit__(self, list arrays):
        cdef Py_ssize_t i, reach = 0
        spans = sorted(_validation.byte_bounds(x) for x in arrays if x.size)
        self.n = len(spans)
        self.lo = <Py_ssize_t*>PyMem_Malloc((self.n + 1) * sizeof(Py_ssize_t))
        self.reach = <Py_ssize_t*>PyMem_Malloc((self.n + 1) * sizeof(Py_ssize_t))
        if not (self.lo and self.reach):
            raise MemoryError()
        for i, (lo, hi) in enumerate(spans):
            reach = max(reach, hi)
            self.lo[i] = lo
            self.reach[i] = reach

    def __dealloc__(self):
        PyMem_Free(self.lo)
        PyMem_Free(self.reach)

    cdef bint hits(self, cnp.ndarray g) noexcept:
        """Does g's byte range (g contiguous) intersect a guarded array's range?"""
        cdef Py_ssize_t lo = <Py_ssize_t>cnp.PyArray_DATA(g)
        cdef Py_ssize_t hi = lo + cnp.PyArray_NBYTES(g), a = 0, b = self.n, mid
        if hi <= lo:
            return False
        while a < b:   # first guarded range starting at or after hi
            mid = (a + b) // 2
            if self.lo[mid] < hi:
                a = mid + 1
            else:
                b = mid
        return a > 0 and self.reach[a - 1] > lo


cdef class ArrayGroup:
    """The pointers of one parameter group: params and accumulators (fixed at creation)
    and the grads of the current step, with element offsets, ready for one C call.

    `guard` (default: these params and accumulators) lists every array a grad must not share
    memory with; the optimizer passes all params, accumulators and master weights."""

    cdef Py_ssize_t k
    cdef int typenum
    cdef void** params
    cdef void** accums
    cdef void** grads
    cdef Py_ssize_t* offsets
    cdef _Guard guard
    cdef list _params, _accums, _guard  # references keep the memory alive

    def __cinit__(self, list params, list accums, guard=None):
        cdef Py_ssize_t i, k = len(params)
        cdef cnp.ndarray p, a
        self.k = k
        self._params = list(params)
        self._accums = list(accums)
        self._guard = list(params) + list(accums) if guard is None else list(guard)
        self.guard = _Guard(self._guard)
        self.params = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.accums = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.grads = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.offsets = <Py_ssize_t*>PyMem_Malloc((k + 1) * sizeof(Py_ssize_t))
        if not (self.params and self.accums and self.grads and self.offsets):
            raise MemoryError()
        self.typenum = cnp.NPY_FLOAT
        self.offsets[0] = 0
        for i in range(k):
            p = params[i]
            a = accums[i]
            self.typenum = cnp.PyArray_TYPE(p)
            self.params[i] = cnp.PyArray_DATA(p)
            self.accums[i] = cnp.PyArray_DATA(a)
            self.offsets[i + 1] = self.offsets[i] + cnp.PyArray_SIZE(p)

    def __dealloc__(self):
        PyMem_Free(self.params)
        PyMem_Free(self.accums)
        PyMem_Free(self.grads)
        PyMem_Free(self.offsets)

    cdef bint _gate(self, list grads) noexcept:
        """All grads are exact, contiguous, aligned, native ndarrays of the params' dtype and
        shapes, not overlapping any guarded array; the params and accumulators still have the
        dtype, element count and data pointer the table was built with (a param changed in
        place, e.g. `p.dtype = ...`, is refused here), and are writable, contiguous (so they
        cover exactly the same bytes) and of one shape. Fills the grad pointers."""
        cdef Py_ssize_t i
        cdef cnp.ndarray p, a, g
        cdef object item
        if len(grads) != self.k:
            return False
        for i in range(self.k):
            item = grads[i]
            if not cnp.PyArray_CheckExact(item):
                return False
            g = item
            p = self._params[i]
            a = self._accums[i]
            if not (_contiguous_gate(p, g, a, self.typenum, True)
                    and cnp.PyArray_SIZE(p) == self.offsets[i + 1] - self.offsets[i]
                    and cnp.PyArray_DATA(p) == self.params[i]
                    and cnp.PyArray_DATA(a) == self.accums[i]):
                return False
            if self.guard.hits(g):
                return False
            self.grads[i] = cnp.PyArray_DATA(g)
        return True

    def gate(self, list grads):
        """True if `grads` pass the C gate (nothing is written either way)."""
        return self._gate(grads)

    def step(self, list grads, opts, double clr, bint check_finite, counter=None):
        """Gate the grads; if they pass, (optionally) scan them for NaN/inf and update every
        array in one parallel region with `opts` (a DenseOptions) at learning rate `clr`.
        Returns -2 if the gate refused (the caller validates and takes the general path),
        the index of the first non-finite grad (nothing written), or -1 when applied.
        When applied, `counter.step` (if a counter is given) is incremented in this same call,
        with no Python bytecode in between: a KeyboardInterrupt cannot separate the arrays'
        update from the count."""
        cdef DenseOpts o
        cdef Py_ssize_t bad = -1
        if not self._gate(grads):
            return -2
        _set_opts(&o, opts)
        o.lr = clr
        with nogil:
            if check_finite:
                bad = self._first_nonfinite()
            if bad < 0:
                self._update(&o)
        if bad < 0 and counter is not None:
            counter.step += 1
        return bad

    def first_nonfinite(self, list grads):
        """Index of the first grad holding NaN/inf (-1 if none, -2 if the gate refused)."""
        cdef Py_ssize_t bad
        if not self._gate(grads):
            return -2
        with nogil:
            bad = self._first_nonfinite()
        return bad

    cdef Py_ssize_t _first_nonfinite(self) noexcept nogil:
        if self.typenum == cnp.NPY_FLOAT:
            return multi_first_nonfinite(self.k, <float**>self.grads, self.offsets)
        return multi_first_nonfinite(self.k, <double**>self.grads, self.offsets)

    cdef void _update(self, const DenseOpts* o) noexcept nogil:
        if self.typenum == cnp.NPY_FLOAT:
            multi_dense_update(self.k, <float**>self.params, <float**>self.grads,
                               <float**>self.accums, self.offsets, o)
        else:
            multi_dense_update(self.k, <double**>self.params, <double**>self.grads,
                               <double**>self.accums, self.offsets, o)




include "_sparse.pxi"
include "_duplicates.pxi"
include "_family.pxi"
include "_clipnorm.pxi"
include "_clip.pxi"
include "_mixed.pxi"
include "_mixed_multi.pxi"


# ----------------------------------------------------------------------------- C-level API
# Declared in kernels.pxd for `cimport fastadagrad.kernels`; thin non-fused names over the
# dispatching functions above.
cdef inline double _effective_lr(double lr, double lr_decay, long long step) noexcept nogil:
    """clr = lr / (1 + (step - 1) * lr_decay), in double: the one C spelling of the formula
    (the Python one is in _validation.py)."""
    return lr / (1.0 + <double>(step - 1) * lr_decay)


cdef void adagrad_options(DenseOpts* opts, double lr, double eps, bint eps_inside,
                          double weight_decay, double lr_decay, long long step,
                          bint maximize) noexcept nogil:
    opts.lr = _effective_lr(lr, lr_decay, step)
    opts.eps = eps
    opts.eps_inside = eps_inside
    opts.weight_decay = weight_decay
    opts.maximize = maximize
    opts.decoupled_weight_decay = 0
    opts.zero_if_accum_zero = False
    opts.skip_accumulate = False
    opts.grad_scale = 1.0


cdef void adagrad_dense_f32(Py_ssize_t n, float* param, const float* grad, float* accum,
                            const DenseOpts* opts) noexcept nogil:
    dense_update(n, param, grad, accum, opts)


cdef void adagrad_dense_f64(Py_ssize_t n, double* param, const double* grad, double* accum,
                            const DenseOpts* opts) noexcept nogil:
    dense_update(n, param, grad, accum, opts)


cdef void adagrad_multi_f32(Py_ssize_t k, float** params, float** grads, float** accums,
                            const Py_ssize_t* offsets, const DenseOpts* opts) noexcept nogil:
    multi_dense_update(k, params, grads, accums, offsets, opts)


cdef void adagrad_multi_f64(Py_ssize_t k, double** params, double** grads, double** accums,
                            const Py_ssize_t* offsets, const DenseOpts* opts) noexcept nogil:
    multi_dense_update(k, params, grads, accums, offsets, opts)


cdef Py_ssize_t adagrad_first_nonfinite_f32(Py_ssize_t k, float** grads,
                                            const Py_ssize_t* offsets) noexcept nogil:
    return multi_first_nonfinite(k, grads, offsets)


cdef Py_ssize_t adagrad_first_nonfinite_f64(Py_ssize_t k, double** grads,
                                            const Py_ssize_t* offsets) noexcept nogil:
    return multi_first_nonfinite(k, grads, offsets)


cdef Py_ssize_t adagrad_sparse_f32(float* table, float* accum, bint rowwise, Py_ssize_t d,
                                   const int64_t* idx, Py_ssize_t b, const float* grads,
                                   const DenseOpts* opts) noexcept nogil:
    return sparse_update(table, accum, rowwise, d, idx, b, grads, opts)


cdef Py_ssize_t adagrad_sparse_f64(double* table, double* accum, bint rowwise, Py_ssize_t d,
                                   const int64_t* idx, Py_ssize_t b, const double* grads,
                                   const DenseOpts* opts) noexcept nogil:
    return sparse_update(table, accum, rowwise, d, idx, b, grads, opts)


cdef void adagrad_dense_mixed(Py_ssize_t n, void* param, const void* grad, void* accum,
                              float* master, const MixedTypes* types,
                              const DenseOpts* opts) noexcept nogil:
    mixed_dense_update(n, <char*>param, 2, <const char*>grad, _itemsize(types.grad),
                       <char*>accum, _itemsize(types.accum), master, types, opts)


cdef void adagrad_dense_mixed_sr(Py_ssize_t n, void* param, const void* grad, void* accum,
                                 float* master, const MixedTypes* types, const DenseOpts* opts,
                                 uint64_t seed, long long step, int64_t index0) noexcept nogil:
    cdef SrKey key
    fa_sr_keys(seed, step, &key)    # _stochastic.keys(seed, step)
    key.index0 = index0             # the counter of the call's first element
    mixed_dense_update(n, <char*>param, 2, <const char*>grad, _itemsize(types.grad),
                       <char*>accum, _itemsize(types.accum), master, types, opts, &key)


include "_c_api.pxi"
