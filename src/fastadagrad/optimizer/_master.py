"""AdaGrad(master=True): float32 master weights for float16/bfloat16 params (issue 15).

The step reads and updates the float32 master (float32 arithmetic) and writes the param's
rounded copy in the same pass (DeepSpeed's pattern for optimizer offload; the fused
`master=` pass of adagrad_update). Dense steps of rule='adagrad' only. Saved in state_dict()
as group{g}.master{i}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from fastadagrad import _validation
from fastadagrad._mixed_precision import is_low_precision

if TYPE_CHECKING:
    from fastadagrad.optimizer._core import AdaGrad


def master_weights(opt: AdaGrad, master: Any, rowwise: Any) -> bool:
    """Check `master` and give every float16/bfloat16 param of every group its float32 copy."""
    on = _validation.check_flag("master", master)
    if on and (opt.rule != "adagrad" or opt.packed or rowwise or opt.clipnorm is not None
               or opt.global_clipnorm is not None or opt.clipvalue):
        raise ValueError("`master`=True takes rule='adagrad' without packed, rowwise or clipping")
    for g in opt.groups:
        g.masters = [p.astype(np.float32) if on and is_low_precision(p) else None
                     for p in g.params]
    return on


def master_state(opt: AdaGrad, state: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The checked (target, saved) pairs of the master weights in a state_dict."""
    out = []
    for gi, g in enumerate(opt.groups):
        for i, m in enumerate(g.masters):
            if m is None:
                continue
            key = f"group{gi}.master{i}"
            saved = state.get(key)
            if not isinstance(saved, np.ndarray) or saved.shape != m.shape or saved.dtype != m.dtype:
                got = saved.dtype if isinstance(saved, np.ndarray) else type(saved).__name__
                raise ValueError(f"state `{key}` must be a float32 array of shape {m.shape} (the "
                                 f"master weights of {g.names[i]}), got {got}")
            out.append((m, saved))
    return out


def saved_masters(opt: AdaGrad) -> dict[str, np.ndarray]:
    """The state_dict entries of the master weights."""
    return {f"group{gi}.master{i}": m.copy() for gi, g in enumerate(opt.groups)
            for i, m in enumerate(g.masters) if m is not None}
