"""fastadagrad.AdaGrad: one object that owns the AdaGrad state of many arrays and updates them
all in one fused call per parameter group.

    opt = fastadagrad.AdaGrad([w1, b1, w2], lr=0.01)      # or groups, or a dict of arrays
    opt.step([g1, gb1, g2])                                # in place; returns True if applied

Per array and element the arithmetic is fastadagrad.adagrad_update's, with the formula flags of
the chosen `convention` (see CONVENTIONS and README "Conventions").
"""

from __future__ import annotations

import bisect
import itertools
import numbers
import re
import signal
import threading
from typing import Any, Iterable, List, Mapping, NamedTuple, Sequence, Union, cast

import numpy as np

from fastadagrad._mixed_precision import accum_dtype, check_mixed_dtypes, is_low_precision
from fastadagrad import _backend, _validation, reference
from fastadagrad import optimizer_clip as _optimizer_clip
from fastadagrad import optimizer_rules as _optimizer_rules
from fastadagrad._validation import DenseOptions

ArrayList = List[np.ndarray]
Params = Union[Sequence[np.ndarray], Sequence[Mapping[str, Any]], Mapping[str, np.ndarray]]

#: Defaults and formula of each peer. `weight_decay` is "coupled" (g += wd * p, torch) or
#: "decoupled" (p -= p * wd * lr before the step, Keras 3). Sources: torch/optim/adagrad.py,
#: keras/src/optimizers/adagrad.py, optax/_src/transform.py (scale_by_rss), TensorFlow
#: core/kernels/training_ops.cc (ApplyAdagradV2).
CONVENTIONS: dict[str | None, dict[str, Any]] = {
    None: dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.0, eps_placement="outside",
               weight_decay_mode="coupled", zero_if_accum_zero=False),
    "torch": dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.0, eps_placement="outside",
                  weight_decay_mode="coupled", zero_if_accum_zero=False),
    "keras": dict(lr=0.001, eps=1e-7, initial_accumulator_value=0.1, eps_placement="inside",
                  weight_decay_mode="decoupled", zero_if_accum_zero=False, float32_lr=True),
    "optax": dict(lr=None, eps=1e-7, initial_accumulator_value=0.1, eps_placement="inside",
                  weight_decay_mode="coupled", zero_if_accum_zero=True),
    "tf": dict(lr=0.001, eps=1e-7, initial_accumulator_value=0.1, eps_placement="outside",
               weight_decay_mode="coupled", zero_if_accum_zero=False),
}
GROUP_OPTIONS = ("lr", "eps", "eps_placement", "lr_decay", "weight_decay",
                 "initial_accumulator_value", "maximize", "rowwise")


class SparseGrad(NamedTuple):
    """The gradient of a 2-D parameter given on some rows: `values[k]` is the gradient of row
    `indices[k]` (int32/int64). AdaGrad.step routes it to fastadagrad.sparse_adagrad_update:
    only those rows and their accumulators change. `duplicates` ("sum", "sequential",
    "keras"; None: the optimizer's `duplicates`) says how repeated indices are applied."""

    indices: np.ndarray
    values: np.ndarray
    duplicates: str | None = None
NONFINITE = ("propagate", "skip", "raise")
STATE_FORMAT = "fastadagrad.AdaGrad/1"


