"""The AdaGrad-family rules as data: one small spec per rule, and the argument checks they
share (both backends run these, so they accept and reject the same inputs with the same
messages). A new rule is a C element loop in _csrc/family_typed.h, its NumPy twin in
reference_family.py, and one RuleSpec here; the public functions, the optimizer's `rule=`,
the registry (tests, bench) pick it up from RULES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fastadagrad import _validation as v
from fastadagrad.reference_family import RULE_IDS, FamilyOptions


@dataclass(frozen=True)
class RuleSpec:
    name: str
    states: tuple[str, ...]        # the state arrays, in order (each the param's shape)
    hyper: dict[str, float]        # hyper-parameters and their defaults (all finite, >= 0)
    state_init: tuple[float, ...]  # the optimizer's initial value of each state
    needs_step: bool               # takes the global step t (dual averaging)
    formula: str
    source: str


RULES: dict[str, RuleSpec] = {
    "proximal": RuleSpec(
        "proximal", ("accum",), {"lr": 0.01, "l1": 0.0, "l2": 0.0}, (0.1,), False,
        "accum += g*g; a = lr/sqrt(accum); prox = p - g*a; "
        "p = sign(prox)*max(|prox| - a*l1, 0) / (1 + a*l2)",
        "TF ApplyProximalAdagrad (training_ops.cc); Duchi, Hazan, Singer (2011), FOBOS"),
    "da": RuleSpec(
        "da", ("grad_accum", "grad_sq_accum"), {"lr": 0.01, "l1": 0.0, "l2": 0.0}, (0.0, 0.1),
        True,
        "gacc += g; gg += g*g; p = -sign(gacc)*lr*max(|gacc| - l1*t, 0) / (l2*t*lr + sqrt(gg))",
        "TF ApplyAdagradDA (training_ops.cc); Duchi, Hazan, Singer (2011), primal-dual form"),
    "glove": RuleSpec(
        "glove", ("accum",), {"lr": 0.05}, (1.0,), False,
        "p -= lr*g / sqrt(accum); accum += g*g  (accum from before g, starts at 1, no eps)",
        "GloVe glove.c (Pennington et al. 2014); LightFM _lightfm_fast"),
}


def get_rule(rule: Any) -> RuleSpec:
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"`rule` must be one of {tuple(RULES)}, got {rule!r}")
    return RULES[rule]


def check_hyper(spec: RuleSpec, hyper: dict[str, Any], step: Any = None) -> FamilyOptions:
    unknown = set(hyper) - set(spec.hyper)
    if unknown:
        raise TypeError(f"`{sorted(unknown)[0]}` is not a hyper-parameter of rule "
                        f"{spec.name!r} (it takes {sorted(spec.hyper)})")
    vals = {k: v.check_real(k, hyper.get(k, d)) for k, d in spec.hyper.items()}
    t = float(v.check_step(step)) if spec.needs_step else 1.0
    return FamilyOptions(RULE_IDS[spec.name], vals["lr"], vals.get("l1", 0.0),
                         vals.get("l2", 0.0), t)


def check_dense(spec: RuleSpec, param: Any, grad: Any, states: Sequence[Any],
                hyper: dict[str, Any], step: Any = None) -> FamilyOptions:
    """Every check of a dense family step; raises TypeError/ValueError naming the argument."""
    v.check_array("param", param, writable=True)
    v.check_array("grad", grad, writable=False)
    for name, s in zip(spec.states, states):
        v.check_array(name, s, writable=True)
    v.check_same_layout("param", param, "grad", grad)
    for name, s in zip(spec.states, states):
        v.check_same_layout("param", param, name, s)
    f = check_hyper(spec, hyper, step)
    v.check_no_overlap({"param": param, "grad": grad, **dict(zip(spec.states, states))})
    return f


def check_sparse(spec: RuleSpec, table: Any, states: Sequence[Any], indices: Any, grads: Any,
                 hyper: dict[str, Any], duplicates: Any, step: Any = None
                 ) -> tuple[FamilyOptions, np.ndarray, np.ndarray]:
    """Every check of a sparse family step: (options, int64 indices, C-contiguous grads)."""
    for name, s in zip(spec.states, states):
        try:
            _, idx, g = v.check_sparse(table, s, indices, grads, 0.0, 0.0, "outside", False, 0.0)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("`accum`", f"`{name}`")) from None
        if s.shape != table.shape:
            raise ValueError(f"`{name}` has shape {s.shape}; it must be {table.shape} "
                             f"(rule {spec.name!r} is element-wise)")
    dup = v.check_duplicates(duplicates)
    if dup == "keras":
        raise ValueError("`duplicates`='keras' is the plain AdaGrad rule's; family rules take "
                         "'sum' or 'sequential'")
    f = check_hyper(spec, hyper, step)
    v.check_no_overlap({"table": table, "grads": grads, **dict(zip(spec.states, states))})
    return f, idx, g
