"""One parameter group of the optimizer: its arrays, accumulators, options, step counter and
the compiled pointer groups (kernels.ArrayGroup) that update it in one call."""

from __future__ import annotations

from typing import Any, List

import numpy as np

from fastadagrad import _backend, _validation
from fastadagrad._mixed_precision import accum_dtype
from fastadagrad._validation import DenseOptions
from fastadagrad.optimizer._options import GroupOptions
from fastadagrad.optimizer._packing import arena_view

ArrayList = List[np.ndarray]


class ParamGroup:
    """One parameter group: its arrays, accumulators, options and int64 step counter."""

    def __init__(self, params: ArrayList, names: list[str], options: GroupOptions,
                 packed: bool = False) -> None:
        self.params = params
        self.names = names
        self.layouts = [layout(p) for p in params]  # what the pointers and accumulators assume
        self.step = 0
        self.flat: tuple[np.ndarray, np.ndarray] | None = None  # (param arena, accum arena)
        self.accums: ArrayList
        init = options.initial_accumulator_value
        if packed:
            flat_param = arena_view(params)
            flat_accum = np.full_like(flat_param, init, dtype=accum_dtype(flat_param.dtype))
            self.accums, pos = [], 0
            for p in params:
                self.accums.append(flat_accum[pos:pos + p.size].reshape(p.shape))
                pos += p.size
            self.flat = (flat_param, flat_accum)
        elif options.rowwise:
            for name, p in zip(names, params):
                if p.ndim != 2:
                    raise ValueError(f"`{name}` has shape {p.shape}; rowwise=True needs 2-D "
                                     "(rows x features) parameters")
            self.accums = [np.full(p.shape[0], init, dtype=accum_dtype(p.dtype)) for p in params]
        else:
            self.accums = [np.full_like(p, init, dtype=accum_dtype(p.dtype), order="K")
                           for p in params]
        self.rowwise = options.rowwise
        self.extra: list[list[np.ndarray]] = []  # AdaGrad(rule=...): the rule's other states
        self.masters: list[np.ndarray | None] = [None] * len(params)  # AdaGrad(master=True)
        # per backend: its pointer group over the params (None: that backend has none, or the
        # arrays do not fit one), over the packed arenas, and the C gate of the grads (the
        # pointer group's, or a gate of a group that mixes dtypes; None: validate in Python)
        self.pointers: dict[Any, Any] = {}
        self.flat_pointers: dict[Any, Any] = {}
        self.gates: dict[Any, Any] = {}
        self.sparse_gates: dict[Any, Any] = {}   # ... and of its SparseGrads (None: in Python)
        self._batches: list[tuple[list[Any], ...]] = []   # step_items' cache (see _batch)
        self._batches_for: list[Any] | None = None
        self.set_options(options)

    def set_options(self, options: GroupOptions) -> None:
        self.options = options
        self.kernel_opts: DenseOptions = options.step_options(1)  # clr replaced per step
        self._opts_at = self.kernel_opts   # opts_at's last result (a new one when clr changes)

    def clr_at(self, step: int) -> float:
        return self.options.clr(step)

    def opts_at(self, step: int) -> DenseOptions:
        """The kernels' options at `step` (the precomputed ones with that step's rate)."""
        clr = self.options.clr(step)
        if self._opts_at.clr != clr:   # a constant rate builds them once
            self._opts_at = self.kernel_opts._replace(clr=clr)
        return self._opts_at

    def step_items(self, grads: list[Any], sparse: dict[int, tuple[np.ndarray, np.ndarray, str]]
                   ) -> list[tuple[Any, ...]]:
        """apply_steps' items for one validated step: an item per sparse grad `(param, values,
        accum, indices, duplicates)`, then ONE batch `(params, grads, accums, None, None,
        masters)` per dtype combination (param, grad, accum dtype, master or not) of the dense
        grads: a group that mixes dtypes is stepped in one compiled call per combination."""
        items: list[tuple[Any, ...]] = [(self.params[i], values, self.accums[i], idx, dup)
                                        for i, (idx, values, dup) in sparse.items()]
        if len(sparse) == len(grads):
            batches = []
        elif sparse:
            batches = self._batch(grads, sparse)
        else:
            grad_dtypes = [g.dtype for g in grads]
            if grad_dtypes != self._batches_for:
                self._batches, self._batches_for = self._batch(grads, sparse), grad_dtypes
            batches = self._batches
        return items + [(ps, [grads[i] for i in at], accs, None, None, ms)
                        for at, ps, accs, ms in batches]

    def _batch(self, grads: list[Any], sparse: dict[int, Any]) -> list[tuple[list[Any], ...]]:
        """(grad positions, params, accums, masters) of each dtype combination of the dense
        grads; kept while the grads' dtypes stay the same (params, accumulators and masters
        never change), so a training loop's step only gathers its grads."""
        batches: dict[tuple[Any, ...], tuple[list[Any], ...]] = {}
        for i, (p, g, a, m) in enumerate(zip(self.params, grads, self.accums, self.masters)):
            if i in sparse:
                continue
            batch = batches.setdefault((p.dtype, g.dtype, a.dtype, m is not None),
                                       ([], [], [], []))
            for column, x in zip(batch, (i, p, a, m)):
                column.append(x)
        return list(batches.values())

    def build_pointers(self, guard: ArrayList) -> None:
        """Every backend's pointer groups and gates; `guard`: every array of the optimizer
        (params, accumulators, master weights: no grad may touch one). Built once, at
        construction, from the arrays as they are then."""
        plain = (all((p.flags.c_contiguous or p.flags.f_contiguous) and p.flags.aligned
                     and p.dtype.isnative and type(p) is np.ndarray for p in self.params)
                 and not self.rowwise)
        fits = (plain and len({p.dtype for p in self.params}) <= 1   # float32 or float64 only
                and all(p.dtype in _validation.SUPPORTED_DTYPES for p in self.params))
        for backend in _backend.available():
            self.sparse_gates[backend] = backend.sparse_grad_gate(guard, self.params)
            group = backend.array_group(self.params, self.accums, guard) if fits else None
            self.pointers[backend] = group
            self.gates[backend] = (group if group is not None else
                                   backend.mixed_group_gate(self.params, self.accums, guard)
                                   if plain else None)
            if self.flat is not None:
                self.flat_pointers[backend] = backend.array_group(
                    [self.flat[0]], [self.flat[1]], guard)


def layout(a: np.ndarray) -> tuple[Any, ...]:
    """What the optimizer's accumulators and pointer groups assume about a param."""
    return (a.dtype, a.shape, a.strides, _backend.data_address(a))


def describe(layout: tuple[Any, ...]) -> str:
    dtype, shape, strides, address = layout
    return f"{dtype} {shape} strides {strides} at {address:#x}"