class _Group:
    """One parameter group: its arrays, accumulators, options and int64 step counter."""

    def __init__(self, params: ArrayList, names: list[str], options: dict[str, Any],
                 packed: bool = False) -> None:
        self.params = params
        self.names = names
        self.layouts = [_layout(p) for p in params]  # what the tables and accumulators assume
        self.step = 0
        self.flat: tuple[np.ndarray, np.ndarray] | None = None  # (param arena, accum arena)
        self.accums: ArrayList
        init = options["initial_accumulator_value"]
        if packed:
            flat_param = _arena_view(params)
            flat_accum = np.full_like(flat_param, init, dtype=accum_dtype(flat_param.dtype))
            self.accums, pos = [], 0
            for p in params:
                self.accums.append(flat_accum[pos:pos + p.size].reshape(p.shape))
                pos += p.size
            self.flat = (flat_param, flat_accum)
        elif options["rowwise"]:
            for name, p in zip(names, params):
                if p.ndim != 2:
                    raise ValueError(f"`{name}` has shape {p.shape}; rowwise=True needs 2-D "
                                     "(rows x features) parameters")
            self.accums = [np.full(p.shape[0], init, dtype=accum_dtype(p.dtype)) for p in params]
        else:
            self.accums = [np.full_like(p, init, dtype=accum_dtype(p.dtype), order="K")
                           for p in params]
        self.rowwise = options["rowwise"]
        self.extra: list[list[np.ndarray]] = []  # AdaGrad(rule=...): the rule's other states
        self.masters: list[np.ndarray | None] = [None] * len(params)  # AdaGrad(master=True)
        self.table: Any = None  # kernels.ArrayTable when the compiled backend can take it
        self.flat_table: Any = None
        self.set_options(options)

    def set_options(self, options: dict[str, Any]) -> None:
        self.options = options
        self.opts = self.dense_options(1)  # clr is recomputed per step by clr_at()
        self.lr, self.lr_decay = options["lr"], options["lr_decay"]

    def clr_at(self, step: int) -> float:
        """lr / (1 + (step - 1) * lr_decay) in double, as _validation.effective_lr."""
        return float(self.lr / (1.0 + (step - 1) * self.lr_decay))

    def build_table(self, guard: ArrayList) -> None:
        """The C pointer tables; `guard`: every array of the optimizer (no grad may touch one)."""
        kernels = _backend._kernels
        contiguous = all((p.flags.c_contiguous or p.flags.f_contiguous) and p.flags.aligned
                         and p.dtype.isnative and type(p) is np.ndarray for p in self.params)
        one_dtype = (len({p.dtype for p in self.params}) <= 1   # float32 or float64 only
                     and all(p.dtype in _validation.SUPPORTED_DTYPES for p in self.params))
        self.table = (kernels.ArrayTable(self.params, self.accums, guard)
                      if kernels is not None and contiguous and one_dtype and not self.rowwise
                      else None)
        if kernels is not None and self.flat is not None:
            self.flat_table = kernels.ArrayTable([self.flat[0]], [self.flat[1]], guard)

    def dense_options(self, step: int) -> DenseOptions:
        o = self.options
        decoupled = o["weight_decay_mode"] == "decoupled"
        return DenseOptions(
            clr=_validation.effective_lr(o["lr"], o["lr_decay"], step), eps=o["eps"],
            weight_decay=0.0 if decoupled else o["weight_decay"], maximize=o["maximize"],
            eps_inside=o["eps_placement"] == "inside",
            decoupled_weight_decay=o["weight_decay"] if decoupled else 0.0,
            zero_if_accum_zero=o["zero_if_accum_zero"])


def _check_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate one group's options (names prefixed with `where` in errors)."""
    out = dict(options)
    if out["lr"] is None:
        raise TypeError(f"`{where}lr` is required with convention='optax' (optax has no default)")
    for name in ("lr", "eps", "lr_decay", "weight_decay", "initial_accumulator_value"):
        out[name] = _validation.check_real(f"{where}{name}", out[name])
    if out.get("float32_lr"):
        # Keras keeps `learning_rate` in a float32 variable and casts it to the variable's
        # dtype: float64 params step with float64(float32(lr)) (tested against Keras itself)
        out["lr"] = float(np.float32(out["lr"]))
    _validation.check_eps_placement(out["eps_placement"], f"{where}eps_placement")
    out["maximize"] = _validation.check_flag(f"{where}maximize", out["maximize"])
    out["rowwise"] = _validation.check_flag(f"{where}rowwise", out["rowwise"])
    if out["rowwise"] and (out["zero_if_accum_zero"] or (
            out["weight_decay_mode"] == "decoupled" and out["weight_decay"] != 0)):
        raise ValueError(f"`{where}rowwise` is not available with this convention's formula "
                         "(optax's zero mask or Keras' decoupled weight decay)")
    return out


