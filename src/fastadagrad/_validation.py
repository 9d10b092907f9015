"""Argument checks shared by both backends: the one place that decides what is rejected and why.

Every check runs before any array is written, so a rejected call leaves all arrays untouched.
The compiled backend runs a cheap C-level gate on the common case (contiguous arrays, plain
Python numbers) and calls these functions for everything else, so the two backends accept and
reject exactly the same inputs with the same messages.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from fastadagrad._mixed_precision import F32 as F32_CODE
from fastadagrad._mixed_precision import check_mixed_arrays, check_mixed_dtypes, is_low_precision
# The overlap tests (_overlap.py), re-exported: callers use them as _validation.<name>.
from fastadagrad._overlap import INTERNAL_OVERLAP_EXACT_MAX as INTERNAL_OVERLAP_EXACT_MAX
from fastadagrad._overlap import byte_bounds as byte_bounds
from fastadagrad._overlap import has_internal_overlap as has_internal_overlap
from fastadagrad._overlap import overlapping_pair as overlapping_pair
from fastadagrad._overlap import shares_memory as shares_memory
from fastadagrad._stochastic import check_stochastic

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
EPS_PLACEMENTS = ("outside", "inside")
MAX_STEP = 2**63 - 1


class DenseOptions(NamedTuple):
    """Normalised hyper-parameters of one dense step (all Python floats/bools)."""

    clr: float  # lr / (1 + (step - 1) * lr_decay), in double
    eps: float
    weight_decay: float  # coupled: g += weight_decay * param
    maximize: bool
    eps_inside: bool
    decoupled_weight_decay: float = 0.0  # Keras 3: param -= param * wd * clr before the step
    zero_if_accum_zero: bool = False  # optax: no update where the accumulator is 0
    update_slots: bool = True  # TF: False applies the step without adding g*g to accum
    grad_scale: float = 1.0  # clipping by norm: g = grad * grad_scale
    sr_keys: tuple[int, int] | None = None  # stochastic rounding of half stores (_stochastic)


def require_ndarray(name: str, x: Any, *, writable: bool) -> np.ndarray:
    """`x` must be an ndarray of any dtype, not a masked array; if it is updated in place
    (`writable`), writable and without elements that share memory with each other."""
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"`{name}` must be a numpy.ndarray (it is updated in place or read as an array), "
            f"got {type(x).__name__}"
        )
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"`{name}` is a masked array; fastadagrad would ignore its mask, so it is "
                        "refused (pass `x.data` for every element, or `x.compressed()`)")
    arr: np.ndarray = x
    if writable:
        require_writable(name, arr)
    return arr


def require_writable(name: str, x: np.ndarray) -> None:
    """Updated in place: writable, and no two elements share memory."""
    if not x.flags.writeable:
        raise ValueError(f"`{name}` is read-only; it must be writable to be updated in place")
    if has_internal_overlap(x):
        raise ValueError(f"`{name}` has elements that share memory (a zero-stride or "
                         "self-overlapping view); an array updated in place must have distinct "
                         "elements")


def check_array(name: str, x: Any, *, writable: bool) -> np.ndarray:
    """`x` must be a float32/float64 ndarray, not a masked array; if it is updated in place
    (`writable`), writable and without elements that share memory with each other."""
    arr = require_ndarray(name, x, writable=False)
    if arr.dtype not in SUPPORTED_DTYPES and arr.dtype.newbyteorder("=") not in SUPPORTED_DTYPES:
        hint = ""
        if arr.dtype.kind == "f":
            hint = " (cast to float32 and keep float32 master weights)"
        raise TypeError(
            f"`{name}` has dtype {arr.dtype}; fastadagrad supports float32 and float64{hint}"
        )
    if writable:
        require_writable(name, arr)
    return arr


def check_same_layout(ref_name: str, ref: np.ndarray, name: str, x: np.ndarray) -> None:
    """`x` must have the shape and dtype of `ref` (byte order may differ)."""
    if x.dtype != ref.dtype and x.dtype.newbyteorder("=") != ref.dtype.newbyteorder("="):
        raise TypeError(f"`{name}` has dtype {x.dtype} but `{ref_name}` has dtype {ref.dtype}")
    check_same_shape(ref_name, ref, name, x)


def check_same_shape(ref_name: str, ref: np.ndarray, name: str, x: np.ndarray) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"`{name}` has shape {x.shape} but `{ref_name}` has shape {ref.shape}")


def check_no_overlap(named: dict[str, np.ndarray]) -> None:
    """No two of the arrays may share memory (exact test, so interleaved views are fine)."""
    items = list(named.items())
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1 :]:
            if shares_memory(a, b):
                raise ValueError(f"`{name_a}` and `{name_b}` overlap in memory; pass separate arrays")


def check_real(name: str, value: Any, *, minimum: float | None = 0.0) -> float:
    """A finite real number, at least `minimum`, returned as a Python float."""
    if type(value) is float and math.isfinite(value) and (minimum is None or value >= minimum):
        return value  # the common case, without the ABC checks below
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"`{name}` must be >= {minimum:g}, got {v!r}")
    return v


def check_step(step: Any) -> int:
    """The 1-based step counter: an integer >= 1."""
    if type(step) is int and 1 <= step <= MAX_STEP:
        return step
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise TypeError(f"`step` must be an integer, got {type(step).__name__}")
    s = int(step)
    if s < 1:
        raise ValueError(f"`step` must be >= 1 (it counts from 1), got {s}")
    if s > MAX_STEP:
        raise ValueError(f"`step` must be <= 2**63 - 1 (an int64 counter), got {s}")
    return s


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return bool(value)


def check_eps_placement(eps_placement: Any, name: str = "eps_placement") -> bool:
    """Return True for "inside", False for "outside"."""
    if not isinstance(eps_placement, str) or eps_placement not in EPS_PLACEMENTS:
        raise ValueError(
            f"`{name}` must be 'outside' or 'inside', got {eps_placement!r}"
        )
    return eps_placement == "inside"


def effective_lr(lr: float, lr_decay: float, step: float) -> float:
    """clr = lr / (1 + (step - 1) * lr_decay), in double precision (as torch computes it): the
    one Python place of the formula (the optimizer, the torch adapter and check_hyper call it).
    `step` an int (an exact int64 count) or, for the torch adapter, torch's float step value."""
    return lr / (1.0 + (step - 1) * lr_decay)


