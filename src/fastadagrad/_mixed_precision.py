"""Mixed precision (issue 15): which float16 / bfloat16 combinations are accepted, and the
storage-type codes the C loops use.

bfloat16 comes from `ml_dtypes` (the package JAX and TensorFlow use; NumPy has no bfloat16).
It is an optional dependency, imported only when an array whose dtype is named "bfloat16" is
passed, so `import fastadagrad` never needs it.

Accepted combinations (every array may be any layout; byte order may differ):

    param              grad                 accum                master (optional)
    float16/bfloat16   param's or float32   float32 or param's   float32
    float32/float64    param's              param's              (not accepted)

Arithmetic: every element widened to float32, the float32 formula, one rounding to nearest
even per stored result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Storage codes shared with the C loops (_csrc/kernel_table.h: FA_DT_*).
F32, F16, BF16 = 0, 1, 2
_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)

ACCEPTED = ("param float16 or bfloat16 with grad of the param's dtype or float32, accum float32 "
            "or the param's dtype (and master, if given, float32); or param, grad and accum all "
            "float32 or all float64")


def bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16 dtype (imported on first use)."""
    try:
        import ml_dtypes
    except ImportError as exc:  # pragma: no cover - exercised with ml_dtypes hidden
        raise TypeError("a bfloat16 array was passed, but bfloat16 support needs the optional "
                        "package ml_dtypes (`pip install ml_dtypes`), which could not be "
                        f"imported: {exc}") from exc
    dtype: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return dtype


_CODES: dict[np.dtype, int] = {}   # dtypes already accepted by storage_code (per-call speed)


def is_low_precision(x: Any) -> bool:
    """True if `x` is an ndarray of dtype float16 or (any package's) bfloat16."""
    if not isinstance(x, np.ndarray) or x.dtype.itemsize != 2:   # both are 2 bytes wide
        return False
    code = _CODES.get(x.dtype)
    if code is not None:
        return code != F32
    return bool(x.dtype.newbyteorder("=") == _F16 or x.dtype.name == "bfloat16")


def accum_dtype(param_dtype: np.dtype) -> np.dtype:
    """The optimizer's accumulator dtype for a param: float32 for float16/bfloat16 params,
    else the param's own dtype."""
    if param_dtype.newbyteorder("=") == _F16 or param_dtype.name == "bfloat16":
        return _F32
    return param_dtype


def storage_code(name: str, dtype: np.dtype) -> int:
    """F32, F16 or BF16 for the dtype of argument `name`; TypeError for anything else."""
    code = _CODES.get(dtype)
    if code is not None:
        return code
    native = dtype.newbyteorder("=")
    if native == _F32:
        code = F32
    elif native == _F16:
        code = F16
    elif dtype.name == "bfloat16":
        if native != bfloat16():
            raise TypeError(f"`{name}` has a bfloat16 dtype that is not ml_dtypes.bfloat16 "
                            f"({dtype.type.__module__}); convert it with "
                            "`x.astype(ml_dtypes.bfloat16)`")
        code = BF16
    else:
        raise TypeError(f"`{name}` has dtype {dtype}; accepted combinations: {ACCEPTED}")
    _CODES[dtype] = code
    return code


def check_mixed_arrays(param: Any, grad: Any, accum: Any, master: Any = None
                       ) -> tuple[int, int, int]:
    """The array checks of a mixed-precision dense step (hyper-parameters and overlap are the
    caller's). Returns the storage codes of (param, grad, accum)."""
    from fastadagrad._validation import check_same_shape

    arrays = {"param": param, "grad": grad, "accum": accum}
    if master is not None:
        arrays["master"] = master
    codes = check_mixed_dtypes(arrays, "param", "grad")
    for name, x in arrays.items():
        if name != "param":
            check_same_shape("param", param, name, x)
    return codes["param"], codes["grad"], codes["accum"]


def check_mixed_dtypes(arrays: dict[str, Any], param: str, grad: str) -> dict[str, int]:
    """`arrays` (named; the one named `param` is updated, `grad` read, "master" optional, any
    other one an accumulator): ndarrays of an accepted combination. Returns their codes."""
    from fastadagrad._validation import require_ndarray

    for name, x in arrays.items():
        require_ndarray(name, x, writable=name != grad)
    codes = {name: storage_code(name, x.dtype) for name, x in arrays.items()}
    p = codes[param]
    pdt = arrays[param].dtype
    if p == F32:
        if all(code == F32 for code in codes.values()):   # only `master` brought us here
            raise TypeError(f"`master` is only accepted with a float16 or bfloat16 `{param}`, "
                            f"got `{param}` of dtype {pdt}")
        low = next(name for name in arrays if codes[name] != F32)
        raise TypeError(f"`{low}` has dtype {arrays[low].dtype} but `{param}` has dtype "
                        f"{pdt}; accepted combinations: {ACCEPTED}")
    for name, code in codes.items():
        if name == "master" and code != F32:
            raise TypeError(f"`master` has dtype {arrays[name].dtype}; it must be float32 (the "
                            f"master weights of a {pdt} `{param}`)")
        if code not in (p, F32):
            raise TypeError(f"`{name}` has dtype {arrays[name].dtype} but `{param}` has dtype "
                            f"{pdt}; accepted combinations: {ACCEPTED}")
    return codes
