# The AdaGrad loops, written once with fused types and compiled once per ISA level.
#
# Included by _isa_generic.pyx, _isa_avx2.pyx and _isa_avx512.pyx; setup.py gives each its -m flags,
# plus -O3 -fno-math-errno (so sqrt vectorizes) and -ffp-contract=off (no FMA: NumPy's rounding).
# Per element the results are bit-identical to the NumPy twin (fastadagrad/reference.py):
#     g = -grad (maximize);  g = g + wd * param (wd != 0);  param = param - param * dwd * clr (dwd != 0)
#     accum = accum + g * g; denom = sqrt(accum) + eps  |  sqrt(accum + eps)
#     param = param - (clr * g) / denom          (unchanged where accum == 0 if zero_if_accum_zero)
# maximize and the eps placement are folded exactly into constants (see Coefficients); the three
# remaining switches are compile-time constants of eight loop copies, so no loop has a branch.
# (Runtime switches relied on gcc's loop unswitching, which left some float64 combinations
# scalar, 8x slower; bitwise selects vectorised but ran 1.5-2x slower.) After changing a loop,
# run benchmarks/loop_variants.py: it times every combination on every ISA path.

from cpython.pycapsule cimport PyCapsule_New
from libc.math cimport sqrt, sqrtf
from libc.stdint cimport int64_t, uint32_t, uint64_t
from fastadagrad._kernel_table cimport DenseOpts, KernelTable

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* (c ? a : b) on the bits: no branch for gcc to if-convert (it does not if-convert the
       plain ternary of the optax zero mask for SSE2/AVX2, leaving that loop scalar). */
    static inline float fa_select_f(int c, float a, float b) {
        uint32_t ia, ib, m = (uint32_t)0 - (uint32_t)(c != 0);
        memcpy(&ia, &a, 4); memcpy(&ib, &b, 4);
        ia = (ia & m) | (ib & ~m);
        memcpy(&a, &ia, 4);
        return a;
    }
    static inline double fa_select_d(int c, double a, double b) {
        uint64_t ia, ib, m = (uint64_t)0 - (uint64_t)(c != 0);
        memcpy(&ia, &a, 8); memcpy(&ib, &b, 8);
        ia = (ia & m) | (ib & ~m);
        memcpy(&a, &ia, 8);
        return a;
    }
    """
    float fa_select_f(int c, float a, float b) noexcept nogil
    double fa_select_d(int c, double a, double b) noexcept nogil


cdef inline floating _select(bint c, floating a, floating b) noexcept nogil:
    """c ? a : b without a branch."""
    if floating is float:
        return fa_select_f(c, a, b)
    else:
        return fa_select_d(c, a, b)

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef struct Coefficients:
    # Every option folded into constants, so the element step below has only three switches.
    double sign           # g = grad * sign: -1 when maximizing (exactly -grad, zeros included)
    double clr
    double wd
    double dwd
    double eps_in         # denom = sqrt(acc + eps_in) + eps_out: one of them is 0, and adding
    double eps_out        # +0 is exact (acc = a + g*g is never -0, sqrt(acc) never -0)


cdef inline Coefficients _coefficients(const DenseOpts* o) noexcept nogil:
    cdef Coefficients c
    c.sign = -1.0 if o.maximize else 1.0
    c.clr = o.lr
    c.wd = o.weight_decay
    c.dwd = o.decoupled_weight_decay
    c.eps_in = o.eps if o.eps_inside else 0.0
    c.eps_out = 0.0 if o.eps_inside else o.eps
    return c


cdef inline floating _element(floating p, floating g, floating* a, floating sign, floating clr,
                              floating wd, floating dwd, floating eps_in, floating eps_out,
                              bint decay, bint decoupled, bint zero_mask) noexcept nogil:
    """One element: update accum in place, return the new param."""
    cdef floating acc, new
    g = g * sign
    if decay:
        g = g + wd * p
    if decoupled:
        p = p - p * dwd * clr
    acc = a[0] + g * g
    a[0] = acc
    new = p - (clr * g) / (_sqrt(acc + eps_in) + eps_out)
    if zero_mask:
        new = _select(acc == 0, p, new)
    return new


cdef inline void _dense_loop(Py_ssize_t n, floating* param, const floating* grad,
                             floating* accum, const Coefficients* c, bint decay, bint decoupled,
                             bint zero_mask) noexcept nogil:
    cdef floating sign = <floating>c.sign, clr = <floating>c.clr, wd = <floating>c.wd
    cdef floating dwd = <floating>c.dwd, eps_in = <floating>c.eps_in
    cdef floating eps_out = <floating>c.eps_out
    cdef Py_ssize_t i
    for i in range(n):
        param[i] = _element(param[i], grad[i], &accum[i], sign, clr, wd, dwd, eps_in, eps_out,
                            decay, decoupled, zero_mask)


cdef void dense(Py_ssize_t n, floating* param, const floating* grad, floating* accum,
                const DenseOpts* o) noexcept nogil:
    """Contiguous AdaGrad step over n elements. The three switches become compile-time
    constants of eight loop copies: no branch is left in any loop, which gcc then vectorises
    for float and double on every ISA (runtime switches left some combinations scalar)."""
    cdef Coefficients c = _coefficients(o)
    cdef int variant = ((o.weight_decay != 0) << 2) | ((o.decoupled_weight_decay != 0) << 1) \
        | o.zero_if_accum_zero
    if variant == 0:
        _dense_loop(n, param, grad, accum, &c, False, False, False)
    elif variant == 1:
        _dense_loop(n, param, grad, accum, &c, False, False, True)
    elif variant == 2:
        _dense_loop(n, param, grad, accum, &c, False, True, False)
    elif variant == 3:
        _dense_loop(n, param, grad, accum, &c, False, True, True)
    elif variant == 4:
        _dense_loop(n, param, grad, accum, &c, True, False, False)
    elif variant == 5:
        _dense_loop(n, param, grad, accum, &c, True, False, True)
    elif variant == 6:
        _dense_loop(n, param, grad, accum, &c, True, True, False)
    else:
        _dense_loop(n, param, grad, accum, &c, True, True, True)


cdef void strided(Py_ssize_t n, floating* param, Py_ssize_t sp, const floating* grad, Py_ssize_t sg,
                  floating* accum, Py_ssize_t sa, const DenseOpts* o) noexcept nogil:
    """The same element step over operands with byte strides sp, sg, sa (views updated in place)."""
    cdef Coefficients c = _coefficients(o)
    cdef Py_ssize_t i
    cdef floating* p
    for i in range(n):
        p = <floating*>(<char*>param + i * sp)
        p[0] = _element(p[0], (<const floating*>(<const char*>grad + i * sg))[0],
                        <floating*>(<char*>accum + i * sa), <floating>c.sign, <floating>c.clr,
                        <floating>c.wd, <floating>c.dwd, <floating>c.eps_in,
                        <floating>c.eps_out, o.weight_decay != 0, o.decoupled_weight_decay != 0,
                        o.zero_if_accum_zero)


cdef inline void _rowwise_loop(Py_ssize_t d, floating* row, const floating* grad,
                               floating* accum, const Coefficients* c, bint decay) noexcept nogil:
    cdef floating sign = <floating>c.sign, clr = <floating>c.clr, wd = <floating>c.wd
    cdef floating eps_in = <floating>c.eps_in, eps_out = <floating>c.eps_out
    cdef floating lane[8]
    cdef floating t, acc, denom
    cdef Py_ssize_t j, k, d8 = d - d % 8
    for k in range(8):
        lane[k] = 0
    for j in range(0, d8, 8):
        for k in range(8):
            t = grad[j + k] * sign
            if decay:
                t = t + wd * row[j + k]
            lane[k] = lane[k] + t * t
    for j in range(d8, d):
        t = grad[j] * sign
        if decay:
            t = t + wd * row[j]
        lane[j - d8] = lane[j - d8] + t * t
    acc = accum[0] + (((lane[0] + lane[1]) + (lane[2] + lane[3]))
                      + ((lane[4] + lane[5]) + (lane[6] + lane[7]))) / <floating>d
    accum[0] = acc
    denom = _sqrt(acc + eps_in) + eps_out
    for j in range(d):
        t = grad[j] * sign
        if decay:
            t = t + wd * row[j]
        row[j] = row[j] - (clr * t) / denom


cdef void rowwise(Py_ssize_t d, floating* row, const floating* grad, floating* accum,
                  const DenseOpts* o) noexcept nogil:
    """Row-wise AdaGrad on one row of d elements with one accumulator:
    accum += mean(g*g); row -= (clr * g) / (sqrt(accum) + eps)  [or sqrt(accum + eps)].

    The sum of squares has a fixed order on every ISA: 8 lanes, lane k sums the elements
    j = k, k + 8, k + 16, ... left to right (starting from the first), then
    ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)); mean = sum / d. (reference.py: the same.)
    """
    cdef Coefficients c = _coefficients(o)
    if o.weight_decay != 0:
        _rowwise_loop(d, row, grad, accum, &c, True)
    else:
        _rowwise_loop(d, row, grad, accum, &c, False)


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FA_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define FA_PREFETCH(p) ((void)0)
    #endif
    """
    void FA_PREFETCH(const void* p) noexcept nogil


