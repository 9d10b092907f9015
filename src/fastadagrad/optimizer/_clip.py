"""AdaGrad(clipnorm=... | global_clipnorm=... | clipvalue=...): gradient clipping fused into the step.

Per array (`clipnorm`, Keras' option) or over every array of the step (`global_clipnorm`, as
Keras' `global_clipnorm` and torch's `clip_grad_norm_`): one reduction pass over the grads
(Σg² in double, fixed order: kernels.sum_of_squares / reference_family.sum_of_squares), then the
AdaGrad step with the factor clipnorm / max(norm, clipnorm) folded into its constants
(DenseOptions.grad_scale): the grads are read twice and never copied. The global sum adds the
arrays' sums left to right in the order of the groups and of their arrays. `clipvalue`
clips every grad element to [-clipvalue, clipvalue] inside the loop (_clipping). A SparseGrad
is clipped over its values as passed (every occurrence, before the duplicates rule: Keras'
IndexedSlices); the family rules (rule=...) see the clipped gradient (optimizer/_rules.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastadagrad import _backend, _clipping, _validation

if TYPE_CHECKING:
    from fastadagrad.optimizer._core import AdaGrad


def check(clipnorm: Any, global_clipnorm: Any,
          clipvalue: Any = None) -> tuple[float | None, float | None, float]:
    c = _validation.check_clipnorm("clipnorm", clipnorm)
    gc = _validation.check_clipnorm("global_clipnorm", global_clipnorm)
    cv = _clipping.check_clipvalue(clipvalue)
    _clipping.check_exclusive(c, cv, gc)
    return c, gc, cv


def scales(opt: AdaGrad, grads: list[list[np.ndarray]]) -> list[list[float]]:
    """The clipnorm / global_clipnorm factor of every grad (its values for a sparse one): one
    reduction pass each, in double, fixed order; 1.0 everywhere without norm clipping."""
    if opt.clipnorm is None and opt.global_clipnorm is None:
        return [[1.0] * len(row) for row in grads]
    sumsq = _backend.current().sum_of_squares
    sums = [[float(sumsq(g)) for g in row] for row in grads]
    if opt.global_clipnorm is None:
        c = opt.clipnorm
        assert c is not None
        return [[_validation.clip_scale(s, c) for s in row] for row in sums]
    total = 0.0
    for row in sums:
        for s in row:
            total = total + s
    scale = _validation.clip_scale(total, opt.global_clipnorm)
    return [[scale] * len(row) for row in sums]


def step(opt: AdaGrad, grads: Any) -> bool:
    per_group = opt._split_grads(grads)
    sparse = [opt._validate_group(group, grads_g) for group, grads_g in zip(opt.groups, per_group)]
    for group, sp in zip(opt.groups, sparse):
        if opt.clipvalue and sp and group.rowwise:
            raise ValueError("`clipvalue` clips element-wise steps; a rowwise group cannot be "
                             "clipped by value (clipnorm works)")
        for name, p in zip(group.names, group.params):
            if p.dtype not in _validation.SUPPORTED_DTYPES:
                raise ValueError(f"clipping takes float32/float64 params; `{name}` is {p.dtype} "
                                 "(mixed precision is not clipped yet)")
    # what is clipped: a dense grad, or a sparse grad's values as passed
    seen = [[sp[i][1] if i in sp else g for i, g in enumerate(grads_g)]
            for grads_g, sp in zip(per_group, sparse)]
    backend = _backend.current()
    if opt.nonfinite != "propagate":
        for gi, row in enumerate(seen):
            for i, g in enumerate(row):
                if not backend.all_finite(g):
                    return opt._finish_bad((gi, i))
    cv = opt.clipvalue
    for group, grads_g, sp, factors in zip(opt.groups, per_group, sparse, scales(opt, seen)):
        step_opts = group.opts_at(group.step + 1)
        for i, (p, g, a, scale) in enumerate(zip(group.params, grads_g, group.accums, factors)):
            o = step_opts._replace(grad_scale=scale)
            if i in sp:
                idx, values, dup = sp[i]
                backend.sparse_dup_validated(p, a, idx, values, o, dup, cv)
            elif cv:
                backend.update_clip_validated(p, g, a, o, cv)
            else:
                backend.update_validated(p, g, a, o)
        group.step += 1
    opt.last_step_skipped = False
    return True
