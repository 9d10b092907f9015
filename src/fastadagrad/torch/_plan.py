"""The cached plan of one param group: a record per accelerated parameter (its tensors, views,
pointers, how it can be stepped), the params that go elsewhere, and the C pointer tables.
Rebuilt whenever anything it depends on changes (GroupPlan.is_stale, ParamRecord.moved)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from fastadagrad import _backend, _validation
from fastadagrad._validation import DenseOptions
from fastadagrad.torch import _compat
from fastadagrad.torch._views import TABLE_DTYPES, accelerated, as_float, state_views

_MAX_TABLES = 64  # cached tables per group (one per distinct subset of params with grads)
# The pointer groups are the compiled backend's (whichever backend is selected: the adapter
# checks at each step which one runs); without the extension there are none.
_COMPILED = _backend.named("cython")
# The NumPy view of a grad is reused while p.grad is the same tensor at the same address (it
# saves ~1 us per param and step); only for params up to this size, and up to GRAD_CACHE_BYTES
# per group, since the cache keeps the last grads alive after zero_grad(set_to_none=True).
GRAD_CACHE_PARAM_BYTES = 1 << 16
GRAD_CACHE_BYTES = 1 << 20


@dataclass(slots=True, eq=False, repr=False)
class ParamRecord:
    """One accelerated parameter of a group, with its state as it was when the plan was built.

    `moved` tells when that state no longer holds (a storage moved, a state entry replaced);
    the last grad seen and its view are kept (`grad`, `grad_ptr`, `grad_view`) when
    `grad_cacheable`.
    """

    index: int                  # position among the group's accelerated params
    param: torch.Tensor
    state: dict[str, Any]       # optimizer.state[param]
    sum: torch.Tensor           # state["sum"]
    step: torch.Tensor          # state["step"], the 0-d counter
    param_view: np.ndarray
    sum_view: np.ndarray
    step_view: np.ndarray
    param_ptr: int
    sum_ptr: int
    tableable: bool             # param and sum both C- or both F-contiguous: an ArrayGroup entry
    sparse_ok: bool             # C-contiguous aligned 2-D param and sum: the sparse kernel
    grad_cacheable: bool = False
    grad: Optional[torch.Tensor] = None
    grad_ptr: int = 0
    grad_view: Optional[np.ndarray] = None

    @property
    def dtype(self) -> np.dtype:
        return self.param_view.dtype

    def __repr__(self) -> str:
        return (f"ParamRecord(index={self.index}, shape={tuple(self.param.shape)}, "
                f"dtype={self.dtype}, tableable={self.tableable}, sparse_ok={self.sparse_ok})")

    def moved(self, st: Any) -> bool:
        """Has the param's storage, its state entry, its sum or step tensor, or the sum's
        storage changed since the record was made (`st`: optimizer.state.get(param))?"""
        return (self.param.data_ptr() != self.param_ptr or st is not self.state
                or st.get("sum") is not self.sum or st.get("step") is not self.step
                or self.sum.data_ptr() != self.sum_ptr)

    def grad_numpy(self, g: torch.Tensor) -> Optional[np.ndarray]:
        """The cached view of grad `g` when it is the grad seen last, at the same address."""
        return self.grad_view if g is self.grad and g.data_ptr() == self.grad_ptr else None

    def remember_grad(self, g: torch.Tensor, view: np.ndarray) -> None:
        if self.grad_cacheable:
            self.grad, self.grad_ptr, self.grad_view = g, g.data_ptr(), view


def make_record(index: int, p: torch.Tensor, st: dict[str, Any]) -> Optional[ParamRecord]:
    """The record of accelerated param `p` with state `st`, or None when that state cannot be
    updated in place (the param then goes to torch's step)."""
    views = state_views(p, st)
    if views is None:
        return None
    s, pv, av, stepv = views
    return ParamRecord(
        index=index, param=p, state=st, sum=s, step=st["step"],
        param_view=pv, sum_view=av, step_view=stepv,
        param_ptr=p.data_ptr(), sum_ptr=s.data_ptr(),
        tableable=bool((pv.flags.c_contiguous and av.flags.c_contiguous)
                       or (pv.flags.f_contiguous and av.flags.f_contiguous)),
        sparse_ok=bool(pv.ndim == 2 and pv.flags.c_contiguous and pv.flags.aligned
                       and av.flags.c_contiguous and av.flags.aligned))


class GroupPlan:
    """How one param group is stepped: `records` (the accelerated params, in group order),
    `slow` (always torch's step), `lazy` (accelerable, no state yet), `dtensors` (updated on
    their local shard), the ArrayGroup over all records when one C call can take them, and
    the group's options."""

    __slots__ = ("group", "params_list", "n_params", "state_obj", "differentiable", "records",
                 "slow", "lazy", "dtensors", "one_dtype", "sequential", "bump_all",
                 "all_table", "tables", "key", "opts", "lr", "lr_decay")

    def __init__(self, group: dict[str, Any], state: Any) -> None:
        self.group = group
        self.params_list = group["params"]
        self.n_params = len(self.params_list)
        self.state_obj = state
        self.differentiable = bool(group.get("differentiable", False))
        self.records: list[ParamRecord] = []
        self.slow: list[torch.Tensor] = []       # always stepped by torch
        self.lazy: list[torch.Tensor] = []       # accelerable, but torch has not created state yet
        self.dtensors: list[torch.Tensor] = []   # DTensors (FSDP2): updated on their local shard
        self._sort_params(state)
        records = self.records
        dtypes = {r.dtype for r in records}
        self.one_dtype = len(dtypes) <= 1 and dtypes <= set(TABLE_DTYPES)
        budget = GRAD_CACHE_BYTES
        for r in records:
            r.grad_cacheable = r.param_view.nbytes <= min(GRAD_CACHE_PARAM_BYTES, budget)
            budget -= r.param_view.nbytes if r.grad_cacheable else 0
        self.sequential = (_validation.overlapping_pair([r.param_view for r in records]
                                                        + [r.sum_view for r in records])
                           is not None)   # params overlap: stepped one by one, in order
        self.bump_all = [r.param for r in records] + [r.sum for r in records]
        self.tables: dict[tuple[int, ...], Any] = {}
        self.all_table: Any = None
        if (records and self.one_dtype and all(r.tableable for r in records)
                and not self.sequential and _COMPILED.compiled):
            self.all_table = _COMPILED.array_group([r.param_view for r in records],
                                                   [r.sum_view for r in records])
        self.key: Any = None
        self.opts: DenseOptions | None = None
        self.lr = self.lr_decay = 0.0

    def _sort_params(self, state: Any) -> None:
        """Put each param of the group in records, slow, lazy or dtensors."""
        for p in self.params_list:
            if self.differentiable or not accelerated(p):
                local = None if self.differentiable else _compat.dtensor_local(p)
                if local is not None and accelerated(local):
                    self.dtensors.append(p)
                else:
                    self.slow.append(p)
                continue
            st = state.get(p)
            if not st:
                self.lazy.append(p)
                continue
            record = make_record(len(self.records), p, st)
            if record is None:
                self.slow.append(p)
            else:
                self.records.append(record)

    def is_stale(self, group: dict[str, Any], state: Any) -> bool:
        """Was the plan built for another group object, parameter list, state object or
        differentiable flag?"""
        return (self.group is not group or self.params_list is not group["params"]
                or len(group["params"]) != self.n_params or self.state_obj is not state
                or self.differentiable != bool(group.get("differentiable", False)))

    def options(self, group: dict[str, Any]) -> DenseOptions:
        """The group's DenseOptions (clr is filled per step), rebuilt only when they change
        (always re-read for a tensor lr, which a scheduler may change in place)."""
        key = (group["lr"], group["lr_decay"], group["eps"], group["weight_decay"],
               group["maximize"])
        if key != self.key or self.opts is None or isinstance(key[0], torch.Tensor):
            lr, lr_decay, eps, wd, maximize = key
            self.lr, self.lr_decay = as_float(lr), as_float(lr_decay)
            self.opts = DenseOptions(self.lr, as_float(eps), as_float(wd), bool(maximize), False)
            self.key = key
        return self.opts

    def table(self, records: list[ParamRecord]) -> Any:
        """The ArrayGroup over `records` (a subset of self.records, in order; cached)."""
        if len(records) == len(self.records) and self.all_table is not None:
            return self.all_table
        key = tuple(r.index for r in records)
        t = self.tables.get(key)
        if t is None:
            if len(self.tables) >= _MAX_TABLES:
                self.tables.clear()
            t = _COMPILED.array_group([r.param_view for r in records],
                                      [r.sum_view for r in records])
            self.tables[key] = t
        return t
