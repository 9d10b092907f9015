"""AdaGrad(rule=...): the optimizer over a family rule (issue 14).

Each group keeps, per param, the rule's state arrays (_rules.RULES[rule].states): the last one
is the group's `accums` (its initial value is `initial_accumulator_value`); dual averaging's
gradient sum is kept in `extra` (starts at 0). A step validates every grad of every group
(dense arrays or SparseGrad) before writing anything, then runs the rule's fused kernel per
array: dense, or sparse rows with the SparseGrad's duplicates rule ("sum" or "sequential").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastadagrad import _backend, _rules
from fastadagrad.optimizer import _clip
from fastadagrad.optimizer._structure import SparseGrad, grad_name

if TYPE_CHECKING:
    from fastadagrad.optimizer._core import AdaGrad

RULE_NAMES = ("adagrad",) + tuple(_rules.RULES)
UNSUPPORTED = {"lr_decay": 0.0, "weight_decay": 0.0, "maximize": False, "rowwise": False}


def check_rule(rule: Any, defaults: dict[str, Any], convention: str | None, packed: bool) -> str:
    if not isinstance(rule, str) or rule not in RULE_NAMES:
        raise ValueError(f"`rule` must be one of {RULE_NAMES}, got {rule!r}")
    if rule != "adagrad":
        if convention is not None:
            raise ValueError(f"`convention` sets the plain AdaGrad rule; it does not combine "
                             f"with rule={rule!r}")
        if packed:
            raise ValueError(f"`packed` is for rule='adagrad' only, got rule={rule!r}")
        for name, neutral in UNSUPPORTED.items():
            if defaults.get(name, neutral) != neutral:
                raise ValueError(f"`{name}` is not a hyper-parameter of rule={rule!r}")
    return rule


def rule_defaults(rule: str, lr: float | None, init: float | None) -> tuple[float | None, float | None]:
    """The rule's own defaults for lr and the initial accumulator when not given."""
    if rule == "adagrad":
        return lr, init
    spec = _rules.RULES[rule]
    return (spec.hyper["lr"] if lr is None else lr,
            spec.state_init[-1] if init is None else init)


def init_states(opt: AdaGrad) -> None:
    """Per param, the rule's other state arrays (dual averaging: the gradient sum, zeros)."""
    spec = _rules.RULES[opt.rule]
    for g in opt.groups:
        g.pointers.clear()    # the plain AdaGrad pointer groups and gates do not apply
        g.flat_pointers.clear()
        g.gates.clear()
        g.extra = [[np.zeros_like(p) for _ in spec.states[:-1]] for p in g.params]


def _states(group: Any, i: int) -> list[np.ndarray]:
    return [*group.extra[i], group.accums[i]]


def step(opt: AdaGrad, grads: Any) -> bool:
    """Validate every grad of every group, scan for NaN/inf if asked, then update."""
    spec = _rules.RULES[opt.rule]
    per_group = opt._split_grads(grads)
    plans = []
    for gi, (group, grads_g) in enumerate(zip(opt.groups, per_group)):
        step_t = group.step + 1
        hyper = {"lr": group.options.lr}
        hyper.update({k: getattr(group.options, k) for k in ("l1", "l2") if k in spec.hyper})
        for i, (name, p, g) in enumerate(zip(group.names, group.params, grads_g)):
            gname = grad_name(name)
            states = _states(group, i)
            try:
                if isinstance(g, SparseGrad):
                    dup = opt.duplicates if g.duplicates is None else g.duplicates
                    f, idx, values = _rules.check_sparse(spec, p, states, g.indices, g.values,
                                                         hyper, dup, step_t)
                    plans.append((p, states, f, (idx, values, dup), values))
                else:
                    f = _rules.check_dense(spec, p, g, states, hyper, step_t)
                    plans.append((p, states, f, g, g))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{gname}: {exc}".replace("`param`", f"`{name}`")
                                .replace("`table`", f"`{name}`")) from None
    backend = _backend.current()
    if opt.nonfinite != "propagate":
        for k, plan in enumerate(plans):
            if not backend.all_finite(plan[4]):
                gi, i = _locate(opt, k)
                return opt._finish_bad((gi, i))
    plans = _clipped(opt, plans)
    for p, states, f, g, _ in plans:
        if isinstance(g, tuple):
            idx, values, dup = g
            backend.family_sparse_validated(p, states, idx, values, f, dup)
        else:
            backend.family_validated(p, g, states, f)
    for group in opt.groups:
        group.step += 1
    opt.last_step_skipped = False
    return True


def _clipped(opt: AdaGrad, plans: list[Any]) -> list[Any]:
    """The optimizer's clipping folded into each plan's FamilyOptions: the rule sees the
    clipped gradient (norms over the dense grads and the sparse values as passed)."""
    if opt.clipnorm is None and opt.global_clipnorm is None and not opt.clipvalue:
        return plans
    flat = _clip.scales(opt, [[plan[4] for plan in plans]])[0]
    return [(p, states, f._replace(grad_scale=scale, clipvalue=opt.clipvalue), g, seen)
            for (p, states, f, g, seen), scale in zip(plans, flat)]


def _locate(opt: AdaGrad, k: int) -> tuple[int, int]:
    for gi, group in enumerate(opt.groups):
        if k < len(group.params):
            return gi, k
        k -= len(group.params)
    raise AssertionError(k)  # pragma: no cover


def state(opt: AdaGrad) -> dict[str, Any]:
    d: dict[str, Any] = {"rule": opt.rule}
    for gi, g in enumerate(opt.groups):
        for i, extra in enumerate(getattr(g, "extra", [])):
            for j, x in enumerate(extra):
                d[f"group{gi}.extra{j}.{i}"] = x.copy()
    return d


def check_state(opt: AdaGrad, st: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate the rule entries of a state dict; return the (target, saved) copies to make."""
    rule = st.get("rule", "adagrad")
    if isinstance(rule, np.ndarray):
        rule = rule.item()
    if rule != opt.rule:
        raise ValueError(f"state was saved with rule={rule!r}, this optimizer has "
                         f"rule={opt.rule!r}")
    copies = []
    for gi, g in enumerate(opt.groups):
        for i, extra in enumerate(getattr(g, "extra", [])):
            for j, x in enumerate(extra):
                key = f"group{gi}.extra{j}.{i}"
                saved = st.get(key)
                if not isinstance(saved, np.ndarray) or saved.shape != x.shape or saved.dtype != x.dtype:
                    raise ValueError(f"state `{key}` must be a {x.dtype} array of shape {x.shape}")
                copies.append((x, saved))
    return copies


