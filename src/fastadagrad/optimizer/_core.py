"""fastadagrad.AdaGrad: one object that owns the AdaGrad state of many arrays and updates them
all in one fused call per parameter group.

    opt = fastadagrad.AdaGrad([w1, b1, w2], lr=0.01)      # or groups, or a dict of arrays
    opt.step([g1, gb1, g2])                                # in place; returns True if applied

Per array and element the arithmetic is fastadagrad.adagrad_update's, with the formula flags of
the chosen `convention` (see CONVENTIONS and README "Conventions"). This module holds the class
and its step; the package's other modules hold the options (_options), the structure of
params and grads (_structure), a group's arrays and pointers (_group), the grads' checks
(_grads), checkpoints (_state), packing (_packing), the family rules (_rules) and clipping
(_clip).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

import numpy as np

from fastadagrad import _backend, _validation
from fastadagrad._mixed_precision import check_mixed_dtypes, is_low_precision
from fastadagrad.optimizer import _clip, _grads, _master, _rules, _state
from fastadagrad.optimizer._group import ArrayList, ParamGroup
from fastadagrad.optimizer._options import CONVENTIONS, GroupOptions, group_options
from fastadagrad.optimizer._packing import pack
from fastadagrad.optimizer._state import NONFINITE
from fastadagrad.optimizer._structure import Params, SparseGrad, grad_name, parse_params, split_grads

__all__ = ["AdaGrad", "CONVENTIONS", "SparseGrad", "pack"]


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
    master=True: float32 master weights for the float16/bfloat16 params (_master.py).
    """

    def __init__(self, params: Params, *, lr: float | None = None, eps: float | None = None,
                 eps_placement: str | None = None, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float | None = None,
                 maximize: bool = False, convention: str | None = None,
                 nonfinite: str = "propagate", packed: bool = False,
                 rowwise: bool = False, duplicates: str = "sum", rule: str = "adagrad",
                 l1: float = 0.0, l2: float = 0.0, clipnorm: float | None = None,
                 global_clipnorm: float | None = None, clipvalue: float | None = None,
                 master: bool = False) -> None:
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
        self.rule = _rules.check_rule(
            rule, dict(lr_decay=lr_decay, weight_decay=weight_decay, maximize=maximize,
                       rowwise=rowwise), convention, packed)
        self.clipnorm, self.global_clipnorm, self.clipvalue = _clip.check(
            clipnorm, global_clipnorm, clipvalue)
        lr, initial_accumulator_value = _rules.rule_defaults(self.rule, lr,
                                                             initial_accumulator_value)
        self.defaults = GroupOptions(
            lr=conv["lr"] if lr is None else lr, eps=conv["eps"] if eps is None else eps,
            eps_placement=conv["eps_placement"] if eps_placement is None else eps_placement,
            initial_accumulator_value=(conv["initial_accumulator_value"]
                                       if initial_accumulator_value is None
                                       else initial_accumulator_value),
            lr_decay=lr_decay, weight_decay=weight_decay, maximize=maximize, rowwise=rowwise,
            weight_decay_mode=conv["weight_decay_mode"],
            zero_if_accum_zero=conv["zero_if_accum_zero"],
            float32_lr=conv.get("float32_lr", False),
            l1=_validation.check_real("l1", l1), l2=_validation.check_real("l2", l2))
        self.defaults.checked("")
        self._structure, self._keys, raw_groups = parse_params(params)
        self.groups = self._build_groups(raw_groups)
        self.master = _master.master_weights(self, master, rowwise)
        guard = [x for g in self.groups for x in g.params + g.accums
                 + [m for m in g.masters if m is not None]]
        for g in self.groups:
            g.build_pointers(guard)
        if self.rule != "adagrad":
            _rules.init_states(self)
        self.skipped_steps = 0
        self.last_step_skipped = False
        self._lock = threading.Lock()   # one step (or state load) at a time per optimizer

    def _build_groups(self, raw_groups: list[tuple[ArrayList, list[str], dict[str, Any]]]
                      ) -> list[ParamGroup]:
        """Check every group's options and arrays, then allocate the accumulators and build
        the compiled pointer groups (each guarding every array of the optimizer)."""
        checked: list[tuple[ArrayList, list[str], GroupOptions]] = []
        for gi, (arrays, names, overrides) in enumerate(raw_groups):
            where = f"params[{gi}]." if self._structure == "groups" else ""
            options = group_options(self.defaults, overrides, where, gi)
            if self.packed and options.rowwise:
                raise ValueError(f"`{where}rowwise` cannot be combined with packed=True (the "
                                 "packed accumulator arena is element-wise); use one or the other")
            for name, p in zip(names, arrays):
                if is_low_precision(p):   # float16/bfloat16: float32 accumulators
                    check_mixed_dtypes({name: p}, name, "")
                else:
                    _validation.check_array(name, p, writable=True)
            checked.append((arrays, names, options))
        _grads.check_disjoint([(n, p) for arrays, names, _ in checked
                               for n, p in zip(names, arrays)])
        return [ParamGroup(a, n, o, self.packed) for a, n, o in checked]

    def _split_grads(self, grads: Any) -> list[list[Any]]:
        """Grads in the structure of params -> one list per group (counts checked)."""
        return split_grads(self._structure, self._keys, [len(g.params) for g in self.groups],
                           grads)

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
            return _rules.step(self, grads)
        if self.clipnorm is not None or self.global_clipnorm is not None or self.clipvalue:
            return _clip.step(self, grads)
        backend = _backend.current()
        check = self.nonfinite != "propagate"
        group = self.groups[0]
        one = self._one_group_list(grads)
        refused = False   # _prepare already refused these grads (not to be run twice)
        if one is not None:
            # Fast path (one group's list of grads, a backend with pointer groups): the C
            # gate, the finiteness scan, the update of every array and the step count in one call.
            pointers = group.pointers.get(backend)
            if pointers is not None:
                bad = pointers.step(one, group.kernel_opts, group.clr_at(group.step + 1),
                                    check, group)
                if bad != -2:
                    return self._finish(bad)
            # ... else (SparseGrads among the grads) the C checks of prepare, then one
            # compiled call writes every array and counts the step.
            prepared = self._prepare([one], backend)
            if prepared is not None:
                return self._apply_prepared(prepared, check, backend)
            refused = True
        if self.packed and type(grads) is np.ndarray and len(self.groups) == 1:
            # Packed flat step: one C call over the arena (gate: grad vs the guarded ranges
            # sorted at construction, finiteness scan, update).
            flat = group.flat_pointers.get(backend)
            if flat is not None:
                bad = flat.step([grads], group.kernel_opts, group.clr_at(group.step + 1),
                                check, group)
                if bad != -2:
                    return self._finish(-1) if bad == -1 else self._finish_bad((0, -1))
        if self.packed and self._is_flat(grads):
            return self._step_flat(grads, check, backend)
        return self._step_general(self._split_grads(grads), check, backend, refused)

    def _one_group_list(self, grads: Any) -> list[Any] | None:
        """The grads of a one-group optimizer as the list the fast paths take, when `grads`
        has the structure of `params` (a list for a list of arrays, `[list]` for one group);
        else None (the general path checks the structure and names what is wrong)."""
        if len(self.groups) != 1 or type(grads) is not list:
            return None
        if self._structure == "list":
            return grads
        if self._structure == "groups" and len(grads) == 1 and type(grads[0]) is list:
            return grads[0]
        return None

    def _step_general(self, per_group: list[list[Any]], check: bool,
                      backend: _backend.Backend, refused: bool = False) -> bool:
        """Validate all groups (in C when every group's grads pass its C gate or
        SparseGradGate.prepare, the latter skipped when `refused`: it already refused these
        grads; else in Python, which names the bad argument), scan all, then one backend call
        writes every group and counts the step."""
        pointers = [g.pointers.get(backend) for g in self.groups]
        gates = [g.gates.get(backend) for g in self.groups]
        if all(t is not None and t.gate(g) for t, g in zip(gates, per_group)):
            sparse: list[_grads.SparseItems] = [{} for _ in self.groups]
        else:
            prepared = None if refused else self._prepare(per_group, backend)
            if prepared is not None:
                return self._apply_prepared(prepared, check, backend)
            sparse = [self._validate_group(group, grads_g)
                      for group, grads_g in zip(self.groups, per_group)]
        bad_at = self._first_nonfinite(per_group, pointers, sparse, backend) if check else None
        if bad_at is not None:
            return self._finish_bad(bad_at)
        steps = []
        for group, grads_g, ptrs, sp in zip(self.groups, per_group, pointers, sparse):
            opts = group.opts_at(group.step + 1)
            steps.append((group, None if sp else ptrs, grads_g, opts, opts.clr,
                          group.step_items(grads_g, sp)))
        backend.apply_steps(steps)
        self.last_step_skipped = False
        return True

    def _prepare(self, per_group: list[list[Any]], backend: _backend.Backend
                 ) -> list[tuple[ParamGroup, list[Any], Any, list[Any]]] | None:
        """Every group's grads checked in C (SparseGradGate.prepare: plain SparseGrads and
        plain dense grads): (group, grads, step options, apply_steps items) per group, or
        None when a group's gate is missing or refuses (the Python checks then decide)."""
        out = []
        for group, grads_g in zip(self.groups, per_group):
            gate = group.sparse_gates.get(backend)
            if gate is None:
                return None
            opts = group.opts_at(group.step + 1)
            items = gate.prepare(group.params, group.accums, group.masters, grads_g,
                                 SparseGrad, self.duplicates, opts)
            if items is None:
                return None
            out.append((group, grads_g, opts, items))
        return out

    def _apply_prepared(self, prepared: list[tuple[ParamGroup, list[Any], Any, list[Any]]],
                        check: bool, backend: _backend.Backend) -> bool:
        """_prepare's groups: the finiteness scan of every grad (nonfinite="skip"/"raise"),
        then one apply_steps call writes every array and counts every group's step."""
        if check:
            for gi, (group, grads_g, _, _) in enumerate(prepared):
                bad = group.sparse_gates[backend].first_nonfinite(grads_g, SparseGrad)
                if bad >= 0:
                    return self._finish_bad((gi, bad))
        backend.apply_steps([(group, None, grads_g, opts, opts.clr, items)
                             for group, grads_g, opts, items in prepared])
        self.last_step_skipped = False
        return True

    def _is_flat(self, grads: Any) -> bool:
        if len(self.groups) == 1:
            return isinstance(grads, np.ndarray)
        return (isinstance(grads, Sequence) and len(grads) == len(self.groups)
                and all(isinstance(g, np.ndarray) for g in grads))

    def _step_flat(self, grads: Any, check: bool, backend: _backend.Backend) -> bool:
        """packed=True with one flat grad per group (arena-sized, 1-D): one kernel call each."""
        flats = [grads] if len(self.groups) == 1 else list(grads)
        # The C gates (precomputed guarded ranges) accept most flat grads; what they refuse
        # is validated in Python, which names the problem.
        pointers = [group.flat_pointers.get(backend) for group in self.groups]
        if not all(t is not None and t.gate([g]) for t, g in zip(pointers, flats)):
            for gi, (group, g) in enumerate(zip(self.groups, flats)):
                self._check_flat_grad(gi, group, g)
        if check:
            for gi, (t, g) in enumerate(zip(pointers, flats)):
                if not _all_finite_flat(t, g, backend):
                    return self._finish_bad((gi, -1))
        steps = []
        for group, t, g in zip(self.groups, pointers, flats):
            assert group.flat is not None
            opts = group.opts_at(group.step + 1)
            p, a = group.flat
            steps.append((group, t, [g], opts, opts.clr, [(p, g, a, None, None)]))
        backend.apply_steps(steps)
        self.last_step_skipped = False
        return True

    def _check_flat_grad(self, gi: int, group: ParamGroup, g: Any) -> None:
        assert group.flat is not None
        name = "grads" if len(self.groups) == 1 else f"grads[{gi}]"
        p = group.flat[0]
        _validation.check_array(name, g, writable=False)
        if g.shape != p.shape:
            raise ValueError(f"`{name}` has shape {g.shape}; a flat grad of packed params "
                             f"has shape {p.shape}")
        _validation.check_same_layout("packed params", p, name, g)
        _grads.check_grads_disjoint(self._guarded(), [(name, g)])

    def _finish(self, bad: int) -> bool:
        """After the fast path's pointer step (which already counted an applied step)."""
        if bad >= 0:
            return self._finish_bad((0, bad))
        self.last_step_skipped = False
        return True

    def _finish_bad(self, where: tuple[int, int]) -> bool:
        gi, i = where
        if self.nonfinite == "raise":
            name = (grad_name(self.groups[gi].names[i]) if i >= 0
                    else "grads" if len(self.groups) == 1 else f"grads[{gi}]")
            raise ValueError(f"`{name}` holds NaN or inf (nonfinite='raise'); nothing was updated")
        self.skipped_steps += 1
        self.last_step_skipped = True
        return False

    def _validate_group(self, group: ParamGroup, grads: list[Any]) -> _grads.SparseItems:
        return _grads.validate_group(group, grads, self.duplicates, self._guarded,
                                     group.sparse_gates.get(_backend.current()))

    def _guarded(self) -> list[tuple[str, np.ndarray]]:
        """Every param and accumulator of every group, named: no grad may share their memory."""
        named = [(n, p) for grp in self.groups for n, p in zip(grp.names, grp.params)]
        named += [(f"the master weights of {n}", m) for grp in self.groups
                  for n, m in zip(grp.names, grp.masters) if m is not None]
        return named + [(f"the accumulator of {n}", a) for grp in self.groups
                        for n, a in zip(grp.names, grp.accums)]

    @staticmethod
    def _first_nonfinite(per_group: list[list[Any]], pointers: list[Any],
                         sparse: list[_grads.SparseItems],
                         backend: _backend.Backend) -> tuple[int, int] | None:
        for gi, (grads, ptrs, sp) in enumerate(zip(per_group, pointers, sparse)):
            bad = ptrs.first_nonfinite(grads) if ptrs is not None and not sp else -2
            if bad == -2:
                bad = next((i for i, g in enumerate(grads)
                            if not backend.all_finite(sp[i][1] if i in sp else g)), -1)
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
            return _state.state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state_dict() (also after np.savez/np.load). Every entry is validated first
        (steps and skipped_steps integers in [0, 2**63 - 1], accumulators of the right shape
        and dtype, finite and >= 0, options valid and `rowwise` as built); on any error the
        optimizer is left unchanged."""
        with self._lock:
            _state.load_state_dict(self, state)

    def __repr__(self) -> str:
        sizes = [sum(p.size for p in g.params) for g in self.groups]
        return (f"AdaGrad(groups={len(self.groups)}, elements={sizes}, convention={self.convention!r}, "
                f"nonfinite={self.nonfinite!r}, steps={[g.step for g in self.groups]})")


def _all_finite_flat(pointers: Any, g: np.ndarray, backend: _backend.Backend) -> bool:
    if pointers is not None:
        bad = pointers.first_nonfinite([g])
        if bad != -2:
            return bool(bad == -1)
    return backend.all_finite(g)
