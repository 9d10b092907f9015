# Many arrays of one dtype combination in one call (issue 15 §2: the optimizer's groups that mix
# dtypes step one call per (param, grad, accum dtype, master or not) combination). Included by
# kernels.pyx after _mixed.pxi. The arrays of a combination are treated as one concatenation and
# split across the worker pool by elements, as ArrayGroup's float32/float64 table is (one pool
# dispatch for all of them); the NumPy twin is reference.update_multi_validated.

ctypedef struct _MultiMixedJob:
    Py_ssize_t k
    char** params
    char** grads
    char** accums
    float** masters               # NULL: no master weights in this combination
    const Py_ssize_t* offsets
    Py_ssize_t ps, gs, as_        # itemsizes
    const MixedTypes* t
    const DenseOpts* o


cdef void _multi_mixed_range(const _MultiMixedJob* j, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Update global elements [lo, hi) of the concatenation of the k arrays."""
    cdef Py_ssize_t i = _first_array(j.k, j.offsets, lo), s, e
    while i < j.k and j.offsets[i] < hi:
        s = max(lo, j.offsets[i]) - j.offsets[i]
        e = min(hi, j.offsets[i + 1]) - j.offsets[i]
        if e > s:
            _table.dense_mixed(e - s, j.params[i] + s * j.ps, j.grads[i] + s * j.gs,
                               j.accums[i] + s * j.as_,
                               j.masters[i] + s if j.masters != NULL else NULL, j.t, j.o)
        i += 1


cdef void _multi_mixed_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _multi_mixed_range(<_MultiMixedJob*>ctx, lo, hi)


cdef void multi_mixed_update(Py_ssize_t k, char** params, char** grads, char** accums,
                             float** masters, const Py_ssize_t* offsets, const MixedTypes* t,
                             const DenseOpts* o) noexcept nogil:
    """One mixed-precision step over k contiguous arrays of the combination `t` (array i has
    offsets[i+1] - offsets[i] elements; masters NULL or k float32 arrays), split across threads
    by elements of their concatenation (elementwise loops: any split gives the same bytes)."""
    cdef Py_ssize_t total = offsets[k]
    cdef int nt = _threads_for(total)
    cdef _MultiMixedJob job
    job.k = k
    job.params = params
    job.grads = grads
    job.accums = accums
    job.masters = masters
    job.offsets = offsets
    job.ps = 2
    job.gs = _itemsize(t.grad)
    job.as_ = _itemsize(t.accum)
    job.t = t
    job.o = o
    if nt == 1:
        _multi_mixed_range(&job, 0, total)
    else:
        fa_parallel_for(total, _grain(total, nt), _multi_mixed_chunk, &job, nt,
                        fa_site(FA_KIND_MIXED_MULTI, _mixed_variant(t, masters != NULL, False)),
                        total)


cdef inline bint _all_plain(cnp.ndarray p, cnp.ndarray g, cnp.ndarray a, object m,
                            int flags) noexcept:
    """param, grad, accum (and master, unless None) all have `flags` and native byte order."""
    return (_plain_contiguous(p, flags) and _plain_contiguous(g, flags)
            and _plain_contiguous(a, flags)
            and (m is None or _plain_contiguous(<cnp.ndarray>m, flags)))


cdef bint _fits_multi(cnp.ndarray p, cnp.ndarray g, cnp.ndarray a, object m, int tp, int tg,
                      int ta) noexcept:
    """One array of the call fits its pointer table: the combination's dtypes, one element
    count, and param, grad, accum (and float32 master) all C-contiguous or all F-contiguous,
    aligned and native."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    if not (cnp.PyArray_TYPE(p) == tp and cnp.PyArray_TYPE(g) == tg
            and cnp.PyArray_TYPE(a) == ta and cnp.PyArray_SIZE(g) == n
            and cnp.PyArray_SIZE(a) == n):
        return False
    if m is not None and not (cnp.PyArray_TYPE(<cnp.ndarray>m) == cnp.NPY_FLOAT
                              and cnp.PyArray_SIZE(<cnp.ndarray>m) == n):
        return False
    return _all_plain(p, g, a, m, _C_FLAGS) or _all_plain(p, g, a, m, _F_FLAGS)


cdef class _PointerTable:
    """k + 1 entries of each pointer table and the offsets, freed with the object."""
    cdef void** params
    cdef void** grads
    cdef void** accums
    cdef void** masters
    cdef Py_ssize_t* offsets

    def __cinit__(self, Py_ssize_t k):
        self.params = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.grads = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.accums = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.masters = <void**>PyMem_Malloc((k + 1) * sizeof(void*))
        self.offsets = <Py_ssize_t*>PyMem_Malloc((k + 1) * sizeof(Py_ssize_t))
        if not (self.params and self.grads and self.accums and self.masters and self.offsets):
            raise MemoryError()
        self.offsets[0] = 0

    def __dealloc__(self):
        PyMem_Free(self.params)
        PyMem_Free(self.grads)
        PyMem_Free(self.accums)
        PyMem_Free(self.masters)
        PyMem_Free(self.offsets)