cdef inline void _prefetch_row(const void* p, Py_ssize_t nbytes) noexcept nogil:
    cdef Py_ssize_t off
    for off in range(0, nbytes, 64):
        FA_PREFETCH(<const char*>p + off)


cdef void sparse_rows(Py_ssize_t count, const int64_t* rows, const floating** src,
                      floating* table, floating* accum, Py_ssize_t d, bint is_rowwise,
                      Py_ssize_t ahead, const DenseOpts* o) noexcept nogil:
    """Update table rows rows[0..count) with the gradient rows src[0..count) (element-wise:
    accum rows of d; row-wise: one accumulator per row), prefetching `ahead` rows ahead. The
    options are decoded once for the whole run of rows."""
    cdef Coefficients c = _coefficients(o)
    cdef bint decay = o.weight_decay != 0, decoupled = o.decoupled_weight_decay != 0
    cdef Py_ssize_t u, nbytes = d * sizeof(floating)
    cdef int64_t r
    for u in range(count):
        if u + ahead < count:
            _prefetch_row(table + rows[u + ahead] * d, nbytes)
            if is_rowwise:
                FA_PREFETCH(accum + rows[u + ahead])
            else:
                _prefetch_row(accum + rows[u + ahead] * d, nbytes)
        r = rows[u]
        if is_rowwise:
            if decay:
                _rowwise_loop(d, table + r * d, src[u], accum + r, &c, True)
            else:
                _rowwise_loop(d, table + r * d, src[u], accum + r, &c, False)
        elif o.zero_if_accum_zero or decoupled:
            dense(d, table + r * d, src[u], accum + r * d, o)
        elif decay:
            _dense_loop(d, table + r * d, src[u], accum + r * d, &c, True, False, False)
        else:
            _dense_loop(d, table + r * d, src[u], accum + r * d, &c, False, False, False)


