# Issue 14, included by kernels.pyx after _duplicates.pxi (whose row grouping and parts on the
# pool its sparse rules use): the AdaGrad-family rules (proximal, dual averaging, GloVe/LightFM),
# dense and sparse. The loops are C (_csrc/family_typed.h).


# ----------------------------------------------------------------------------- family rules
cdef void _set_family(FamilyOpts* f, object fopts) except *:
    """Fill the C struct from a _validation.FamilyOptions."""
    f.rule = fopts.rule
    f.lr = fopts.lr
    f.l1 = fopts.l1
    f.l2 = fopts.l2
    f.step = fopts.step
    f.grad_scale = fopts.grad_scale
    f.clipvalue = fopts.clipvalue


cdef inline void _family_run(Py_ssize_t n, floating* p, const floating* g, floating* s1,
                             floating* s2, const FamilyOpts* f) noexcept nogil:
    if floating is float:
        _table.family_dense_f32(n, p, g, s1, s2, f)
    else:
        _table.family_dense_f64(n, p, g, s1, s2, f)


ctypedef struct _FamilyDenseJob:
    void* p
    const void* g
    void* s1
    void* s2
    const FamilyOpts* f
    bint f32


cdef void _family_dense_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _FamilyDenseJob* j = <_FamilyDenseJob*>ctx
    if j.f32:
        _family_run(hi - lo, <float*>j.p + lo, <const float*>j.g + lo, <float*>j.s1 + lo,
                    <float*>j.s2 + lo if j.s2 != NULL else NULL, j.f)
    else:
        _family_run(hi - lo, <double*>j.p + lo, <const double*>j.g + lo, <double*>j.s1 + lo,
                    <double*>j.s2 + lo if j.s2 != NULL else NULL, j.f)


cdef void family_dense_update(Py_ssize_t n, floating* p, const floating* g, floating* s1,
                              floating* s2, const FamilyOpts* f) noexcept nogil:
    """Contiguous family step (s2 may be NULL unless DA), split over the pool when large, in
    chunks of whole 16-element vectors (elementwise: any split gives the same bytes)."""
    cdef int nt = _threads_for(n)
    cdef _FamilyDenseJob job
    if nt == 1:
        _family_run(n, p, g, s1, s2, f)
        return
    job.p = p
    job.g = g
    job.s1 = s1
    job.s2 = s2
    job.f = f
    job.f32 = floating is float
    fa_parallel_for(n, _grain(n, nt), _family_dense_chunk, &job, nt,
                    fa_site(FA_KIND_FAMILY, 2 * f.rule + (floating is double)), n)


def family_validated(param, grad, states, fopts):
    """A family rule's step on validated arrays (any layout; views updated in place)."""
    cdef FamilyOpts f
    cdef cnp.ndarray p, g, a, b
    cdef Py_ssize_t n, sp, sg, sa, sb
    cdef int typenum = cnp.PyArray_TYPE(param)
    _set_family(&f, fopts)
    arrays = [param, grad, *states]
    if param.size == 0:
        return
    if not all(x.flags.aligned and x.dtype.isnative for x in arrays):
        _twin.family_validated(param, grad, states, fopts)   # same bits, in place
        return
    if all(x.flags.c_contiguous for x in arrays) or all(x.flags.f_contiguous for x in arrays):
        p, g, a = param, grad, states[0]
        b = states[1] if len(states) > 1 else states[0]
        n = cnp.PyArray_SIZE(p)
        with nogil:
            if typenum == cnp.NPY_FLOAT:
                family_dense_update(n, <float*>cnp.PyArray_DATA(p), <const float*>cnp.PyArray_DATA(g),
                                    <float*>cnp.PyArray_DATA(a), <float*>cnp.PyArray_DATA(b), &f)
            else:
                family_dense_update(n, <double*>cnp.PyArray_DATA(p), <const double*>cnp.PyArray_DATA(g),
                                    <double*>cnp.PyArray_DATA(a), <double*>cnp.PyArray_DATA(b), &f)
        return
    ops = arrays + ([states[0]] if len(states) == 1 else [])
    it = _np.nditer(ops, flags=["external_loop", "zerosize_ok", "refs_ok"],
                    op_flags=[["readwrite"], ["readonly"], ["readwrite"], ["readwrite"]],
                    order="K")
    with it:
        for p, g, a, b in it:
            n = cnp.PyArray_DIMS(p)[0]
            sp = cnp.PyArray_STRIDES(p)[0]
            sg = cnp.PyArray_STRIDES(g)[0]
            sa = cnp.PyArray_STRIDES(a)[0]
            sb = cnp.PyArray_STRIDES(b)[0]
            if typenum == cnp.NPY_FLOAT:
                _table.family_strided_f32(n, <float*>cnp.PyArray_DATA(p), sp,
                                          <const float*>cnp.PyArray_DATA(g), sg,
                                          <float*>cnp.PyArray_DATA(a), sa,
                                          <float*>cnp.PyArray_DATA(b), sb, &f)
            else:
                _table.family_strided_f64(n, <double*>cnp.PyArray_DATA(p), sp,
                                          <const double*>cnp.PyArray_DATA(g), sg,
                                          <double*>cnp.PyArray_DATA(a), sa,
                                          <double*>cnp.PyArray_DATA(b), sb, &f)


