"""Sharded checkpoints: each rank writes its own shard directory, rank 0 the metadata."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from fastadagrad.distributed._comm import agree


_FORMAT = "fastadagrad.distributed/1"


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