class AdaGrad:
    """AdaGrad over many float32/float64 arrays, updated in place by `step(grads)`.

    Per element (torch's order; see fastadagrad.adagrad_update)::

        step += 1;  clr = lr / (1 + (step - 1) * lr_decay)
        g = -grad if maximize;  g += wd * p (coupled)  |  p -= p * wd * clr (decoupled, keras)
        accum += g * g;  p -= clr * g / (sqrt(accum) + eps)   [or sqrt(accum + eps): "inside"]

    params: a list of writable float ndarrays; a list of groups (dicts with "params" and any of
    the per-group options lr, eps, eps_placement, lr_decay, weight_decay,
    initial_accumulator_value, maximize); or a dict of named arrays. `grads` passed to step()
    has the same structure and order. `convention` ("torch", "keras", "optax", "tf") sets
    defaults and formula; explicit keyword arguments override its defaults.
    nonfinite: "propagate" (the formula; default), "skip" (a grad with NaN/inf anywhere undoes
    the whole step: params, accumulators and step counters untouched; step() returns False)
    or "raise" (ValueError naming the array, nothing written).
    master=True: float32 master weights for the float16/bfloat16 params (README, mixed
    precision), updated in float32 and rounded into the params in the same pass; in
    state_dict() as group{g}.master{i}.
    """

    def __init__(self, params: Params, *, lr: float | None = None, eps: float | None = None,
                 eps_placement: str | None = None, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float | None = None,
                 maximize: bool = False, convention: str | None = None,
                 nonfinite: str = "propagate", packed: bool = False,
                 rowwise: bool = False, duplicates: str = "sum", rule: str = "adagrad",
                 l1: float = 0.0, l2: float = 0.0, clipnorm: float | None = None,
                 global_clipnorm: float | None = None, master: bool = False) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"`convention` must be one of {[c for c in CONVENTIONS if c]} or None, "
                             f"got {convention!r}")
        if nonfinite not in NONFINITE:
            raise ValueError(f"`nonfinite` must be one of {NONFINITE}, got {nonfinite!r}")
        conv = CONVENTIONS[convention]
        self.convention = convention
        self.nonfinite = nonfinite
        self.duplicates = _validation.check_duplicates(duplicates)
        self.packed = _validation.check_flag("packed", packed)
        self.rule = _optimizer_rules.check_rule(
            rule, dict(lr_decay=lr_decay, weight_decay=weight_decay, maximize=maximize,
                       rowwise=rowwise), convention, packed)
        self.clipnorm, self.global_clipnorm = _optimizer_clip.check(clipnorm, global_clipnorm)
        if self.rule != "adagrad" and (clipnorm is not None or global_clipnorm is not None):
            raise ValueError("`clipnorm`/`global_clipnorm` apply to rule='adagrad' only")
        lr, initial_accumulator_value = _optimizer_rules.rule_defaults(
            self.rule, lr, initial_accumulator_value)
        explicit = dict(lr=lr, eps=eps, eps_placement=eps_placement,
                        initial_accumulator_value=initial_accumulator_value)
        self.defaults: dict[str, Any] = {k: (conv[k] if v is None else v) for k, v in explicit.items()}
        self.defaults.update(lr_decay=lr_decay, weight_decay=weight_decay, maximize=maximize,
                             rowwise=rowwise,
                             weight_decay_mode=conv["weight_decay_mode"],
                             zero_if_accum_zero=conv["zero_if_accum_zero"],
                             float32_lr=conv.get("float32_lr", False),
                             l1=_validation.check_real("l1", l1), l2=_validation.check_real("l2", l2))
        _check_options(self.defaults, "")
        self._structure, self._keys, raw_groups = self._parse_params(params)
        checked: list[tuple[ArrayList, list[str], dict[str, Any]]] = []
        for gi, (arrays, names, overrides) in enumerate(raw_groups):
            unknown = set(overrides) - set(GROUP_OPTIONS)
            if unknown:
                raise ValueError(f"`params[{gi}]` has unknown options {sorted(unknown)}; "
                                 f"known: {GROUP_OPTIONS}")
            where = f"params[{gi}]." if self._structure == "groups" else ""
            options = _check_options({**self.defaults, **overrides}, where)
            if self.packed and options["rowwise"]:
                raise ValueError(f"`{where}rowwise` cannot be combined with packed=True (the "
                                 "packed accumulator arena is element-wise); use one or the other")
            for name, p in zip(names, arrays):
                if is_low_precision(p):   # float16/bfloat16: float32 accumulators
                    check_mixed_dtypes({name: p}, name, "")
                else:
                    _validation.check_array(name, p, writable=True)
            checked.append((arrays, names, options))
        _check_disjoint([(n, p) for arrays, names, _ in checked for n, p in zip(names, arrays)])
        self.groups = [_Group(a, n, o, self.packed) for a, n, o in checked]
        guard = [x for g in self.groups for x in g.params + g.accums]
        for g in self.groups:
            g.build_table(guard)
        self.master = _master_weights(self, master, rowwise)
        if self.rule != "adagrad":
            _optimizer_rules.init_states(self)
        self.skipped_steps = 0
        self.last_step_skipped = False
        self._lock = threading.Lock()   # one step (or state load) at a time per optimizer

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _parse_params(params: Params) -> tuple[str, list[Any],
                                               list[tuple[ArrayList, list[str], dict[str, Any]]]]:
        """(structure, the dict's key objects (dict params only), groups)."""
        if isinstance(params, Mapping):
            keys = list(params)
            return "dict", keys, [([params[k] for k in keys], [f"params[{k!r}]" for k in keys], {})]
        if isinstance(params, np.ndarray) or not isinstance(params, Iterable):
            raise TypeError("`params` must be a list of arrays, a list of parameter groups "
                            f"(dicts with 'params') or a dict of arrays, got {type(params).__name__}")
        items = list(params)
        if not items:
            raise ValueError("`params` is empty")
        if all(isinstance(x, Mapping) for x in items):
            groups: list[tuple[ArrayList, list[str], dict[str, Any]]] = []
            for gi, group in enumerate(items):
                assert isinstance(group, Mapping)
                if "params" not in group:
                    raise ValueError(f"`params[{gi}]` has no 'params' entry")
                arrays = list(group["params"])
                names = [f"params[{gi}]['params'][{i}]" for i in range(len(arrays))]
                groups.append((arrays, names, {k: v for k, v in group.items() if k != "params"}))
            return "groups", [], groups
        return "list", [], [(cast(ArrayList, items), [f"params[{i}]" for i in range(len(items))], {})]

    def _split_grads(self, grads: Any) -> list[list[Any]]:
        """Grads in the structure of params -> one list per group (counts checked)."""
        if self._structure == "dict":
            if not isinstance(grads, Mapping):
                raise TypeError(f"`grads` must be a dict like `params`, got {type(grads).__name__}")
            keys = self._keys   # the params' own key objects, never re-parsed from names
            if len(grads) != len(keys) or any(k not in grads for k in keys):
                raise ValueError(f"`grads` keys {sorted(map(repr, grads))} differ from the params' "
                                 f"keys {sorted(map(repr, keys))}")
            return [[grads[k] for k in keys]]
        if isinstance(grads, (np.ndarray, Mapping)) or not isinstance(grads, Sequence):
            raise TypeError(f"`grads` must be a list like `params`, got {type(grads).__name__}")
        if self._structure == "groups":
            if len(grads) != len(self.groups):
                raise ValueError(f"`grads` has {len(grads)} groups, `params` has {len(self.groups)}")
            out = []
            for gi, (g, group) in enumerate(zip(grads, self.groups)):
                if isinstance(g, np.ndarray) or not isinstance(g, Sequence):
                    raise TypeError(f"`grads[{gi}]` must be a list of arrays, got {type(g).__name__}")
                if len(g) != len(group.params):
                    raise ValueError(f"`grads[{gi}]` has {len(g)} arrays, the group has "
                                     f"{len(group.params)}")
                out.append(list(g))
            return out
        if len(grads) != len(self.groups[0].params):
            raise ValueError(f"`grads` has {len(grads)} arrays, `params` has "
                             f"{len(self.groups[0].params)}")
        return [list(grads)]

    # ------------------------------------------------------------------ the step
    def step(self, grads: Any) -> bool:
        """Apply one AdaGrad step to every array; True if applied, False if skipped
        (nonfinite="skip" and a grad held NaN/inf). Validates everything before writing.

        Steps of one optimizer are serialised (a lock): concurrent calls run one after the
        other. A KeyboardInterrupt never separates the arrays' update from the step counters:
        it arrives either before anything is written or after the whole step (see README)."""
        with self._lock:
            return self._step(grads)

    def _step(self, grads: Any) -> bool:
        if self.rule != "adagrad":
            return _optimizer_rules.step(self, grads)
        if self.clipnorm is not None or self.global_clipnorm is not None:
            return _optimizer_clip.step(self, grads)
        check = self.nonfinite != "propagate"
        group = self.groups[0]
        # Fast path (one group, a list of grads, compiled backend): the C gate, the finiteness
        # scan, the update of every array and the step count happen in one call.
        if (type(grads) is list and len(self.groups) == 1 and group.table is not None
                and _backend._current == "cython"):
            bad = group.table.step(grads, group.opts, group.clr_at(group.step + 1), check, group)
            if bad != -2:
                return self._finish(bad)
        if self.packed and type(grads) is np.ndarray and len(self.groups) == 1:
            # Packed flat step: one C call over the arena (gate: grad vs the guarded ranges
            # sorted at construction, finiteness scan, update).
            if group.flat_table is not None and _backend._current == "cython":
                bad = group.flat_table.step([grads], group.opts, group.clr_at(group.step + 1),
                                            check, group)
                if bad != -2:
                    return self._finish(-1) if bad == -1 else self._finish_bad((0, -1))
        if self.packed and self._is_flat(grads):
            return self._step_flat(grads, check)
        per_group = self._split_grads(grads)
        compiled = _backend.get_backend() == "cython"
        tables = [g.table if compiled else None for g in self.groups]
        # General path: validate all groups (in C when every group's grads pass its gate,
        # else in Python, which names the bad argument), scan all, then update all.
        if all(t is not None and t.gate(g) for t, g in zip(tables, per_group)):
            sparse: list[dict[int, tuple[np.ndarray, np.ndarray, str]]] = [{} for _ in self.groups]
        else:
            sparse = [self._validate_group(group, grads_g)
                      for group, grads_g in zip(self.groups, per_group)]
        bad_at = self._first_nonfinite(per_group, tables, sparse) if check else None
        if bad_at is not None:
            return self._finish_bad(bad_at)
        if compiled:   # one compiled call writes every group and counts the step
            steps = []
            for group, grads_g, table, sp in zip(self.groups, per_group, tables, sparse):
                clr = group.clr_at(group.step + 1)
                items = [(p, sp[i][1], a, sp[i][0], sp[i][2]) if i in sp
                         else (p, g, a, None, None, group.masters[i])
                         for i, (p, g, a) in enumerate(zip(group.params, grads_g, group.accums))]
                steps.append((group, None if sp else table, grads_g,
                              group.opts._replace(clr=clr), clr, items))
            _backend._kernels.apply_steps(steps)
            self.last_step_skipped = False
            return True
        with _InterruptsDeferred():
            for group, grads_g, sp in zip(self.groups, per_group, sparse):
                opts = group.opts._replace(clr=group.clr_at(group.step + 1))
                for i, (p, g, a) in enumerate(zip(group.params, grads_g, group.accums)):
                    if i in sp:
                        idx, values, dup = sp[i]
                        if idx.size:
                            with np.errstate(all="ignore"):
                                reference.sparse_step(p, a, idx, values, opts, dup)
                    else:
                        reference.multi_update([p], [g], [a], opts, [group.masters[i]])
                group.step += 1
            self.last_step_skipped = False
        return True

    def _is_flat(self, grads: Any) -> bool:
        if len(self.groups) == 1:
            return isinstance(grads, np.ndarray)
        return (isinstance(grads, Sequence) and len(grads) == len(self.groups)
                and all(isinstance(g, np.ndarray) for g in grads))

    def _step_flat(self, grads: Any, check: bool) -> bool:
        """packed=True with one flat grad per group (arena-sized, 1-D): one kernel call each."""
        flats = [grads] if len(self.groups) == 1 else list(grads)
        # The C gates (precomputed guarded ranges) accept most flat grads; what they refuse
        # is validated in Python, which names the problem.
        gated = _backend._current == "cython" and all(
            group.flat_table is not None and group.flat_table.gate([g])
            for group, g in zip(self.groups, flats))
        for gi, (group, g) in enumerate(zip(self.groups, flats)):
            if gated:
                break
            assert group.flat is not None
            name = "grads" if len(self.groups) == 1 else f"grads[{gi}]"
            p = group.flat[0]
            _validation.check_array(name, g, writable=False)
            if g.shape != p.shape:
                raise ValueError(f"`{name}` has shape {g.shape}; a flat grad of packed params "
                                 f"has shape {p.shape}")
            _validation.check_same_layout("packed params", p, name, g)
            _check_grads_disjoint(self._guarded(), [(name, g)])
        if check:
            for gi, g in enumerate(flats):
                if not self._all_finite_flat(self.groups[gi], g):
                    return self._finish_bad((gi, -1))
        if _backend.get_backend() == "cython":   # one compiled call: every write and count
            steps = []
            for group, g in zip(self.groups, flats):
                assert group.flat is not None
                clr = group.clr_at(group.step + 1)
                p, a = group.flat
                steps.append((group, group.flat_table, [g], group.opts._replace(clr=clr), clr,
                              [(p, g, a, None)]))
            _backend._kernels.apply_steps(steps)
            self.last_step_skipped = False
            return True
        with _InterruptsDeferred():
            for group, g in zip(self.groups, flats):
                assert group.flat is not None
                p, a = group.flat
                reference.multi_update([p], [g], [a],
                                       group.opts._replace(clr=group.clr_at(group.step + 1)))
                group.step += 1
            self.last_step_skipped = False
        return True

    @staticmethod
    def _all_finite_flat(group: _Group, g: np.ndarray) -> bool:
        if group.flat_table is not None and _backend._current == "cython":
            bad = group.flat_table.first_nonfinite([g])
            if bad != -2:
                return bool(bad == -1)
        return bool(np.isfinite(g).all())

    def _finish(self, bad: int) -> bool:
        """After the fast path's table.step (which already counted an applied step)."""
        if bad >= 0:
            return self._finish_bad((0, bad))
        self.last_step_skipped = False
        return True

    def _finish_bad(self, where: tuple[int, int]) -> bool:
        gi, i = where
        if self.nonfinite == "raise":
            name = (_grad_name(self.groups[gi].names[i]) if i >= 0
                    else "grads" if len(self.groups) == 1 else f"grads[{gi}]")
            raise ValueError(f"`{name}` holds NaN or inf (nonfinite='raise'); nothing was updated")
        self.skipped_steps += 1
        self.last_step_skipped = True
        return False

    def _validate_group(self, group: _Group, grads: list[Any]) -> dict[int, tuple[np.ndarray, np.ndarray, str]]:
        """Check every grad of the group; return {array index: (int64 indices, values)} for
        the sparse ones (a dense grad of a rowwise parameter counts as a sparse grad of all
        its rows)."""
        sparse = {}
        dense_grads = []
        for i, (name, p, g, a) in enumerate(zip(group.names, group.params, grads, group.accums)):
            gname = _grad_name(name)
            if _layout(p) != group.layouts[i]:
                raise ValueError(f"`{name}` was changed in place after the optimizer was built "
                                 f"(dtype, shape, strides or memory: {_describe(group.layouts[i])}"
                                 f" -> {_describe(_layout(p))}); its accumulator no longer "
                                 "matches it: build a new optimizer")
            if isinstance(g, SparseGrad) or group.rowwise:
                if group.masters[i] is not None:
                    raise ValueError(f"`{gname}` is sparse, but `{name}` has float32 master "
                                     "weights (master=True takes dense grads only)")
                if not isinstance(g, SparseGrad):
                    _validation.check_array(gname, g, writable=False)
                    g = SparseGrad(np.arange(p.shape[0] if p.ndim else 0), g)
                if p.ndim != 2:
                    raise ValueError(f"`{gname}` is a SparseGrad but `{name}` has shape {p.shape}; "
                                     "sparse gradients need 2-D (rows x features) parameters")
                if group.options["weight_decay_mode"] == "decoupled" and group.options["weight_decay"]:
                    raise ValueError(f"`{gname}`: sparse gradients are not supported with Keras' "
                                     "decoupled weight decay (it decays every row)")
                try:
                    o, idx, values = _validation.check_sparse(
                        p, a, g.indices, g.values, 0.0, 0.0, "outside", False, 0.0)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"{gname}: {exc}".replace("`table`", f"`{name}`")
                                    .replace("`grads`", "`values`")) from None
                dup = self.duplicates if g.duplicates is None else g.duplicates
                _validation.check_sparse_rule(group.opts, p, a, dup, True)
                sparse[i] = (idx, values, dup)
                dense_grads += [(f"{gname}.indices", g.indices), (f"{gname}.values", g.values)]
                continue
            dense_grads.append((gname, g))
            if is_low_precision(p):   # float16/bfloat16 param: grad of its dtype or float32
                check_mixed_dtypes({name: p, gname: g}, name, gname)
                _validation.check_same_shape(name, p, gname, g)
                continue
            _validation.check_array(name, p, writable=True)
            _validation.check_array(gname, g, writable=False)
            _validation.check_same_layout(name, p, gname, g)
        # every grad array (SparseGrad indices and values included) against every array this
        # step writes, in any group (the copies made by check_sparse are private)
        _check_grads_disjoint(self._guarded(), dense_grads)
        return sparse

    def _guarded(self) -> list[tuple[str, np.ndarray]]:
        """Every param and accumulator of every group, named: no grad may share their memory."""
        named = [(n, p) for grp in self.groups for n, p in zip(grp.names, grp.params)]
        named += [(f"the master weights of {n}", m) for grp in self.groups
                  for n, m in zip(grp.names, grp.masters) if m is not None]
        return named + [(f"the accumulator of {n}", a) for grp in self.groups
                        for n, a in zip(grp.names, grp.accums)]

    def _first_nonfinite(self, per_group: list[list[Any]], tables: list[Any],
                         sparse: list[dict[int, tuple[np.ndarray, np.ndarray, str]]]) -> tuple[int, int] | None:
        for gi, (grads, table, sp) in enumerate(zip(per_group, tables, sparse)):
            bad = table.first_nonfinite(grads) if table is not None and not sp else -2
            if bad == -2:
                bad = next((i for i, g in enumerate(grads)
                            if not np.isfinite(sp[i][1] if i in sp else g).all()), -1)
            if bad >= 0:
                return gi, bad
        return None

    # ------------------------------------------------------------------ state
    @property
    def accumulators(self) -> list[list[np.ndarray]]:
        """Read-only views of the accumulators, one list per group."""
        out = []
        for g in self.groups:
            views = []
            for a in g.accums:
                v = a.view()
                v.flags.writeable = False
                views.append(v)
            out.append(views)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain Python numbers/strings and NumPy arrays (copies) in a flat dict:
        `np.savez(f, **opt.state_dict())` then `opt.load_state_dict(np.load(f))` works."""
        with self._lock:   # a snapshot between steps, never in the middle of one
            return self._state_dict()

    def _state_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": STATE_FORMAT, "convention": self.convention or "",
                             "nonfinite": self.nonfinite, "groups": len(self.groups),
                             "skipped_steps": self.skipped_steps,
                             **_optimizer_rules.state(self)}
        for gi, g in enumerate(self.groups):
            d[f"group{gi}.step"] = int(g.step)
            d[f"group{gi}.arrays"] = len(g.params)
            for k in GROUP_OPTIONS:
                d[f"group{gi}.{k}"] = g.options[k]
            for i, a in enumerate(g.accums):
                d[f"group{gi}.accum{i}"] = a.copy()
            for i, m in enumerate(g.masters):
                if m is not None:
                    d[f"group{gi}.master{i}"] = m.copy()
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state_dict() (also after np.savez/np.load). Every entry is validated first
        (steps and skipped_steps integers in [0, 2**63 - 1], accumulators of the right shape
        and dtype, finite and >= 0, options valid and `rowwise` as built); on any error the
        optimizer is left unchanged."""
        with self._lock:
            self._load_state_dict(state)

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        def get(key: str) -> Any:
            if key not in state:
                raise ValueError(f"state has no entry {key!r}")
            v = state[key]
            if isinstance(v, np.ndarray) and v.ndim == 0:
                v = v.item()
            return v

        if get("format") != STATE_FORMAT:
            raise ValueError(f"state format {get('format')!r} is not {STATE_FORMAT!r}")
        if get("groups") != len(self.groups):
            raise ValueError(f"state has {get('groups')} groups, this optimizer has {len(self.groups)}")
        new_steps, new_options, new_accums = [], [], []
        for gi, g in enumerate(self.groups):
            if get(f"group{gi}.arrays") != len(g.params):
                raise ValueError(f"state group {gi} has {get(f'group{gi}.arrays')} arrays, "
                                 f"this optimizer's has {len(g.params)}")
            step = _state_count(f"group{gi}.step", get(f"group{gi}.step"))
            options = {**g.options, **{k: get(f"group{gi}.{k}") for k in GROUP_OPTIONS}}
            new_options.append(_check_options(options, f"group{gi}."))
            if new_options[-1]["rowwise"] != g.rowwise:
                raise ValueError(f"state `group{gi}.rowwise` is {new_options[-1]['rowwise']} but "
                                 f"this optimizer's group {gi} was built with rowwise={g.rowwise}")
            accs = []
            for i, a in enumerate(g.accums):
                saved = state.get(f"group{gi}.accum{i}")
                if not isinstance(saved, np.ndarray) or saved.shape != a.shape or saved.dtype != a.dtype:
                    desc = (f"{saved.dtype}{saved.shape}" if isinstance(saved, np.ndarray)
                            else type(saved).__name__)
                    raise ValueError(f"state `group{gi}.accum{i}` must be a {a.dtype} array of shape "
                                     f"{a.shape} (for {g.names[i]}), got {desc}")
                with np.errstate(invalid="ignore"):
                    if not (np.isfinite(saved).all() and (saved >= 0).all()):
                        raise ValueError(f"state `group{gi}.accum{i}` must be finite and >= 0 "
                                         "everywhere (a sum of squares)")
                accs.append(saved)
            new_steps.append(step)
            new_accums.append(accs)
        skipped = _state_count("skipped_steps", get("skipped_steps"))
        nonfinite = get("nonfinite")
        if nonfinite not in NONFINITE:
            raise ValueError(f"state `nonfinite` must be one of {NONFINITE}, got {nonfinite!r}")
        extra_copies = _optimizer_rules.check_state(self, state) + _master_state(self, state)
        # All checked: now write.
        for target, saved in extra_copies:
            np.copyto(target, saved)
        for g, step, options, accs in zip(self.groups, new_steps, new_options, new_accums):
            g.step = step
            g.set_options(options)
            for a, saved in zip(g.accums, accs):
                np.copyto(a, saved)
        self.skipped_steps = skipped
        self.nonfinite = nonfinite

    def __repr__(self) -> str:
        sizes = [sum(p.size for p in g.params) for g in self.groups]
        return (f"AdaGrad(groups={len(self.groups)}, elements={sizes}, convention={self.convention!r}, "
                f"nonfinite={self.nonfinite!r}, steps={[g.step for g in self.groups]})")


