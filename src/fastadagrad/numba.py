"""fastadagrad's kernels for numba: call them from ``@njit`` code, no Python object per call.

    import numba
    from fastadagrad.numba import adagrad_update

    @numba.njit
    def train(w, G, X, y, epochs):
        for step in range(1, epochs + 1):
            grad = gradient(w, X, y)                       # your @njit code
            adagrad_update(w, grad, G, lr=0.1, step=step)  # in place, inside nopython mode

``adagrad_update`` and ``sparse_adagrad_update`` take the arguments of the Python API and check
them the same way before writing anything (TypeError / ValueError naming the argument), then call
the C API's function pointers (the table of fastadagrad/fastadagrad.h, the same dispatching
functions the Python API runs: same ISA choice, threads, bytes). Each call compiles to a few
comparisons, an options struct on the stack and two direct calls through constant addresses.
They can also be called from Python (numba compiles them on first use).

Differences from the Python API: arrays must be contiguous (all C or all Fortran order for the
dense update, C order for the sparse one) and aligned, because numba has no iterator to walk
strided views; messages are fixed strings (no values in them); the NumPy backend switch
(fastadagrad.set_backend) does not apply: these always run the compiled kernels.

numba is an optional dependency (``pip install numba``); ``import fastadagrad`` never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import fastadagrad as _python_api
from fastadagrad._backend import IMPORT_ERROR, _kernels
from fastadagrad._numba_checks import (_array_refusal, _check_hyper, _eps_inside,
                                       _hyper_refusal, _misaligned, _overlap, _refuse)
from fastadagrad._numba_compat import _jit, cgutils, intrinsic, ir, numba, overload, types

if _kernels is None:  # pragma: no cover - depends on the build
    raise ImportError("fastadagrad.numba needs fastadagrad's compiled extension, which did not "
                      f"import ({IMPORT_ERROR}); reinstall fastadagrad with a C compiler")

__all__ = ["adagrad_update", "sparse_adagrad_update", "C_API"]

#: {name: address} of the C API table's functions (fastadagrad/fastadagrad.h), plus
#: "abi_version" and "size": for ctypes/cffi callers as well.
C_API: dict[str, int] = _kernels._c_api_addresses()

_F64 = ir.DoubleType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.IntType(8).as_pointer()
_VOID = ir.VoidType()
#: DenseOpts (_csrc/kernel_table.h): 4 doubles, 3 ints (its layout is frozen by fastadagrad.h)
_DENSE_OPTS = ir.LiteralStructType([_F64] * 4 + [_I32] * 3)
_SUFFIX = {types.float32: "f32", types.float64: "f64"}


def _c_function(builder: Any, name: str, ret: Any, args: list[Any]) -> Any:
    """The C API function `name` as an LLVM function pointer (its address is a constant)."""
    fnty = ir.FunctionType(ret, args)
    return builder.inttoptr(ir.Constant(_I64, C_API[name]), fnty.as_pointer())


def _options(builder: Any, lr: Any, eps: Any, inside: Any, weight_decay: Any, lr_decay: Any,
             step: Any, maximize: Any) -> Any:
    """A DenseOpts on the stack, filled by the C API's options(); returns its address."""
    opts = builder.bitcast(cgutils.alloca_once(builder, _DENSE_OPTS), _PTR)
    fill = _c_function(builder, "options", _VOID, [_PTR, _F64, _F64, _I32, _F64, _F64, _I64, _I32])
    builder.call(fill, [opts, lr, eps, builder.zext(inside, _I32), weight_decay, lr_decay, step,
                        builder.zext(maximize, _I32)])
    return opts


def _data(context: Any, builder: Any, ty: Any, value: Any) -> Any:
    return builder.bitcast(context.make_array(ty)(context, builder, value).data, _PTR)


