"""The optimizer's checks of the grads of one step (the Python path: it names the bad array)
and of the params' memory."""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Callable

import numpy as np

from fastadagrad import _validation
from fastadagrad._mixed_precision import check_mixed_dtypes, is_low_precision
from fastadagrad.optimizer._group import ParamGroup, describe, layout
from fastadagrad.optimizer._structure import SparseGrad, grad_name

#: {array index: (int64 indices, values, duplicates rule)} for a group's sparse grads
SparseItems = dict[int, tuple[np.ndarray, np.ndarray, str]]


def validate_group(group: ParamGroup, grads: list[Any], duplicates: str,
                   guarded: Callable[[], list[tuple[str, np.ndarray]]],
                   sparse_gate: Any = None) -> SparseItems:
    """Check every grad of the group; return the sparse ones (a dense grad of a rowwise
    parameter counts as a sparse grad of all its rows). `duplicates`: the optimizer's rule;
    `guarded()`: every param and accumulator of the optimizer, named (asked for only when a
    grad is left to check against them); `sparse_gate`: the backend's C-level check of a
    SparseGrad (kernels.SparseGradGate) or None."""
    sparse: SparseItems = {}
    dense_grads = []
    decoupled = group.options.weight_decay_mode == "decoupled" and group.options.weight_decay
    for i, (name, p, g, a) in enumerate(zip(group.names, group.params, grads, group.accums)):
        if layout(p) != group.layouts[i]:
            raise ValueError(f"`{name}` was changed in place after the optimizer was built "
                             f"(dtype, shape, strides or memory: {describe(group.layouts[i])}"
                             f" -> {describe(layout(p))}); its accumulator no longer "
                             "matches it: build a new optimizer")
        if (sparse_gate is not None and type(g) is SparseGrad and group.masters[i] is None
                and not decoupled):
            # The common SparseGrad (every check of _sparse_item and of the overlap check
            # below passing, duplicates "sum" or "sequential") checked in C; else in Python.
            dup = duplicates if g.duplicates is None else g.duplicates
            idx = (sparse_gate.checked(p, a, g.indices, g.values)
                   if type(dup) is str and dup in ("sum", "sequential") else None)
            if idx is not None:
                sparse[i] = (idx, g.values, dup)
                continue
        gname = grad_name(name)
        if isinstance(g, SparseGrad) or group.rowwise:
            if group.masters[i] is not None:
                raise ValueError(f"`{gname}` is sparse, but `{name}` has float32 master "
                                 "weights (master=True takes dense grads only)")
            if not isinstance(g, SparseGrad):   # all the rows of a rowwise param
                _validation.check_array(gname, g, writable=False)
                g = SparseGrad(np.arange(p.shape[0] if p.ndim else 0), g)
            sparse[i] = _sparse_item(group, name, p, a, g, duplicates)
            dense_grads += [(f"{gname}.indices", g.indices), (f"{gname}.values", g.values)]
            continue
        dense_grads.append((gname, g))
        if is_low_precision(p):   # float16/bfloat16 param: grad of its dtype or float32
            check_mixed_dtypes({name: p, gname: g}, name, gname)
            _validation.check_same_shape(name, p, gname, g)
            continue
        _validation.check_array(name, p, writable=True)
        _validation.check_array(gname, g, writable=False)
        _validation.check_same_layout(name, p, gname, g)
    # every grad array (SparseGrad indices and values included) against every array this
    # step writes, in any group (the copies made by check_sparse are private)
    if dense_grads:
        check_grads_disjoint(guarded(), dense_grads)
    return sparse


def _sparse_item(group: ParamGroup, name: str, p: np.ndarray, a: np.ndarray, g: SparseGrad,
                 duplicates: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Check a SparseGrad: (int64 indices, values, duplicates rule)."""
    gname = grad_name(name)
    if p.ndim != 2:
        raise ValueError(f"`{gname}` is a SparseGrad but `{name}` has shape {p.shape}; "
                         "sparse gradients need 2-D (rows x features) parameters")
    if group.options.weight_decay_mode == "decoupled" and group.options.weight_decay:
        raise ValueError(f"`{gname}`: sparse gradients are not supported with Keras' "
                         "decoupled weight decay (it decays every row)")
    try:
        o, idx, values = _validation.check_sparse(
            p, a, g.indices, g.values, 0.0, 0.0, "outside", False, 0.0)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{gname}: {exc}".replace("`table`", f"`{name}`")
                        .replace("`grads`", "`values`")) from None
    dup = duplicates if g.duplicates is None else g.duplicates
    _validation.check_sparse_rule(group.kernel_opts, p, a, dup, True)
    return idx, values, dup


def check_disjoint(named: list[tuple[str, np.ndarray]]) -> None:
    """No two params share memory."""
    pair = _validation.overlapping_pair([a for _, a in named])
    if pair is not None:
        i, j = sorted(pair)
        raise ValueError(f"`{named[i][0]}` and `{named[j][0]}` overlap in memory; pass separate "
                         "arrays")


def check_grads_disjoint(params: list[tuple[str, np.ndarray]],
                         grads: list[tuple[str, np.ndarray]]) -> None:
    """No grad shares memory with any param or accumulator (grads may share memory with each
    other).
    Params sorted by start address; prefix maxima of their ends bound the backwards scan."""
    spans = sorted((_validation.byte_bounds(a), n, a) for n, a in params if a.size)
    starts = [lo for (lo, _), _, _ in spans]
    reach = list(itertools.accumulate((hi for (_, hi), _, _ in spans), max))
    for gname, g in grads:
        if not g.size:
            continue
        glo, ghi = _validation.byte_bounds(g)
        k = bisect.bisect_left(starts, ghi) - 1   # params starting before the grad ends
        while k >= 0 and reach[k] > glo:
            (_, hi), pname, p = spans[k]
            if hi > glo and _validation.shares_memory(g, p):
                raise ValueError(f"`{gname}` and `{pname}` overlap in memory; pass separate arrays")
            k -= 1