def _grad_name(param_name: str) -> str:
    """The name of a param's grad in step()'s argument: params[0]['params'][2] -> grads[0][2],
    params[3] -> grads[3], params['w'] -> grads['w']."""
    m = re.fullmatch(r"params\[(\d+)\]\['params'\]\[(\d+)\]", param_name)
    if m:
        return f"grads[{m.group(1)}][{m.group(2)}]"
    return "grads" + param_name[len("params"):]


def _state_count(name: str, value: Any) -> int:
    """A loaded counter: an integer in [0, 2**63 - 1] (an int64)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"state `{name}` must be an integer, got {value!r}")
    if not 0 <= int(value) <= _validation.MAX_STEP:
        raise ValueError(f"state `{name}` must be in [0, 2**63 - 1], got {value!r}")
    return int(value)


def _layout(a: np.ndarray) -> tuple[Any, ...]:
    """What the optimizer's accumulators and pointer tables assume about a param."""
    return (a.dtype, a.shape, a.strides, a.__array_interface__["data"][0])


def _describe(layout: tuple[Any, ...]) -> str:
    dtype, shape, strides, address = layout
    return f"{dtype} {shape} strides {strides} at {address:#x}"


class _InterruptsDeferred:
    """Hold back Ctrl-C (SIGINT) while a step writes: the step's arrays and counters are
    updated completely, then KeyboardInterrupt is raised. Only in the main thread (the only
    one Python delivers KeyboardInterrupt to) and only while Python's default SIGINT handler
    is installed (a custom handler is left alone)."""

    __slots__ = ("old", "pending")

    def __enter__(self) -> "_InterruptsDeferred":
        self.old: Any = None
        self.pending = False
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.old = signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.pending = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            if self.pending and exc_type is None:
                raise KeyboardInterrupt


