"""MPI transport for fastadagrad.distributed: mpi4py imported on first use, the cross-rank
agreement (`agree`), and the variable-count all-to-all the sparse step routes rows with."""

from __future__ import annotations

import builtins
from typing import Any, Callable, Optional, TypeVar

import numpy as np



T = TypeVar("T")


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
