"""fastadagrad.distributed: AdaGrad state sharded across the ranks of an MPI communicator.

For NumPy code that outgrows one machine. MPI (through mpi4py) is the transport; fastadagrad
only adds the per-shard kernels and a fixed, documented order of every floating-point sum, so
that results are bit-identical to one process, for every world size:

- `ShardedEmbedding`: an (n_rows, dim) table and its AdaGrad accumulator (element-wise or
  row-wise) split by rows across the ranks (a pluggable `Partition`). `lookup(indices)` fetches
  the rows a rank's batch needs; `step(indices, grads)` routes each (index, gradient row) to its
  owner with one `Alltoallv`, and the owner applies `fastadagrad.sparse_adagrad_update` to what it
  received, in rank order then position order: the same bytes as one process calling
  `sparse_adagrad_update` on the concatenation of all ranks' batches (rank 0's first).
- `ZeroAdaGrad`: dense AdaGrad with ZeRO stage 1: the parameters are replicated, the flat
  accumulator is split into one contiguous slice per rank. A step sums the ranks' grads in rank
  order ((g0 + g1) + g2 ...; not an MPI reduction, whose order is unspecified), each rank
  updates its slice with the fused kernel, and the slices are all-gathered.

Every call that takes input validates it on every rank first and then agrees with one small
collective: either every rank proceeds or every rank raises the same TypeError/ValueError
(naming the rank that saw the problem); no rank is left waiting in a collective and nothing is
written anywhere. Checkpoints: each rank writes its own shard (`save(path)`), `load(path)`
re-shards to the current world size and partition.

mpi4py is imported on first use (`pip install "fastadagrad[mpi]"`, plus an MPI library such as
Debian's `openmpi-bin libopenmpi-dev`); importing this module never needs it.
"""

from __future__ import annotations

import abc
import builtins
import json
import os
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np

from fastadagrad import _validation

__all__ = ["Partition", "BlockPartition", "CyclicPartition", "ShardedEmbedding", "ZeroAdaGrad",
           "agree"]

T = TypeVar("T")
_FORMAT = "fastadagrad.distributed/1"


def _mpi() -> Any:
    """The mpi4py.MPI module, imported on first use, with an actionable error when missing."""
    try:
        from mpi4py import MPI  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "fastadagrad.distributed needs mpi4py and an MPI library: pip install "
            "'fastadagrad[mpi]' (mpi4py>=3.1) with e.g. Open MPI installed (Debian/Ubuntu: "
            f"apt-get install openmpi-bin libopenmpi-dev); the import failed: {exc}") from exc
    return MPI


def _comm(comm: Any) -> Any:
    return _mpi().COMM_WORLD if comm is None else comm


