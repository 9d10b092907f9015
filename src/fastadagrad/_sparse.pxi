# Sparse and row-wise AdaGrad over the rows a batch touches (included by kernels.pyx).
#
# 1. Merge duplicates with an open-addressing hash (row -> unique id, ids in order of first
#    appearance): a row seen once is read straight from `grads`; a row seen k > 1 times is
#    summed into a scratch row in order of appearance, g1 + g2 + ... (deterministic).
# 2. Update every unique row, in parallel over chunks of rows taken dynamically by the worker
#    pool (each row by exactly one thread, with the same ISA loop as the dense kernel, so any
#    thread count gives the same bytes), prefetching the table and accumulator rows a few rows
#    ahead.
# All memory is allocated before the first write; a failure writes nothing.
#
# Textually included by kernels.pyx, whose names it uses (a .pxi cannot redeclare them):
#   from kernels.pyx: `_table` (the chosen ISA's KernelTable), `DenseOpts`, `_set_opts`,
#     `_threads_for`, `_grain`, `fa_parallel_for` / `FA_KIND_SPARSE` (_threadpool.h),
#     `_is_f32_or_f64`, `_forward` / `_twin` (the NumPy backend's entry points), `_validation`,
#     `_clipping`, `cnp`, the `floating` type;
#   from _duplicates.pxi: `sparse_dup_validated` (the duplicates rule, "sum" comes back here);
#   from _clipnorm.pxi: `sum_of_squares` (clipnorm).
# It defines for the others: RowHash / row_hash_init / row_hash_find (the row hash table),
# first_bad_index, copy_checked, checked_indices, raise_unchecked,
# sparse_update, sparse_run, sparse_validated, sparse_adagrad_update.

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cdef Py_ssize_t _PREFETCH_AHEAD = 8


cdef Py_ssize_t first_bad_index(const int64_t* idx, Py_ssize_t b, Py_ssize_t n) noexcept nogil:
    """Position of the first index outside [0, n), or -1."""
    cdef Py_ssize_t p
    for p in range(b):
        if idx[p] < 0 or idx[p] >= n:
            return p
    return -1


cdef enum:
    _ADD_INLINE_MAX = 32   # rows up to this width are summed inline (no call)


cdef inline void _add_row(Py_ssize_t d, floating* dst, const floating* src) noexcept nogil:
    """dst += src, element by element (the same IEEE additions at any vector width)."""
    cdef Py_ssize_t i
    if d <= _ADD_INLINE_MAX:
        for i in range(d):
            dst[i] = dst[i] + src[i]
    elif floating is float:
        _table.add_into_f32(d, dst, src)
    else:
        _table.add_into_f64(d, dst, src)


cdef inline void _sum_rows(Py_ssize_t d, floating* dst, const floating* a,
                           const floating* b) noexcept nogil:
    """dst = a + b (a row's first two gradients: the bytes of a copy of a, then b added)."""
    cdef Py_ssize_t i
    if d <= _ADD_INLINE_MAX:
        for i in range(d):
            dst[i] = a[i] + b[i]
    else:
        memcpy(dst, a, d * sizeof(floating))
        _add_row(d, dst, b)


cdef struct RowHash:
    # Open addressing over row numbers (Fibonacci hashing, linear probing): keys[cap] (-1:
    # empty) and a parallel ids[cap] the caller fills; cap a power of two, in one allocation.
    int64_t* keys
    Py_ssize_t* ids
    Py_ssize_t mask
    int shift


cdef inline int row_hash_init(RowHash* t, Py_ssize_t min_cap) noexcept nogil:
    """An empty table of cap >= max(min_cap, 16) slots; -1 when out of memory."""
    cdef Py_ssize_t cap = 16
    t.shift = 60
    while cap < min_cap:
        cap *= 2
        t.shift -= 1
    t.mask = cap - 1
    t.keys = <int64_t*>malloc(cap * (sizeof(int64_t) + sizeof(Py_ssize_t)))
    if t.keys == NULL:
        return -1
    t.ids = <Py_ssize_t*>(t.keys + cap)
    memset(t.keys, 0xff, cap * sizeof(int64_t))   # every key -1: empty
    return 0


