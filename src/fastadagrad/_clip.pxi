# Issue 14, included by kernels.pyx after _family.pxi: clipping by value (Keras' clipvalue,
# torch's clip_grad_value_) fused into the loops, clipping of sparse grads, and the C fast gate
# of the family's dense functions. The loops are C (_csrc/clip_typed.h, family_typed.h).
#
# Sparse grads are clipped per occurrence, as passed (Keras clips the values of an
# IndexedSlices before any deduplication): "sequential"/"keras" clip each occurrence in the
# loop; "sum" merges the clipped occurrences of a repeated row (Σ clip(gᵢ), in order of
# appearance, into a scratch row) and steps with that sum unclipped, while a row seen once is
# clipped in the loop, straight from `grads`.

# ----------------------------------------------------------------------------- dense clipvalue
ctypedef struct _ClipDenseJob:
    void* p
    const void* g
    void* a
    const DenseOpts* o
    double clip
    bint f32


cdef void _clip_dense_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _ClipDenseJob* j = <_ClipDenseJob*>ctx
    if j.f32:
        _table.dense_clip_f32(hi - lo, <float*>j.p + lo, <const float*>j.g + lo,
                              <float*>j.a + lo, j.o, j.clip)
    else:
        _table.dense_clip_f64(hi - lo, <double*>j.p + lo, <const double*>j.g + lo,
                              <double*>j.a + lo, j.o, j.clip)


cdef void _clip_dense(Py_ssize_t n, void* p, const void* g, void* a, const DenseOpts* o,
                      double clip, bint f32) noexcept nogil:
    """Contiguous clipped step, split over the pool like dense_update (elementwise: any split
    gives the same bytes)."""
    cdef int nt = _threads_for(n)
    cdef _ClipDenseJob job
    job.p = p
    job.g = g
    job.a = a
    job.o = o
    job.clip = clip
    job.f32 = f32
    if nt == 1:
        _clip_dense_chunk(&job, 0, n)
    else:
        fa_parallel_for(n, _grain(n, nt), _clip_dense_chunk, &job, nt,
                        fa_site(FA_KIND_CLIP, not f32), n)


