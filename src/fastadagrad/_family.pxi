# Issue 14, included by kernels.pyx after _sparse.pxi: the peers' sparse-duplicate rules
# (duplicates="sequential" | "keras") and the AdaGrad-family rules (proximal, dual averaging,
# GloVe/LightFM), dense and sparse. The loops are C (_csrc/family_typed.h).
#
# Sparse duplicates other than "sum": the positions of the batch are grouped by row (rows in
# order of first appearance, each row's occurrences in batch order); unique rows are split
# across threads (each row, with all its occurrences, by exactly one thread), so any thread
# count gives the same bytes. All memory is allocated before the first write.

cdef enum:
    _DUP_SEQUENTIAL = 1
    _DUP_KERAS = 2

DUPLICATES = ("sum", "sequential", "keras")


# ----------------------------------------------------------------------------- parts on the pool
# The family's parallel loops split their work into nt independent parts (part t of nt); the
# worker pool runs the parts (_threadpool.h), each wholly on one thread, so which thread runs a
# part never changes its bytes.
ctypedef void (*_part_fn)(void* ctx, Py_ssize_t t, Py_ssize_t nt) noexcept nogil

ctypedef struct _PartsJob:
    _part_fn fn
    void* ctx
    Py_ssize_t nt


cdef void _parts_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _PartsJob* j = <_PartsJob*>ctx
    cdef Py_ssize_t t
    for t in range(lo, hi):
        j.fn(j.ctx, t, j.nt)


cdef void _run_parts(_part_fn fn, void* ctx, Py_ssize_t nt, int kind,
                     Py_ssize_t elements) noexcept nogil:
    """fn(ctx, t, nt) for every t in [0, nt), on up to nt threads of the pool."""
    cdef _PartsJob j
    j.fn = fn
    j.ctx = ctx
    j.nt = nt
    fa_parallel_for(nt, 1, _parts_chunk, &j, <int>nt, kind, elements)


ctypedef struct _RowsJob:          # the unique rows of a sparse family/duplicates step
    void* table
    void* s1
    void* s2
    bint rowwise
    Py_ssize_t d, nu
    const int64_t* urow
    const Py_ssize_t* start
    const int64_t* rows
    const void** src
    const DenseOpts* o
    const FamilyOpts* f
    int mode
    bint f32
    double clip                    # clipvalue (0: none)


cdef void _dup_part(void* ctx, Py_ssize_t t, Py_ssize_t nt) noexcept nogil:
    cdef _RowsJob* j = <_RowsJob*>ctx
    cdef Py_ssize_t u0 = t * j.nu // nt, u1 = (t + 1) * j.nu // nt
    if j.f32:
        _dup_rows(u0, u1, <float*>j.table, <float*>j.s1, j.rowwise, j.d, j.urow, j.start,
                  j.rows, <const float**>j.src, j.o, j.mode, j.clip)
    else:
        _dup_rows(u0, u1, <double*>j.table, <double*>j.s1, j.rowwise, j.d, j.urow, j.start,
                  j.rows, <const double**>j.src, j.o, j.mode, j.clip)