def _check_disjoint(named: list[tuple[str, np.ndarray]]) -> None:
    """No two params share memory."""
    pair = _validation.overlapping_pair([a for _, a in named])
    if pair is not None:
        i, j = sorted(pair)
        raise ValueError(f"`{named[i][0]}` and `{named[j][0]}` overlap in memory; pass separate "
                         "arrays")


def _check_grads_disjoint(params: list[tuple[str, np.ndarray]], grads: list[tuple[str, np.ndarray]]) -> None:
    """No grad shares memory with any param or accumulator (grads may share memory with each
    other).
    Params sorted by start address; prefix maxima of their ends bound the backwards scan."""
    spans = sorted((_validation.byte_bounds(a), n, a) for n, a in params if a.size)
    starts = [lo for (lo, _), _, _ in spans]
    reach = list(itertools.accumulate((hi for (_, hi), _, _ in spans), max))
    for gname, g in grads:
        if not g.size:
            continue
        glo, ghi = _validation.byte_bounds(g)
        k = bisect.bisect_left(starts, ghi) - 1   # params starting before the grad ends
        while k >= 0 and reach[k] > glo:
            (_, hi), pname, p = spans[k]
            if hi > glo and _validation.shares_memory(g, p):
                raise ValueError(f"`{gname}` and `{pname}` overlap in memory; pass separate arrays")
            k -= 1


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _arena_view(arrays: ArrayList) -> np.ndarray:
    """packed=True: the params must be consecutive C-contiguous views of one contiguous arena
    (as fastadagrad.pack makes them); return the flat view of that arena's span."""
    root = _root(arrays[0])
    if not (root.flags.c_contiguous and root.flags.writeable):
        raise ValueError("packed=True needs params made by fastadagrad.pack() (one contiguous arena)")
    start = end = arrays[0].__array_interface__["data"][0]
    for i, p in enumerate(arrays):
        lo = p.__array_interface__["data"][0]
        if not p.flags.c_contiguous or _root(p) is not root or p.dtype != arrays[0].dtype or lo != end:
            raise ValueError(f"packed=True: `params[{i}]` is not the next consecutive view of one "
                             "arena; create the params with fastadagrad.pack()")
        end = lo + p.nbytes
    flat = root.reshape(-1).view(np.uint8)
    offset = start - root.__array_interface__["data"][0]
    return cast(np.ndarray, flat[offset:offset + (end - start)].view(arrays[0].dtype))


