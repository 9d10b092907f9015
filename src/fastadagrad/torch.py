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
the fused kernels: one ``ArrayTable`` C call per (param group, dtype, step value), with the GIL
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
differ from torch by about one ulp per step (see fastadagrad/PEERS notes); they are never
bit-identical to torch, and bit-identical between our two backends.

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

Importing ``fastadagrad`` does not import torch; import this module explicitly.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer
from torch.optim.adagrad import adagrad as _torch_adagrad

from fastadagrad import _backend, _validation, reference
from fastadagrad._validation import DenseOptions

__all__ = ["Adagrad", "accelerated"]

_FAST_DTYPES: dict[torch.dtype, np.dtype] = {torch.float32: np.dtype(np.float32),
                                             torch.float64: np.dtype(np.float64)}
# ---- mixed precision (issue 15): float16 always, bfloat16 when ml_dtypes is installed (NumPy
# has no bfloat16: the tensor's memory is viewed as int16, then as ml_dtypes.bfloat16). State
# `sum` stays in the param's dtype (torch's layout); arithmetic is float32 (torch's opmath).
_FAST_DTYPES[torch.float16] = np.dtype(np.float16)
try:
    import ml_dtypes as _ml_dtypes
    _FAST_DTYPES[torch.bfloat16] = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - bfloat16 params then stay with torch
    pass
_TABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))   # what ArrayTable takes
# ---- end mixed precision
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_GLOBAL_PRE = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", {})
_GLOBAL_POST = getattr(_torch_optimizer, "_global_optimizer_post_hooks", {})
_profiler_enabled: Callable[[], bool] = getattr(torch.autograd, "_profiler_enabled")
_MAX_TABLES = 64  # cached tables per group (one per distinct subset of params with grads)
# The NumPy view of a grad is reused while p.grad is the same tensor at the same address (it
# saves ~1 us per param and step); only for params up to this size, and up to GRAD_CACHE_BYTES
# per group, since the cache keeps the last grads alive after zero_grad(set_to_none=True).
GRAD_CACHE_PARAM_BYTES = 1 << 16
GRAD_CACHE_BYTES = 1 << 20


def _probe_increment_version() -> Callable[[list[torch.Tensor]], None]:
    """Bump the autograd version counters of a list of tensors (what torch's own in-place
    ops do), so that stepping a parameter saved for backward still raises at backward."""
    fast: Any = getattr(torch._C, "_increment_version", None)
    try:
        probe = torch.zeros(1)
        before = probe._version
        fast([probe])   # torch >= 2.4 takes an iterable; older ones a single tensor
        if probe._version == before + 1:
            return fast  # type: ignore[no-any-return]
    except Exception:  # pragma: no cover - depends on the torch version
        pass

    def each(tensors: list[torch.Tensor]) -> None:  # pragma: no cover
        for t in tensors:
            torch.autograd.graph.increment_version(t)
    return each


_increment_version = _probe_increment_version()


def accelerated(p: torch.Tensor) -> bool:
    """Does the parameter itself qualify for the fused kernels (dense CPU float32/float64,
    a plain tensor or nn.Parameter, not an inference tensor)? Its state and each step's grad
    are checked as well before it is actually taken."""
    return (type(p) in _PLAIN_TYPES and p.device.type == "cpu" and p.layout == torch.strided
            and p.dtype in _FAST_DTYPES and not p.is_inference() and not p.is_conj()
            and not p.is_neg())


def _view(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor's memory (never a copy)."""
    return _numpy(t.detach())


def _numpy(t: torch.Tensor) -> np.ndarray:
    """t.numpy() (raises as it does for grads that require grad, sparse, neg/conj bits, ...),
    also for bfloat16, viewed through int16 as ml_dtypes.bfloat16 (zero copy)."""
    if t.dtype == torch.bfloat16 and torch.bfloat16 in _FAST_DTYPES:
        out: np.ndarray = t.view(torch.int16).numpy().view(_FAST_DTYPES[torch.bfloat16])
        return out
    return t.numpy()


def _float(x: Any) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.item())
    return float(x)


