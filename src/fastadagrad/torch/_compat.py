"""Every private torch API that fastadagrad.torch uses, in one place, behind a version guard.

The rest of the package calls torch's public API directly and reaches torch's internals only
through this module. Each one was read from torch 2.13.0's own source:

=========================================================  ======================================
torch internal                                             used for
=========================================================  ======================================
``Optimizer._patch_step_function`` (torch/optim/           overridden: step() is not wrapped in
optimizer.py), ``_zero_grad_profile_name``                 the profiler/hook wrapper, which
                                                           ``run_step_hooks`` runs only when used
``Optimizer.profile_hook_step``, ``_optimizer_step_code``,  ``run_step_hooks``: the same wrapper
``_optimizer_step_pre_hooks``/``_post_hooks``,
``optimizer._global_optimizer_pre_hooks``/``_post_hooks``,
``torch.autograd._profiler_enabled``
``Adagrad._init_group`` (torch/optim/adagrad.py) and the   ``torch_adagrad_step``: torch's own
functional ``adagrad(..., has_complex, fused,              step for what falls back
grad_scale, found_inf)``, under the grad mode of
``_use_grad_for_differentiable``
``optimizer._get_scalar_dtype``,                           ``new_state``: lazily created state,
``optimizer._device_dtype_check_for_fused``                as ``_init_group`` creates it
``grad_scale``/``found_inf`` set by ``GradScaler``         ``amp_scaling``
(torch/amp/grad_scaler.py)
``torch._C._increment_version``                            ``increment_version`` (the public
                                                           ``autograd.graph.increment_version``
                                                           is the fallback)
``DTensor._local_tensor``                                  ``dtensor_local`` (``to_local()`` is
                                                           an autograd op, not the shard itself)
``Tensor._indices()``/``_values()``                        ``coo_rows_and_values``: an
                                                           uncoalesced COO grad as it is
=========================================================  ======================================

Version guard: the suite runs on torch ``TESTED_RANGE`` (first and last minor version, both
inclusive). With any other torch, ``FAST_PATH`` is False and ``fastadagrad.torch.Adagrad`` is
torch's own optimizer (same results as ``torch.optim.Adagrad``, nothing accelerated), with a
RuntimeWarning at import saying so. Setting ``FASTADAGRAD_TORCH_UNTESTED=1`` takes the fast path
on such a version anyway, after checking that every internal above is present with the
signature used here (ImportError naming what is missing otherwise).
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any, Callable, Optional

import torch
from torch.optim import adagrad as _torch_adagrad_module
from torch.optim import optimizer as _torch_optimizer

__all__ = ["FAST_PATH", "FALLBACK_REASON", "TESTED_RANGE", "TORCH_VERSION", "UNTESTED_ENV",
           "amp_scaling", "coo_rows_and_values", "dtensor_local", "increment_version",
           "keep_step_unwrapped", "new_state", "run_step_hooks", "step_hooks_active",
           "torch_adagrad_step"]

TESTED_RANGE = ((2, 13), (2, 13))
UNTESTED_ENV = "FASTADAGRAD_TORCH_UNTESTED"

_GLOBAL_PRE: dict[int, Any] = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", {})
_GLOBAL_POST: dict[int, Any] = getattr(_torch_optimizer, "_global_optimizer_post_hooks", {})
_profiler_enabled: Callable[[], bool] = getattr(torch.autograd, "_profiler_enabled",
                                                lambda: False)
_get_scalar_dtype: Any = getattr(_torch_optimizer, "_get_scalar_dtype", None)
_check_fused: Any = getattr(_torch_optimizer, "_device_dtype_check_for_fused", None)
_functional_adagrad: Any = getattr(_torch_adagrad_module, "adagrad", None)

_INIT_GROUP_ARGS = ["self", "group", "params_with_grad", "grads", "state_sums", "state_steps"]
_FUNCTIONAL_KWARGS = {"has_sparse_grad", "foreach", "differentiable", "has_complex", "fused",
                      "grad_scale", "found_inf", "lr", "weight_decay", "lr_decay", "eps",
                      "maximize"}


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as "2.13.0+cpu" or "2.14.0a0+git1234"."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        raise ImportError(f"fastadagrad.torch: cannot read torch's version {version!r}")
    return int(m.group(1)), int(m.group(2))


def _parameter_names(fn: Any) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def missing_internals() -> list[str]:
    """The torch internals listed in the module docstring that this torch lacks or has with
    another signature (empty on a tested version)."""
    missing = [name for name, ok in [
        ("torch.optim.optimizer._global_optimizer_pre_hooks", isinstance(_GLOBAL_PRE, dict)
         and hasattr(_torch_optimizer, "_global_optimizer_pre_hooks")),
        ("torch.optim.optimizer._global_optimizer_post_hooks", isinstance(_GLOBAL_POST, dict)
         and hasattr(_torch_optimizer, "_global_optimizer_post_hooks")),
        ("torch.autograd._profiler_enabled", hasattr(torch.autograd, "_profiler_enabled")),
        ("torch.optim.optimizer._get_scalar_dtype", callable(_get_scalar_dtype)),
        ("torch.optim.optimizer._device_dtype_check_for_fused", callable(_check_fused)),
        ("torch.optim.Optimizer._patch_step_function",
         hasattr(torch.optim.Optimizer, "_patch_step_function")),
        ("torch.optim.Optimizer._optimizer_step_code",
         hasattr(torch.optim.Optimizer, "_optimizer_step_code")),
        ("torch.optim.Adagrad._init_group" + str(tuple(_INIT_GROUP_ARGS[1:])),
         _parameter_names(getattr(torch.optim.Adagrad, "_init_group", None)) == _INIT_GROUP_ARGS),
        ("torch.optim.adagrad.adagrad(" + ", ".join(sorted(_FUNCTIONAL_KWARGS)) + ")",
         _FUNCTIONAL_KWARGS <= set(_parameter_names(_functional_adagrad))),
        ("torch.Tensor._indices/_values",
         hasattr(torch.Tensor, "_indices") and hasattr(torch.Tensor, "_values")),
    ] if not ok]
    return missing


def _decide(version: str, environ: Any) -> tuple[bool, str]:
    """(take the fast path?, why not) for this torch version and environment; raises
    ImportError when the fast path is required (tested version, or forced) but cannot work."""
    have = parse_version(version)
    (lo, hi) = TESTED_RANGE
    tested = lo <= have <= hi
    forced = environ.get(UNTESTED_ENV, "") == "1"
    if not (tested or forced):
        return False, (f"fastadagrad.torch: torch {version} is outside the tested range "
                       f"{lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}, so fastadagrad.torch.Adagrad is "
                       "torch.optim.Adagrad's own step here (torch's results, not accelerated). "
                       f"Set {UNTESTED_ENV}=1 to use the fast path on this version anyway.")
    missing = missing_internals()
    if missing:
        hint = f" (unset {UNTESTED_ENV} to fall back to torch's own step)" if not tested else ""
        raise ImportError(f"fastadagrad.torch: torch {version} lacks internals the fast path "
                          f"uses: {', '.join(missing)}{hint}")
    return True, ""


TORCH_VERSION = parse_version(torch.__version__)
FAST_PATH, FALLBACK_REASON = _decide(torch.__version__, os.environ)


# ---------------------------------------------------------------------- step wrapper and hooks
def keep_step_unwrapped(opt: torch.optim.Optimizer) -> None:
    """What Optimizer._patch_step_function does, minus wrapping step() in the profiler/hook
    wrapper (several microseconds per step even when unused; `run_step_hooks` runs it only
    when a hook or the profiler is active)."""
    opt._zero_grad_profile_name = f"Optimizer.zero_grad#{type(opt).__name__}.zero_grad"


def step_hooks_active(opt: torch.optim.Optimizer) -> bool:
    """Is a step pre/post hook registered (on `opt` or globally) or the profiler on?"""
    return bool(opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks or _GLOBAL_PRE
                or _GLOBAL_POST or _profiler_enabled())


def run_step_hooks(opt: torch.optim.Optimizer, step: Callable[..., Any],
                   closure: Optional[Callable[[], Any]]) -> Any:
    """torch's Optimizer.profile_hook_step wrapper around `step(opt[, closure])`: profiler
    range, pre-hooks (which may replace the arguments), the step, _optimizer_step_code, post
    hooks."""
    args: tuple[Any, ...] = (opt,) if closure is None else (opt, closure)
    kwargs: dict[str, Any] = {}
    with torch.autograd.profiler.record_function(f"Optimizer.step#{type(opt).__name__}.step"):
        for pre_hook in list(_GLOBAL_PRE.values()) + list(opt._optimizer_step_pre_hooks.values()):
            result = pre_hook(opt, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{opt.step} must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {result}.")
        out = step(*args, **kwargs)
        opt._optimizer_step_code()
        for post_hook in list(opt._optimizer_step_post_hooks.values()) + list(_GLOBAL_POST.values()):
            post_hook(opt, args, kwargs)
        return out


# ---------------------------------------------------------------------- torch's own step and state
def amp_scaling(opt: torch.optim.Optimizer) -> tuple[Any, Any]:
    """(grad_scale, found_inf): the tensors a fused-AMP GradScaler sets on the optimizer for
    the step it runs (None, None otherwise)."""
    return getattr(opt, "grad_scale", None), getattr(opt, "found_inf", None)


def torch_adagrad_step(opt: torch.optim.Adagrad, group: dict[str, Any],
                       params: list[torch.Tensor]) -> None:
    """torch's own Adagrad step for `params` of `group`, on the same state tensors: its
    _init_group (lazy state, fused checks) then the functional adagrad with the group's flags,
    under the grad mode its _use_grad_for_differentiable sets."""
    sub = dict(group)
    sub["params"] = params
    params_with_grad: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    state_sums: list[torch.Tensor] = []
    state_steps: list[torch.Tensor] = []
    init_group: Any = opt._init_group   # torch's is untyped
    has_sparse_grad, has_complex = init_group(sub, params_with_grad, grads, state_sums,
                                              state_steps)
    if not params_with_grad:
        return
    grad_scale, found_inf = amp_scaling(opt)
    with torch.set_grad_enabled(bool(opt.defaults["differentiable"])):
        _functional_adagrad(params_with_grad, grads, state_sums, state_steps,
                            lr=group["lr"], weight_decay=group["weight_decay"],
                            lr_decay=group["lr_decay"], eps=group["eps"],
                            has_sparse_grad=has_sparse_grad, foreach=group["foreach"],
                            maximize=group["maximize"], differentiable=group["differentiable"],
                            has_complex=has_complex, fused=group["fused"],
                            grad_scale=grad_scale, found_inf=found_inf)


def new_state(p: torch.Tensor, fused: Optional[bool],
              initial_accumulator_value: float) -> dict[str, torch.Tensor]:
    """A parameter's fresh state, {"step": 0-d counter, "sum": like p}, made as torch's
    Adagrad._init_group makes it (fused: device/dtype check, float32 counter on p's device)."""
    if fused:
        _check_fused(p)
        step = torch.zeros((), dtype=_get_scalar_dtype(is_fused=fused), device=p.device)
    else:
        step = torch.tensor(0.0, dtype=_get_scalar_dtype())
    return {"step": step,
            "sum": torch.full_like(p, initial_accumulator_value,
                                   memory_format=torch.preserve_format)}


# ---------------------------------------------------------------------- tensors
def _probe_increment_version() -> Callable[[list[torch.Tensor]], None]:
    """torch._C._increment_version when it takes a list (one Python call for every tensor of
    a step), else the public torch.autograd.graph.increment_version."""
    fast: Any = getattr(torch._C, "_increment_version", None)
    try:
        probe = torch.zeros(1)
        before = probe._version
        fast([probe])
        if probe._version == before + 1:
            return fast  # type: ignore[no-any-return]
    except Exception:  # pragma: no cover - depends on the torch version
        pass
    public: Callable[[list[torch.Tensor]], None] = torch.autograd.graph.increment_version
    return public  # pragma: no cover


# Bump the autograd version counters of a list of tensors, as torch's in-place ops do, so that
# stepping a parameter saved for backward still raises at backward.
increment_version = _probe_increment_version()


def dtensor_local(t: Any) -> Optional[torch.Tensor]:
    """The local shard of a DTensor whose placements are all Shard or Replicate (then an
    element-wise update of every rank's local tensor is the update of the global tensor);
    None for anything else, including Partial placements (sums not yet reduced)."""
    if type(t).__name__ != "DTensor" or not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor, Replicate, Shard
    if not isinstance(t, DTensor) or not all(isinstance(pl, (Shard, Replicate))
                                             for pl in t.placements):
        return None
    local: torch.Tensor = t._local_tensor
    return local


def coo_rows_and_values(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row indices, values) of a sparse COO grad with sparse_dim 1, as stored (duplicates
    not summed: the public indices()/values() require a coalesced tensor)."""
    return g._indices()[0], g._values()
