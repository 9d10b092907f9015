# Issue 14, included by kernels.pyx after _family.pxi: the sum of squares behind clipping by
# norm (clipnorm / global_clipnorm), in a fixed order on every ISA and thread count.


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
    the twin's sum_of_squares: blocks of FA_CLIP_BLOCK elements in memory order (8
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
        return _twin.sum_of_squares(x)
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
            fa_parallel_for(nb, 1, _sumsq_blocks, &job, nt, fa_site(FA_KIND_NORM, is_f32), n)
        for b in range(nb):
            total = total + part[b]
    free(part)
    return total
