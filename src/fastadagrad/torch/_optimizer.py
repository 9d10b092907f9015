"""fastadagrad.torch.Adagrad, the torch.optim.Adagrad subclass (what it does: the package
docstring). A step checks every group's grads first (_collect), then writes (_apply); what the
fast path does not take goes to torch's own step (_compat.torch_adagrad_step)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Union

import torch

from fastadagrad.torch import _compat
from fastadagrad.torch._apply import apply_dtensors, apply_fast
from fastadagrad.torch._collect import CollectedGrads, collect_grads
from fastadagrad.torch._plan import GroupPlan

__all__ = ["Adagrad"]


class Adagrad(torch.optim.Adagrad):
    """torch.optim.Adagrad with the dense CPU float32/float64 update done in place by
    fastadagrad's fused kernels (see the package docstring for what falls back to torch).

    Same signature, defaults, validation, param_groups and state as torch.optim.Adagrad.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: Union[float, torch.Tensor] = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: Optional[bool] = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
    ) -> None:
        self._plans: list[GroupPlan] | None = None
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         foreach=foreach, maximize=maximize, differentiable=differentiable,
                         fused=fused)
        self._plans = None

    # ------------------------------------------------------------------ cache invalidation
    def __setstate__(self, state: dict[str, Any]) -> None:  # also reached by load_state_dict
        setstate: Any = super().__setstate__   # torch's is untyped
        setstate(state)
        self._plans = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._plans = None

    def share_memory(self) -> None:
        super().share_memory()  # moves every `sum` to new (shared) storage
        self._plans = None

    def _patch_step_function(self) -> None:
        # torch's (called by its __init__ and __setstate__) wraps step() in a profiler range
        # and the hook loop, several microseconds even when neither is used; step() below
        # runs the same wrapper only when needed.
        _compat.keep_step_unwrapped(self)

    # ------------------------------------------------------------------ step
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Perform a single optimization step (torch semantics); returns the closure's loss.

        Args:
            closure (Callable, optional): re-evaluates the model and returns the loss; it runs
                under torch.enable_grad().
        """
        if _compat.step_hooks_active(self):
            return _compat.run_step_hooks(self, type(self)._step, closure)
        return self._step(closure)

    def _step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        grad_scale, found_inf = _compat.amp_scaling(self)
        if grad_scale is not None or found_inf is not None:
            for group in groups:   # fused AMP (GradScaler): torch unscales and skips inside
                self._torch_step(group, group["params"])
            return loss
        # 1. every group's grads are collected and checked before anything is written
        plans, collected = self._collect_all(groups)
        # 2. the writes
        for group, plan, col in zip(groups, plans, collected):
            if col is not None:
                if col.odd:
                    self._torch_step(group, col.odd)
                apply_fast(plan, col)
            if plan.slow:
                self._torch_step(group, plan.slow)
            if plan.dtensors:
                fallback = apply_dtensors(group, plan, self.state)
                if fallback:
                    self._torch_step(group, fallback)
        return loss

    def _collect_all(self, groups: list[dict[str, Any]]
                     ) -> tuple[list[GroupPlan], list[Optional[CollectedGrads]]]:
        """Every group's plan (rebuilt where stale) and checked grads; nothing written."""
        state = self.state
        plans = self._plans
        if plans is None or len(plans) != len(groups):
            plans = self._plans = [GroupPlan(g, state) for g in groups]
        collected: list[Optional[CollectedGrads]] = []
        for gi, group in enumerate(groups):
            plan = plans[gi]
            if plan.is_stale(group, state):
                plan = plans[gi] = GroupPlan(group, state)
            if plan.lazy and any(p.grad is not None for p in plan.lazy):
                self._init_lazy_state(group, plan.lazy)
                plan = plans[gi] = GroupPlan(group, state)
            col = collect_grads(group, plan, state) if plan.records else None
            if plan.records and col is None:
                # something the plan depends on changed (storage moved, state replaced):
                # nothing was written, rebuild and redo
                plan = plans[gi] = GroupPlan(group, state)
                col = collect_grads(group, plan, state) if plan.records else None
                if plan.records and col is None:  # pragma: no cover
                    raise RuntimeError("fastadagrad.torch: inconsistent parameter state")
            collected.append(col)
        return plans, collected

    def _init_lazy_state(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """State for params that have none yet, created as torch's _init_group does (including
        its use of self.defaults["initial_accumulator_value"])."""
        init = self.defaults["initial_accumulator_value"]
        for p in params:
            if p.grad is None or len(self.state.get(p, ())) != 0:
                continue
            self.state[p].update(_compat.new_state(p, group["fused"], init))

    def _torch_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """torch's own Adagrad step for `params` of `group`, on the same state tensors (every
        fallback goes through here)."""
        _compat.torch_adagrad_step(self, group, params)
