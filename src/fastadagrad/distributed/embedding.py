"""`ShardedEmbedding`: an (n_rows, dim) table and its AdaGrad accumulator split by rows."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from fastadagrad import _validation
from fastadagrad.distributed._checkpoint import _load_npy, _read_meta, _write_shard
from fastadagrad.distributed._comm import _alltoallv, _comm, _same_everywhere, agree
from fastadagrad.distributed.partition import Partition, _check_own_rows, _make_partition, _Route


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
