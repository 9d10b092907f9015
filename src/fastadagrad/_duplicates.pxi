# Issue 14, included by kernels.pyx after _sparse.pxi and before _family.pxi: the peers'
# sparse-duplicate rules (duplicates="sequential" | "keras"), and the row grouping and parts on
# the pool that the family's sparse rules (_family.pxi) share. The loops are C
# (_csrc/family_typed.h).
#
# Sparse duplicates other than "sum": the positions of the batch are grouped by row (rows in
# order of first appearance, each row's occurrences in batch order); unique rows are split
# across threads (each row, with all its occurrences, by exactly one thread), so any thread
# count gives the same bytes. Unclipped "sequential" needs no grouping: on one thread it runs
# the batch in order, on several in parts by row owner (_owner_parts). All memory is allocated
# before the first write.

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


cdef void _run_parts(_part_fn fn, void* ctx, Py_ssize_t nt, int site,
                     Py_ssize_t elements) noexcept nogil:
    """fn(ctx, t, nt) for every t in [0, nt), on up to nt threads of the pool."""
    cdef _PartsJob j
    j.fn = fn
    j.ctx = ctx
    j.nt = nt
    fa_parallel_for(nt, 1, _parts_chunk, &j, <int>nt, site, elements)


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
        _family_rows(u1 - u0, j.rows + u0, <const float**>j.src + u0, <const float*>NULL,
                     <float*>j.table, <float*>j.s1, <float*>j.s2, j.d, j.f)
    else:
        _family_rows(u1 - u0, j.rows + u0, <const double**>j.src + u0, <const double*>NULL,
                     <double*>j.table, <double*>j.s1, <double*>j.s2, j.d, j.f)


cdef inline Py_ssize_t _owner(int64_t r, Py_ssize_t nt) noexcept nogil:
    """The part in [0, nt) that row r belongs to: the top 32 bits of its Fibonacci hash scaled
    to nt, so that any set of rows (consecutive, strided, random) spreads evenly."""
    return <Py_ssize_t>((((<uint64_t>r * 0x9E3779B97F4A7C15ULL) >> 32) * <uint64_t>nt) >> 32)


cdef void _owner_parts(const int64_t* idx, Py_ssize_t b, Py_ssize_t nt, Py_ssize_t* start,
                       Py_ssize_t* order) noexcept nogil:
    """The positions 0..b, stably partitioned by the owner of their row (a counting sort):
    part t is order[start[t]..start[t+1]), so every occurrence of a row is in one part, in
    batch order. start: 2 * nt + 1 slots (the last nt are cursors). What one-step-per-occurrence
    ("sequential") on several threads needs, without grouping the rows."""
    cdef Py_ssize_t k, t
    cdef Py_ssize_t* cur = start + nt + 1
    memset(start, 0, (nt + 1) * sizeof(Py_ssize_t))
    for k in range(b):
        start[_owner(idx[k], nt) + 1] += 1
    for t in range(nt):
        start[t + 1] += start[t]
    memcpy(cur, start, nt * sizeof(Py_ssize_t))
    for k in range(b):
        t = _owner(idx[k], nt)
        order[cur[t]] = k
        cur[t] += 1