class _Plan:
    """The cache of one param group: which params are accelerated, their NumPy views, pointers
    and tables. Rebuilt whenever anything it depends on changes."""

    __slots__ = ("group", "params_list", "n_params", "fast", "pviews", "sviews", "sums", "steps",
                 "stepv", "statedicts", "pptr", "sptr", "tableable", "dtypes", "one_dtype",
                 "all_table", "tables", "slow", "lazy", "key", "opts", "lr", "lr_decay",
                 "bump_all", "state_obj", "sequential", "differentiable", "gcache",
                 "gtensor", "gptr", "gview", "dtensors", "sparse_ok")

    def __init__(self, group: dict[str, Any], state: Any) -> None:
        self.group = group
        self.params_list = group["params"]
        self.n_params = len(self.params_list)
        self.state_obj = state
        self.fast: list[torch.Tensor] = []
        self.pviews: list[np.ndarray] = []
        self.sviews: list[np.ndarray] = []
        self.sums: list[torch.Tensor] = []
        self.steps: list[torch.Tensor] = []
        self.stepv: list[np.ndarray] = []
        self.statedicts: list[dict[str, Any]] = []
        self.pptr: list[int] = []
        self.sptr: list[int] = []
        self.tableable: list[bool] = []
        self.sparse_ok: list[bool] = []   # the sparse kernel can take it (C-contiguous rows)
        self.dtypes: list[np.dtype] = []
        self.slow: list[torch.Tensor] = []   # always stepped by torch
        self.lazy: list[torch.Tensor] = []   # accelerable, but torch has not created state yet
        self.dtensors: list[torch.Tensor] = []   # DTensors (FSDP2): updated on their local shard
        self.tables: dict[Any, Any] = {}
        self.all_table: Any = None
        self.key: Any = None
        self.opts: DenseOptions | None = None
        self.lr = self.lr_decay = 0.0
        self.differentiable = bool(group.get("differentiable", False))
        for p in self.params_list:
            if self.differentiable or not accelerated(p):
                local = None if self.differentiable else _dtensor_local(p)
                if local is not None and accelerated(local):
                    self.dtensors.append(p)
                else:
                    self.slow.append(p)
                continue
            st = state.get(p)
            if not st:
                self.lazy.append(p)
                continue
            entry = _entry(p, st)
            if entry is None:
                self.slow.append(p)
                continue
            s, pv, av, stepv = entry
            self.fast.append(p)
            self.statedicts.append(st)
            self.sums.append(s)
            self.steps.append(st["step"])
            self.pviews.append(pv)
            self.sviews.append(av)
            self.stepv.append(stepv)
            self.pptr.append(p.data_ptr())
            self.sptr.append(s.data_ptr())
            self.tableable.append(bool((pv.flags.c_contiguous and av.flags.c_contiguous)
                                       or (pv.flags.f_contiguous and av.flags.f_contiguous)))
            self.sparse_ok.append(bool(pv.ndim == 2 and pv.flags.c_contiguous and pv.flags.aligned
                                       and av.flags.c_contiguous and av.flags.aligned))
            self.dtypes.append(pv.dtype)
        self.one_dtype = (len(set(self.dtypes)) <= 1
                          and all(d in _TABLE_DTYPES for d in self.dtypes))
        budget = GRAD_CACHE_BYTES
        self.gcache: list[bool] = []
        for pv in self.pviews:
            ok = pv.nbytes <= min(GRAD_CACHE_PARAM_BYTES, budget)
            budget -= pv.nbytes if ok else 0
            self.gcache.append(ok)
        self.gtensor: list[Optional[torch.Tensor]] = [None] * len(self.fast)
        self.gptr: list[int] = [0] * len(self.fast)
        self.gview: list[Any] = [None] * len(self.fast)
        self.sequential = not _disjoint(self.pviews + self.sviews)
        self.bump_all = self.fast + self.sums
        if (self.fast and self.one_dtype and all(self.tableable) and not self.sequential
                and _backend._kernels is not None):
            self.all_table = _backend._kernels.ArrayTable(self.pviews, self.sviews)

    def options(self, group: dict[str, Any]) -> DenseOptions:
        """The group's DenseOptions (clr is filled per step), rebuilt only when they change
        (always re-read for a tensor lr, which a scheduler may change in place)."""
        key = (group["lr"], group["lr_decay"], group["eps"], group["weight_decay"],
               group["maximize"])
        if key != self.key or self.opts is None or isinstance(key[0], torch.Tensor):
            lr, lr_decay, eps, wd, maximize = key
            self.lr, self.lr_decay = _float(lr), _float(lr_decay)
            self.opts = DenseOptions(self.lr, _float(eps), _float(wd), bool(maximize), False)
            self.key = key
        return self.opts

    def table(self, idx: list[int]) -> Any:
        """The ArrayTable over the fast params at positions `idx` (cached)."""
        if len(idx) == len(self.fast) and self.all_table is not None:
            return self.all_table
        key = tuple(idx)
        t = self.tables.get(key)
        if t is None:
            if len(self.tables) >= _MAX_TABLES:
                self.tables.clear()
            t = _backend._kernels.ArrayTable([self.pviews[i] for i in idx],
                                             [self.sviews[i] for i in idx])
            self.tables[key] = t
        return t


