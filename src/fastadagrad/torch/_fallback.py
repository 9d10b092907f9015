"""fastadagrad.torch on a torch version outside the tested range (see _compat): torch's own
optimizer, nothing accelerated, so that code written for the drop-in still runs and gives
torch's results. FASTADAGRAD_TORCH_UNTESTED=1 selects the fast path instead."""

from __future__ import annotations

import torch

__all__ = ["Adagrad", "accelerated"]


class Adagrad(torch.optim.Adagrad):
    """torch.optim.Adagrad, unchanged (fastadagrad.torch on an untested torch version)."""


def accelerated(p: torch.Tensor) -> bool:
    """Always False: on an untested torch version every parameter takes torch's step."""
    return False
