"""fastadagrad.torch.Adagrad: a drop-in replacement for torch.optim.Adagrad.

    import fastadagrad.torch
    opt = fastadagrad.torch.Adagrad(model.parameters(), lr=0.01)   # torch's signature
    loss.backward(); opt.step(); opt.zero_grad()

Same constructor, same param_groups, same state (``state[p] = {"step": tensor, "sum": tensor}``,
created eagerly at construction exactly as torch does), same state_dict: checkpoints move both
ways between this class and torch.optim.Adagrad. It *is* a torch.optim.Adagrad (a subclass), so
LR schedulers, step hooks, zero_grad, share_memory and pickling work unchanged.

Per parameter and step (torch's formula and order)::

    step += 1                                   (the state's tensor, torch's float dtype)
    clr   = lr / (1 + (step - 1) * lr_decay)    (Python double, from the stored step value)
    g     = -grad if maximize else grad
    g     = g + weight_decay * p                (coupled, when weight_decay != 0)
    sum  += g * g
    p    -= clr * g / (sqrt(sum) + eps)         (eps outside the square root)

Accelerated: dense CPU float32/float64 parameters (plain torch.Tensor / nn.Parameter, not
inference tensors) with a dense CPU grad, in groups with differentiable=False. They are updated
in place through zero-copy NumPy views of the tensors' memory (parameter, grad and ``sum``) by
the fused kernels: one ``ArrayGroup`` C call per (param group, dtype, step value), with the GIL
released; non-contiguous parameters are updated in place one by one (``update_validated``).
Under ``fastadagrad.backend("numpy")`` the NumPy twin does the same arithmetic (identical bytes).
float16 and bfloat16 parameters (bfloat16 viewed through ml_dtypes, when installed) are updated
one by one with float32 arithmetic and one rounding per store; their ``sum`` keeps the param's
dtype (torch's layout).
The parameters' (and sums') autograd version counters are bumped, so using a parameter that
was saved for backward and then stepped still raises as with torch.

Sparse COO grads of 2-D float32/float64 CPU parameters (``nn.Embedding(sparse=True)``) go to
fastadagrad's sparse kernel (``sparse_adagrad_update``: duplicates summed before squaring, as
torch's coalesce does; torch computes ``p + (-clr) * (g / std)`` there, we ``p - (clr * g) / std``,
a few ulps apart), except with weight_decay, which torch refuses for sparse grads (its error),
and except sparse_dim=2 grads and parameters that are not C-contiguous, which go to torch.
Parameters whose elements share memory (expanded tensors) always go to torch (which raises as
torch does). Every grad of a step, in every group, is checked before the first write.

DTensor parameters with Shard/Replicate placements (FSDP2's ``fully_shard``) are updated on
their local shards (the update is element-wise), one kernel call each, when the grad and ``sum``
are DTensors with the same placements and mesh; Partial placements and anything else go to
torch's step on the DTensors.

Falls back to torch's own implementation (``torch.optim.adagrad.adagrad`` on the same state
tensors, with the group's ``foreach``/``fused`` flags): parameters on other devices (CUDA, meta,
...), other dtypes (complex; bfloat16 without ml_dtypes), sparse grads of float16/bfloat16
parameters, other non-NumPy-viewable grads,
tensor subclasses, groups with ``differentiable=True``, and whole steps run under a fused-AMP
GradScaler (``grad_scale``/``found_inf`` set). ``foreach``/``fused`` only choose torch's
implementation for those; the accelerated parameters ignore them.

Numerics: torch accumulates ``sum`` with a fused multiply-add and NumPy cannot, so the results
differ from torch by about one ulp per step (torch/optim/adagrad.py: ``state_sum.addcmul_(grad,
grad, value=1)``); they are never bit-identical to torch, and bit-identical between our two
backends.

Step counters: kept exactly as torch keeps them, one 0-d tensor per parameter in
``state[p]["step"]`` (float32, or float64 when torch's default dtype is float64; float32 when
fused=True), incremented by rounding ``step + 1`` to that dtype, so a float32 counter stops at
2**24 = 16,777,216 exactly as torch's does (lr_decay then stops decaying). A parameter whose
``.grad`` is None is skipped and its counter does not advance. We keep torch's representation
(not an int64) so that state_dict() round-trips with torch.optim.Adagrad unchanged.

Torch behaviours matched on purpose: lazily created state for parameters added later with
add_param_group uses ``self.defaults["initial_accumulator_value"]`` (not the group's), as torch
does; load_state_dict does not copy tensors that already have the right dtype/device (torch's
own aliasing). The caches (NumPy views, pointer tables) are rebuilt after load_state_dict,
add_param_group, share_memory, unpickling, when a group's parameter list changes, and when a
parameter's or accumulator's storage moves (``p.data = ...``).

Torch versions: the fast path relies on torch internals (all in ``_compat``, which lists them)
and runs on the tested torch versions (``_compat.TESTED_RANGE``: 2.13). On any other version
``fastadagrad.torch.Adagrad`` is torch.optim.Adagrad's own step (a subclass that changes
nothing, ``accelerated`` is always False) and importing this package warns (RuntimeWarning);
``FASTADAGRAD_TORCH_UNTESTED=1`` takes the fast path anyway when those internals are present.

Importing ``fastadagrad`` does not import torch; import this package explicitly.

Modules: ``_optimizer`` (the class), ``_plan`` (the per-group plan: a ``ParamRecord`` per
accelerated parameter), ``_collect`` (phase 1, checks), ``_apply`` (phase 2, writes),
``_views`` (what is accelerated, zero-copy NumPy views), ``_compat`` (torch internals and the
version guard), ``_fallback`` (the class on an untested torch).
"""

import warnings

import torch  # noqa: F401  (an absolute import: the real torch, never this package)

from fastadagrad.torch import _compat

if _compat.FAST_PATH:
    from fastadagrad.torch._optimizer import Adagrad
    from fastadagrad.torch._views import accelerated
else:   # an untested torch version: torch's own optimizer (see _compat)
    warnings.warn(_compat.FALLBACK_REASON, RuntimeWarning, stacklevel=2)
    from fastadagrad.torch._fallback import Adagrad, accelerated  # type: ignore[assignment]

# Pickles of an optimizer name the class by its public path, as when this was one module.
Adagrad.__module__ = __name__

__all__ = ["Adagrad", "accelerated"]
