# The AdaGrad loops, written once with fused types and compiled once per ISA level.
#
# Included by _isa_generic.pyx, _isa_avx2.pyx and _isa_avx512.pyx; setup.py gives each its -m flags,
# plus -O3 -fno-math-errno (so sqrt vectorizes) and -ffp-contract=off (no FMA: NumPy's rounding).
# Operation order per element is exactly the NumPy twin's (fastadagrad/reference.py):
#     g = -grad (maximize);  g = g + wd * param (wd != 0);  accum = accum + g * g
#     denom = sqrt(accum) + eps  |  sqrt(accum + eps);      param = param - (clr * g) / denom

from cpython.pycapsule cimport PyCapsule_New
from libc.math cimport sqrt, sqrtf
from fastadagrad._kernel_table cimport DenseOpts, KernelTable

ctypedef fused floating:
    float
    double


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _element(floating p, floating g, floating* a, floating clr, floating eps,
                              floating wd, bint maximize, bint decay, bint inside) noexcept nogil:
    """One element: update accum in place, return the new param."""
    cdef floating acc, denom
    if maximize:
        g = -g
    if decay:
        g = g + wd * p
    acc = a[0] + g * g
    a[0] = acc
    if inside:
        denom = _sqrt(acc + eps)
    else:
        denom = _sqrt(acc) + eps
    return p - (clr * g) / denom


cdef inline void _dense_loop(Py_ssize_t n, floating* param, const floating* grad, floating* accum,
                             floating clr, floating eps, floating wd,
                             bint maximize, bint decay, bint inside) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        param[i] = _element(param[i], grad[i], &accum[i], clr, eps, wd, maximize, decay, inside)


cdef void dense(Py_ssize_t n, floating* param, const floating* grad, floating* accum,
                const DenseOpts* o) noexcept nogil:
    """Contiguous AdaGrad step; the three flags become compile-time constants of 8 loop copies."""
    cdef floating clr = <floating>o.lr, eps = <floating>o.eps, wd = <floating>o.weight_decay
    cdef int variant = (o.maximize << 2) | ((o.weight_decay != 0) << 1) | o.eps_inside
    if variant == 0:
        _dense_loop(n, param, grad, accum, clr, eps, wd, False, False, False)
    elif variant == 1:
        _dense_loop(n, param, grad, accum, clr, eps, wd, False, False, True)
    elif variant == 2:
        _dense_loop(n, param, grad, accum, clr, eps, wd, False, True, False)
    elif variant == 3:
        _dense_loop(n, param, grad, accum, clr, eps, wd, False, True, True)
    elif variant == 4:
        _dense_loop(n, param, grad, accum, clr, eps, wd, True, False, False)
    elif variant == 5:
        _dense_loop(n, param, grad, accum, clr, eps, wd, True, False, True)
    elif variant == 6:
        _dense_loop(n, param, grad, accum, clr, eps, wd, True, True, False)
    else:
        _dense_loop(n, param, grad, accum, clr, eps, wd, True, True, True)


cdef void strided(Py_ssize_t n, floating* param, Py_ssize_t sp, const floating* grad, Py_ssize_t sg,
                  floating* accum, Py_ssize_t sa, const DenseOpts* o) noexcept nogil:
    """The same element step over operands with byte strides sp, sg, sa (views updated in place)."""
    cdef floating clr = <floating>o.lr, eps = <floating>o.eps, wd = <floating>o.weight_decay
    cdef bint decay = o.weight_decay != 0
    cdef Py_ssize_t i
    cdef floating* p
    for i in range(n):
        p = <floating*>(<char*>param + i * sp)
        p[0] = _element(p[0], (<const floating*>(<const char*>grad + i * sg))[0],
                        <floating*>(<char*>accum + i * sa), clr, eps, wd, o.maximize, decay,
                        o.eps_inside)


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
_TABLE.probe_f32 = probe[float]
_TABLE.probe_f64 = probe[double]

TABLE = PyCapsule_New(&_TABLE, b"fastadagrad.KernelTable", NULL)