def update_multi_validated(list params, list grads, list accums, list masters, opts):
    """One step over arrays of ONE dtype combination that passed _validation (params[i],
    grads[i], accums[i], masters[i]: float32 or float64 arrays of one dtype with masters None,
    or float16/bfloat16 params of one (param, grad, accum) combination with masters all None or
    all float32): every array the C loops can address (contiguous, aligned, native) in one
    compiled call over their concatenation (one pool dispatch); any other array (and, as a
    guard, any array of another combination) by update_validated, in place, same bytes."""
    cdef Py_ssize_t k = len(params), i, n = 0
    cdef cnp.ndarray p, g, a
    cdef object m
    cdef int tp, tg, ta
    cdef DenseOpts o
    cdef MixedTypes t
    cdef _PointerTable tab
    cdef bint with_master
    if k == 0:
        return
    p, g, a = params[0], grads[0], accums[0]
    tp, tg, ta = cnp.PyArray_TYPE(p), cnp.PyArray_TYPE(g), cnp.PyArray_TYPE(a)
    with_master = masters[0] is not None
    if tp == cnp.NPY_FLOAT or tp == cnp.NPY_DOUBLE:
        with_master = False
    else:
        t.param = _code("param", p)
        t.grad = _code("grad", g)
        t.accum = _code("accum", a)
    tab = _PointerTable(k)
    for i in range(k):
        p, g, a, m = params[i], grads[i], accums[i], masters[i]
        if (m is not None) != with_master or not _fits_multi(p, g, a, m, tp, tg, ta):
            update_validated(p, g, a, opts, m)
            continue
        tab.params[n] = cnp.PyArray_DATA(p)
        tab.grads[n] = cnp.PyArray_DATA(g)
        tab.accums[n] = cnp.PyArray_DATA(a)
        tab.masters[n] = cnp.PyArray_DATA(<cnp.ndarray>m) if with_master else NULL
        tab.offsets[n + 1] = tab.offsets[n] + cnp.PyArray_SIZE(p)
        n += 1
    if n == 0 or tab.offsets[n] == 0:
        return
    _set_opts(&o, opts)
    if tab.offsets[n] >= _nogil_min:
        with nogil:
            _multi_any(n, tab.params, tab.grads, tab.accums,
                       tab.masters if with_master else NULL, tab.offsets, tp, &t, &o)
    else:
        _multi_any(n, tab.params, tab.grads, tab.accums, tab.masters if with_master else NULL,
                   tab.offsets, tp, &t, &o)


cdef void _multi_any(Py_ssize_t n, void** params, void** grads, void** accums, void** masters,
                     const Py_ssize_t* offsets, int tp, const MixedTypes* t,
                     const DenseOpts* o) noexcept nogil:
    if tp == cnp.NPY_FLOAT:
        multi_dense_update(n, <float**>params, <float**>grads, <float**>accums, offsets, o)
    elif tp == cnp.NPY_DOUBLE:
        multi_dense_update(n, <double**>params, <double**>grads, <double**>accums, offsets, o)
    else:
        multi_mixed_update(n, <char**>params, <char**>grads, <char**>accums, <float**>masters,
                           offsets, t, o)


cdef class MixedGroupGate:
    """The C gate of an optimizer group that mixes dtypes (float16/bfloat16 params among
    float32/float64 ones; ArrayGroup gates the single-dtype groups): gate(grads) is True when
    every grad is an exact, aligned, native-order ndarray of its param's shape and dtype (or
    float32 for a float16/bfloat16 param), contiguous in its param's order (C, else F), touching
    no guarded array, and every param and accumulator still has the dtype, shape, contiguity
    and data pointer it was built with. Then the Python validation, which names what is wrong,
    has nothing to refuse, and the optimizer skips it. It writes nothing and holds no state of
    a step."""

    cdef Py_ssize_t k
    cdef list _params, _accums, _guard   # references keep the memory alive
    cdef _Guard guard
    cdef void** pdata
    cdef void** adata
    cdef int* ptype

    def __cinit__(self, list params, list accums, list guard):
        cdef Py_ssize_t i
        self.k = len(params)
        self._params = list(params)
        self._accums = list(accums)
        self._guard = list(guard)
        self.guard = _Guard(self._guard)
        self.pdata = <void**>PyMem_Malloc((self.k + 1) * sizeof(void*))
        self.adata = <void**>PyMem_Malloc((self.k + 1) * sizeof(void*))
        self.ptype = <int*>PyMem_Malloc((self.k + 1) * sizeof(int))
        if not (self.pdata and self.adata and self.ptype):
            raise MemoryError()
        for i in range(self.k):
            self.pdata[i] = cnp.PyArray_DATA(<cnp.ndarray>params[i])
            self.adata[i] = cnp.PyArray_DATA(<cnp.ndarray>accums[i])
            self.ptype[i] = cnp.PyArray_TYPE(<cnp.ndarray>params[i])

    def __dealloc__(self):
        PyMem_Free(self.pdata)
        PyMem_Free(self.adata)
        PyMem_Free(self.ptype)

    def gate(self, list grads):
        """True if `grads` (one per param) pass; nothing is written either way."""
        cdef Py_ssize_t i
        cdef cnp.ndarray p, a, g
        cdef object item
        cdef int tp, tg
        if len(grads) != self.k:
            return False
        for i in range(self.k):
            item = grads[i]
            if not cnp.PyArray_CheckExact(item):
                return False
            g, p, a = item, self._params[i], self._accums[i]
            tp, tg = cnp.PyArray_TYPE(p), cnp.PyArray_TYPE(g)
            if not (tp == self.ptype[i] and cnp.PyArray_DATA(p) == self.pdata[i]
                    and cnp.PyArray_DATA(a) == self.adata[i]
                    and (tg == tp or (tg == cnp.NPY_FLOAT and tp != cnp.NPY_DOUBLE))
                    and _same_layout(p, g, a, True) and not self.guard.hits(g)):
                return False
        return True
