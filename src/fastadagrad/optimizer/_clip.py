"""AdaGrad(clipnorm=... | global_clipnorm=...): gradient clipping fused into the step.

Per array (`clipnorm`, Keras' option) or over every array of the step (`global_clipnorm`, as
Keras' `global_clipnorm` and torch's `clip_grad_norm_`): one reduction pass over the grads
(Σg² in double, fixed order: kernels.sum_of_squares / reference_family.sum_of_squares), then the
AdaGrad step with the factor clipnorm / max(norm, clipnorm) folded into its constants
(DenseOptions.grad_scale): the grads are read twice and never copied. The global sum adds the
arrays' sums left to right in the order of the groups and of their arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastadagrad import _backend, _validation

if TYPE_CHECKING:
    from fastadagrad.optimizer._core import AdaGrad


def check(clipnorm: Any, global_clipnorm: Any) -> tuple[float | None, float | None]:
    c = _validation.check_clipnorm("clipnorm", clipnorm)
    gc = _validation.check_clipnorm("global_clipnorm", global_clipnorm)
    if c is not None and gc is not None:
        raise ValueError("`clipnorm` and `global_clipnorm` are exclusive (as in Keras); pass one")
    return c, gc


def step(opt: AdaGrad, grads: Any) -> bool:
    per_group = opt._split_grads(grads)
    for group, grads_g in zip(opt.groups, per_group):
        if opt._validate_group(group, grads_g):
            raise ValueError("`clipnorm`/`global_clipnorm` clip dense gradients; a SparseGrad "
                             "(or a rowwise group) cannot be clipped here")
    for group in opt.groups:
        for name, p in zip(group.names, group.params):
            if p.dtype not in _validation.SUPPORTED_DTYPES:
                raise ValueError(f"`clipnorm`/`global_clipnorm` take float32/float64 params; "
                                 f"`{name}` is {p.dtype} (mixed precision is not clipped yet)")
    if opt.nonfinite != "propagate":
        for gi, grads_g in enumerate(per_group):
            for i, g in enumerate(grads_g):
                if not np.isfinite(g).all():
                    return opt._finish_bad((gi, i))
    backend = _backend.current()
    sums = [[float(backend.sum_of_squares(g)) for g in grads_g] for grads_g in per_group]
    scale_all = 1.0
    if opt.global_clipnorm is not None:
        total = 0.0
        for row in sums:
            for s in row:
                total = total + s
        scale_all = _validation.clip_scale(total, opt.global_clipnorm)
    for group, grads_g, row in zip(opt.groups, per_group, sums):
        step_opts = group.opts_at(group.step + 1)
        for p, g, a, s in zip(group.params, grads_g, group.accums, row):
            scale = (scale_all if opt.clipnorm is None
                     else _validation.clip_scale(s, opt.clipnorm))
            o = step_opts._replace(grad_scale=scale)
            backend.update_validated(p, g, a, o)
        group.step += 1
    opt.last_step_skipped = False
    return True
