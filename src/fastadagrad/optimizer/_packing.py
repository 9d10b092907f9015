"""packed=True: the params as consecutive views of one contiguous arena (`pack` makes them)."""

from __future__ import annotations

from typing import List, Sequence, cast

import numpy as np

from fastadagrad import _validation

ArrayList = List[np.ndarray]


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def arena_view(arrays: ArrayList) -> np.ndarray:
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
