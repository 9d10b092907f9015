"""Clipping by value (Keras' `clipvalue`, torch's `clip_grad_value_`) and the clipping checks
shared by the dense, sparse and family functions and the optimizer (both backends).

Per gradient element, in the arrays' dtype, before anything else of the step:
    g = hi if g > hi else g;  g = lo if g < lo else g      hi = dtype(clipvalue), lo = -hi
NaN stays NaN (as np.clip, torch.clamp, tf.clip_by_value), +-inf become +-hi. Exclusive with
clipnorm / global_clipnorm, as in Keras (its optimizers raise when more than one is set).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastadagrad import _validation as v
from fastadagrad._mixed_precision import is_low_precision


def check_clipvalue(value: Any) -> float:
    """0.0 (no clipping) for None, else a finite bound > 0."""
    if value is None:
        return 0.0
    c = v.check_real("clipvalue", value)
    if c <= 0:
        raise ValueError(f"`clipvalue` must be > 0 (or None: no clipping), got {c!r}")
    return c


def check_exclusive(clipnorm: float | None, clipvalue: float,
                    global_clipnorm: float | None = None) -> None:
    if sum(x is not None for x in (clipnorm, global_clipnorm)) + (clipvalue > 0) > 1:
        raise ValueError("`clipnorm`, `clipvalue` and `global_clipnorm` are exclusive (as in "
                         "Keras); pass one")


def check_dense_clipvalue(clipvalue: Any, clipnorm: float | None, param: Any, grad: Any,
                          master: Any) -> float:
    """`adagrad_update`'s clipvalue (after check_dense and check_dense_clipnorm)."""
    c = check_clipvalue(clipvalue)
    check_exclusive(clipnorm, c)
    if c > 0 and (master is not None or is_low_precision(param) or is_low_precision(grad)):
        raise ValueError("`clipvalue` is not available for float16/bfloat16 arrays or with "
                         "`master`")
    return c


def check_sparse_clips(clipnorm: Any, clipvalue: Any, table: np.ndarray,
                       accum: np.ndarray) -> tuple[float | None, float]:
    """The sparse step's clipnorm (the norm of the grads' rows as passed) and clipvalue."""
    cn = v.check_clipnorm("clipnorm", clipnorm)
    cv = check_clipvalue(clipvalue)
    check_exclusive(cn, cv)
    if (cn is not None or cv > 0) and is_low_precision(table):
        raise ValueError(f"clipping is not available for a {table.dtype} `table`")
    if cv > 0 and accum.ndim == 1:
        raise ValueError("`clipvalue` clips element-wise steps; a row-wise (N,) `accum` "
                         "cannot be clipped by value (clipnorm works)")
    return cn, cv


def clip_values(g: np.ndarray, clipvalue: float) -> np.ndarray:
    """The NumPy twin of the loops' clip: a new array, g's values clipped to [-hi, hi] with
    hi = dtype(clipvalue), by the same two selects (NaN kept)."""
    t = g.dtype.newbyteorder("=").type
    hi = t(clipvalue)
    lo = np.negative(hi)
    out = np.where(g > hi, hi, g)
    return np.asarray(np.where(out < lo, lo, out), dtype=g.dtype.newbyteorder("="))
