# Mixed precision (issue 15): float16 / bfloat16 params with float32 (or the param's dtype)
# grads and accumulators, optional float32 master weights. Included by kernels.pyx. The loops
# are _csrc/loops_mixed.h (float32 arithmetic, one rounding per stored result); here: the
# thread split and the routing of validated arrays (the NumPy twin is reference.update_mixed_validated).

# (MixedTypes, FA_DT_*: cimported by kernels.pxd)
from fastadagrad import _mixed_precision


ctypedef struct _MixedJob:
    char* param
    const char* grad
    char* accum
    float* master
    Py_ssize_t ps, gs, as_
    const MixedTypes* t
    const DenseOpts* o
    const SrKey* k


cdef inline int _mixed_variant(const MixedTypes* t, bint master, bint sr) noexcept nogil:
    """The pool's history variant of a mixed loop: its dtypes (FA_DT_* 0-2 each), master weights
    and stochastic rounding, which all change its cost per element."""
    return t.param + 3 * t.grad + 9 * t.accum + 27 * master + 54 * sr


cdef inline void _mixed_run(Py_ssize_t n, char* param, const char* grad, char* accum,
                            float* master, const MixedTypes* t, const DenseOpts* o,
                            const SrKey* k, Py_ssize_t lo) noexcept nogil:
    """n elements from element `lo` of the call (k: stochastic rounding or NULL)."""
    cdef SrKey kk
    if k == NULL:
        _table.dense_mixed(n, param, grad, accum, master, t, o)
    else:
        kk = k[0]
        kk.index0 = k.index0 + lo
        _table.dense_mixed_sr(n, param, grad, accum, master, t, o, &kk)


cdef void _mixed_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _MixedJob* j = <_MixedJob*>ctx
    _mixed_run(hi - lo, j.param + lo * j.ps, j.grad + lo * j.gs, j.accum + lo * j.as_,
               j.master + lo if j.master != NULL else NULL, j.t, j.o, j.k, lo)


cdef void mixed_dense_update(Py_ssize_t n, char* param, Py_ssize_t ps, const char* grad,
                             Py_ssize_t gs, char* accum, Py_ssize_t as_, float* master,
                             const MixedTypes* t, const DenseOpts* o,
                             const SrKey* k=NULL) noexcept nogil:
    """Contiguous mixed step over n elements (ps, gs, as_: the itemsizes), split over the
    worker pool like dense_update (chunks of whole 16-element vectors: elementwise, so any split
    gives the same bytes; stochastic rounding's counters are element indices)."""
    cdef int nt = _threads_for(n)
    cdef _MixedJob job
    if nt == 1:
        _mixed_run(n, param, grad, accum, master, t, o, k, 0)
        return
    job.param = param
    job.grad = grad
    job.accum = accum
    job.master = master
    job.ps = ps
    job.gs = gs
    job.as_ = as_
    job.t = t
    job.o = o
    job.k = k
    fa_parallel_for(n, _grain(n, nt), _mixed_chunk, &job, nt,
                    fa_site(FA_KIND_MIXED, _mixed_variant(t, master != NULL, k != NULL)), n)


cdef int _bf16_typenum = -1   # ml_dtypes' bfloat16, once an array of it passed _validation
cdef int _f16_typenum = _np.dtype(_np.float16).num


cdef inline int _storage(cnp.ndarray x) noexcept:
    """FA_DT_* of a float32/float16/(validated) bfloat16 array, else -1."""
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum == cnp.NPY_FLOAT:
        return FA_DT_F32
    if typenum == _f16_typenum:
        return FA_DT_F16
    if typenum == _bf16_typenum:
        return FA_DT_BF16
    return -1


cdef inline Py_ssize_t _itemsize(int code) noexcept nogil:
    """Bytes per element of storage type `code` (FA_DT_F32: 4; float16/bfloat16: 2)."""
    return 4 if code == FA_DT_F32 else 2


cdef int _code(str name, cnp.ndarray x) except -2:
    """FA_DT_* of a validated float16/bfloat16/float32 array: C-level once bfloat16 is known;
    else identified by _mixed_precision, and a native bfloat16 registered (accepted as
    ml_dtypes' bfloat16: the C gates take it from now on)."""
    global _bf16_typenum
    cdef int code = _storage(x)
    if code < 0:
        code = _mixed_precision.storage_code(name, x.dtype)
        if code == FA_DT_BF16 and x.dtype.isnative:
            _bf16_typenum = cnp.PyArray_TYPE(x)
    return code


cdef bint _mixed_gate(cnp.ndarray p, cnp.ndarray g, cnp.ndarray a, object lr, object eps,
                      object eps_placement, object weight_decay, object lr_decay, object step,
                      object maximize):
    """adagrad_update's C-level gate for float16/bfloat16 params (exact C-contiguous, aligned,
    native, disjoint ndarrays of an accepted combination, plain-number hyper-parameters, no
    master/clipping/stochastic rounding): runs the step and returns True, else False (the
    caller validates in Python, which names what is wrong)."""
    cdef DenseOpts o
    cdef MixedTypes t
    cdef Py_ssize_t nbytes
    t.param = _storage(p)
    t.grad = _storage(g)
    t.accum = _storage(a)
    if (t.param == FA_DT_F32 or t.param < 0 or (t.grad != t.param and t.grad != FA_DT_F32)
            or (t.accum != t.param and t.accum != FA_DT_F32)):
        return False
    if not (_same_shape(p, g) and _same_shape(p, a) and _plain_contiguous(p, _C_FLAGS | _W_FLAGS)
            and _plain_contiguous(g, _C_FLAGS) and _plain_contiguous(a, _C_FLAGS | _W_FLAGS)):
        return False
    nbytes = cnp.PyArray_NBYTES(p)
    if not (_disjoint_sized(p, g, nbytes, cnp.PyArray_NBYTES(g))
            and _disjoint_sized(p, a, nbytes, cnp.PyArray_NBYTES(a))
            and _disjoint_sized(g, a, cnp.PyArray_NBYTES(g), cnp.PyArray_NBYTES(a))):
        return False
    if not _fast_hyper(lr, eps, eps_placement, weight_decay, lr_decay, step, maximize, &o):
        return False
    if cnp.PyArray_SIZE(p):
        _run_mixed(cnp.PyArray_SIZE(p), p, g, a, NULL, &t, &o, NULL)
    return True