_Entry = Tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]


def _entry(p: torch.Tensor, st: dict[str, Any]) -> Optional[_Entry]:
    """(sum, param view, sum view, step view) when p's state can be used in place, else None."""
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
        pv, av, stepv = _view(p), _view(s), _view(step)
    except (RuntimeError, TypeError):
        return None
    if not (pv.flags.writeable and av.flags.writeable and stepv.flags.writeable):
        return None
    if _validation.has_internal_overlap(pv) or _validation.has_internal_overlap(av):
        return None   # an expanded parameter: torch's own path (which raises, as torch does)
    return s, pv, av, stepv


def _disjoint(arrays: list[np.ndarray]) -> bool:
    """No two of the arrays share memory."""
    return _validation.overlapping_pair(arrays) is None


def _dtensor_local(t: Any) -> Optional[torch.Tensor]:
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


def _dtensor_views(p: Any, g: Any, st: Optional[dict[str, Any]]
                   ) -> Optional[tuple[list[torch.Tensor], np.ndarray, np.ndarray, np.ndarray,
                                       np.ndarray]]:
    """([local param, local sum], param, grad, sum and step views) for a DTensor param whose
    grad and sum are DTensors with its placements and mesh and local shards of its local shape
    (anything else: None, torch's step)."""
    s: Any = st.get("sum") if st else None
    lp, lg, ls = _dtensor_local(p), _dtensor_local(g), _dtensor_local(s)
    if (st is None or lp is None or lg is None or ls is None or not accelerated(lp)
            or g.placements != p.placements or s.placements != p.placements
            or g.device_mesh != p.device_mesh or s.device_mesh != p.device_mesh
            or lg.shape != lp.shape or lg.dtype != lp.dtype):
        return None
    entry = _entry(lp, {"sum": ls, "step": st.get("step")})
    if entry is None:
        return None
    try:
        gv = lg.numpy()   # a view; raises for requires_grad, neg/conj bits
    except (RuntimeError, TypeError):
        return None
    _, pv, av, stepv = entry
    if pv.size and _validation.shares_memory(pv, av):
        return None
    return [lp, ls], pv, gv, av, stepv