cdef void _family_rows(Py_ssize_t count, const int64_t* rows, const floating** src,
                       const floating* grads, floating* table, floating* s1, floating* s2,
                       Py_ssize_t d, const FamilyOpts* f) noexcept nogil:
    """family_rows of the ISA: gradient rows src[0..count), or the contiguous rows of grads
    when src is NULL."""
    if floating is float:
        _table.family_rows_f32(count, rows, src, grads, table, s1, s2, d, _PREFETCH_AHEAD, f)
    else:
        _table.family_rows_f64(count, rows, src, grads, table, s1, s2, d, _PREFETCH_AHEAD, f)


cdef Py_ssize_t family_sparse_update(floating* table, floating* s1, floating* s2, Py_ssize_t d,
                                     const int64_t* idx, Py_ssize_t b, const floating* grads,
                                     const FamilyOpts* f, int mode) noexcept nogil:
    """A family rule on rows idx[0..b): mode 0 duplicates summed first (the merge of
    _sparse.pxi), mode 1 each occurrence in turn. Mode 0: unique rows split across threads.
    Mode 1, without a grouping pass (each row's steps come in the same order and rows are
    independent: the same bytes): on one thread the occurrences in batch order, each gradient
    read from its row of `grads` (returns b); on several, in parts by row owner (_owner_parts;
    returns the part count)."""
    cdef Py_ssize_t nu = -1, k, u0, u1
    cdef int nt, t
    cdef _RowsJob job
    cdef Py_ssize_t* work
    cdef int64_t* urow
    cdef int64_t* rows
    cdef const floating** src
    cdef floating* scratch = NULL
    cdef Py_ssize_t* start
    cdef Py_ssize_t* order
    nt = _threads_for(b * d)
    if mode == 1 and nt <= 1:   # grads row k is occurrence k's
        _family_rows(b, idx, <const floating**>NULL, grads, table, s1, s2, d, f)
        return b
    if mode == 0 and f.clipvalue > 0:
        return clip_sum_update(table, s1, s2, d, idx, b, grads, NULL, f, f.clipvalue)
    work = <Py_ssize_t*>malloc((5 * b + 2 * nt + 2) * sizeof(Py_ssize_t))
    urow = <int64_t*>malloc(b * sizeof(int64_t)) if mode == 0 else NULL   # the merge's
    rows = <int64_t*>malloc(b * sizeof(int64_t))
    src = <const floating**>malloc(b * sizeof(floating*))
    if work != NULL and (mode != 0 or urow != NULL) and rows != NULL and src != NULL:
        if mode == 0:
            nu = _merge_hash(idx, b, d, grads, urow, src, &scratch, work)
            for k in range(nu if nu > 0 else 0):
                work[k] = k           # start[u] = u: one source row per unique row
            if nu > 0:
                work[nu] = nu
            start = work
            memcpy(rows, urow, (nu if nu > 0 else 0) * sizeof(int64_t))
        else:   # several threads: parts by row owner
            order = work
            start = work + b
            _owner_parts(idx, b, nt, start, order)
            nu = nt                     # _family_part's part t: start[t]..start[t+1]
            for k in range(b):
                rows[k] = idx[order[k]]
                src[k] = grads + order[k] * d
    if nu > 0:
        if nt > nu:
            nt = <int>nu
        if nt <= 1:
            _family_rows(start[nu], rows, src, <const floating*>NULL, table, s1, s2, d, f)
        else:
            job.table = table
            job.s1 = s1
            job.s2 = s2
            job.d = d
            job.nu = nu
            job.start = start
            job.rows = rows
            job.src = <const void**>src
            job.f = f
            job.f32 = floating is float
            _run_parts(_family_part, &job, nt,
                       fa_site(FA_KIND_SPARSE_FAMILY, 2 * f.rule + (floating is double)), b * d)
    free(work)
    free(urow)
    free(rows)
    free(src)
    free(scratch)
    return nu