@intrinsic
def _dense_call(typingctx: Any, param: Any, grad: Any, accum: Any, lr: Any, eps: Any,
                inside: Any, weight_decay: Any, lr_decay: Any, step: Any, maximize: Any) -> Any:
    """dense_f32/f64 on checked arrays; the hyper-parameters already converted."""
    sig = types.void(param, grad, accum, types.float64, types.float64, types.boolean,
                     types.float64, types.float64, types.int64, types.boolean)
    kernel = "dense_" + _SUFFIX[param.dtype]

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p, g, a, lr, eps, inside, wd, decay, step, maximize = args
        opts = _options(builder, lr, eps, inside, wd, decay, step, maximize)
        n = context.make_array(sig.args[0])(context, builder, p).nitems
        call = _c_function(builder, kernel, _VOID, [_I64, _PTR, _PTR, _PTR, _PTR])
        builder.call(call, [n] + [_data(context, builder, t, v)
                                  for t, v in zip(sig.args[:3], (p, g, a))] + [opts])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _sparse_call(typingctx: Any, table: Any, accum: Any, idx: Any, grads: Any, lr: Any,
                 eps: Any, inside: Any, weight_decay: Any, maximize: Any) -> Any:
    """sparse_f32/f64 on checked arrays (idx int64, in range); returns the unique rows or -1."""
    sig = types.intp(table, accum, idx, grads, types.float64, types.float64, types.boolean,
                     types.float64, types.boolean)
    kernel = "sparse_" + _SUFFIX[table.dtype]
    rowwise = accum.ndim == 1

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        t, a, i, g, lr, eps, inside, wd, maximize = args
        opts = _options(builder, lr, eps, inside, wd, ir.Constant(_F64, 0.0), ir.Constant(_I64, 1),
                        maximize)
        tarr = context.make_array(sig.args[0])(context, builder, t)
        iarr = context.make_array(sig.args[2])(context, builder, i)
        d = builder.extract_value(tarr.shape, 1)
        b = builder.extract_value(iarr.shape, 0)
        call = _c_function(builder, kernel, _I64, [_PTR, _PTR, _I32, _I64, _PTR, _I64, _PTR, _PTR])
        return builder.call(call, [_data(context, builder, sig.args[0], t),
                                   _data(context, builder, sig.args[1], a),
                                   ir.Constant(_I32, int(rowwise)), d,
                                   _data(context, builder, sig.args[2], i), b,
                                   _data(context, builder, sig.args[3], g), opts])

    return sig, codegen


def _dense_checked(param: Any, grad: Any, accum: Any, lr: Any = 0.01, eps: Any = 1e-10,
                   eps_placement: Any = "outside", weight_decay: Any = 0.0, lr_decay: Any = 0.0,
                   step: Any = 1, maximize: Any = False) -> Any:
    """The value checks and the call, for arguments of the right types (compiled by numba)."""
    if grad.shape != param.shape:
        raise ValueError("`grad` must have the shape of `param`")
    if accum.shape != param.shape:
        raise ValueError("`accum` must have the shape of `param`")
    _check_hyper(lr, eps, weight_decay, lr_decay, step)
    inside = _eps_inside(eps_placement)
    c = param.flags.c_contiguous and grad.flags.c_contiguous and accum.flags.c_contiguous
    f = param.flags.f_contiguous and grad.flags.f_contiguous and accum.flags.f_contiguous
    if not (c or f):
        raise ValueError("`param`, `grad` and `accum` must all be C-contiguous or all "
                         "Fortran-contiguous (fastadagrad.numba has no strided path)")
    if _misaligned(param) or _misaligned(grad) or _misaligned(accum):
        raise ValueError("`param`, `grad` and `accum` must be aligned to their dtype")
    if _overlap(param, grad):
        raise ValueError("`param` and `grad` overlap in memory; pass separate arrays")
    if _overlap(param, accum):
        raise ValueError("`param` and `accum` overlap in memory; pass separate arrays")
    if _overlap(grad, accum):
        raise ValueError("`grad` and `accum` overlap in memory; pass separate arrays")
    _dense_call(param, grad, accum, float(lr), float(eps), inside, float(weight_decay),
                float(lr_decay), np.int64(step), maximize)


def adagrad_update(param: Any, grad: Any, accum: Any, lr: Any = 0.01, eps: Any = 1e-10,
                   eps_placement: Any = "outside", weight_decay: Any = 0.0, lr_decay: Any = 0.0,
                   step: Any = 1, maximize: Any = False) -> Any:
    """fastadagrad.adagrad_update for @njit code: `param` and `accum` updated in place, the same
    bytes; every argument checked first (contiguous, aligned arrays only). Called from Python,
    it is fastadagrad.adagrad_update itself."""
    return _python_api.adagrad_update(param, grad, accum, lr=lr, eps=eps,
                                      eps_placement=eps_placement, weight_decay=weight_decay,
                                      lr_decay=lr_decay, step=step, maximize=maximize)


@overload(adagrad_update, prefer_literal=True, inline="always")
def _adagrad_update_overload(param: Any, grad: Any, accum: Any, lr: Any = 0.01, eps: Any = 1e-10,
                             eps_placement: Any = "outside", weight_decay: Any = 0.0,
                             lr_decay: Any = 0.0, step: Any = 1, maximize: Any = False) -> Any:
    why = (_array_refusal("param", param, writable=True)
           or _array_refusal("grad", grad, writable=False, like=("param", param), ndim=param.ndim)
           or _array_refusal("accum", accum, writable=True, like=("param", param), ndim=param.ndim)
           or _hyper_refusal(lr=lr, eps=eps, eps_placement=eps_placement,
                             weight_decay=weight_decay, lr_decay=lr_decay, step=step,
                             maximize=maximize))
    return _dense_checked if why is None else _refuse(*why, _dense_checked)


