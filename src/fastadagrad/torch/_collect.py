"""Phase 1 of a step: the grads of one group's accelerated params, every one checked, nothing
written (a bad grad in any group raises before the first parameter of the step is written)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from fastadagrad._validation import DenseOptions
from fastadagrad.torch._plan import GroupPlan, ParamRecord
from fastadagrad.torch._views import TABLE_DTYPES, sparse_rows, tensor_numpy


class CollectedGrads(NamedTuple):
    """One group's checked grads, ready to write (collect_grads -> _apply.apply_fast)."""

    opts: DenseOptions
    grads: list[np.ndarray]             # the dense grads of `live`, in order
    live: list[ParamRecord]             # the records with a dense grad NumPy can view
    odd: list[torch.Tensor]             # params whose grads go to torch's own step
    sparse: list[tuple[ParamRecord, np.ndarray, np.ndarray]]   # (record, int64 rows, values)


def collect_grads(group: dict[str, Any], plan: GroupPlan, state: Any
                  ) -> Optional[CollectedGrads]:
    """The grads of the records of `plan`, every one checked, nothing written; None when the
    plan is stale (a storage moved or a state entry was replaced). Raises torch's
    RuntimeError for a sparse grad with fused=True, and ValueError for a sparse grad that
    does not fit its parameter."""
    opts = plan.options(group)
    grads: list[np.ndarray] = []
    live: list[ParamRecord] = []
    odd: list[torch.Tensor] = []   # grads NumPy cannot view (requires_grad, CSR, ...)
    sparse: list[tuple[ParamRecord, np.ndarray, np.ndarray]] = []   # COO grads of 2-D params
    for r in plan.records:
        g = r.param.grad
        if g is None:
            continue
        if r.moved(state.get(r.param)):
            return None
        gv = r.grad_numpy(g)
        if gv is None:
            if g.is_sparse:
                if group["fused"]:   # torch's _fused_adagrad refuses them, in these words
                    raise RuntimeError("`fused` does not support sparse grad or complex param")
                if _sparse_kernel_takes(r, g, opts):
                    sparse.append((r, *sparse_rows(r.param_view, r.sum_view, g)))
                else:   # strided, float16/bfloat16, sparse_dim=2, weight decay: torch's
                    odd.append(r.param)
                continue
            try:
                gv = tensor_numpy(g)   # a view; raises for sparse, requires_grad, neg/conj bits
            except (RuntimeError, TypeError):
                odd.append(r.param)
                continue
            r.remember_grad(g, gv)
        grads.append(gv)
        live.append(r)
    return CollectedGrads(opts, grads, live, odd, sparse)


def _sparse_kernel_takes(r: ParamRecord, g: torch.Tensor, opts: DenseOptions) -> bool:
    """Can fastadagrad's sparse kernel take this sparse grad (nn.Embedding(sparse=True) in
    float32/float64: COO rows of a C-contiguous 2-D param, no weight decay)?"""
    return (r.param.dim() == 2 and not opts.weight_decay and r.sparse_ok
            and r.dtype in TABLE_DTYPES and g.sparse_dim() == 1 and g.dense_dim() == 1)