cdef Py_ssize_t family_sparse_run(cnp.ndarray t, cnp.ndarray a, cnp.ndarray b, cnp.ndarray i,
                                  cnp.ndarray g, const FamilyOpts* f, int mode,
                                  int64_t* bad) except -1:
    """A family rule on validated sparse arrays (table t and states a, b C-contiguous (N, D) of
    one dtype, b = a for a one-state rule; grads g C-contiguous; indices i C-contiguous int32 or
    int64, native), run on checked_indices(i). Returns the number of unique rows, or -2 when an
    index is out of range (bad[] as checked_indices sets it; nothing written). Raises
    MemoryError (nothing written)."""
    cdef Py_ssize_t d = cnp.PyArray_DIMS(t)[1], n = cnp.PyArray_DIMS(i)[0], nu = 0
    cdef Py_ssize_t rows = cnp.PyArray_DIMS(t)[0]
    cdef bint int32 = cnp.PyArray_TYPE(i) == cnp.NPY_INT32
    cdef int64_t* own
    if n == 0 or d == 0:
        return 0
    with nogil:
        if int32:
            own = checked_indices(<int32_t*>cnp.PyArray_DATA(i), n, rows, bad)
        else:
            own = checked_indices(<int64_t*>cnp.PyArray_DATA(i), n, rows, bad)
        if own != NULL:
            if cnp.PyArray_TYPE(t) == cnp.NPY_FLOAT:
                nu = family_sparse_update(<float*>cnp.PyArray_DATA(t),
                                          <float*>cnp.PyArray_DATA(a),
                                          <float*>cnp.PyArray_DATA(b), d, own, n,
                                          <const float*>cnp.PyArray_DATA(g), f, mode)
            else:
                nu = family_sparse_update(<double*>cnp.PyArray_DATA(t),
                                          <double*>cnp.PyArray_DATA(a),
                                          <double*>cnp.PyArray_DATA(b), d, own, n,
                                          <const double*>cnp.PyArray_DATA(g), f, mode)
            free(own)
    if own == NULL and bad[0] == -1 or nu < 0:
        raise MemoryError("sparse family update: out of memory (nothing was written)")
    return -2 if own == NULL else nu


def family_sparse_validated(table, states, idx, grads, fopts, str duplicates):
    """A family rule on validated sparse arguments (C-contiguous table/states, int64 idx,
    C-contiguous grads); duplicates "sum" or "sequential"."""
    cdef FamilyOpts f
    cdef int64_t bad[2]
    _set_family(&f, fopts)
    if family_sparse_run(table, states[0], states[len(states) - 1], idx, grads, &f,
                         _duplicates_mode(duplicates), bad) == -2:
        raise_unchecked(bad, cnp.PyArray_DIMS(<cnp.ndarray>table)[0], "sparse family update")


cdef bint family_hyper(int rule, object lr, object l1, object l2, object step,
                       FamilyOpts* f) noexcept:
    """Plain-number hyper-parameters as _rules.check_hyper accepts them (lr, l1, l2 finite and
    >= 0; step None, or an int >= 1), into `f` (no clipping); False sends the caller to the
    full checks. The C gates' share of the family's checks (family_fast, family_sparse_fast)."""
    cdef long long t = 1
    if not (_real_nonneg(lr, &f.lr) and _real_nonneg(l1, &f.l1) and _real_nonneg(l2, &f.l2)):
        return False
    if step is not None:
        if type(step) is not int:
            return False
        try:
            t = step
        except OverflowError:
            return False
        if t < 1:
            return False
    f.rule = rule
    f.step = <double>t
    f.grad_scale = 1.0
    f.clipvalue = 0.0
    return True


def family_sparse_fast(int rule, table, s1, s2, indices, grads, lr, l1, l2, step, duplicates):
    """The C gate of the family's sparse functions: True when the call was done here (the
    arrays as sparse_adagrad_update's gate takes them, each state (N, D) like the table and
    apart from the others, duplicates "sum" or "sequential", plain-number hyper-parameters);
    False sends the caller to the full checks (nothing was written: an index out of range is
    found before any write, and the full checks then name it)."""
    cdef FamilyOpts f
    cdef int64_t bad[2]
    cdef int mode = gated_duplicates(duplicates)
    if not (mode >= 0 and _sparse_gate(table, s1, indices, grads)
            and cnp.PyArray_NDIM(<cnp.ndarray>s1) == 2
            and (s2 is None or _sparse_gate(table, s2, indices, grads)
                 and cnp.PyArray_NDIM(<cnp.ndarray>s2) == 2 and _apart(s1, s2))
            and family_hyper(rule, lr, l1, l2, step, &f)):
        return False
    return family_sparse_run(table, s1, s1 if s2 is None else s2, indices, grads, &f,
                             mode, bad) != -2
