"""Phase 2 of a step: the writes. Each accelerated param's step counter is incremented as
torch's is, then its param and sum are updated in place by the fused kernels (or the NumPy
twin under fastadagrad.backend("numpy")), and their autograd versions are bumped."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastadagrad import _backend, _validation
from fastadagrad._validation import DenseOptions
from fastadagrad.torch import _compat
from fastadagrad.torch._collect import CollectedGrads
from fastadagrad.torch._plan import GroupPlan, ParamRecord
from fastadagrad.torch._views import TABLE_DTYPES, checked_grad, dtensor_views


def apply_fast(plan: GroupPlan, col: CollectedGrads) -> None:
    """The writes of the accelerated params of one group (collected and checked; the params
    in col.odd are torch's to step)."""
    opts, grads, live, sparse = col.opts, col.grads, col.live, col.sparse
    for r, rows, vals in sparse:
        apply_sparse(plan, r, rows, vals, opts)
    if not live:
        return
    values = _increment_steps(live)
    first = values[0]
    uniform = values.count(first) == len(values)
    compiled = _backend.current().compiled
    all_live = len(live) == len(plan.records)
    if uniform and plan.one_dtype and not plan.sequential:
        clr = _validation.effective_lr(plan.lr, plan.lr_decay, first)   # torch's, in double
        if not compiled:
            _apply(plan, live, grads, opts, clr, False, False)
        elif all_live and plan.all_table is not None:   # the common case: one C call
            if plan.all_table.step(grads, opts, clr, False) == -2:
                _apply(plan, live, grads, opts, clr, True, False)
        elif all(r.tableable for r in live):
            _apply(plan, live, grads, opts, clr, True, True)
        else:
            _apply_buckets(plan, live, grads, values, opts, compiled)
    else:
        _apply_buckets(plan, live, grads, values, opts, compiled)
    _compat.increment_version(plan.bump_all if all_live
                              else [r.param for r in live] + [r.sum for r in live])


def _increment_steps(live: list[ParamRecord]) -> list[float]:
    """step += 1 for each record, rounded to the counter's own dtype as torch's `step_t += 1`
    is; the new values."""
    values: list[float] = []
    for r in live:
        sv = r.step_view
        new = float(sv) + 1.0
        sv[()] = new
        if not -16777216.0 < new < 16777216.0:  # a float32 counter may have rounded
            new = float(sv)
        values.append(new)
    return values


def apply_sparse(plan: GroupPlan, r: ParamRecord, idx: np.ndarray, values: np.ndarray,
                 opts: DenseOptions) -> None:
    """A sparse COO grad of a 2-D param (nn.Embedding(sparse=True)), checked by
    _views.sparse_rows: its rows go to fastadagrad.sparse_adagrad_update's kernel (duplicates
    summed before squaring, as torch's coalesce does). torch refuses weight decay with
    sparse grads, so that case stays with torch."""
    sv = r.step_view
    sv[()] = float(sv) + 1.0
    clr = _validation.effective_lr(plan.lr, plan.lr_decay, float(sv))
    o = opts._replace(clr=clr)
    if idx.size:
        _backend.current().sparse_dup_validated(r.param_view, r.sum_view, idx, values, o, "sum")
    _compat.increment_version([r.param, r.sum])


def apply_dtensors(group: dict[str, Any], plan: GroupPlan, state: Any) -> list[torch.Tensor]:
    """DTensor params (FSDP2's sharded params, or Shard/Replicate DTensors in general): the
    update is element-wise, so updating each rank's local shard with its local grad and
    local ``sum`` is exactly the update of the global tensor. Taken only when the grad and
    ``sum`` are DTensors with the param's placements and mesh and a local shard of its
    shape; the others (Partial placements, a plain grad, other state) are returned, for
    torch's step on the DTensors. Not cached: the local shards are looked up at every step."""
    opts = plan.options(group)
    update = _backend.current().update_validated
    fallback: list[torch.Tensor] = []
    for p in plan.dtensors:
        if p.grad is None:
            continue
        views = dtensor_views(p, p.grad, state.get(p))
        if views is None:
            fallback.append(p)
            continue
        locals_, pv, gv, av, stepv = views
        stepv[()] = float(stepv) + 1.0   # torch's `step_t += 1`, rounded to its dtype
        step = float(stepv)
        o = opts._replace(clr=_validation.effective_lr(plan.lr, plan.lr_decay, step))
        gv = checked_grad(pv, gv, av)
        update(pv, gv, av, o)
        _compat.increment_version(locals_)
    return fallback


def _apply(plan: GroupPlan, recs: list[ParamRecord], grads: list[np.ndarray],
           opts: DenseOptions, clr: float, compiled: bool, use_table: bool) -> None:
    """One step at `clr` over `recs` (one dtype): one C call through an ArrayGroup when they
    are contiguous, else one validated call each."""
    if use_table and plan.table(recs).step(grads, opts, clr, False) != -2:
        return
    checked = [checked_grad(r.param_view, g, r.sum_view) for r, g in zip(recs, grads)]
    o = opts._replace(clr=clr)
    update = _backend.current().update_validated
    for r, g in zip(recs, checked):
        update(r.param_view, g, r.sum_view, o)


def _apply_buckets(plan: GroupPlan, live: list[ParamRecord], grads: list[np.ndarray],
                   values: list[float], opts: DenseOptions, compiled: bool) -> None:
    """Mixed step values or dtypes: one call per (dtype, step value) bucket of contiguous
    params and one per other param; one by one, in order, when params overlap."""
    lr, lr_decay = plan.lr, plan.lr_decay
    if plan.sequential:
        for r, g, v in zip(live, grads, values):
            _apply(plan, [r], [g], opts, _validation.effective_lr(lr, lr_decay, v), compiled,
                   False)
        return
    buckets: dict[tuple[Any, ...], tuple[list[ParamRecord], list[np.ndarray], float]] = {}
    for r, g, v in zip(live, grads, values):
        table_ok = r.tableable and r.dtype in TABLE_DTYPES
        key = (r.dtype.char, v) if (compiled and table_ok) or not compiled \
            else (None, r.index)
        b = buckets.get(key)
        if b is None:
            buckets[key] = ([r], [g], v)
        else:
            b[0].append(r)
            b[1].append(g)
    for key, (recs, gs, v) in buckets.items():
        _apply(plan, recs, gs, opts, _validation.effective_lr(lr, lr_decay, v), compiled,
               compiled and key[0] is not None)
