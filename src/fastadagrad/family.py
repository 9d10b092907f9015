"""The AdaGrad family (issue 14): proximal AdaGrad (FOBOS, L1/L2), AdaGrad dual averaging and
the GloVe/LightFM rule, dense and sparse, each one fused in-place pass (compiled backend) with
a bit-identical NumPy twin (reference_family). The rules are specified in _rules.RULES.

    fastadagrad.proximal_adagrad_update(w, g, accum, lr=0.1, l1=1e-3)
    fastadagrad.sparse_glove_adagrad_update(table, accum, rows, grads, lr=0.05)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastadagrad import _backend, _clipping, _rules, _validation
from fastadagrad.reference_family import RULE_IDS, FamilyOptions


def _with_clips(f: FamilyOptions, clipnorm: Any, clipvalue: Any, grad: np.ndarray,
                backend: str | None) -> FamilyOptions:
    """The clipping of a family step (after its other checks): clipnorm's scale from the
    grad's norm (fixed summation order) or clipvalue's bound; the rule then sees the clipped
    gradient."""
    cn = _validation.check_clipnorm("clipnorm", clipnorm)
    cv = _clipping.check_clipvalue(clipvalue)
    _clipping.check_exclusive(cn, cv)
    if cn is not None:
        sumsq = _backend.named(backend).sum_of_squares
        f = f._replace(grad_scale=_validation.clip_scale(float(sumsq(grad)), cn))
    return f._replace(clipvalue=cv)


def rule_update(rule: str, param: np.ndarray, grad: np.ndarray, *states: np.ndarray,
                step: int | None = None, backend: str | None = None,
                clipnorm: float | None = None, clipvalue: float | None = None,
                **hyper: float) -> None:
    """One dense step of family rule `rule` ("proximal", "da", "glove") in place; `states` are
    the rule's state arrays (RULES[rule].states). `backend` forces "cython"/"numpy".
    clipnorm / clipvalue: the gradient clipped before the rule (exclusive, as in Keras)."""
    spec = _rules.get_rule(rule)
    if len(states) != len(spec.states):
        raise TypeError(f"rule {rule!r} takes {len(spec.states)} state array(s) "
                        f"{spec.states}, got {len(states)}")
    f = _rules.check_dense(spec, param, grad, states, hyper, step)
    f = _with_clips(f, clipnorm, clipvalue, grad, backend)
    _backend.named(backend).family_validated(param, grad, list(states), f)


def sparse_rule_update(rule: str, table: np.ndarray, states: Sequence[np.ndarray],
                       indices: np.ndarray, grads: np.ndarray, *, duplicates: str = "sum",
                       step: int | None = None, backend: str | None = None,
                       clipnorm: float | None = None, clipvalue: float | None = None,
                       **hyper: float) -> None:
    """Family rule `rule` on the rows `indices` of `table` (C-contiguous (N, D)) and of its
    (N, D) states; duplicates "sum" (merged in order of appearance) or "sequential" (one step
    per occurrence, in order). Every index is checked before anything is written.
    clipnorm: the norm over the rows of `grads` as passed (every occurrence), the scale
    applied to the rule's gradient; clipvalue: every occurrence clipped before the
    duplicates rule ("sum" adds the clipped occurrences)."""
    spec = _rules.get_rule(rule)
    states = list(states)
    if len(states) != len(spec.states):
        raise TypeError(f"rule {rule!r} takes {len(spec.states)} state array(s) "
                        f"{spec.states}, got {len(states)}")
    f, idx, g = _rules.check_sparse(spec, table, states, indices, grads, hyper, duplicates, step)
    f = _with_clips(f, clipnorm, clipvalue, g, backend)
    _backend.named(backend).family_sparse_validated(table, states, idx, g, f, duplicates)


def _fast(rule: str, param: Any, grad: Any, s1: Any, s2: Any, lr: Any, l1: Any, l2: Any,
          step: Any) -> bool:
    """The compiled C gate (plain contiguous arrays, plain numbers): True if it did the step
    (always False on the NumPy backend, which has no such gate)."""
    return _backend.current().family_fast(RULE_IDS[rule], param, grad, s1, s2, lr, l1, l2, step)


def _sparse_fast(rule: str, table: Any, s1: Any, s2: Any, indices: Any, grads: Any,
                 duplicates: Any, lr: Any, l1: Any, l2: Any, step: Any) -> bool:
    """The compiled sparse C gate (plain arrays and numbers, duplicates "sum"/"sequential"):
    True if it did the step (always False on the NumPy backend)."""
    return _backend.current().family_sparse_fast(RULE_IDS[rule], table, s1, s2, indices, grads,
                                                 lr, l1, l2, step, duplicates)


def proximal_adagrad_update(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, *,
                            lr: float = 0.01, l1: float = 0.0, l2: float = 0.0,
                            clipnorm: float | None = None,
                            clipvalue: float | None = None) -> None:
    """Proximal AdaGrad (FOBOS; TensorFlow's ApplyProximalAdagrad), in place, per element:
    accum += g*g; a = lr / sqrt(accum); prox = param - g*a;
    param = sign(prox) * max(|prox| - a*l1, 0) / (1 + a*l2)   (prox / (1 + a*l2) when l1 = 0).
    Exact zeros wherever |prox| <= a*l1. `accum` must start > 0 (TF: 0.1).
    clipnorm / clipvalue: the gradient clipped first (Keras' options; exclusive)."""
    if clipnorm is None and clipvalue is None and _fast("proximal", param, grad, accum, None,
                                                        lr, l1, l2, None):
        return
    rule_update("proximal", param, grad, accum, lr=lr, l1=l1, l2=l2, clipnorm=clipnorm,
                clipvalue=clipvalue)


def adagrad_da_update(param: np.ndarray, grad: np.ndarray, grad_accum: np.ndarray,
                      grad_sq_accum: np.ndarray, *, step: int, lr: float = 0.01,
                      l1: float = 0.0, l2: float = 0.0, clipnorm: float | None = None,
                      clipvalue: float | None = None) -> None:
    """AdaGrad dual averaging (TensorFlow's ApplyAdagradDA), in place, per element, with the
    global step t = `step` (>= 1): grad_accum += g; grad_sq_accum += g*g;
    param = -sign(gacc) * lr * max(|gacc| - l1*t, 0) / (l2*t*lr + sqrt(grad_sq_accum))
    (-lr * gacc / (...) when l1 = 0). The new param depends only on the accumulators.
    clipnorm / clipvalue: the gradient clipped first (Keras' options; exclusive)."""
    if clipnorm is None and clipvalue is None and _fast("da", param, grad, grad_accum,
                                                        grad_sq_accum, lr, l1, l2, step):
        return
    rule_update("da", param, grad, grad_accum, grad_sq_accum, step=step, lr=lr, l1=l1, l2=l2,
                clipnorm=clipnorm, clipvalue=clipvalue)


def glove_adagrad_update(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, *,
                         lr: float = 0.05, clipnorm: float | None = None,
                         clipvalue: float | None = None) -> None:
    """The GloVe / LightFM rule, in place: param -= lr*g / sqrt(accum); then accum += g*g
    (the accumulator from BEFORE this gradient; initialise it to 1; no eps).
    clipnorm / clipvalue: the gradient clipped first (exclusive)."""
    if clipnorm is None and clipvalue is None and _fast("glove", param, grad, accum, None, lr,
                                                        0.0, 0.0, None):
        return
    rule_update("glove", param, grad, accum, lr=lr, clipnorm=clipnorm, clipvalue=clipvalue)


def sparse_proximal_adagrad_update(table: np.ndarray, accum: np.ndarray, indices: np.ndarray,
                                   grads: np.ndarray, *, lr: float = 0.01, l1: float = 0.0,
                                   l2: float = 0.0, duplicates: str = "sum",
                                   clipnorm: float | None = None,
                                   clipvalue: float | None = None) -> None:
    """proximal_adagrad_update on the rows `indices` of `table` (TF SparseApplyProximalAdagrad
    applies duplicates one by one: duplicates="sequential")."""
    if clipnorm is None and clipvalue is None and _sparse_fast(
            "proximal", table, accum, None, indices, grads, duplicates, lr, l1, l2, None):
        return
    sparse_rule_update("proximal", table, [accum], indices, grads, duplicates=duplicates,
                       lr=lr, l1=l1, l2=l2, clipnorm=clipnorm, clipvalue=clipvalue)


def sparse_adagrad_da_update(table: np.ndarray, grad_accum: np.ndarray,
                             grad_sq_accum: np.ndarray, indices: np.ndarray, grads: np.ndarray,
                             *, step: int, lr: float = 0.01, l1: float = 0.0, l2: float = 0.0,
                             duplicates: str = "sum", clipnorm: float | None = None,
                             clipvalue: float | None = None) -> None:
    """adagrad_da_update on the rows `indices` of `table` (TF SparseApplyAdagradDA)."""
    if clipnorm is None and clipvalue is None and _sparse_fast(
            "da", table, grad_accum, grad_sq_accum, indices, grads, duplicates, lr, l1, l2, step):
        return
    sparse_rule_update("da", table, [grad_accum, grad_sq_accum], indices, grads,
                       duplicates=duplicates, step=step, lr=lr, l1=l1, l2=l2,
                       clipnorm=clipnorm, clipvalue=clipvalue)


def sparse_glove_adagrad_update(table: np.ndarray, accum: np.ndarray, indices: np.ndarray,
                                grads: np.ndarray, *, lr: float = 0.05,
                                duplicates: str = "sum", clipnorm: float | None = None,
                                clipvalue: float | None = None) -> None:
    """glove_adagrad_update on the rows `indices` of `table` (word-vector training: GloVe
    updates the two rows of each co-occurrence; pass duplicates="sequential" to apply repeats
    one after the other as its SGD loop does)."""
    if clipnorm is None and clipvalue is None and _sparse_fast(
            "glove", table, accum, None, indices, grads, duplicates, lr, 0.0, 0.0, None):
        return
    sparse_rule_update("glove", table, [accum], indices, grads, duplicates=duplicates, lr=lr,
                       clipnorm=clipnorm, clipvalue=clipvalue)


__all__ = ["rule_update", "sparse_rule_update", "proximal_adagrad_update", "adagrad_da_update",
           "glove_adagrad_update", "sparse_proximal_adagrad_update", "sparse_adagrad_da_update",
           "sparse_glove_adagrad_update"]