cdef void _family_part(void* ctx, Py_ssize_t t, Py_ssize_t nt) noexcept nogil:
    cdef _RowsJob* j = <_RowsJob*>ctx
    cdef Py_ssize_t u0 = j.start[t * j.nu // nt], u1 = j.start[(t + 1) * j.nu // nt]
    if j.f32:
        _family_rows(u1 - u0, j.rows + u0, <const float**>j.src + u0, <float*>j.table,
                     <float*>j.s1, <float*>j.s2, j.d, j.f)
    else:
        _family_rows(u1 - u0, j.rows + u0, <const double**>j.src + u0, <double*>j.table,
                     <double*>j.s1, <double*>j.s2, j.d, j.f)


cdef Py_ssize_t _group_rows(const int64_t* idx, Py_ssize_t b, int64_t* urow, Py_ssize_t* start,
                            Py_ssize_t* order, Py_ssize_t* uid) noexcept nogil:
    """Unique rows urow[0..nu) in order of first appearance; order[start[u]..start[u+1]) are
    the positions of row u's occurrences, ascending. uid: b scratch slots. Returns nu, or -1
    when out of memory."""
    cdef Py_ssize_t cap = 16, shift = 60, p, h, u, nu = 0
    cdef int64_t* keys
    cdef Py_ssize_t* ids
    cdef int64_t r
    while cap < 2 * b:
        cap *= 2
        shift -= 1
    keys = <int64_t*>malloc(cap * sizeof(int64_t))
    ids = <Py_ssize_t*>malloc(cap * sizeof(Py_ssize_t))
    if keys == NULL or ids == NULL:
        free(keys)
        free(ids)
        return -1
    for h in range(cap):
        keys[h] = -1
    for p in range(b + 1):
        start[p] = 0
    for p in range(b):
        r = idx[p]
        h = <Py_ssize_t>((<uint64_t>r * 0x9E3779B97F4A7C15ULL) >> shift)
        while keys[h] != -1 and keys[h] != r:
            h = (h + 1) & (cap - 1)
        if keys[h] == -1:
            keys[h] = r
            ids[h] = nu
            urow[nu] = r
            nu += 1
        uid[p] = ids[h]
        start[ids[h] + 1] += 1
    free(keys)
    free(ids)
    for u in range(nu):
        start[u + 1] += start[u]
    for p in range(b):   # counting sort of the positions by row, stable
        u = uid[p]
        order[start[u]] = p
        start[u] += 1
    for u in range(nu, 0, -1):
        start[u] = start[u - 1]
    start[0] = 0
    return nu


cdef Py_ssize_t sparse_dup_update(floating* table, floating* accum, bint rowwise, Py_ssize_t d,
                                  const int64_t* idx, Py_ssize_t b, const floating* grads,
                                  const DenseOpts* o, int mode,
                                  double clip) noexcept nogil:
    """AdaGrad on rows idx[0..b) with duplicates="sequential" (mode 1: every occurrence is
    its own step, in batch order) or "keras" (mode 2, element-wise only: every occurrence's
    g*g into the accumulator, then every occurrence's update with the final accumulator).
    clip > 0: every occurrence's grad clipped to [-clip, clip] in the loop (element-wise).
    Returns -1 if out of memory (nothing written), else the number of unique rows."""
    cdef Py_ssize_t nu = -1, k, u0, u1
    cdef int nt, t
    cdef _RowsJob job
    cdef Py_ssize_t* uid = <Py_ssize_t*>malloc(b * sizeof(Py_ssize_t))
    cdef Py_ssize_t* start = <Py_ssize_t*>malloc((b + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* order = <Py_ssize_t*>malloc(b * sizeof(Py_ssize_t))
    cdef int64_t* urow = <int64_t*>malloc(b * sizeof(int64_t))
    cdef int64_t* rows = <int64_t*>malloc(b * sizeof(int64_t))
    cdef const floating** src = <const floating**>malloc(b * sizeof(floating*))
    if mode == 0:   # "sum" with clip > 0 (unclipped "sum" is _sparse.pxi's sparse_update)
        free(uid); free(start); free(order); free(urow); free(rows); free(src)
        return clip_sum_update(table, accum, NULL, d, idx, b, grads, o, NULL, clip)
    if uid != NULL and start != NULL and order != NULL and urow != NULL and rows != NULL \
            and src != NULL:
        nu = _group_rows(idx, b, urow, start, order, uid)
    if nu > 0:
        for k in range(b):
            rows[k] = idx[order[k]]
            src[k] = grads + order[k] * d
        nt = _threads_for(b * d)
        if nt > nu:
            nt = <int>nu
        if nt <= 1:
            _dup_rows(0, nu, table, accum, rowwise, d, urow, start, rows, src, o, mode, clip)
        else:
            job.table = table
            job.s1 = accum
            job.rowwise = rowwise
            job.d = d
            job.nu = nu
            job.urow = urow
            job.start = start
            job.rows = rows
            job.src = <const void**>src
            job.o = o
            job.mode = mode
            job.f32 = floating is float
            job.clip = clip
            _run_parts(_dup_part, &job, nt, FA_KIND_SPARSE, b * d)
    free(uid)
    free(start)
    free(order)
    free(urow)
    free(rows)
    free(src)
    return nu


cdef void _dup_rows(Py_ssize_t u0, Py_ssize_t u1, floating* table, floating* accum,
                    bint rowwise, Py_ssize_t d, const int64_t* urow, const Py_ssize_t* start,
                    const int64_t* rows, const floating** src, const DenseOpts* o,
                    int mode, double clip) noexcept nogil:
    """Unique rows [u0, u1): their occurrences src[start[u0]..start[u1])."""
    cdef Py_ssize_t k0 = start[u0], k1 = start[u1]
    if clip > 0:
        _clip_dup_rows(u0, u1, table, accum, d, urow, start, rows, src, o, mode, clip)
    elif mode == _DUP_KERAS and not o.skip_accumulate:
        if floating is float:
            _table.keras_rows_f32(u1 - u0, urow + u0, start + u0, src, table, accum, d,
                                  _PREFETCH_AHEAD, o)
        else:
            _table.keras_rows_f64(u1 - u0, urow + u0, start + u0, src, table, accum, d,
                                  _PREFETCH_AHEAD, o)
    elif floating is float:   # sequential (and keras without accumulating: the same steps)
        _table.sparse_rows_f32(k1 - k0, rows + k0, src + k0, table, accum, d, rowwise,
                               _PREFETCH_AHEAD, o)
    else:
        _table.sparse_rows_f64(k1 - k0, rows + k0, src + k0, table, accum, d, rowwise,
                               _PREFETCH_AHEAD, o)


cdef int _duplicates_mode(str duplicates):
    return DUPLICATES.index(duplicates)


def sparse_dup_validated(table, accum, idx, grads, opts, str duplicates, double clip=0.0):
    """sparse_validated with a duplicates rule ("sum" goes to the merging path); clip > 0:
    every occurrence's grad clipped to [-clip, clip] first (element-wise accumulators)."""
    cdef DenseOpts o
    cdef cnp.ndarray t = table, a = accum, i = idx, g = grads
    cdef Py_ssize_t d = cnp.PyArray_DIMS(t)[1], b = cnp.PyArray_DIMS(i)[0], nu = 0
    cdef bint rowwise = cnp.PyArray_NDIM(a) == 1
    cdef bint is_f32 = cnp.PyArray_TYPE(t) == cnp.NPY_FLOAT
    cdef int mode = _duplicates_mode(duplicates)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(t)[0]
    cdef int64_t* own = NULL
    cdef int64_t bad[2]
    if mode == 0 and clip <= 0:
        return sparse_validated(table, accum, idx, grads, opts)
    _set_opts(&o, opts)
    if b == 0 or d == 0:
        return
    with nogil:   # the kernel runs on a checked private copy of the indices
        own = checked_indices(<int64_t*>cnp.PyArray_DATA(i), b, n, bad)
        if own != NULL:
            if is_f32:
                nu = sparse_dup_update(<float*>cnp.PyArray_DATA(t), <float*>cnp.PyArray_DATA(a),
                                       rowwise, d, own, b, <const float*>cnp.PyArray_DATA(g),
                                       &o, mode, clip)
            else:
                nu = sparse_dup_update(<double*>cnp.PyArray_DATA(t),
                                       <double*>cnp.PyArray_DATA(a), rowwise, d, own, b,
                                       <const double*>cnp.PyArray_DATA(g), &o, mode, clip)
            free(own)
    if own == NULL:
        raise_unchecked(bad, n, "sparse_adagrad_update")
    if nu < 0:
        raise MemoryError("sparse_adagrad_update: out of memory (nothing was written)")


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
    fa_parallel_for(n, _grain(n, nt), _family_dense_chunk, &job, nt, FA_KIND_DENSE, n)


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
        _reference_family.family_step(param, grad, states, fopts)   # same bits, in place
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
                       floating* table, floating* s1, floating* s2, Py_ssize_t d,
                       const FamilyOpts* f) noexcept nogil:
    if floating is float:
        _table.family_rows_f32(count, rows, src, table, s1, s2, d, _PREFETCH_AHEAD, f)
    else:
        _table.family_rows_f64(count, rows, src, table, s1, s2, d, _PREFETCH_AHEAD, f)


cdef Py_ssize_t family_sparse_update(floating* table, floating* s1, floating* s2, Py_ssize_t d,
                                     const int64_t* idx, Py_ssize_t b, const floating* grads,
                                     const FamilyOpts* f, int mode) noexcept nogil:
    """A family rule on rows idx[0..b): mode 0 duplicates summed first (the merge of
    _sparse.pxi), mode 1 each occurrence in turn. Unique rows split across threads."""
    cdef Py_ssize_t nu = -1, k, u0, u1
    cdef int nt, t
    cdef _RowsJob job
    cdef Py_ssize_t* work = <Py_ssize_t*>malloc((5 * b + 1) * sizeof(Py_ssize_t))
    cdef int64_t* urow = <int64_t*>malloc(b * sizeof(int64_t))
    cdef int64_t* rows = <int64_t*>malloc(b * sizeof(int64_t))
    cdef const floating** src = <const floating**>malloc(b * sizeof(floating*))
    cdef floating* scratch = NULL
    cdef Py_ssize_t* start
    cdef Py_ssize_t* order
    if mode == 0 and f.clipvalue > 0:
        free(work); free(urow); free(rows); free(src)
        return clip_sum_update(table, s1, s2, d, idx, b, grads, NULL, f, f.clipvalue)
    if work != NULL and urow != NULL and rows != NULL and src != NULL:
        if mode == 0:
            nu = _merge_hash(idx, b, d, grads, urow, src, &scratch, work)
            for k in range(nu if nu > 0 else 0):
                work[k] = k           # start[u] = u: one source row per unique row
            if nu > 0:
                work[nu] = nu
            start = work
            memcpy(rows, urow, (nu if nu > 0 else 0) * sizeof(int64_t))
        else:
            start = work
            order = work + b + 1
            nu = _group_rows(idx, b, urow, start, order, work + 2 * b + 1)
            for k in range(b if nu > 0 else 0):
                rows[k] = idx[order[k]]
                src[k] = grads + order[k] * d
    if nu > 0:
        nt = _threads_for(b * d)
        if nt > nu:
            nt = <int>nu
        if nt <= 1:
            _family_rows(start[nu], rows, src, table, s1, s2, d, f)
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
            _run_parts(_family_part, &job, nt, FA_KIND_SPARSE, b * d)
    free(work)
    free(urow)
    free(rows)
    free(src)
    free(scratch)
    return nu


def family_sparse_validated(table, states, idx, grads, fopts, str duplicates):
    """A family rule on validated sparse arguments (C-contiguous table/states, int64 idx,
    C-contiguous grads); duplicates "sum" or "sequential"."""
    cdef FamilyOpts f
    cdef cnp.ndarray t = table, a = states[0], i = idx, g = grads
    cdef cnp.ndarray b = states[1] if len(states) > 1 else states[0]
    cdef Py_ssize_t d = cnp.PyArray_DIMS(t)[1], n = cnp.PyArray_DIMS(i)[0], nu = 0
    cdef int mode = _duplicates_mode(duplicates)
    cdef Py_ssize_t rows = cnp.PyArray_DIMS(t)[0]
    cdef int64_t* own = NULL
    cdef int64_t bad[2]
    _set_family(&f, fopts)
    if n == 0 or d == 0:
        return
    with nogil:   # the kernel runs on a checked private copy of the indices
        own = checked_indices(<int64_t*>cnp.PyArray_DATA(i), n, rows, bad)
        if own != NULL:
            if cnp.PyArray_TYPE(t) == cnp.NPY_FLOAT:
                nu = family_sparse_update(<float*>cnp.PyArray_DATA(t),
                                          <float*>cnp.PyArray_DATA(a),
                                          <float*>cnp.PyArray_DATA(b), d, own, n,
                                          <const float*>cnp.PyArray_DATA(g), &f, mode)
            else:
                nu = family_sparse_update(<double*>cnp.PyArray_DATA(t),
                                          <double*>cnp.PyArray_DATA(a),
                                          <double*>cnp.PyArray_DATA(b), d, own, n,
                                          <const double*>cnp.PyArray_DATA(g), &f, mode)
            free(own)
    if own == NULL:
        raise_unchecked(bad, rows, "sparse family update")
    if nu < 0:
        raise MemoryError("sparse family update: out of memory (nothing was written)")


# ----------------------------------------------------------------------------- clipping by norm
cdef double _sumsq_run(Py_ssize_t n, const void* x, bint is_f32) noexcept nogil:
    if is_f32:
        return _table.sumsq_f32(n, <const float*>x)
    return _table.sumsq_f64(n, <const double*>x)


ctypedef struct _SumsqJob:
    const char* data
    Py_ssize_t n, blk
    size_t item
    bint is_f32
    double* part


cdef void _sumsq_blocks(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """part[b] = the sum of squares of block b, for the blocks [lo, hi)."""
    cdef _SumsqJob* j = <_SumsqJob*>ctx
    cdef Py_ssize_t b
    for b in range(lo, hi):
        j.part[b] = _sumsq_run(min(j.blk, j.n - b * j.blk), j.data + b * j.blk * j.item, j.is_f32)


def sum_of_squares(x):
    """Σx² in double over a contiguous array, in the fixed order of
    reference_family.sum_of_squares: blocks of FA_CLIP_BLOCK elements in memory order (8
    lanes each), their sums added left to right. Blocks are split across threads; the order
    of the additions does not depend on the thread count. Other layouts: the NumPy twin."""
    cdef cnp.ndarray a = x
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a), nb, b, blk = FA_CLIP_BLOCK
    cdef bint is_f32 = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT
    cdef size_t item = 4 if is_f32 else 8
    cdef const char* data = <const char*>cnp.PyArray_DATA(a)
    cdef double total = 0.0
    cdef double* part
    cdef int nt
    cdef _SumsqJob job
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT and cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE:
        raise TypeError(f"the norm pass takes float32 or float64 arrays, got {x.dtype}")
    if not (x.flags.aligned and x.dtype.isnative
            and (x.flags.c_contiguous or x.flags.f_contiguous)):
        return _reference_family.sum_of_squares(x)
    if n == 0:
        return 0.0
    nb = (n + blk - 1) // blk
    part = <double*>malloc(nb * sizeof(double))
    if part == NULL:
        raise MemoryError()
    nt = _threads_for(n)
    if nt > nb:
        nt = <int>nb
    job.data = data
    job.n = n
    job.blk = blk
    job.item = item
    job.is_f32 = is_f32
    job.part = part
    with nogil:
        if nt <= 1:
            _sumsq_blocks(&job, 0, nb)
        else:
            fa_parallel_for(nb, 1, _sumsq_blocks, &job, nt, FA_KIND_SCAN, n)
        for b in range(nb):
            total = total + part[b]
    free(part)
    return total
