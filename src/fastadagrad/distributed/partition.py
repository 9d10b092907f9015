"""Which rank owns which rows of a ShardedEmbedding (`Partition` and its two built-ins), and
the routing of a batch's rows to their owners."""

from __future__ import annotations

import abc
from typing import Any, Optional

import numpy as np

from fastadagrad.distributed._comm import _alltoallv


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