class Adagrad(torch.optim.Adagrad):
    """torch.optim.Adagrad with the dense CPU float32/float64 update done in place by
    fastadagrad's fused kernels (see the module docstring for what falls back to torch).

    Same signature, defaults, validation, param_groups and state as torch.optim.Adagrad.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: Union[float, torch.Tensor] = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: Optional[bool] = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
    ) -> None:
        self._plans: list[_Plan] | None = None
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         foreach=foreach, maximize=maximize, differentiable=differentiable,
                         fused=fused)
        self._plans = None

    # ------------------------------------------------------------------ cache invalidation
    def __setstate__(self, state: dict[str, Any]) -> None:  # also reached by load_state_dict
        setstate: Any = super().__setstate__   # torch's is untyped
        setstate(state)
        self._plans = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._plans = None

    def share_memory(self) -> None:
        super().share_memory()  # moves every `sum` to new (shared) storage
        self._plans = None

    def _patch_step_function(self) -> None:
        # torch wraps step() in a profiler range and the hook loop (several microseconds even
        # when neither is used); step() below runs the same wrapper only when needed.
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{self.__class__.__name__}.zero_grad"

    # ------------------------------------------------------------------ step
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Perform a single optimization step (torch semantics); returns the closure's loss.

        Args:
            closure (Callable, optional): re-evaluates the model and returns the loss; it runs
                under torch.enable_grad().
        """
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _GLOBAL_PRE
                or _GLOBAL_POST or _profiler_enabled()):
            return self._hooked_step(closure)
        return self._step(closure)

    def _hooked_step(self, closure: Optional[Callable[[], Any]]) -> Any:
        """torch's Optimizer.profile_hook_step wrapper: profiler range, pre/post hooks."""
        args: tuple[Any, ...] = (self,) if closure is None else (self, closure)
        kwargs: dict[str, Any] = {}
        with torch.autograd.profiler.record_function(
                f"Optimizer.step#{self.__class__.__name__}.step"):
            for pre_hook in list(_GLOBAL_PRE.values()) + list(self._optimizer_step_pre_hooks.values()):
                result = pre_hook(self, args, kwargs)
                if result is not None:
                    if isinstance(result, tuple) and len(result) == 2:
                        args, kwargs = result
                    else:
                        raise RuntimeError(f"{self.step} must return None or a tuple of "
                                           f"(new_args, new_kwargs), but got {result}.")
            out = type(self)._step(*args, **kwargs)
            self._optimizer_step_code()
            for post_hook in list(self._optimizer_step_post_hooks.values()) + list(_GLOBAL_POST.values()):
                post_hook(self, args, kwargs)
            return out

    def _step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            for group in groups:   # fused AMP (GradScaler): torch unscales and skips inside
                self._torch_step(group, group["params"])
            return loss
        plans = self._plans
        if plans is None or len(plans) != len(groups):
            plans = self._plans = [_Plan(g, self.state) for g in groups]
        state = self.state
        # 1. every group's grads are collected and checked before anything is written
        collected: list[Optional[_Collected]] = []
        for gi, group in enumerate(groups):
            plan = plans[gi]
            if (plan.group is not group or plan.params_list is not group["params"]
                    or len(group["params"]) != plan.n_params or plan.state_obj is not state
                    or plan.differentiable != bool(group.get("differentiable", False))):
                plan = plans[gi] = _Plan(group, state)
            if plan.lazy and any(p.grad is not None for p in plan.lazy):
                self._init_lazy_state(group, plan.lazy)
                plan = plans[gi] = _Plan(group, state)
            col = self._collect(group, plan) if plan.fast else None
            if plan.fast and col is None:
                # something the cache depends on changed (storage moved, state replaced):
                # nothing was written, rebuild and redo
                plan = plans[gi] = _Plan(group, state)
                col = self._collect(group, plan) if plan.fast else None
                if plan.fast and col is None:  # pragma: no cover
                    raise RuntimeError("fastadagrad.torch: inconsistent parameter state")
            collected.append(col)
        # 2. the writes
        for group, plan, col in zip(groups, plans, collected):
            if col is not None:
                self._fast_step(group, plan, col)
            if plan.slow:
                self._torch_step(group, plan.slow)
            if plan.dtensors:
                self._dtensor_step(group, plan)
        return loss

    def _init_lazy_state(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """State for params that have none yet, created as torch's _init_group does (including
        its use of self.defaults["initial_accumulator_value"])."""
        fused = group["fused"]
        scalar_dtype: Any = getattr(_torch_optimizer, "_get_scalar_dtype")
        check_fused: Any = getattr(_torch_optimizer, "_device_dtype_check_for_fused")
        init = self.defaults["initial_accumulator_value"]
        for p in params:
            if p.grad is None or len(self.state.get(p, ())) != 0:
                continue
            if fused:
                check_fused(p)
            state = self.state[p]
            state["step"] = (torch.zeros((), dtype=scalar_dtype(is_fused=fused), device=p.device)
                             if fused else torch.tensor(0.0, dtype=scalar_dtype()))
            state["sum"] = torch.full_like(p, init, memory_format=torch.preserve_format)

    def _torch_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """torch's own Adagrad step for `params` of `group`, on the same state tensors."""
        sub = dict(group)
        sub["params"] = params
        params_with_grad: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        state_sums: list[torch.Tensor] = []
        state_steps: list[torch.Tensor] = []
        init_group: Any = self._init_group   # torch's is untyped
        has_sparse_grad, has_complex = init_group(sub, params_with_grad, grads, state_sums,
                                                  state_steps)
        if not params_with_grad:
            return
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):
            _torch_adagrad(params_with_grad, grads, state_sums, state_steps,
                           lr=group["lr"], weight_decay=group["weight_decay"],
                           lr_decay=group["lr_decay"], eps=group["eps"],
                           has_sparse_grad=has_sparse_grad, foreach=group["foreach"],
                           maximize=group["maximize"], differentiable=group["differentiable"],
                           has_complex=has_complex, fused=group["fused"],
                           grad_scale=getattr(self, "grad_scale", None),
                           found_inf=getattr(self, "found_inf", None))

    def _collect(self, group: dict[str, Any], plan: _Plan) -> Optional[_Collected]:
        """The grads of the accelerated params of one group, every one checked, nothing
        written; None when the cache is stale (a storage moved or a state entry was
        replaced). Raises torch's RuntimeError for a sparse grad with fused=True, and
        ValueError for a sparse grad that does not fit its parameter."""
        opts = plan.options(group)
        fast = plan.fast
        grads: list[np.ndarray] = []
        live: list[int] = []
        odd: list[torch.Tensor] = []   # grads NumPy cannot view (requires_grad, CSR, ...)
        sparse: list[tuple[int, np.ndarray, np.ndarray]] = []   # COO grads of 2-D params
        statedicts, sums, steps, pptr, sptr = (plan.statedicts, plan.sums, plan.steps, plan.pptr,
                                               plan.sptr)
        gtensor, gptr, gview = plan.gtensor, plan.gptr, plan.gview
        state = self.state
        for i in range(len(fast)):
            p = fast[i]
            g = p.grad
            if g is None:
                continue
            st = state.get(p)
            if (p.data_ptr() != pptr[i] or st is not statedicts[i] or st.get("sum") is not sums[i]
                    or st.get("step") is not steps[i] or sums[i].data_ptr() != sptr[i]):
                return None
            if g is gtensor[i] and g.data_ptr() == gptr[i]:
                grads.append(gview[i])
            else:
                if g.is_sparse:
                    if group["fused"]:   # torch's _fused_adagrad refuses them, in these words
                        raise RuntimeError("`fused` does not support sparse grad or complex param")
                    if (p.dim() == 2 and not opts.weight_decay and plan.sparse_ok[i]
                            and plan.dtypes[i] in _TABLE_DTYPES
                            and g.sparse_dim() == 1 and g.dense_dim() == 1):
                        # nn.Embedding(sparse=True) in float32/float64: our sparse kernel
                        sparse.append((i, *_sparse_rows(plan, i, g)))
                    else:   # strided, float16/bfloat16, sparse_dim=2, weight decay: torch's
                        odd.append(p)
                    continue
                try:
                    gv = _numpy(g)   # a view; raises for sparse, requires_grad, neg/conj bits
                except (RuntimeError, TypeError):
                    odd.append(p)
                    continue
                grads.append(gv)
                if plan.gcache[i]:
                    gtensor[i], gptr[i], gview[i] = g, g.data_ptr(), gv
            live.append(i)
        return _Collected(opts, grads, live, odd, sparse)

    def _fast_step(self, group: dict[str, Any], plan: _Plan, col: _Collected) -> None:
        """The writes of the accelerated params of one group (collected and checked)."""
        opts, grads, live, odd, sparse = col
        fast, sums = plan.fast, plan.sums
        if odd:
            self._torch_step(group, odd)
        for i, rows, vals in sparse:
            self._sparse_step(plan, i, rows, vals, opts)
        if not live:
            return
        # step += 1, rounded to the counter's own dtype as torch's `step_t += 1` is
        stepv = plan.stepv
        values: list[float] = []
        for i in live:
            sv = stepv[i]
            new = float(sv) + 1.0
            sv[()] = new
            if not -16777216.0 < new < 16777216.0:  # a float32 counter may have rounded
                new = float(sv)
            values.append(new)
        first = values[0]
        uniform = values.count(first) == len(values)
        compiled = _backend.current().compiled
        all_live = len(live) == len(fast)
        if uniform and plan.one_dtype and not plan.sequential:
            clr = _validation.effective_lr(plan.lr, plan.lr_decay, first)   # torch's, in double
            if not compiled:
                self._apply(plan, live, grads, opts, clr, False, False)
            elif all_live and plan.all_table is not None:   # the common case: one C call
                if plan.all_table.step(grads, opts, clr, False) == -2:
                    self._apply(plan, live, grads, opts, clr, True, False)
            elif all(plan.tableable[i] for i in live):
                self._apply(plan, live, grads, opts, clr, True, True)
            else:
                self._apply_buckets(plan, live, grads, values, opts, compiled)
        else:
            self._apply_buckets(plan, live, grads, values, opts, compiled)
        _increment_version(plan.bump_all if all_live
                           else [fast[i] for i in live] + [sums[i] for i in live])

    def _sparse_step(self, plan: _Plan, i: int, idx: np.ndarray, values: np.ndarray,
                     opts: DenseOptions) -> None:
        """A sparse COO grad of a 2-D param (nn.Embedding(sparse=True)), checked by
        _sparse_rows: its rows go to fastadagrad.sparse_adagrad_update's kernel (duplicates
        summed before squaring, as torch's coalesce does). torch refuses weight decay with
        sparse grads, so that case stays with torch."""
        sv = plan.stepv[i]
        sv[()] = float(sv) + 1.0
        clr = _validation.effective_lr(plan.lr, plan.lr_decay, float(sv))
        o = opts._replace(clr=clr)
        if _backend.current().compiled:
            _backend._kernels.sparse_validated(plan.pviews[i], plan.sviews[i], idx, values, o)
        elif idx.size:
            with np.errstate(all="ignore"):
                reference.sparse_step(plan.pviews[i], plan.sviews[i], idx, values, o)
        _increment_version([plan.fast[i], plan.sums[i]])

    def _dtensor_step(self, group: dict[str, Any], plan: _Plan) -> None:
        """DTensor params (FSDP2's sharded params, or Shard/Replicate DTensors in general): the
        update is element-wise, so updating each rank's local shard with its local grad and
        local ``sum`` is exactly the update of the global tensor. Taken only when the grad and
        ``sum`` are DTensors with the param's placements and mesh and a local shard of its
        shape; anything else (Partial placements, a plain grad, other state) goes to torch's
        step on the DTensors. Not cached: the local shards are looked up at every step."""
        opts = plan.options(group)
        compiled = _backend.current().compiled
        fallback: list[torch.Tensor] = []
        for p in plan.dtensors:
            if p.grad is None:
                continue
            views = _dtensor_views(p, p.grad, self.state.get(p))
            if views is None:
                fallback.append(p)
                continue
            locals_, pv, gv, av, stepv = views
            stepv[()] = float(stepv) + 1.0   # torch's `step_t += 1`, rounded to its dtype
            step = float(stepv)
            o = opts._replace(clr=_validation.effective_lr(plan.lr, plan.lr_decay, step))
            gv = _checked(pv, gv, av)
            if compiled:
                _backend._kernels.update_validated(pv, gv, av, o)
            else:
                reference.multi_update([pv], [gv], [av], o)
            _increment_version(locals_)
        if fallback:
            self._torch_step(group, fallback)

    def _apply(self, plan: _Plan, idx: list[int], grads: list[np.ndarray], opts: DenseOptions,
               clr: float, compiled: bool, use_table: bool) -> None:
        """One step at `clr` over the fast params at positions `idx` (one dtype): one C call
        through an ArrayTable when they are contiguous, else one validated call each."""
        if use_table and plan.table(idx).step(grads, opts, clr, False) != -2:
            return
        checked = [_checked(plan.pviews[i], g, plan.sviews[i]) for i, g in zip(idx, grads)]
        o = opts._replace(clr=clr)
        if compiled:
            update = _backend._kernels.update_validated
            for i, g in zip(idx, checked):
                update(plan.pviews[i], g, plan.sviews[i], o)
        else:
            reference.multi_update([plan.pviews[i] for i in idx], checked,
                                   [plan.sviews[i] for i in idx], o)

    def _apply_buckets(self, plan: _Plan, live: list[int], grads: list[np.ndarray],
                       values: list[float], opts: DenseOptions, compiled: bool) -> None:
        """Mixed step values or dtypes: one call per (dtype, step value) bucket of contiguous
        params and one per other param; one by one, in order, when params overlap."""
        lr, lr_decay = plan.lr, plan.lr_decay
        if plan.sequential:
            for i, g, v in zip(live, grads, values):
                self._apply(plan, [i], [g], opts, _validation.effective_lr(lr, lr_decay, v), compiled,
                            False)
            return
        buckets: dict[tuple[Any, ...], tuple[list[int], list[np.ndarray], float]] = {}
        for i, g, v in zip(live, grads, values):
            table_ok = plan.tableable[i] and plan.dtypes[i] in _TABLE_DTYPES
            key = (plan.dtypes[i].char, v) if (compiled and table_ok) or not compiled \
                else (None, i)
            b = buckets.get(key)
            if b is None:
                buckets[key] = ([i], [g], v)
            else:
                b[0].append(i)
                b[1].append(g)
        for key, (idx, gs, v) in buckets.items():
            self._apply(plan, idx, gs, opts, _validation.effective_lr(lr, lr_decay, v), compiled,
                        compiled and key[0] is not None)