def check_hyper(lr: Any, eps: Any, eps_placement: Any, weight_decay: Any, lr_decay: Any,
                step: Any, maximize: Any) -> DenseOptions:
    """Validate the hyper-parameters of a dense step and normalise them."""
    lr_ = check_real("lr", lr)
    eps_ = check_real("eps", eps)
    inside = check_eps_placement(eps_placement)
    wd = check_real("weight_decay", weight_decay)
    decay = check_real("lr_decay", lr_decay)
    step_ = check_step(step)
    maximize_ = check_flag("maximize", maximize)
    return DenseOptions(effective_lr(lr_, decay, step_), eps_, wd, maximize_, inside)


def check_dense(param: Any, grad: Any, accum: Any, lr: Any, eps: Any, eps_placement: Any,
                weight_decay: Any, lr_decay: Any, step: Any, maximize: Any,
                master: Any = None, update_slots: Any = True, stochastic_rounding: Any = False,
                seed: Any = 0) -> DenseOptions:
    """Every check of `adagrad_update`; raises TypeError/ValueError naming the argument."""
    named = {"param": param, "grad": grad, "accum": accum}
    mixed = (master is not None or is_low_precision(param) or is_low_precision(grad)
             or is_low_precision(accum))
    if mixed:
        check_mixed_arrays(param, grad, accum, master)   # float16/bfloat16: _mixed_precision.py
        if master is not None:
            named["master"] = master
    else:
        check_array("param", param, writable=True)
        check_array("grad", grad, writable=False)
        check_array("accum", accum, writable=True)
        check_same_layout("param", param, "grad", grad)
        check_same_layout("param", param, "accum", accum)
    opts = check_hyper(lr, eps, eps_placement, weight_decay, lr_decay, step, maximize)
    opts = opts._replace(update_slots=check_flag("update_slots", update_slots))
    if mixed and not opts.update_slots:
        raise ValueError("`update_slots=False` is not available for float16/bfloat16 arrays or "
                         "with `master` (the mixed-precision loops always accumulate)")
    opts = opts._replace(sr_keys=check_stochastic(stochastic_rounding, seed, check_step(step),
                                                  param))
    check_no_overlap(named)
    return opts


INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def check_indices(indices: Any, n_rows: int) -> np.ndarray:
    """1-D int32/int64 indices, each in [0, n_rows) (negatives are rejected, never wrapped);
    returned as a private C-contiguous int64 copy, and it is that copy which is range-checked:
    a caller (or another thread) changing `indices` afterwards cannot reach the update."""
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"`indices` must be a numpy.ndarray of int32 or int64, got "
                        f"{type(indices).__name__}")
    if indices.dtype.newbyteorder("=") not in INDEX_DTYPES:
        raise TypeError(f"`indices` has dtype {indices.dtype}; it must be int32 or int64")
    if indices.ndim != 1:
        raise ValueError(f"`indices` must be 1-D, got shape {indices.shape}")
    idx = np.array(indices, dtype=np.int64, order="C", copy=True)
    if idx.size:
        bad = np.flatnonzero((idx < 0) | (idx >= n_rows))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(f"`indices[{pos}]` = {int(idx[pos])} is out of range for a table of "
                             f"{n_rows} rows (valid: 0 <= index < {n_rows}; negatives are not "
                             f"wrapped); {bad.size} bad index(es), nothing was updated")
    return idx


def check_sparse(table: Any, accum: Any, indices: Any, grads: Any, lr: Any, eps: Any,
                 eps_placement: Any, maximize: Any, weight_decay: Any
                 ) -> tuple[DenseOptions, np.ndarray, np.ndarray]:
    """Every check of `sparse_adagrad_update`; returns (options, int64 indices, C-contiguous aligned
    grads). Raises TypeError/ValueError naming the argument."""
    mixed = is_low_precision(table) or is_low_precision(accum) or is_low_precision(grads)
    if mixed:   # float16/bfloat16 table: _mixed_precision.py
        codes = check_mixed_dtypes({"table": table, "accum": accum, "grads": grads}, "table",
                                   "grads")
        if codes["accum"] != F32_CODE:
            raise TypeError(f"`accum` has dtype {accum.dtype}; a {table.dtype} `table` needs a "
                            "float32 accumulator")
    else:
        check_array("table", table, writable=True)
        check_array("accum", accum, writable=True)
        check_array("grads", grads, writable=False)
    if table.ndim != 2:
        raise ValueError(f"`table` must be 2-D (rows x features), got shape {table.shape}")
    n, d = table.shape
    for name, x in (("table", table), ("accum", accum)):
        if not (x.flags.c_contiguous and x.flags.aligned and x.dtype.isnative):
            raise ValueError(f"`{name}` must be C-contiguous, aligned and native-endian (it is "
                             "updated in place row by row)")
    if accum.dtype != table.dtype and not mixed:
        raise TypeError(f"`accum` has dtype {accum.dtype} but `table` has dtype {table.dtype}")
    if accum.shape not in ((n, d), (n,)):
        raise ValueError(f"`accum` has shape {accum.shape}; it must be {(n, d)} (element-wise) "
                         f"or {(n,)} (row-wise)")
    if grads.dtype.newbyteorder("=") != table.dtype and not mixed:
        raise TypeError(f"`grads` has dtype {grads.dtype} but `table` has dtype {table.dtype}")
    idx = check_indices(indices, n)
    if grads.shape != (idx.size, d):
        raise ValueError(f"`grads` has shape {grads.shape}; it must be {(idx.size, d)} "
                         "(one row per index)")
    opts = check_hyper(lr, eps, eps_placement, weight_decay, 0.0, 1, maximize)  # clr = lr
    check_no_overlap({"table": table, "accum": accum, "grads": grads, "indices": indices})
    # read-only input: a copy is harmless (mixed precision: widened to float32, exact); the C
    # loops load whole elements, so a misaligned C-contiguous view is copied too
    g = np.require(grads, dtype=np.float32 if mixed else table.dtype,
                   requirements=("C_CONTIGUOUS", "ALIGNED"))
    return opts, idx, g