cdef inline Py_ssize_t row_hash_find(const RowHash* t, int64_t r) noexcept nogil:
    """The slot holding row r, or the empty slot (key -1) where r belongs."""
    cdef Py_ssize_t h = <Py_ssize_t>((<uint64_t>r * 0x9E3779B97F4A7C15ULL) >> t.shift)
    cdef int64_t key = t.keys[h]
    while key != r and key != -1:
        h = (h + 1) & t.mask
        key = t.keys[h]
    return h


cdef Py_ssize_t _merge_hash(const int64_t* idx, Py_ssize_t b, Py_ssize_t d,
                            const floating* grads, int64_t* urow, const floating** src,
                            floating** scratch, Py_ssize_t* work) noexcept nogil:
    """Unique rows in order of first appearance, in one pass over a RowHash of >= 4b slots
    (short probes); src[u] is the row's gradient: straight from `grads` for a row seen once;
    at a row's first repeat its first gradient and the repeat are summed into a scratch row
    (the slot's id then stored as ~u: "has its scratch row"), and every later occurrence is
    added there in order of appearance, g1 + g2 + ... (deterministic). Returns the number of
    unique rows, or -1 when out of memory. `work` is not used (the sort merge's scratch)."""
    cdef Py_ssize_t p, h, u, nu = 0, k = 0
    cdef RowHash t
    cdef floating* sc = NULL     # b // 2 scratch rows (at most b // 2 rows repeat), allocated
                                 # at the first repeat; only the rows used are touched
    cdef int64_t r
    if row_hash_init(&t, 4 * b) < 0:
        return -1
    for p in range(b):
        r = idx[p]
        h = row_hash_find(&t, r)
        if t.keys[h] == -1:
            t.keys[h] = r
            t.ids[h] = nu
            urow[nu] = r
            src[nu] = grads + p * d
            nu += 1
            continue
        u = t.ids[h]
        if u >= 0:
            if sc == NULL:
                sc = <floating*>malloc((b // 2) * d * sizeof(floating))
                if sc == NULL:
                    nu = -1
                    break
                scratch[0] = sc
            _sum_rows(d, sc + k * d, src[u], grads + p * d)
            src[u] = sc + k * d
            t.ids[h] = ~u
            k += 1
        else:
            _add_row(d, <floating*>src[~u], grads + p * d)
    free(t.keys)
    return nu


cdef Py_ssize_t _merge_sort(const int64_t* idx, Py_ssize_t b, Py_ssize_t d,
                            const floating* grads, int64_t* urow, const floating** src,
                            floating** scratch, Py_ssize_t* work) noexcept nogil:
    """The same result as _merge_hash through a stable LSD radix sort of the positions by row
    (8-bit digits): unique rows come out in ascending order, each run of equal rows in order of
    appearance, so the merged sums are the same bytes. `work` holds 2b Py_ssize_t."""
    cdef Py_ssize_t* perm = work
    cdef Py_ssize_t* tmp = work + b
    cdef Py_ssize_t* swap
    cdef Py_ssize_t counts[257]
    cdef Py_ssize_t p, s, e, k = 0, nu = 0, nmulti = 0, digit
    cdef int64_t maxk = 0
    cdef int shift = 0
    for p in range(b):
        perm[p] = p
        if idx[p] > maxk:
            maxk = idx[p]
    while shift < 64 and (maxk >> shift) > 0:
        for digit in range(257):
            counts[digit] = 0
        for p in range(b):
            counts[((idx[perm[p]] >> shift) & 255) + 1] += 1
        for digit in range(256):
            counts[digit + 1] += counts[digit]
        for p in range(b):
            digit = (idx[perm[p]] >> shift) & 255
            tmp[counts[digit]] = perm[p]
            counts[digit] += 1
        swap = perm
        perm = tmp
        tmp = swap
        shift += 8
    s = 0
    while s < b:
        e = s + 1
        while e < b and idx[perm[e]] == idx[perm[s]]:
            e += 1
        nmulti += e - s > 1
        s = e
    if nmulti:
        scratch[0] = <floating*>malloc(nmulti * d * sizeof(floating))
        if scratch[0] == NULL:
            return -1
    s = 0
    while s < b:
        e = s + 1
        while e < b and idx[perm[e]] == idx[perm[s]]:
            e += 1
        urow[nu] = idx[perm[s]]
        if e - s == 1:
            src[nu] = grads + perm[s] * d
        else:
            src[nu] = scratch[0] + k * d
            _sum_rows(d, scratch[0] + k * d, grads + perm[s] * d, grads + perm[s + 1] * d)
            for p in range(s + 2, e):
                _add_row(d, scratch[0] + k * d, grads + perm[p] * d)
            k += 1
        nu += 1
        s = e
    return nu


cdef int _merge_mode = 0   # 0: hash, 1: sort (see _set_merge)


cdef Py_ssize_t sparse_update(floating* table, floating* accum, bint rowwise, Py_ssize_t d,
                              const int64_t* idx, Py_ssize_t b, const floating* grads,
                              const DenseOpts* o) noexcept nogil:
    """AdaGrad on rows idx[0..b) of a C-contiguous (n, d) table with the (b, d) grads; accum is
    (n, d) (element-wise) or (n,) (row-wise). Indices must be in range. Returns -1 if out of
    memory (nothing written), else the number of unique rows."""
    cdef Py_ssize_t nu
    cdef int nt
    cdef _SparseJob job
    cdef Py_ssize_t* work
    cdef int64_t* urow
    cdef const floating** src
    cdef floating* scratch = NULL
    if b == 0:
        return 0
    work = <Py_ssize_t*>malloc(2 * b * sizeof(Py_ssize_t))   # _merge_sort's 2b (the hash: none)
    urow = <int64_t*>malloc(b * sizeof(int64_t))
    src = <const floating**>malloc(b * sizeof(floating*))
    if work == NULL or urow == NULL or src == NULL:
        nu = -1
    elif _merge_mode == 1:
        nu = _merge_sort(idx, b, d, grads, urow, src, &scratch, work)
    else:
        nu = _merge_hash(idx, b, d, grads, urow, src, &scratch, work)
    if nu > 0:   # the rows, in parallel; each row by one thread
        nt = _threads_for(nu * d)
        if nt == 1:
            _sparse_rows(nu, urow, src, <const floating*>NULL, table, accum, rowwise, d, o)
        else:
            job.table = table
            job.accum = accum
            job.rowwise = rowwise
            job.d = d
            job.urow = urow
            job.src = <const void**>src
            job.o = o
            job.f32 = floating is float
            fa_parallel_for(nu, max(16, _grain(nu * d, nt) // d), _sparse_chunk, &job, nt,
                            fa_site(FA_KIND_SPARSE, 2 * rowwise + (floating is double)), nu * d)
    free(work)
    free(urow)
    free(src)
    free(scratch)
    return nu


ctypedef struct _SparseJob:       # the unique rows of one sparse step, split into chunks of rows
    void* table
    void* accum
    bint rowwise
    Py_ssize_t d
    const int64_t* urow
    const void** src
    const DenseOpts* o
    bint f32


cdef void _sparse_chunk(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _SparseJob* j = <_SparseJob*>ctx
    if j.f32:
        _sparse_rows(hi - lo, j.urow + lo, <const float**>j.src + lo, <const float*>NULL,
                     <float*>j.table, <float*>j.accum, j.rowwise, j.d, j.o)
    else:
        _sparse_rows(hi - lo, j.urow + lo, <const double**>j.src + lo, <const double*>NULL,
                     <double*>j.table, <double*>j.accum, j.rowwise, j.d, j.o)


ctypedef fused index_t:          # the index dtypes the C-level gate passes through
    int32_t
    int64_t


cdef bint copy_checked(const index_t* idx, Py_ssize_t b, Py_ssize_t n, int64_t* dst,
                       int64_t* bad) noexcept nogil:
    """Copy idx[0..b) into dst (int64), checking each value as it is copied (one read of
    each; the ISA loop of loops.h): True if every entry lies in [0, n), else False with
    bad[0] = the first bad position, bad[1] = its value."""
    cdef Py_ssize_t pos
    cdef int ok
    if index_t is int32_t:
        ok = _table.copy_checked_i32(b, idx, n, dst)
    else:
        ok = _table.copy_checked_i64(b, idx, n, dst)
    if ok:
        return True
    pos = first_bad_index(dst, b, n)
    bad[0] = pos
    bad[1] = dst[pos]
    return False


cdef int64_t* checked_indices(const index_t* idx, Py_ssize_t b, Py_ssize_t n,
                              int64_t* bad) noexcept nogil:
    """A private int64 copy of idx[0..b) whose every entry lies in [0, n) (copy_checked): what
    the sparse kernels run on, so that another thread writing `idx` while the GIL is released
    can never send them out of bounds. NULL when out of memory (bad[0] = -1) or when an index
    is out of range (bad[] as copy_checked sets it); else the caller free()s the copy."""
    cdef int64_t* own = <int64_t*>malloc((b if b > 0 else 1) * sizeof(int64_t))
    if own == NULL:
        bad[0] = -1
        return NULL
    if not copy_checked(idx, b, n, own, bad):
        free(own)
        return NULL
    return own


cdef void raise_unchecked(const int64_t* bad, Py_ssize_t n, str api) except *:
    """The error for a NULL from checked_indices (nothing was written)."""
    if bad[0] == -1:
        raise MemoryError(f"{api}: out of memory (nothing was written)")
    raise ValueError(f"`indices[{bad[0]}]` = {bad[1]} is out of range for a table of {n} rows "
                     "(the indices changed after they were checked); nothing was updated")


cdef Py_ssize_t sparse_run(cnp.ndarray t, cnp.ndarray a, cnp.ndarray i, cnp.ndarray g,
                           const DenseOpts* o, int mode, double clip, int64_t* bad) except -1:
    """The float32/float64 sparse step on validated arrays (table t, accum a, grads g
    C-contiguous of one dtype; indices i C-contiguous int32 or int64, native), run on
    checked_indices(i): mode 0
    ("sum") without clip, the merging path (sparse_update); else sparse_dup_update (mode,
    clip). Returns the number of unique rows, or -2 when an index is out of range (bad[] as
    checked_indices sets it; nothing written). Raises MemoryError (nothing written)."""
    cdef Py_ssize_t n = cnp.PyArray_DIMS(t)[0], d = cnp.PyArray_DIMS(t)[1]
    cdef Py_ssize_t b = cnp.PyArray_DIMS(i)[0], nu = 0
    cdef bint rowwise = cnp.PyArray_NDIM(a) == 1, is_f32 = cnp.PyArray_TYPE(t) == cnp.NPY_FLOAT
    cdef bint int32 = cnp.PyArray_TYPE(i) == cnp.NPY_INT32
    cdef int64_t* own
    if b == 0 or d == 0:
        return 0
    with nogil:
        if int32:
            own = checked_indices(<int32_t*>cnp.PyArray_DATA(i), b, n, bad)
        else:
            own = checked_indices(<int64_t*>cnp.PyArray_DATA(i), b, n, bad)
        if own != NULL:
            if mode == 0 and clip <= 0 and is_f32:
                nu = sparse_update(<float*>cnp.PyArray_DATA(t), <float*>cnp.PyArray_DATA(a),
                                   rowwise, d, own, b, <const float*>cnp.PyArray_DATA(g), o)
            elif mode == 0 and clip <= 0:
                nu = sparse_update(<double*>cnp.PyArray_DATA(t), <double*>cnp.PyArray_DATA(a),
                                   rowwise, d, own, b, <const double*>cnp.PyArray_DATA(g), o)
            elif is_f32:
                nu = sparse_dup_update(<float*>cnp.PyArray_DATA(t), <float*>cnp.PyArray_DATA(a),
                                       rowwise, d, own, b, <const float*>cnp.PyArray_DATA(g),
                                       o, mode, clip)
            else:
                nu = sparse_dup_update(<double*>cnp.PyArray_DATA(t),
                                       <double*>cnp.PyArray_DATA(a), rowwise, d, own, b,
                                       <const double*>cnp.PyArray_DATA(g), o, mode, clip)
            free(own)
    if own == NULL and bad[0] == -1 or nu < 0:
        raise MemoryError("sparse_adagrad_update: out of memory (nothing was written)")
    return -2 if own == NULL else nu


cdef void _sparse_rows(Py_ssize_t count, const int64_t* rows, const floating** src,
                       const floating* grads, floating* table, floating* accum, bint rowwise,
                       Py_ssize_t d, const DenseOpts* o) noexcept nogil:
    """sparse_rows of the ISA: gradient rows src[0..count), or the contiguous rows of grads
    when src is NULL."""
    if floating is float:
        _table.sparse_rows_f32(count, rows, src, grads, table, accum, d, rowwise,
                               _PREFETCH_AHEAD, o)
    else:
        _table.sparse_rows_f64(count, rows, src, grads, table, accum, d, rowwise,
                               _PREFETCH_AHEAD, o)


cdef inline bint _apart(cnp.ndarray x, cnp.ndarray y) noexcept:
    """The byte ranges of two C-contiguous arrays do not intersect."""
    cdef char* px = <char*>cnp.PyArray_DATA(x)
    cdef char* py = <char*>cnp.PyArray_DATA(y)
    cdef Py_ssize_t nx = cnp.PyArray_NBYTES(x), ny = cnp.PyArray_NBYTES(y)
    return nx == 0 or ny == 0 or px + nx <= py or py + ny <= px


cdef bint _sparse_gate(object table, object accum, object indices, object grads) noexcept:
    """The C-level fast-path condition of sparse_adagrad_update's arrays: exact ndarrays; a 2-D
    float32/float64 table (n, d) and an accumulator of its dtype, (n, d) or (n,), both
    C-contiguous, aligned, native, writable; grads (len(indices), d) of the table's dtype,
    C-contiguous, aligned, native; indices 1-D C-contiguous native int32 or int64; no two of
    the four sharing a byte. What _validation.check_sparse accepts without a copy of the table,
    accumulator or grads (the indices are copied either way, int32 widened)."""
    cdef cnp.ndarray t, a, i, g
    cdef int typenum
    if not (cnp.PyArray_CheckExact(table) and cnp.PyArray_CheckExact(accum)
            and cnp.PyArray_CheckExact(indices) and cnp.PyArray_CheckExact(grads)):
        return False
    t = table
    a = accum
    i = indices
    g = grads
    typenum = cnp.PyArray_TYPE(t)
    if not ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
            and cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_TYPE(g) == typenum
            and (cnp.PyArray_TYPE(i) == cnp.NPY_INT64 or cnp.PyArray_TYPE(i) == cnp.NPY_INT32)
            and cnp.PyArray_NDIM(t) == 2 and cnp.PyArray_NDIM(i) == 1
            and cnp.PyArray_NDIM(g) == 2):
        return False
    if not (cnp.PyArray_DIMS(a)[0] == cnp.PyArray_DIMS(t)[0]
            and (cnp.PyArray_NDIM(a) == 1
                 or cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_DIMS(a)[1] == cnp.PyArray_DIMS(t)[1])
            and cnp.PyArray_DIMS(g)[0] == cnp.PyArray_DIMS(i)[0]
            and cnp.PyArray_DIMS(g)[1] == cnp.PyArray_DIMS(t)[1]):
        return False
    return (_plain_contiguous(t, _C_FLAGS | _W_FLAGS) and _plain_contiguous(a, _C_FLAGS | _W_FLAGS)
            and _plain_contiguous(g, _C_FLAGS) and _plain_contiguous(i, _C_FLAGS)
            and _apart(t, a) and _apart(t, g) and _apart(t, i) and _apart(a, g) and _apart(a, i)
            and _apart(g, i))


cdef int gated_duplicates(object duplicates) noexcept:
    """The duplicates rule the C gates take: 0 for "sum", 1 for "sequential", -1 for anything
    else (the full checks then decide)."""
    if type(duplicates) is not str:
        return -1
    return 0 if duplicates == "sum" else 1 if duplicates == "sequential" else -1


cdef bint _plain_seed_step(object seed, object step) noexcept:
    """`seed` and `step` as _validation accepts them, as plain ints (used only by stochastic
    rounding, but checked on every call)."""
    cdef long long s
    if type(seed) is not int or type(step) is not int:
        return False
    try:
        s = step
        if not 0 <= seed < 2**64:
            return False
    except Exception:
        return False
    return s >= 1


def sparse_adagrad_update(table, accum, indices, grads, *, lr=0.01, eps=1e-10,
                          eps_placement="outside", maximize=False, weight_decay=0.0,
                          duplicates="sum", update_slots=True, clipnorm=None, clipvalue=None,
                          stochastic_rounding=False, seed=0, step=1):
    """AdaGrad on the rows of `table` that `indices` names (duplicates summed first).
    clipnorm: the norm over the grads' rows as passed (every occurrence); clipvalue: every
    occurrence clipped before the duplicates rule (_clip.pxi's loops)."""
    if _forward:
        return _twin.sparse_adagrad_update(table, accum, indices, grads, lr=lr, eps=eps,
                                           eps_placement=eps_placement, maximize=maximize,
                                           weight_decay=weight_decay, duplicates=duplicates,
                                           update_slots=update_slots, clipnorm=clipnorm,
                                           clipvalue=clipvalue,
                                           stochastic_rounding=stochastic_rounding,
                                           seed=seed, step=step)
    cdef DenseOpts o
    cdef int64_t bad[2]
    cdef int mode = gated_duplicates(duplicates)
    # Gate: the common call (plain arrays and numbers, every check passing, no clip, no
    # stochastic rounding, duplicates "sum" or "sequential") runs without a Python-level check;
    # anything else, and an index out of range, takes the full checks below, which name the
    # argument (the gate writes nothing unless every index is in range).
    if (mode >= 0 and update_slots is True and clipnorm is None and clipvalue is None
            and stochastic_rounding is False and _plain_seed_step(seed, step)
            and _sparse_gate(table, accum, indices, grads)
            and _fast_hyper(lr, eps, eps_placement, weight_decay, 0.0, 1, maximize, &o)):
        if sparse_run(table, accum, indices, grads, &o, mode, 0.0, bad) != -2:
            return None
    opts, idx, g = _validation.check_sparse(table, accum, indices, grads, lr, eps,
                                            eps_placement, maximize, weight_decay)
    opts = _validation.check_sparse_rule(opts, table, accum, duplicates, update_slots,
                                         stochastic_rounding, seed, step)
    cn, cv = _clipping.check_sparse_clips(clipnorm, clipvalue, table, accum)
    if cn is not None:
        opts = opts._replace(grad_scale=_validation.clip_scale(sum_of_squares(g), cn))
    sparse_dup_validated(table, accum, idx, g, opts, duplicates, cv)


def sparse_validated(table, accum, idx, grads, opts):
    """The sparse step on arguments that passed _validation.check_sparse: idx a C-contiguous
    in-range int64 array, grads a C-contiguous (len(idx), d) array of the table's dtype."""
    cdef DenseOpts o
    cdef cnp.ndarray t = table, i = idx
    cdef int64_t bad[2]
    _set_opts(&o, opts)
    if cnp.PyArray_DIMS(i)[0] == 0 or cnp.PyArray_DIMS(t)[1] == 0:
        return
    if not _is_f32_or_f64(table):   # float16/bfloat16 table (issue 15); no Python call here
        _twin.sparse_mixed_step(table, accum, idx, grads, opts, sparse_validated)
        return
    if sparse_run(table, accum, idx, grads, &o, 0, 0.0, bad) == -2:
        raise_unchecked(bad, cnp.PyArray_DIMS(t)[0], "sparse_adagrad_update")


def _set_prefetch_ahead(n):
    """Tuning knob for the benchmarks: rows prefetched ahead in the sparse update (default 8),
    an int in [0, 4096]."""
    global _PREFETCH_AHEAD
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"`n` must be an int, got {type(n).__name__}")
    if not 0 <= n <= 4096:
        raise ValueError(f"`n` must be in [0, 4096], got {n}")
    old = _PREFETCH_AHEAD
    _PREFETCH_AHEAD = n
    return old


def _set_merge(name):
    """Benchmark knob: merge duplicate indices by "hash" (default) or "sort"; both give the
    same bytes. Returns the previous setting."""
    global _merge_mode
    old = ("hash", "sort")[_merge_mode]
    if name not in ("hash", "sort"):
        raise ValueError(f"`name` must be 'hash' or 'sort', got {name!r}")
    _merge_mode = name == "sort"
    return old


cdef class SparseGradGate:
    """The optimizer's C-level check of a SparseGrad (what _validation.check_sparse and the
    optimizer's overlap check accept, for the gate's common case): `checked` returns the
    indices as a private, range-checked int64 copy, or None (the caller then validates in
    Python, which names the problem). `guard`: every array of the optimizer (no grad may share
    its memory). `params`: the group's params as built (for `prepare`; a param changed in
    place since is refused there)."""

    cdef _Guard guard
    cdef list _guard   # keeps the guarded arrays alive
    cdef Py_ssize_t k
    cdef void** datas        # each param's data pointer, dtype, ndim, shape and strides as
    cdef int* typenums       # built (what optimizer._group.layout records)
    cdef int* ndims
    cdef Py_ssize_t** shapes   # ndim dims then ndim strides each

    def __cinit__(self, list guard, list params=None):
        cdef Py_ssize_t i, j, nd
        cdef cnp.ndarray p
        self._guard = list(guard)
        self.guard = _Guard(self._guard)
        params = [] if params is None else params
        self.k = len(params)
        self.datas = <void**>PyMem_Malloc((self.k + 1) * sizeof(void*))
        self.typenums = <int*>PyMem_Malloc((self.k + 1) * sizeof(int))
        self.ndims = <int*>PyMem_Malloc((self.k + 1) * sizeof(int))
        self.shapes = <Py_ssize_t**>PyMem_Malloc((self.k + 1) * sizeof(Py_ssize_t*))
        if not (self.datas and self.typenums and self.ndims and self.shapes):
            raise MemoryError()
        for i in range(self.k):
            self.shapes[i] = NULL
        for i in range(self.k):
            if not cnp.PyArray_Check(params[i]):
                self.ndims[i] = -1   # never as built: prepare refuses it
                continue
            p = params[i]
            nd = cnp.PyArray_NDIM(p)
            self.datas[i] = cnp.PyArray_DATA(p)
            self.typenums[i] = cnp.PyArray_TYPE(p)
            self.ndims[i] = <int>nd
            self.shapes[i] = <Py_ssize_t*>PyMem_Malloc((2 * nd + 1) * sizeof(Py_ssize_t))
            if self.shapes[i] == NULL:
                raise MemoryError()
            for j in range(nd):
                self.shapes[i][j] = cnp.PyArray_DIMS(p)[j]
                self.shapes[i][nd + j] = cnp.PyArray_STRIDES(p)[j]

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.shapes != NULL:
            for i in range(self.k):
                PyMem_Free(self.shapes[i])
        PyMem_Free(self.shapes)
        PyMem_Free(self.datas)
        PyMem_Free(self.typenums)
        PyMem_Free(self.ndims)

    cdef bint _as_built(self, Py_ssize_t i, object param) noexcept:
        """Param i is an exact ndarray with the data pointer, dtype, shape and strides it had
        when the gate was built."""
        cdef cnp.ndarray p
        cdef Py_ssize_t j, nd = self.ndims[i]
        if not cnp.PyArray_CheckExact(param):
            return False
        p = param
        if not (cnp.PyArray_NDIM(p) == nd and cnp.PyArray_DATA(p) == self.datas[i]
                and cnp.PyArray_TYPE(p) == self.typenums[i]):
            return False
        for j in range(nd):
            if (cnp.PyArray_DIMS(p)[j] != self.shapes[i][j]
                    or cnp.PyArray_STRIDES(p)[j] != self.shapes[i][nd + j]):
                return False
        return True

    cdef bint _dense_ok(self, object param, object grad, object accum) noexcept:
        """A dense grad the compiled step takes as it is: exact ndarrays, a float32/float64
        param, grad and accumulator of one dtype, shape and contiguous layout (aligned,
        native, param and accumulator writable), the grad touching no guarded array."""
        cdef int typenum
        if not (cnp.PyArray_CheckExact(grad) and cnp.PyArray_CheckExact(accum)):
            return False
        typenum = cnp.PyArray_TYPE(<cnp.ndarray>param)
        return ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
                and _contiguous_gate(param, grad, accum, typenum, True)
                and not self.guard.hits(grad))

    def prepare(self, list params, list accums, list masters, list grads, sparse_type,
                duplicates, opts):
        """The checks of a group's step in C, when its grads are plain SparseGrads
        (`sparse_type`) that pass `checked` or plain dense grads (`_dense_ok`): every param as
        built, no master weights, no decoupled weight decay in `opts`, each SparseGrad's
        duplicates rule (its own, else `duplicates`) "sum" or "sequential". Returns
        apply_steps' items: `(param, values, accum, indices, duplicates)` per SparseGrad
        (indices the private int64 copy), then one batch `(params, grads, accums, None, None,
        masters)` per dtype of the dense grads (one multi-array call each); or None when a
        condition fails: the caller then takes the general path, which names the problem.
        Nothing is written either way."""
        cdef Py_ssize_t i, k = len(params)
        cdef list items = []
        cdef list dense = [([], [], []), ([], [], [])]   # float32, float64: params, grads, accums
        cdef tuple batch
        cdef object g, dup, idx
        if not (k == self.k and len(grads) == k and len(accums) == k and len(masters) == k
                and opts.decoupled_weight_decay == 0):
            return None
        for i in range(k):
            g = grads[i]
            if masters[i] is not None or not self._as_built(i, params[i]):
                return None
            if type(g) is sparse_type:
                dup = g.duplicates
                if dup is None:
                    dup = duplicates
                if gated_duplicates(dup) < 0:
                    return None
                idx = self.checked(params[i], accums[i], g.indices, g.values)
                if idx is None:
                    return None
                items.append((params[i], g.values, accums[i], idx, dup))
            elif self._dense_ok(params[i], g, accums[i]):
                batch = dense[cnp.PyArray_TYPE(<cnp.ndarray>params[i]) == cnp.NPY_DOUBLE]
                batch[0].append(params[i])
                batch[1].append(g)
                batch[2].append(accums[i])
            else:
                return None
        for batch in dense:
            if batch[0]:
                items.append((batch[0], batch[1], batch[2], None, None, [None] * len(batch[0])))
        return items

    @staticmethod
    def first_nonfinite(list grads, sparse_type):
        """Index of the first of a prepared group's grads (a SparseGrad: its values) holding
        NaN or inf, or -1."""
        cdef Py_ssize_t i
        cdef object g
        for i in range(len(grads)):
            g = grads[i]
            if not all_finite(g.values if type(g) is sparse_type else g):
                return i
        return -1

    def checked(self, table, accum, indices, values):
        cdef cnp.ndarray own, i
        cdef int64_t bad[2]
        cdef bint ok
        cdef Py_ssize_t b, n
        if not (_sparse_gate(table, accum, indices, values) and not self.guard.hits(indices)
                and not self.guard.hits(values)):
            return None
        i = indices
        b = cnp.PyArray_DIMS(i)[0]
        n = cnp.PyArray_DIMS(<cnp.ndarray>table)[0]
        own = _np.empty(b, dtype=_np.int64)
        with nogil:
            if cnp.PyArray_TYPE(i) == cnp.NPY_INT32:
                ok = copy_checked(<int32_t*>cnp.PyArray_DATA(i), b, n,
                                  <int64_t*>cnp.PyArray_DATA(own), bad)
            else:
                ok = copy_checked(<int64_t*>cnp.PyArray_DATA(i), b, n,
                                  <int64_t*>cnp.PyArray_DATA(own), bad)
        return own if ok else None