def _sparse_checked(table: Any, accum: Any, indices: Any, grads: Any, lr: Any = 0.01,
                    eps: Any = 1e-10, eps_placement: Any = "outside", maximize: Any = False,
                    weight_decay: Any = 0.0) -> Any:
    """The value checks and the call, for arguments of the right types (compiled by numba)."""
    n, d = table.shape
    if not (table.flags.c_contiguous and accum.flags.c_contiguous and grads.flags.c_contiguous):
        raise ValueError("`table`, `accum` and `grads` must be C-contiguous")
    if _misaligned(table) or _misaligned(accum) or _misaligned(grads):
        raise ValueError("`table`, `accum` and `grads` must be aligned to their dtype")
    if accum.shape[0] != n or accum.size != (n * d if accum.ndim == 2 else n):
        raise ValueError("`accum` must be (rows, features) (element-wise) or (rows,) (row-wise)")
    if grads.shape[0] != indices.shape[0] or grads.shape[1] != d:
        raise ValueError("`grads` must have one row of `table`'s width per index")
    for k in range(indices.shape[0]):
        if indices[k] < 0 or indices[k] >= n:
            raise ValueError("`indices` holds an index out of range for `table`")
    _check_hyper(lr, eps, weight_decay, 0.0, 1)
    inside = _eps_inside(eps_placement)
    if _overlap(table, accum):
        raise ValueError("`table` and `accum` overlap in memory; pass separate arrays")
    if _overlap(table, grads):
        raise ValueError("`table` and `grads` overlap in memory; pass separate arrays")
    if _overlap(accum, grads):
        raise ValueError("`accum` and `grads` overlap in memory; pass separate arrays")
    if indices.shape[0] == 0 or d == 0:
        return
    idx = _as_int64(indices)
    if _overlap(idx, table) or _overlap(idx, accum):
        raise ValueError("`indices` overlaps `table` or `accum` in memory")
    if _sparse_call(table, accum, idx, grads, float(lr), float(eps), inside, float(weight_decay),
                    maximize) < 0:
        raise MemoryError("sparse_adagrad_update: out of memory (nothing was written)")


def _as_int64(indices: Any) -> Any:
    """Stub: numba compiles the overload below."""


@overload(_as_int64)
def _as_int64_overload(indices: Any) -> Any:
    """The indices as a C-contiguous int64 array (a copy only when they are not one)."""
    if indices.dtype == types.int64 and indices.layout == "C":
        def same(indices: Any) -> Any:
            return indices
        return same

    def converted(indices: Any) -> Any:
        return np.ascontiguousarray(indices.astype(np.int64))
    return converted


def sparse_adagrad_update(table: Any, accum: Any, indices: Any, grads: Any, lr: Any = 0.01,
                          eps: Any = 1e-10, eps_placement: Any = "outside", maximize: Any = False,
                          weight_decay: Any = 0.0) -> Any:
    """fastadagrad.sparse_adagrad_update for @njit code: the rows of `table` named by `indices`
    (and their accumulators) updated in place, duplicates summed first; every argument checked
    first (C-contiguous, aligned arrays only). Called from Python, it is
    fastadagrad.sparse_adagrad_update itself."""
    return _python_api.sparse_adagrad_update(table, accum, indices, grads, lr=lr, eps=eps,
                                             eps_placement=eps_placement, maximize=maximize,
                                             weight_decay=weight_decay)


@overload(sparse_adagrad_update, prefer_literal=True, inline="always")
def _sparse_adagrad_update_overload(table: Any, accum: Any, indices: Any, grads: Any,
                                    lr: Any = 0.01, eps: Any = 1e-10,
                                    eps_placement: Any = "outside", maximize: Any = False,
                                    weight_decay: Any = 0.0) -> Any:
    why = (_array_refusal("table", table, writable=True, ndim=2)
           or _array_refusal("accum", accum, writable=True, like=("table", table))
           or _array_refusal("grads", grads, writable=False, like=("table", table), ndim=2)
           or _hyper_refusal(lr=lr, eps=eps, eps_placement=eps_placement, maximize=maximize,
                             weight_decay=weight_decay))
    if why is None and not (isinstance(indices, types.Array)
                            and indices.dtype in (types.int32, types.int64)):
        why = TypeError, "`indices` must be a numpy.ndarray of int32 or int64"
    if why is None and indices.ndim != 1:
        why = ValueError, "`indices` must be 1-D"
    if why is None and accum.ndim not in (1, 2):
        why = ValueError, "`accum` must be (rows, features) (element-wise) or (rows,) (row-wise)"
    return _sparse_checked if why is None else _refuse(*why, _sparse_checked)