def pack(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Copy `arrays` (one dtype) into one contiguous arena; return (views, arena).

    Use the returned views from then on (your old arrays are not updated). An optimizer over
    packed params (`AdaGrad(views, packed=True)`) keeps its accumulators in one arena too, and
    `opt.step(flat_grad)` with one flat grad of `arena.size` elements is one kernel call.
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("`arrays` is empty")
    for i, a in enumerate(arrays):
        _validation.check_array(f"arrays[{i}]", a, writable=False)
    dtypes = {a.dtype.newbyteorder("=") for a in arrays}
    if len(dtypes) != 1:
        raise TypeError(f"`arrays` must share one dtype, got {sorted(map(str, dtypes))}")
    arena = np.empty(sum(a.size for a in arrays), dtype=dtypes.pop())
    views, pos = [], 0
    for a in arrays:
        v = arena[pos:pos + a.size].reshape(a.shape)
        v[...] = a
        views.append(v)
        pos += a.size
    return views, arena


# ---------------------------------------------------------------- master weights (issue 15)
def _master_weights(opt: AdaGrad, master: Any, rowwise: Any) -> bool:
    """AdaGrad(master=True): a float32 copy of every float16/bfloat16 param, which the step
    updates (float32 arithmetic) and rounds into the param in the same pass (DeepSpeed's
    pattern). Dense AdaGrad only."""
    on = _validation.check_flag("master", master)
    if on and (opt.rule != "adagrad" or opt.packed or rowwise or opt.clipnorm is not None
               or opt.global_clipnorm is not None):
        raise ValueError("`master`=True takes rule='adagrad' without packed, rowwise or clipping")
    for g in opt.groups:
        g.masters = [p.astype(np.float32) if on and is_low_precision(p) else None
                     for p in g.params]
    return on


def _master_state(opt: AdaGrad, state: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The checked (target, saved) pairs of the master weights in a state_dict."""
    out = []
    for gi, g in enumerate(opt.groups):
        for i, m in enumerate(g.masters):
            if m is None:
                continue
            key = f"group{gi}.master{i}"
            saved = state.get(key)
            if not isinstance(saved, np.ndarray) or saved.shape != m.shape or saved.dtype != m.dtype:
                raise ValueError(f"state `{key}` must be a float32 array of shape {m.shape} (the "
                                 f"master weights of {g.names[i]}), got "
                                 f"{type(saved).__name__ if not isinstance(saved, np.ndarray) else saved.dtype}")
            out.append((m, saved))
    return out