cdef void add_into(Py_ssize_t n, floating* dst, const floating* src) noexcept nogil:
    """dst += src (merging the gradients of duplicate indices, in order of appearance)."""
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = dst[i] + src[i]


cdef bint all_finite(Py_ssize_t n, const floating* x) noexcept nogil:
    """True if no element is NaN or +-inf (exponent bits all ones), vectorised integer test."""
    cdef Py_ssize_t i
    cdef uint32_t bad32 = 0
    cdef uint64_t bad64 = 0
    if floating is float:
        for i in range(n):
            bad32 |= ((<const uint32_t*>x)[i] & 0x7f800000u) == 0x7f800000u
        return bad32 == 0
    else:
        for i in range(n):
            bad64 |= ((<const uint64_t*>x)[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u
        return bad64 == 0


cdef void probe(Py_ssize_t n, floating* x, const floating* y, floating* z) noexcept nogil:
    """Memory-bandwidth probe with AdaGrad's traffic (3 reads, 2 writes) and no sqrt/div."""
    cdef Py_ssize_t i
    cdef floating t
    for i in range(n):
        t = z[i] + y[i]
        z[i] = t
        x[i] = x[i] - t


cdef KernelTable _TABLE
_TABLE.isa = ISA_NAME
_TABLE.dense_f32 = dense[float]
_TABLE.dense_f64 = dense[double]
_TABLE.strided_f32 = strided[float]
_TABLE.strided_f64 = strided[double]
_TABLE.rowwise_f32 = rowwise[float]
_TABLE.rowwise_f64 = rowwise[double]
_TABLE.sparse_rows_f32 = sparse_rows[float]
_TABLE.sparse_rows_f64 = sparse_rows[double]
_TABLE.add_into_f32 = add_into[float]
_TABLE.add_into_f64 = add_into[double]
_TABLE.all_finite_f32 = all_finite[float]
_TABLE.all_finite_f64 = all_finite[double]
_TABLE.probe_f32 = probe[float]
_TABLE.probe_f64 = probe[double]

TABLE = PyCapsule_New(&_TABLE, b"fastadagrad.KernelTable", NULL)