cdef void _run_clip_contiguous(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray accum,
                               const DenseOpts* o, double clip) noexcept:
    """adagrad_update's C gate with clipvalue: contiguous arrays, the GIL released when large."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef bint f32 = cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT
    cdef void* p = cnp.PyArray_DATA(param)
    cdef void* g = cnp.PyArray_DATA(grad)
    cdef void* a = cnp.PyArray_DATA(accum)
    if n >= _nogil_min:
        with nogil:
            _clip_dense(n, p, g, a, o, clip, f32)
    else:
        _clip_dense(n, p, g, a, o, clip, f32)


def update_clip_validated(param, grad, accum, opts, double clip):
    """update_validated with every grad element clipped to [-clip, clip] in the loop
    (float32/float64 arrays that passed _validation; any layout, views updated in place)."""
    cdef DenseOpts o
    cdef cnp.ndarray p, g, a
    cdef Py_ssize_t n, sp, sg, sa
    cdef bint f32 = cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT
    _set_opts(&o, opts)
    if param.size == 0:
        return
    if not (param.flags.aligned and grad.flags.aligned and accum.flags.aligned
            and param.dtype.isnative and grad.dtype.isnative and accum.dtype.isnative):
        _twin.update_clip_validated(param, grad, accum, opts, clip)   # in place, same bits
        return
    if ((param.flags.c_contiguous and grad.flags.c_contiguous and accum.flags.c_contiguous)
            or (param.flags.f_contiguous and grad.flags.f_contiguous
                and accum.flags.f_contiguous)):
        p, g, a = param, grad, accum
        n = cnp.PyArray_SIZE(p)
        with nogil:
            _clip_dense(n, cnp.PyArray_DATA(p), cnp.PyArray_DATA(g), cnp.PyArray_DATA(a), &o,
                        clip, f32)
        return
    it = _np.nditer([param, grad, accum], flags=["external_loop", "zerosize_ok", "refs_ok"],
                    op_flags=[["readwrite"], ["readonly"], ["readwrite"]], order="K")
    with it:
        for p, g, a in it:
            n = cnp.PyArray_DIMS(p)[0]
            sp = cnp.PyArray_STRIDES(p)[0]
            sg = cnp.PyArray_STRIDES(g)[0]
            sa = cnp.PyArray_STRIDES(a)[0]
            if f32:
                _table.strided_clip_f32(n, <float*>cnp.PyArray_DATA(p), sp,
                                        <const float*>cnp.PyArray_DATA(g), sg,
                                        <float*>cnp.PyArray_DATA(a), sa, &o, clip)
            else:
                _table.strided_clip_f64(n, <double*>cnp.PyArray_DATA(p), sp,
                                        <const double*>cnp.PyArray_DATA(g), sg,
                                        <double*>cnp.PyArray_DATA(a), sa, &o, clip)


# ----------------------------------------------------------------------------- sparse clipvalue
cdef void _clip_dup_rows(Py_ssize_t u0, Py_ssize_t u1, floating* table, floating* accum,
                         Py_ssize_t d, const int64_t* urow, const Py_ssize_t* start,
                         const int64_t* rows, const floating** src, const DenseOpts* o,
                         int mode, double clip) noexcept nogil:
    """_dup_rows with clipped grads (element-wise accumulators only)."""
    cdef Py_ssize_t k0 = start[u0], k1 = start[u1]
    if mode == _DUP_KERAS and not o.skip_accumulate:
        if floating is float:
            _table.keras_clip_rows_f32(u1 - u0, urow + u0, start + u0, src, table, accum, d,
                                       _PREFETCH_AHEAD, o, clip)
        else:
            _table.keras_clip_rows_f64(u1 - u0, urow + u0, start + u0, src, table, accum, d,
                                       _PREFETCH_AHEAD, o, clip)
    elif floating is float:
        _table.clip_rows_f32(k1 - k0, rows + k0, src + k0, table, accum, d, _PREFETCH_AHEAD, o,
                             clip)
    else:
        _table.clip_rows_f64(k1 - k0, rows + k0, src + k0, table, accum, d, _PREFETCH_AHEAD, o,
                             clip)


ctypedef struct _ClipSumJob:       # a "sum" step with clipped duplicates, split into parts
    void* table
    void* s1
    void* s2
    Py_ssize_t d, ns, nu
    const int64_t* rows
    const void** src
    const DenseOpts* o             # plain AdaGrad (NULL for a family rule)
    const FamilyOpts* f            # a family rule: f clips, f0 does not
    const FamilyOpts* f0
    double clip
    bint f32


cdef void _clip_sum_range(_ClipSumJob* j, Py_ssize_t lo, Py_ssize_t hi, bint clipped,
                          floating* table, floating* s1, floating* s2) noexcept nogil:
    """Rows [lo, hi) of the job: clipped in the loop (rows seen once) or not (merged rows)."""
    cdef const floating** src = <const floating**>j.src + lo
    cdef const int64_t* rows = j.rows + lo
    if hi <= lo:
        return
    if j.o == NULL:
        _family_rows(hi - lo, rows, src, <const floating*>NULL, table, s1, s2, j.d,
                     j.f if clipped else j.f0)
    elif clipped:
        if floating is float:
            _table.clip_rows_f32(hi - lo, rows, src, table, s1, j.d, _PREFETCH_AHEAD, j.o, j.clip)
        else:
            _table.clip_rows_f64(hi - lo, rows, src, table, s1, j.d, _PREFETCH_AHEAD, j.o, j.clip)
    else:
        _sparse_rows(hi - lo, rows, src, <const floating*>NULL, table, s1, False, j.d, j.o)


cdef void _clip_sum_part(void* ctx, Py_ssize_t t, Py_ssize_t nt) noexcept nogil:
    cdef _ClipSumJob* j = <_ClipSumJob*>ctx
    cdef Py_ssize_t nm = j.nu - j.ns
    cdef Py_ssize_t a0 = t * j.ns // nt, a1 = (t + 1) * j.ns // nt
    cdef Py_ssize_t b0 = j.ns + t * nm // nt, b1 = j.ns + (t + 1) * nm // nt
    if j.f32:
        _clip_sum_range(j, a0, a1, True, <float*>j.table, <float*>j.s1, <float*>j.s2)
        _clip_sum_range(j, b0, b1, False, <float*>j.table, <float*>j.s1, <float*>j.s2)
    else:
        _clip_sum_range(j, a0, a1, True, <double*>j.table, <double*>j.s1, <double*>j.s2)
        _clip_sum_range(j, b0, b1, False, <double*>j.table, <double*>j.s1, <double*>j.s2)


cdef inline void _clip_into(Py_ssize_t d, floating* dst, const floating* src, double clip,
                            int accumulate) noexcept nogil:
    if floating is float:
        _table.clip_into_f32(d, dst, src, clip, accumulate)
    else:
        _table.clip_into_f64(d, dst, src, clip, accumulate)


cdef Py_ssize_t clip_sum_update(floating* table, floating* s1, floating* s2, Py_ssize_t d,
                                const int64_t* idx, Py_ssize_t b, const floating* grads,
                                const DenseOpts* o, const FamilyOpts* f,
                                double clip) noexcept nogil:
    """duplicates="sum" with every occurrence clipped to [-clip, clip] before the merge: plain
    AdaGrad (o, element-wise accum s1) or a family rule (f; states s1, s2). Returns the number
    of unique rows, or -1 when out of memory (nothing written)."""
    cdef Py_ssize_t nu = -1, ns = 0, nm = 0, u, q, k, c
    cdef Py_ssize_t* work = <Py_ssize_t*>malloc((3 * b + 1) * sizeof(Py_ssize_t))
    cdef int64_t* urow = <int64_t*>malloc(b * sizeof(int64_t))
    cdef int64_t* rows = <int64_t*>malloc(b * sizeof(int64_t))
    cdef const floating** src = <const floating**>malloc(b * sizeof(floating*))
    cdef floating* scratch = NULL
    cdef floating* dst
    cdef Py_ssize_t* start
    cdef Py_ssize_t* order
    cdef FamilyOpts f0
    cdef _ClipSumJob job
    cdef int nt
    if work != NULL and urow != NULL and rows != NULL and src != NULL:
        start = work
        order = work + b + 1
        nu = _group_rows(idx, b, urow, start, order, work + 2 * b + 1)
    if nu > 0:
        for u in range(nu):
            nm += start[u + 1] - start[u] > 1
        if nm:
            scratch = <floating*>malloc(nm * d * sizeof(floating))
            if scratch == NULL:
                nu = -1
    if nu > 0:
        ns = nu - nm
        k = 0
        for u in range(nu):
            c = start[u + 1] - start[u]
            if c == 1:        # rows seen once first: clipped in the loop
                rows[k] = urow[u]
                src[k] = grads + order[start[u]] * d
                k += 1
        k = 0
        for u in range(nu):
            c = start[u + 1] - start[u]
            if c > 1:         # then the merged rows: sum of the clipped occurrences, in order
                dst = scratch + k * d
                _clip_into(d, dst, grads + order[start[u]] * d, clip, 0)
                for q in range(start[u] + 1, start[u + 1]):
                    _clip_into(d, dst, grads + order[q] * d, clip, 1)
                rows[ns + k] = urow[u]
                src[ns + k] = dst
                k += 1
        if f != NULL:
            f0 = f[0]
            f0.clipvalue = 0.0
        job.table = table
        job.s1 = s1
        job.s2 = s2
        job.d = d
        job.ns = ns
        job.nu = nu
        job.rows = rows
        job.src = <const void**>src
        job.o = o
        job.f = f
        job.f0 = &f0
        job.clip = clip
        job.f32 = floating is float
        nt = _threads_for(b * d)
        if nt > nu:
            nt = <int>nu
        if nt <= 1:
            _clip_sum_part(&job, 0, 1)
        else:
            _run_parts(_clip_sum_part, &job, nt,
                       fa_site(FA_KIND_SPARSE_CLIP, floating is double), b * d)
    free(work)
    free(urow)
    free(rows)
    free(src)
    free(scratch)
    return nu


# ----------------------------------------------------------------------------- family fast gate
cdef inline bint _f_ok(cnp.ndarray x, int typenum, int layout, bint writable,
                       cnp.ndarray ref) noexcept:
    return (cnp.PyArray_CheckExact(x) and cnp.PyArray_TYPE(x) == typenum
            and _same_shape(x, ref)
            and _plain_contiguous(x, layout | (_W_FLAGS if writable else 0)))


def family_fast(int rule, param, grad, s1, s2, lr, l1, l2, step):
    """The C gate of the family's dense functions: True when the call was done here (exact
    contiguous ndarrays of one float dtype and shape, writable where written, pairwise
    disjoint, plain-number hyper-parameters finite and >= 0, an int step >= 1 for dual
    averaging); False sends the caller to the full validation (nothing was written)."""
    cdef FamilyOpts f
    cdef cnp.ndarray p, g, a, b
    cdef int typenum, layout
    cdef Py_ssize_t nbytes, n
    if not (cnp.PyArray_CheckExact(param) and cnp.PyArray_CheckExact(grad)
            and cnp.PyArray_CheckExact(s1) and (s2 is None or cnp.PyArray_CheckExact(s2))):
        return False
    p = param
    g = grad
    a = s1
    b = s2 if s2 is not None else s1
    typenum = cnp.PyArray_TYPE(p)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        return False
    layout = _C_FLAGS if _plain_contiguous(p, _C_FLAGS) else _F_FLAGS
    if not (_f_ok(p, typenum, layout, True, p) and _f_ok(g, typenum, layout, False, p)
            and _f_ok(a, typenum, layout, True, p) and _f_ok(b, typenum, layout, True, p)):
        return False
    nbytes = cnp.PyArray_NBYTES(p)
    if not (_disjoint(p, g, nbytes) and _disjoint(p, a, nbytes) and _disjoint(g, a, nbytes)):
        return False
    if s2 is not None and not (_disjoint(p, b, nbytes) and _disjoint(g, b, nbytes)
                               and _disjoint(a, b, nbytes)):
        return False
    if not family_hyper(rule, lr, l1, l2, step, &f):
        return False
    n = cnp.PyArray_SIZE(p)
    if n == 0:
        return True
    if n >= _nogil_min:
        with nogil:
            if typenum == cnp.NPY_FLOAT:
                family_dense_update(n, <float*>cnp.PyArray_DATA(p), <const float*>cnp.PyArray_DATA(g),
                                    <float*>cnp.PyArray_DATA(a), <float*>cnp.PyArray_DATA(b), &f)
            else:
                family_dense_update(n, <double*>cnp.PyArray_DATA(p), <const double*>cnp.PyArray_DATA(g),
                                    <double*>cnp.PyArray_DATA(a), <double*>cnp.PyArray_DATA(b), &f)
    elif typenum == cnp.NPY_FLOAT:
        family_dense_update(n, <float*>cnp.PyArray_DATA(p), <const float*>cnp.PyArray_DATA(g),
                            <float*>cnp.PyArray_DATA(a), <float*>cnp.PyArray_DATA(b), &f)
    else:
        family_dense_update(n, <double*>cnp.PyArray_DATA(p), <const double*>cnp.PyArray_DATA(g),
                            <double*>cnp.PyArray_DATA(a), <double*>cnp.PyArray_DATA(b), &f)
    return True