cdef Py_ssize_t _group_rows(const int64_t* idx, Py_ssize_t b, int64_t* urow, Py_ssize_t* start,
                            Py_ssize_t* order, Py_ssize_t* uid) noexcept nogil:
    """Unique rows urow[0..nu) in order of first appearance (a RowHash of >= 2b slots);
    order[start[u]..start[u+1]) are the positions of row u's occurrences, ascending. uid: b
    scratch slots. Returns nu, or -1 when out of memory."""
    cdef Py_ssize_t p, h, u, nu = 0
    cdef RowHash t
    cdef int64_t r
    if row_hash_init(&t, 2 * b) < 0:
        return -1
    for p in range(b + 1):
        start[p] = 0
    for p in range(b):
        r = idx[p]
        h = row_hash_find(&t, r)
        if t.keys[h] == -1:
            t.keys[h] = r
            t.ids[h] = nu
            urow[nu] = r
            nu += 1
        uid[p] = t.ids[h]
        start[t.ids[h] + 1] += 1
    free(t.keys)
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
    "sequential", no clip: on one thread the occurrences in batch order, ungrouped; on several,
    in parts by row owner (_owner_parts: each row's occurrences in one part, in batch order):
    each row's steps come in the same order and rows are independent, so the same bytes,
    without the grouping pass. Returns -1 if out of memory (nothing written), else the number
    of rows updated (unique rows; b when ungrouped, the part count when by owner)."""
    cdef Py_ssize_t nu = -1, k
    cdef int nt = _threads_for(b * d)
    cdef bint by_owner
    cdef _RowsJob job
    cdef Py_ssize_t* uid
    cdef Py_ssize_t* start
    cdef Py_ssize_t* order
    cdef int64_t* urow
    cdef int64_t* rows
    cdef const floating** src
    if mode == 0:   # "sum" with clip > 0 (unclipped "sum" is _sparse.pxi's sparse_update)
        return clip_sum_update(table, accum, NULL, d, idx, b, grads, o, NULL, clip)
    if nt <= 1 and mode == _DUP_SEQUENTIAL and clip <= 0:   # grads row k is occurrence k's
        _sparse_rows(b, idx, <const floating**>NULL, grads, table, accum, rowwise, d, o)
        return b
    by_owner = mode == _DUP_SEQUENTIAL and clip <= 0   # several threads: parts by row owner
    src = <const floating**>malloc(b * sizeof(floating*))
    uid = NULL if by_owner else <Py_ssize_t*>malloc(b * sizeof(Py_ssize_t))
    start = <Py_ssize_t*>malloc((max(b, 2 * nt) + 1) * sizeof(Py_ssize_t))
    order = <Py_ssize_t*>malloc(b * sizeof(Py_ssize_t))
    urow = NULL if by_owner else <int64_t*>malloc(b * sizeof(int64_t))
    rows = <int64_t*>malloc(b * sizeof(int64_t))
    if start != NULL and order != NULL and rows != NULL and src != NULL \
            and (by_owner or uid != NULL and urow != NULL):
        if by_owner:
            _owner_parts(idx, b, nt, start, order)
            nu = nt                                 # _dup_part's part t: start[t]..start[t+1]
        else:
            nu = _group_rows(idx, b, urow, start, order, uid)
    if nu > 0:
        for k in range(b):
            rows[k] = idx[order[k]]
            src[k] = grads + order[k] * d
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
            _run_parts(_dup_part, &job, nt,
                       fa_site(FA_KIND_SPARSE_DUP, 4 * mode + 2 * rowwise + (floating is double)),
                       b * d)
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
    else:   # sequential (and keras without accumulating: the same steps)
        _sparse_rows(k1 - k0, rows + k0, src + k0, <const floating*>NULL, table, accum, rowwise,
                     d, o)


cdef int _duplicates_mode(str duplicates):
    return DUPLICATES.index(duplicates)


def sparse_dup_validated(table, accum, idx, grads, opts, str duplicates, double clip=0.0):
    """sparse_validated with a duplicates rule ("sum" goes to the merging path); clip > 0:
    every occurrence's grad clipped to [-clip, clip] first (element-wise accumulators)."""
    cdef DenseOpts o
    cdef int mode = _duplicates_mode(duplicates)
    cdef int64_t bad[2]
    if mode == 0 and clip <= 0:
        return sparse_validated(table, accum, idx, grads, opts)
    _set_opts(&o, opts)
    if sparse_run(table, accum, idx, grads, &o, mode, clip, bad) == -2:
        raise_unchecked(bad, cnp.PyArray_DIMS(<cnp.ndarray>table)[0], "sparse_adagrad_update")