def agree(comm: Any, check: Callable[[], T]) -> T:
    """Run `check()` on every rank of `comm` and agree on the outcome with one small collective.

    If it raised on any rank, every rank raises the error of the lowest such rank: the same
    built-in exception class (TypeError, ValueError, OSError, ...; RuntimeError for other
    classes) and the same message, prefixed with that rank. Otherwise every rank gets its own
    result. Costs one Allreduce of one integer when all is well (plus one Bcast of the message
    when not). Call it collectively, like any MPI collective.
    """
    MPI = _mpi()
    err: Optional[Exception] = None
    result: Any = None
    try:
        result = check()
    except Exception as exc:   # re-raised below, on every rank
        err = exc
    first = np.array([comm.rank if err is not None else comm.size], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, first, op=MPI.MIN)
    r = int(first[0])
    if r == comm.size:
        return result  # type: ignore[no-any-return]
    kind, msg = comm.bcast((type(err).__name__, str(err)) if comm.rank == r else None, root=r)
    cls = getattr(builtins, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls, msg = RuntimeError, f"{kind}: {msg}"
    raise cls(f"rank {r} of {comm.size}: {msg}") from err


def _same_everywhere(comm: Any, what: dict[str, Any]) -> None:
    """ValueError on every rank unless every rank passed the same settings (one allgather)."""
    every = comm.allgather(what)
    for k in what:
        values = [e[k] for e in every]
        if any(v != values[0] for v in values):
            detail = ", ".join(f"rank {i}: {v!r}" for i, v in enumerate(values))
            raise ValueError(f"`{k}` must be the same on every rank, got {detail}")


# ------------------------------------------------------------------------------ partitions
class Partition(abc.ABC):
    """Which rank owns each global row of a table, and at which local row it lives there.

    A partition of `n_rows` rows over `size` ranks. Subclass it to plug in your own (hashing,
    hot rows spread out, ...): implement `owner`, `local` and `rows_of` so that for every rank r,
    `owner(rows_of(r)) == r` and `local(rows_of(r)) == arange(len(rows_of(r)))`, every row being
    held by exactly one rank. `ShardedEmbedding` checks this contract at construction (on each
    rank for its own rows, plus one sum of the row counts). Results never depend on the partition:
    the sums and updates are in a fixed global order whatever it is.
    """

    def __init__(self, n_rows: int, size: int) -> None:
        self.n_rows = int(n_rows)
        self.size = int(size)

    @abc.abstractmethod
    def owner(self, rows: np.ndarray) -> np.ndarray:
        """The owning rank of each global row (int64 array, same length)."""

    @abc.abstractmethod
    def local(self, rows: np.ndarray) -> np.ndarray:
        """The local row index of each global row on its owner (int64 array)."""

    @abc.abstractmethod
    def rows_of(self, rank: int) -> np.ndarray:
        """The global rows `rank` holds, in local order (int64 array)."""


class BlockPartition(Partition):
    """Contiguous blocks: rank r holds rows [start_r, start_r+1); the first n_rows % size ranks
    hold one row more than the others. (The default.)"""

    def __init__(self, n_rows: int, size: int) -> None:
        super().__init__(n_rows, size)
        counts = np.full(size, n_rows // size, dtype=np.int64)
        counts[: n_rows % size] += 1
        self.starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

    def owner(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts[1:], rows, side="right").astype(np.int64)

    def local(self, rows: np.ndarray) -> np.ndarray:
        local: np.ndarray = (rows - self.starts[self.owner(rows)]).astype(np.int64)
        return local

    def rows_of(self, rank: int) -> np.ndarray:
        return np.arange(self.starts[rank], self.starts[rank + 1], dtype=np.int64)


class CyclicPartition(Partition):
    """Round robin: row i lives on rank i % size at local row i // size (spreads consecutive
    hot ids, e.g. frequency-sorted vocabularies, over all ranks)."""

    def owner(self, rows: np.ndarray) -> np.ndarray:
        return (rows % self.size).astype(np.int64)

    def local(self, rows: np.ndarray) -> np.ndarray:
        return (rows // self.size).astype(np.int64)

    def rows_of(self, rank: int) -> np.ndarray:
        return np.arange(rank, self.n_rows, self.size, dtype=np.int64)


_PARTITIONS: dict[str, type[Partition]] = {"block": BlockPartition, "cyclic": CyclicPartition}


def _make_partition(partition: Any, n_rows: int, size: int) -> Partition:
    if isinstance(partition, str):
        if partition not in _PARTITIONS:
            raise ValueError(f"`partition` must be one of {sorted(_PARTITIONS)} or a Partition, "
                             f"got {partition!r}")
        return _PARTITIONS[partition](n_rows, size)
    if not isinstance(partition, Partition):
        raise TypeError(f"`partition` must be a str or a fastadagrad.distributed.Partition, got "
                        f"{type(partition).__name__}")
    if (partition.n_rows, partition.size) != (n_rows, size):
        raise ValueError(f"`partition` is for {partition.n_rows} rows over {partition.size} ranks, "
                         f"but the table has {n_rows} rows over {size} ranks")
    return partition


def _check_own_rows(part: Partition, rank: int) -> np.ndarray:
    """This rank's rows under `part`, checked against the Partition contract."""
    rows = np.asarray(part.rows_of(rank), dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= part.n_rows)):
        raise ValueError(f"`partition.rows_of({rank})` must be 1-D rows in [0, {part.n_rows})")
    if not (np.array_equal(np.asarray(part.owner(rows)), np.full(rows.size, rank))
            and np.array_equal(np.asarray(part.local(rows)), np.arange(rows.size))):
        raise ValueError(f"`partition` breaks its contract on rank {rank}: owner(rows_of(r)) "
                         "must be r and local(rows_of(r)) must be 0, 1, 2, ...")
    return rows


def _mpi_type(dtype: np.dtype) -> Any:
    MPI = _mpi()
    return {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE,
            np.dtype(np.int64): MPI.INT64_T}[np.dtype(dtype)]


def _displs(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def _alltoallv(comm: Any, send: np.ndarray, sendcounts: np.ndarray, recvcounts: np.ndarray,
               width: int = 1) -> np.ndarray:
    """Alltoallv of rows of `width` elements: send[...] grouped by destination rank with
    `sendcounts` rows each; returns the received rows grouped by source rank (rank order)."""
    recv = np.empty((int(recvcounts.sum()),) + send.shape[1:], dtype=send.dtype)
    t = _mpi_type(send.dtype)
    sc, rc = sendcounts * width, recvcounts * width
    comm.Alltoallv([send, (sc.tolist(), _displs(sc).tolist()), t],
                   [recv, (rc.tolist(), _displs(rc).tolist()), t])
    return recv


class _Route:
    """Where one batch's indices go: the order that groups them by owner (stable, so each
    owner receives them in position order), how many go to / come from each rank, and the local
    row indices this rank received (grouped by source rank, in rank order)."""

    __slots__ = ("order", "sendcounts", "recvcounts", "local")

    def __init__(self, comm: Any, part: Partition, idx: np.ndarray) -> None:
        owner = part.owner(idx)
        # grouped by owner, position order kept; None when already grouped (e.g. one owner)
        self.order: Optional[np.ndarray] = (
            None if owner.size < 2 or bool(np.all(owner[1:] >= owner[:-1]))
            else np.argsort(owner, kind="stable"))
        self.sendcounts = np.bincount(owner, minlength=comm.size).astype(np.int64)
        self.recvcounts = np.empty(comm.size, dtype=np.int64)
        comm.Alltoall(self.sendcounts, self.recvcounts)
        send_local = np.ascontiguousarray(self.grouped(part.local(idx)), dtype=np.int64)
        self.local = _alltoallv(comm, send_local, self.sendcounts, self.recvcounts)

    def grouped(self, x: np.ndarray) -> np.ndarray:
        """`x` (one entry per index of the batch) in send order."""
        return x if self.order is None else x[self.order]


# ------------------------------------------------------------------------------ checkpoints
def _shard_dir(path: str, rank: int) -> str:
    return os.path.join(path, f"rank{rank:05d}")


def _write_shard(comm: Any, path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Rank r writes path/rank000r/<name>.npy; rank 0 writes path/meta.json. Collective; an I/O
    error on any rank raises on every rank."""
    def write() -> None:
        d = _shard_dir(path, comm.rank)
        os.makedirs(d, exist_ok=True)
        for name, a in arrays.items():
            np.save(os.path.join(d, name + ".npy"), a)
        if comm.rank == 0:
            with open(os.path.join(path, "meta.json"), "w") as f:
                json.dump(dict(meta, format=_FORMAT, world_size=comm.size), f)
    agree(comm, write)


def _read_meta(path: str, expected: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's meta.json, checked against what this object holds."""
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"`path` {path!r} is not a fastadagrad.distributed checkpoint: {exc}")
    if meta.get("format") != _FORMAT:
        raise ValueError(f"`path` {path!r} has format {meta.get('format')!r}, expected {_FORMAT!r}")
    for k, v in expected.items():
        if meta.get(k) != v:
            raise ValueError(f"checkpoint `{k}` is {meta.get(k)!r} but this object has {v!r}")
    return dict(meta)


def _load_npy(path: str, rank: int, name: str) -> np.ndarray:
    a: np.ndarray = np.load(os.path.join(_shard_dir(path, rank), name + ".npy"), mmap_mode="r")
    return a


# ------------------------------------------------------------------------------ sparse table
class ShardedEmbedding:
    """An (n_rows, dim) table with sparse AdaGrad, its rows split across the ranks of `comm`.

    Args:
        n_rows, dim: the global table's shape.
        comm: an mpi4py communicator (default `MPI.COMM_WORLD`). All methods are collective:
            every rank calls them, in the same order.
        dtype: float32 or float64.
        partition: "block" (default, `BlockPartition`), "cyclic" (`CyclicPartition`) or a
            `Partition` instance for (n_rows, comm.size).
        rowwise: one accumulator per row (`accum` of shape (rows,)) instead of per element.
        lr, eps, eps_placement, maximize, weight_decay: as `fastadagrad.sparse_adagrad_update`.
        initial_accumulator_value: the accumulator's starting value (>= 0).
        init: optional callable mapping an int64 array of global rows to their initial values
            (len(rows), dim), so the table does not depend on the world size; zeros otherwise.

    Attributes: `table`, `accum` (this rank's shard, C-contiguous, updated in place),
    `rows` (the global row of each local row), `partition`, `comm`.
    """

    def __init__(self, n_rows: int, dim: int, *, comm: Any = None, dtype: Any = np.float32,
                 partition: Any = "block", rowwise: bool = False, lr: float = 0.01,
                 eps: float = 1e-10, eps_placement: str = "outside", maximize: bool = False,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 init: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        self.comm = comm = _comm(comm)

        def check() -> tuple[Partition, np.ndarray, np.dtype]:
            for name, v in (("n_rows", n_rows), ("dim", dim)):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                    raise TypeError(f"`{name}` must be an int >= 0, got {v!r}")
            dt = np.dtype(dtype)
            if dt not in _validation.SUPPORTED_DTYPES:
                raise TypeError(f"`dtype` must be float32 or float64, got {dt}")
            _validation.check_hyper(lr, eps, eps_placement, weight_decay, 0.0, 1, maximize)
            _validation.check_flag("rowwise", rowwise)
            _validation.check_real("initial_accumulator_value", initial_accumulator_value)
            part = _make_partition(partition, int(n_rows), comm.size)
            return part, _check_own_rows(part, comm.rank), dt

        self.partition, self.rows, self.dtype = agree(comm, check)
        total = comm.allreduce(int(self.rows.size))
        if total != n_rows:
            raise ValueError(f"`partition` must hold every row exactly once: its ranks hold "
                             f"{total} rows for a table of {n_rows}")
        _same_everywhere(comm, {"n_rows": int(n_rows), "dim": int(dim), "dtype": str(self.dtype),
                                "rowwise": bool(rowwise), "lr": lr, "eps": eps,
                                "eps_placement": eps_placement, "maximize": maximize,
                                "weight_decay": weight_decay,
                                "initial_accumulator_value": initial_accumulator_value,
                                "partition": type(self.partition).__name__})
        self.n_rows, self.dim, self.rowwise = int(n_rows), int(dim), bool(rowwise)
        self.hyper = dict(lr=lr, eps=eps, eps_placement=eps_placement, maximize=maximize,
                          weight_decay=weight_decay)

        def create() -> np.ndarray:
            table = np.zeros((self.rows.size, self.dim), dtype=self.dtype)
            if init is not None:
                table[...] = init(self.rows)
            return table

        self.table = agree(comm, create)   # a failing `init` raises on every rank
        shape = (self.rows.size,) if rowwise else (self.rows.size, self.dim)
        self.accum = np.full(shape, initial_accumulator_value, dtype=self.dtype)

    def _check_batch(self, indices: Any, grads: Any = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        idx = _validation.check_indices(indices, self.n_rows)
        if grads is None:
            return idx, None
        _validation.check_array("grads", grads, writable=False)
        if grads.dtype.newbyteorder("=") != self.dtype:
            raise TypeError(f"`grads` has dtype {grads.dtype} but the table has dtype {self.dtype}")
        if grads.shape != (idx.size, self.dim):
            raise ValueError(f"`grads` has shape {grads.shape}; it must be "
                             f"{(idx.size, self.dim)} (one row per index)")
        return idx, grads

    def lookup(self, indices: np.ndarray) -> np.ndarray:
        """The rows `indices` (global, int32/int64, 1-D) of this rank's batch: a new
        (len(indices), dim) array, in the order of `indices`. Collective."""
        idx, _ = agree(self.comm, lambda: self._check_batch(indices))
        route = _Route(self.comm, self.partition, idx)
        rows = self.table[route.local]   # the rows other ranks asked for, by requester
        back = _alltoallv(self.comm, rows, route.recvcounts, route.sendcounts, self.dim)
        if route.order is None:
            return back
        out = np.empty((idx.size, self.dim), dtype=self.dtype)
        out[route.order] = back
        return out

    def step(self, indices: np.ndarray, grads: np.ndarray) -> None:
        """One sparse AdaGrad step with this rank's batch (`grads[k]` is the gradient of row
        `indices[k]`). Collective. Bit-identical to one process calling
        `sparse_adagrad_update(table, accum, concat(indices of ranks 0..P-1),
        concat(grads of ranks 0..P-1), ...)` on the whole table: each owner receives its rows'
        gradients in that global order and merges duplicates in it."""
        from fastadagrad import sparse_adagrad_update

        idx, g = agree(self.comm, lambda: self._check_batch(indices, grads))
        assert g is not None
        route = _Route(self.comm, self.partition, idx)
        send = np.ascontiguousarray(route.grouped(g), dtype=self.dtype)
        recv = _alltoallv(self.comm, send, route.sendcounts, route.recvcounts, self.dim)
        sparse_adagrad_update(self.table, self.accum, route.local, recv, **self.hyper)

    def gather(self, root: int = 0) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(table, accum) of the whole table on `root` (None elsewhere): for tests and small
        tables. Collective."""
        parts = self.comm.gather((self.rows, self.table, self.accum), root=root)
        if parts is None:
            return None
        table = np.empty((self.n_rows, self.dim), dtype=self.dtype)
        accum = np.empty((self.n_rows,) + self.accum.shape[1:], dtype=self.dtype)
        for rows, t, a in parts:
            table[rows], accum[rows] = t, a
        return table, accum

    def _meta(self) -> dict[str, Any]:
        return {"kind": "ShardedEmbedding", "n_rows": self.n_rows, "dim": self.dim,
                "dtype": str(self.dtype), "rowwise": self.rowwise}

    def save(self, path: str) -> None:
        """Write this rank's shard to `path`/rank<r>/ (its global rows, table and accumulator
        rows) and rank 0 writes `path`/meta.json. `path` must be on a file system every rank
        sees if the checkpoint is to be loaded by other ranks. Collective."""
        _write_shard(self.comm, path, self._meta(),
                     {"rows": self.rows, "table": self.table, "accum": self.accum})

    def load(self, path: str) -> None:
        """Load a checkpoint written by `save` with any world size and partition: each rank
        reads the rows it owns now from every old shard (memory-mapped). Everything is checked
        (format, shape, dtype, row-wise or not, every row present exactly once) before the
        table changes; a bad checkpoint raises on every rank and changes nothing. Collective."""
        def read() -> tuple[np.ndarray, np.ndarray]:
            meta = _read_meta(path, self._meta())
            table, accum = np.empty_like(self.table), np.empty_like(self.accum)
            seen = np.zeros(self.rows.size, dtype=np.int64)
            for r in range(int(meta["world_size"])):
                rows = np.asarray(_load_npy(path, r, "rows"))
                mine = np.flatnonzero(self.partition.owner(rows) == self.comm.rank)
                if mine.size == 0:
                    continue
                loc = self.partition.local(rows[mine])
                table[loc] = _load_npy(path, r, "table")[mine]
                accum[loc] = _load_npy(path, r, "accum")[mine]
                np.add.at(seen, loc, 1)
            if not np.all(seen == 1):
                raise ValueError(f"checkpoint {path!r} does not hold every row of this rank's "
                                 "shard exactly once")
            return table, accum
        table, accum = agree(self.comm, read)
        self.table[...] = table
        self.accum[...] = accum


# ------------------------------------------------------------------------------ dense ZeRO-1
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