class _Collected(NamedTuple):
    """One group's checked grads, ready to write (Adagrad._collect -> Adagrad._fast_step)."""

    opts: DenseOptions
    grads: list[np.ndarray]             # dense grads of the fast params at positions `live`
    live: list[int]
    odd: list[torch.Tensor]             # params whose grads go to torch's own step
    sparse: list[tuple[int, np.ndarray, np.ndarray]]   # (position, int64 rows, values)


def _sparse_rows(plan: _Plan, i: int, g: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(private int64 row indices, C-contiguous values) of a sparse COO grad (sparse_dim 1,
    dense_dim 1) of the fast param at position i, checked against it: indices in range,
    values of shape (nnz, columns) and the param's dtype, and not sharing memory with the
    param or its sum (else copied)."""
    pv, sv = plan.pviews[i], plan.sviews[i]
    idx = _validation.check_indices(g._indices()[0].numpy(), pv.shape[0])
    values = g._values().detach().numpy()
    if values.shape != (idx.size, pv.shape[1]) or values.dtype != pv.dtype:
        raise ValueError(f"sparse grad of shape {tuple(g.shape)} does not match its parameter")
    if values.size and (_validation.shares_memory(values, pv)
                        or _validation.shares_memory(values, sv)):
        values = values.copy()
    return idx, np.ascontiguousarray(values)


def _checked(p: np.ndarray, g: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The grad made safe for update_validated: same shape/dtype as the param (torch enforces
    this for .grad) and not sharing memory with the param or its accumulator (else a copy)."""
    if g.shape != p.shape or g.dtype != p.dtype:  # pragma: no cover - torch refuses such grads
        raise RuntimeError(f"grad of shape {tuple(g.shape)} and dtype {g.dtype} for a parameter "
                           f"of shape {tuple(p.shape)} and dtype {p.dtype}")
    if g.size and (_validation.shares_memory(g, p) or _validation.shares_memory(g, a)):
        return g.copy()
    return g
