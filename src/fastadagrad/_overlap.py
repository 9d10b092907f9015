"""Memory overlap tests on NumPy arrays: within one array (zero strides, half-overlapping rows)
and between arrays (exact, with byte bounds to skip disjoint pairs). The checks that raise on
overlap are in _validation.py."""

from __future__ import annotations

import numpy as np


#: Self-overlap of views that are not plainly non-overlapping is decided exactly up to this
#: many elements (one int64 offset each); larger ones are refused as possibly overlapping.
INTERNAL_OVERLAP_EXACT_MAX = 1 << 22


def has_internal_overlap(a: np.ndarray) -> bool:
    """Do two different elements of `a` share a byte (zero strides, half-overlapping rows)?

    Contiguous arrays never do. Otherwise, with the dimensions sorted by |stride|, each stride
    at least the span of the smaller dimensions proves there is no overlap (slices,
    transposes, negative strides); anything else is decided exactly from the sorted byte
    offsets of all elements (too large to list: reported as overlapping)."""
    if a.size <= 1 or a.flags.c_contiguous or a.flags.f_contiguous:
        return False
    span = a.itemsize
    for stride, n in sorted((abs(s), n) for n, s in zip(a.shape, a.strides) if n > 1):
        if stride < span:
            break
        span += stride * (n - 1)
    else:
        return False
    if a.size > INTERNAL_OVERLAP_EXACT_MAX:
        return True
    offsets = np.zeros(1, dtype=np.int64)
    for n, s in zip(a.shape, a.strides):
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * s).ravel()
    offsets.sort()
    return bool((np.diff(offsets) < a.itemsize).any())


def shares_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact overlap test (np.shares_memory), treated as overlapping when it is too hard."""
    try:
        # numpy's stub types max_work as Literal[-1, 0]; at run time any bound is accepted
        return bool(np.shares_memory(a, b, max_work=10**6))  # type: ignore[arg-type]
    except np.exceptions.TooHardError:  # pragma: no cover - pathological strides only
        return True


def byte_bounds(a: np.ndarray) -> tuple[int, int]:
    """[low, high) addresses of the memory `a` spans (numpy 1.x and 2.x)."""
    utils = getattr(np.lib, "array_utils", np)
    lo, hi = utils.byte_bounds(a)
    return int(lo), int(hi)


def overlapping_pair(arrays: list[np.ndarray]) -> tuple[int, int] | None:
    """Indices (i, j) of two arrays that share memory, or None: sorted by byte bounds, with
    the exact test only where bounds meet (O(n log n) for disjoint arrays)."""
    spans = sorted((*byte_bounds(a), k) for k, a in enumerate(arrays) if a.size)
    for i in range(len(spans)):
        for j in range(i + 1, len(spans)):
            if spans[j][0] >= spans[i][1]:
                break
            if shares_memory(arrays[spans[i][2]], arrays[spans[j][2]]):
                return spans[i][2], spans[j][2]
    return None
