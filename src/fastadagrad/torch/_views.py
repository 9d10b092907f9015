"""Which tensors the fast path takes, and their zero-copy NumPy views (never a copy of a
parameter, a sum or a step counter; a grad is copied only when it shares memory with what the
same call writes)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from fastadagrad import _validation
from fastadagrad.torch import _compat

# float32/float64 always; float16 and bfloat16 (issue 15, mixed precision) with float32
# arithmetic, bfloat16 only when ml_dtypes is installed (NumPy has no bfloat16: the memory is
# viewed as int16, then as ml_dtypes.bfloat16). A param's `sum` keeps its dtype (torch's layout).
FAST_DTYPES: dict[torch.dtype, np.dtype] = {torch.float32: np.dtype(np.float32),
                                            torch.float64: np.dtype(np.float64),
                                            torch.float16: np.dtype(np.float16)}
try:
    import ml_dtypes as _ml_dtypes
    FAST_DTYPES[torch.bfloat16] = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - bfloat16 params then stay with torch
    pass
TABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))   # what ArrayGroup takes
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def accelerated(p: torch.Tensor) -> bool:
    """Does the parameter itself qualify for the fused kernels (dense CPU float32, float64,
    float16 or, with ml_dtypes, bfloat16; a plain tensor or nn.Parameter, not an inference
    tensor)? Its state and each step's grad are checked as well before it is actually taken."""
    return (type(p) in _PLAIN_TYPES and p.device.type == "cpu" and p.layout == torch.strided
            and p.dtype in FAST_DTYPES and not p.is_inference() and not p.is_conj()
            and not p.is_neg())


def detached_view(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor's memory (never a copy)."""
    return tensor_numpy(t.detach())


def tensor_numpy(t: torch.Tensor) -> np.ndarray:
    """t.numpy() (raises as it does for grads that require grad, sparse, neg/conj bits, ...),
    also for bfloat16, viewed through int16 as ml_dtypes.bfloat16 (zero copy)."""
    if t.dtype == torch.bfloat16 and torch.bfloat16 in FAST_DTYPES:
        out: np.ndarray = t.view(torch.int16).numpy().view(FAST_DTYPES[torch.bfloat16])
        return out
    return t.numpy()


def as_float(x: Any) -> float:
    """A hyper-parameter (a Python number or a 1-element tensor) as a Python float."""
    if isinstance(x, torch.Tensor):
        return float(x.item())
    return float(x)


class StateViews(NamedTuple):
    """A parameter's `sum` tensor and the NumPy views of the parameter, `sum` and `step`."""

    sum: torch.Tensor
    param_view: np.ndarray
    sum_view: np.ndarray
    step_view: np.ndarray


def state_views(p: torch.Tensor, st: dict[str, Any]) -> Optional[StateViews]:
    """The views of p and its state when that state can be updated in place, else None (the
    parameter then goes to torch's step)."""
    s, step = st.get("sum"), st.get("step")
    if not (isinstance(s, torch.Tensor) and isinstance(step, torch.Tensor)):
        return None
    if not (type(s) is torch.Tensor and s.device.type == "cpu" and s.layout == torch.strided
            and s.dtype == p.dtype and s.shape == p.shape and not s.requires_grad
            and not s.is_inference() and not s.is_conj() and not s.is_neg()):
        return None
    if not (type(step) is torch.Tensor and step.device.type == "cpu" and step.numel() == 1
            and step.dtype in (torch.float32, torch.float64) and not step.requires_grad
            and step.dim() == 0):
        return None
    try:
        pv, av, stepv = detached_view(p), detached_view(s), detached_view(step)
    except (RuntimeError, TypeError):
        return None
    if not (pv.flags.writeable and av.flags.writeable and stepv.flags.writeable):
        return None
    if _validation.has_internal_overlap(pv) or _validation.has_internal_overlap(av):
        return None   # an expanded parameter: torch's own path (which raises, as torch does)
    return StateViews(s, pv, av, stepv)


class DTensorViews(NamedTuple):
    """A DTensor parameter's local shards and the views the kernel updates."""

    local_tensors: list[torch.Tensor]   # [local param, local sum]: their versions are bumped
    param_view: np.ndarray
    grad_view: np.ndarray
    sum_view: np.ndarray
    step_view: np.ndarray


def dtensor_views(p: Any, g: Any, st: Optional[dict[str, Any]]) -> Optional[DTensorViews]:
    """The views of a DTensor param whose grad and sum are DTensors with its placements and
    mesh and local shards of its local shape (anything else: None, torch's step)."""
    s: Any = st.get("sum") if st else None
    lp, lg, ls = _compat.dtensor_local(p), _compat.dtensor_local(g), _compat.dtensor_local(s)
    if (st is None or lp is None or lg is None or ls is None or not accelerated(lp)
            or g.placements != p.placements or s.placements != p.placements
            or g.device_mesh != p.device_mesh or s.device_mesh != p.device_mesh
            or lg.shape != lp.shape or lg.dtype != lp.dtype):
        return None
    views = state_views(lp, {"sum": ls, "step": st.get("step")})
    if views is None:
        return None
    try:
        gv = lg.numpy()   # a view; raises for requires_grad, neg/conj bits
    except (RuntimeError, TypeError):
        return None
    if views.param_view.size and _validation.shares_memory(views.param_view, views.sum_view):
        return None
    return DTensorViews([lp, ls], views.param_view, gv, views.sum_view, views.step_view)


def checked_grad(p: np.ndarray, g: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The grad made safe for update_validated: same shape/dtype as the param (torch enforces
    this for .grad) and not sharing memory with the param or its accumulator (else a copy)."""
    if g.shape != p.shape or g.dtype != p.dtype:  # pragma: no cover - torch refuses such grads
        raise RuntimeError(f"grad of shape {tuple(g.shape)} and dtype {g.dtype} for a parameter "
                           f"of shape {tuple(p.shape)} and dtype {p.dtype}")
    if g.size and (_validation.shares_memory(g, p) or _validation.shares_memory(g, a)):
        return g.copy()
    return g


def sparse_rows(pv: np.ndarray, sv: np.ndarray, g: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(private int64 row indices, C-contiguous values) of a sparse COO grad (sparse_dim 1,
    dense_dim 1) of the 2-D param viewed as `pv` with sum `sv`, checked against it: indices in
    range, values of shape (nnz, columns) and the param's dtype, and not sharing memory with
    the param or its sum (else copied)."""
    rows, values_tensor = _compat.coo_rows_and_values(g)
    idx = _validation.check_indices(rows.numpy(), pv.shape[0])
    values = values_tensor.detach().numpy()
    if values.shape != (idx.size, pv.shape[1]) or values.dtype != pv.dtype:
        raise ValueError(f"sparse grad of shape {tuple(g.shape)} does not match its parameter")
    if values.size and (_validation.shares_memory(values, pv)
                        or _validation.shares_memory(values, sv)):
        values = values.copy()
    return idx, np.ascontiguousarray(values)