cdef inline bint _disjoint_sized(cnp.ndarray x, cnp.ndarray y, Py_ssize_t nx,
                                 Py_ssize_t ny) noexcept:
    cdef char* px = <char*>cnp.PyArray_DATA(x)
    cdef char* py = <char*>cnp.PyArray_DATA(y)
    return nx == 0 or ny == 0 or px + nx <= py or py + ny <= px


cdef bint _native_aligned(x) noexcept:
    return x is None or (x.flags.aligned and x.dtype.isnative)


cdef bint _all_contiguous(list arrays):
    return (all(x.flags.c_contiguous for x in arrays)
            or all(x.flags.f_contiguous for x in arrays))


def update_mixed_validated(param, grad, accum, opts, master=None):
    """The mixed-precision step on arrays that passed _validation (any layout, in place):
    `opts` a DenseOptions, `master` None or the float32 master weights."""
    cdef DenseOpts o
    cdef MixedTypes t
    cdef cnp.ndarray p, g, a, m
    cdef SrKey key
    cdef float* mptr = NULL
    cdef Py_ssize_t n = param.size, sp, sg, sa, sm = 0
    _set_opts(&o, opts)
    t.param = _code("param", param)
    t.grad = _code("grad", grad)
    t.accum = _code("accum", accum)
    if n == 0:
        return
    arrays = [param, grad, accum] + ([] if master is None else [master])
    sr = opts.sr_keys
    if not all(_native_aligned(x) for x in arrays) or (
            sr is not None and not all(x.flags.c_contiguous for x in arrays)):
        # the C loops cannot address it (or, rounding stochastically, count its elements in
        # C order); the NumPy twin can (same bits, in place)
        _twin.update_mixed_validated(param, grad, accum, opts, master)
    elif _all_contiguous(arrays):
        p, g, a = param, grad, accum
        if master is not None:
            m = master
            mptr = <float*>cnp.PyArray_DATA(m)
        if sr is not None:
            key.k0, key.k1, key.index0 = sr[0], sr[1], 0
        _run_mixed(n, p, g, a, mptr, &t, &o, &key if sr is not None else NULL)
    else:
        ops = [param, grad, accum] + ([] if master is None else [master])
        flags = [["readwrite"], ["readonly"], ["readwrite"], ["readwrite"]][:len(ops)]
        it = _np.nditer(ops, flags=["external_loop", "zerosize_ok", "refs_ok"], op_flags=flags,
                        order="K")
        with it:
            for run in it:
                p, g, a = run[0], run[1], run[2]
                if master is not None:
                    m = run[3]
                    mptr = <float*>cnp.PyArray_DATA(m)
                    sm = cnp.PyArray_STRIDES(m)[0]
                n = cnp.PyArray_DIMS(p)[0]
                sp = cnp.PyArray_STRIDES(p)[0]
                sg = cnp.PyArray_STRIDES(g)[0]
                sa = cnp.PyArray_STRIDES(a)[0]
                _run_mixed_strided(n, <char*>cnp.PyArray_DATA(p), sp, <char*>cnp.PyArray_DATA(g),
                                   sg, <char*>cnp.PyArray_DATA(a), sa, mptr, sm, &t, &o)


cdef void _run_mixed(Py_ssize_t n, cnp.ndarray p, cnp.ndarray g, cnp.ndarray a, float* m,
                     const MixedTypes* t, const DenseOpts* o, const SrKey* k) noexcept:
    cdef char* pp = <char*>cnp.PyArray_DATA(p)
    cdef char* gp = <char*>cnp.PyArray_DATA(g)
    cdef char* ap = <char*>cnp.PyArray_DATA(a)
    cdef Py_ssize_t ps = cnp.PyArray_ITEMSIZE(p), gs = cnp.PyArray_ITEMSIZE(g)
    cdef Py_ssize_t as_ = cnp.PyArray_ITEMSIZE(a)
    if n >= _nogil_min:
        with nogil:
            mixed_dense_update(n, pp, ps, gp, gs, ap, as_, m, t, o, k)
    else:
        mixed_dense_update(n, pp, ps, gp, gs, ap, as_, m, t, o, k)


cdef void _run_mixed_strided(Py_ssize_t n, char* p, Py_ssize_t sp, char* g, Py_ssize_t sg,
                             char* a, Py_ssize_t sa, float* m, Py_ssize_t sm,
                             const MixedTypes* t, const DenseOpts* o) noexcept:
    if n >= _nogil_min:
        with nogil:
            _table.strided_mixed(n, p, sp, g, sg, a, sa, m, sm, t, o)
    else:
        _table.strided_mixed(n, p, sp, g, sg, a, sa, m, sm, t, o)
