"""`ZeroAdaGrad`: dense AdaGrad with ZeRO stage 1 (replicated params, sharded accumulator)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from fastadagrad import _validation
from fastadagrad.distributed._checkpoint import _load_npy, _read_meta, _write_shard
from fastadagrad.distributed._comm import (_alltoallv, _comm, _displs, _mpi, _mpi_type,
                                          _same_everywhere, agree)


class ZeroAdaGrad:
    """Dense AdaGrad with ZeRO stage 1 over the ranks of `comm`.

    `params` (a list of float32/float64 arrays of one dtype, the same shapes on every rank) are
    copied into one flat arena with `fastadagrad.pack`, and rank 0's values are broadcast (as DDP
    does); use `opt.params` (views of `opt.arena`) from then on. Each rank keeps the accumulator
    of one contiguous slice of the arena (`opt.bounds[rank]`, blocks of a multiple of 16
    elements), so the optimizer state costs 1/P of the parameters per rank.

    `step(grads)` with this rank's grads (a list shaped like `params`, or one flat array of
    `arena.size`): the grads are exchanged with one Alltoallv so that each rank holds every
    rank's part of its slice, summed in rank order, `((g_0 + g_1) + g_2) + ...` (not an MPI
    reduction, whose order is unspecified), then `fastadagrad.adagrad_update` updates the slice,
    and the slices are all-gathered into every rank's arena. Bit-identical to one process running
    `adagrad_update(arena, g_0 + g_1 + ..., accum, step=t)` for every world size. The grads are
    *summed*; scale them (e.g. by 1/P) yourself for a mean. One int64 step counter; hyper-
    parameters as `fastadagrad.adagrad_update`.
    """

    def __init__(self, params: Sequence[np.ndarray], *, comm: Any = None, lr: float = 0.01,
                 eps: float = 1e-10, eps_placement: str = "outside", lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 maximize: bool = False) -> None:
        from fastadagrad.optimizer import pack

        self.comm = comm = _comm(comm)

        def check() -> tuple[list[np.ndarray], np.ndarray]:
            if not isinstance(params, (list, tuple)):
                raise TypeError(f"`params` must be a list of numpy arrays, got "
                                f"{type(params).__name__}")
            _validation.check_hyper(lr, eps, eps_placement, weight_decay, lr_decay, 1, maximize)
            _validation.check_real("initial_accumulator_value", initial_accumulator_value)
            return pack(list(params))

        self.params, self.arena = agree(comm, check)
        _same_everywhere(comm, {"shapes": [p.shape for p in self.params],
                                "dtype": str(self.arena.dtype), "lr": lr, "eps": eps,
                                "eps_placement": eps_placement, "lr_decay": lr_decay,
                                "weight_decay": weight_decay, "maximize": maximize,
                                "initial_accumulator_value": initial_accumulator_value})
        comm.Bcast(self.arena, root=0)
        n, size = self.arena.size, comm.size
        per_rank = -(-n // size)                 # ceil(n / size) ...
        chunk = -(-per_rank // 16) * 16          # ... rounded up to a multiple of 16 elements
        starts = np.minimum(np.arange(size + 1, dtype=np.int64) * chunk, n)
        self.bounds = [(int(starts[r]), int(starts[r + 1])) for r in range(size)]
        self.counts = np.diff(starts)
        self.lo, self.hi = self.bounds[comm.rank]
        self.accum = np.full(self.hi - self.lo, initial_accumulator_value, dtype=self.arena.dtype)
        self.step_count = 0
        self.hyper = dict(lr=lr, eps=eps, eps_placement=eps_placement, lr_decay=lr_decay,
                          weight_decay=weight_decay, maximize=maximize)

    def _flat_grad(self, grads: Any) -> np.ndarray:
        dt = self.arena.dtype
        if isinstance(grads, np.ndarray):
            _validation.check_array("grads", grads, writable=False)
            if grads.dtype.newbyteorder("=") != dt:
                raise TypeError(f"`grads` has dtype {grads.dtype} but the params have dtype {dt}")
            if grads.shape != (self.arena.size,):
                raise ValueError(f"`grads` has shape {grads.shape}; a flat grad must have shape "
                                 f"{(self.arena.size,)} (or pass a list shaped like the params)")
            return np.ascontiguousarray(grads, dtype=dt)
        if not isinstance(grads, (list, tuple)) or len(grads) != len(self.params):
            raise TypeError(f"`grads` must be a flat array or a list of {len(self.params)} "
                            f"arrays, got {type(grads).__name__}"
                            + (f" of length {len(grads)}" if isinstance(grads, (list, tuple)) else ""))
        for i, (g, p) in enumerate(zip(grads, self.params)):
            _validation.check_array(f"grads[{i}]", g, writable=False)
            _validation.check_same_layout(f"params[{i}]", p, f"grads[{i}]", g)
        flat = np.empty(self.arena.size, dtype=dt)
        pos = 0
        for g in grads:
            flat[pos:pos + g.size] = g.ravel()
            pos += g.size
        return flat

    def step(self, grads: Any) -> None:
        """One step with this rank's grads (see the class docstring). Collective."""
        from fastadagrad import adagrad_update

        flat = agree(self.comm, lambda: self._flat_grad(grads))
        size, mine = self.comm.size, self.hi - self.lo
        parts = _alltoallv(self.comm, flat, self.counts, np.full(size, mine, dtype=np.int64))
        parts = parts.reshape(size, mine)
        total = parts[0]
        if size > 1:
            total = np.add(parts[0], parts[1])
            for k in range(2, size):
                np.add(total, parts[k], out=total)   # ((g0 + g1) + g2) + ...: rank order
        self.step_count += 1
        adagrad_update(self.arena[self.lo:self.hi], total, self.accum, step=self.step_count,
                       **self.hyper)
        self._allgather()

    def _allgather(self) -> None:
        MPI = _mpi()
        self.comm.Allgatherv(MPI.IN_PLACE, [self.arena, (self.counts.tolist(),
                                                         _displs(self.counts).tolist()),
                                            _mpi_type(self.arena.dtype)])

    def gather_accum(self, root: int = 0) -> Optional[np.ndarray]:
        """The whole flat accumulator on `root` (None elsewhere): for tests. Collective."""
        parts = self.comm.gather(self.accum, root=root)
        return None if parts is None else np.concatenate(parts)

    def _meta(self) -> dict[str, Any]:
        return {"kind": "ZeroAdaGrad", "size": int(self.arena.size),
                "dtype": str(self.arena.dtype), "shapes": [list(p.shape) for p in self.params]}

    def save(self, path: str) -> None:
        """Each rank writes its slice of the params and of the accumulator (and its bounds) to
        `path`/rank<r>/; rank 0 writes meta.json with the step count. Collective."""
        lohi = np.array([self.lo, self.hi], dtype=np.int64)
        _write_shard(self.comm, path, dict(self._meta(), step=self.step_count),
                     {"bounds": lohi, "params": self.arena[self.lo:self.hi], "accum": self.accum})

    def load(self, path: str) -> None:
        """Load a checkpoint of any world size: each rank reads the parts of the old slices that
        overlap its own, then the params are all-gathered. Checked before anything changes; a
        bad checkpoint raises on every rank. Collective."""
        def read() -> tuple[np.ndarray, np.ndarray, int]:
            meta = _read_meta(path, self._meta())
            params = np.empty(self.hi - self.lo, dtype=self.arena.dtype)
            accum = np.empty_like(self.accum)
            covered = 0
            for r in range(int(meta["world_size"])):
                olo, ohi = (int(x) for x in _load_npy(path, r, "bounds"))
                lo, hi = max(olo, self.lo), min(ohi, self.hi)
                if lo >= hi:
                    continue
                params[lo - self.lo:hi - self.lo] = _load_npy(path, r, "params")[lo - olo:hi - olo]
                accum[lo - self.lo:hi - self.lo] = _load_npy(path, r, "accum")[lo - olo:hi - olo]
                covered += hi - lo
            if covered != self.hi - self.lo:
                raise ValueError(f"checkpoint {path!r} does not cover this rank's slice")
            return params, accum, int(meta["step"])
        params, accum, step = agree(self.comm, read)
        self.arena[self.lo:self.hi] = params
        self.accum[...] = accum
        self.step_count = step
        self._allgather()
