"""Hand-written numba AdaGrad loops: the peers that `python -m fastadagrad bench --peers` and
benchmarks/sparse_small_d.py time fastadagrad against (what a numba user would write instead).
numba is optional: importing this module imports it (ImportError when it is absent).

All three compute in the arrays' dtype, in fastadagrad's operation order (lr and eps are cast to
the dtype first), so the dense and element-wise sparse loops give fastadagrad's bytes.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(parallel=True, cache=False)
def _dense(param: Any, grad: Any, accum: Any, lr: Any, eps: Any) -> None:
    for i in numba.prange(param.shape[0]):
        g = grad[i]
        a = accum[i] + g * g
        accum[i] = a
        param[i] = param[i] - (lr * g) / (np.sqrt(a) + eps)


@numba.njit(parallel=True, cache=False)
def _sparse(table: Any, accum: Any, rows: Any, inverse: Any, grads: Any, lr: Any, eps: Any,
            fd: Any, rowwise: bool) -> None:
    d = table.shape[1]
    merged = np.zeros((rows.shape[0], d), table.dtype)
    for p in range(inverse.shape[0]):   # duplicates summed in order of appearance
        u = inverse[p]
        for j in range(d):
            merged[u, j] = merged[u, j] + grads[p, j]
    for u in numba.prange(rows.shape[0]):
        r = rows[u]
        if rowwise:
            s = merged[u, 0] * merged[u, 0]
            for j in range(1, d):
                s = s + merged[u, j] * merged[u, j]
            a = accum[r, 0] + s / fd
            accum[r, 0] = a
            denom = np.sqrt(a) + eps
            for j in range(d):
                table[r, j] = table[r, j] - (lr * merged[u, j]) / denom
        else:
            for j in range(d):
                g = merged[u, j]
                a = accum[r, j] + g * g
                accum[r, j] = a
                table[r, j] = table[r, j] - (lr * g) / (np.sqrt(a) + eps)


def dense_step(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, lr: float = 0.01,
               eps: float = 1e-10) -> None:
    """accum += g*g; param -= lr*g / (sqrt(accum) + eps), a prange loop (1-d arrays)."""
    t = param.dtype.type
    _dense(param, grad, accum, t(lr), t(eps))


def sparse_step(table: np.ndarray, accum: np.ndarray, indices: np.ndarray, grads: np.ndarray,
                lr: float = 0.01, eps: float = 1e-10) -> None:
    """The sparse step over np.unique's rows (duplicates summed first), a prange loop over the
    unique rows; accum (n, d) element-wise or (n,) row-wise (accum += mean(g*g) per row)."""
    rows, inverse = np.unique(indices, return_inverse=True)
    t = table.dtype.type
    rowwise = accum.ndim == 1
    _sparse(table, accum.reshape(-1, 1) if rowwise else accum, rows, inverse.reshape(-1), grads,
            t(lr), t(eps), t(table.shape[1]), rowwise)