# ----------------------------------------------------------------------------- issue 14
DUPLICATES = ("sum", "sequential", "keras")


def check_duplicates(duplicates: Any, name: str = "duplicates") -> str:
    """How duplicate indices of a sparse batch are applied: "sum" (torch: summed, then one
    step), "sequential" (TF's raw ops, FBGEMM: one step per occurrence, in order) or "keras"
    (Keras 3: every occurrence's g*g, then every occurrence's update)."""
    if not isinstance(duplicates, str) or duplicates not in DUPLICATES:
        raise ValueError(f"`{name}` must be one of {DUPLICATES}, got {duplicates!r}")
    return duplicates


def check_sparse_rule(opts: DenseOptions, table: np.ndarray, accum: np.ndarray, duplicates: Any,
                      update_slots: Any, stochastic_rounding: Any = False, seed: Any = 0,
                      step: Any = 1) -> DenseOptions:
    """The sparse step's duplicates rule, update_slots and stochastic rounding (after
    check_sparse)."""
    dup = check_duplicates(duplicates)
    opts = opts._replace(update_slots=check_flag("update_slots", update_slots))
    opts = opts._replace(sr_keys=check_stochastic(stochastic_rounding, seed, check_step(step),
                                                  table))
    if is_low_precision(table) and (dup != "sum" or not opts.update_slots):
        raise ValueError(f"a {table.dtype} `table` takes duplicates='sum' with update_slots=True "
                         "only (the mixed-precision sparse step merges duplicates and "
                         "accumulates)")
    if dup == "keras" and accum.ndim == 1:
        raise ValueError("`duplicates`='keras' is element-wise only (Keras has no row-wise "
                         "AdaGrad); use 'sum' or 'sequential' with a row-wise accumulator")
    if dup == "keras" and opts.weight_decay != 0:
        raise ValueError("`duplicates`='keras' does not combine with `weight_decay` (Keras' "
                         "weight decay is decoupled and dense); use 'sum' or 'sequential'")
    return opts


def check_dense_clipnorm(clipnorm: Any, param: Any, grad: Any, master: Any) -> float | None:
    """`adagrad_update`'s clipnorm (after check_dense): None or a norm > 0, float32/float64
    arrays only."""
    clip = check_clipnorm("clipnorm", clipnorm)
    if clip is not None and (master is not None or is_low_precision(param)
                             or is_low_precision(grad)):
        raise ValueError("`clipnorm` is not available for float16/bfloat16 arrays or with "
                         "`master` (the norm pass reads float32/float64 only)")
    return clip


def check_clipnorm(name: str, value: Any) -> float | None:
    """None (no clipping) or a finite norm > 0."""
    if value is None:
        return None
    v = check_real(name, value)
    if v <= 0:
        raise ValueError(f"`{name}` must be > 0 (or None: no clipping), got {v!r}")
    return v


def clip_scale(sum_of_squares: float, clipnorm: float) -> float:
    """The factor folded into the step: clipnorm / max(norm, clipnorm), norm = sqrt(Σg²), in
    double (1.0 exactly when the norm is within clipnorm; NaN if the grads hold NaN)."""
    norm = math.sqrt(sum_of_squares)
    if norm <= clipnorm:
        return 1.0
    return clipnorm / norm if not math.isnan(norm) else math.nan
