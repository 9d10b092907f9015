"""fastadagrad.numba's checks, all before any write: the type-level refusals decided when numba
compiles a call (returned as the Python API's TypeError/ValueError) and the compiled value checks."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from fastadagrad._numba_compat import _jit, numba, overload, types

_FLOATS = (types.float32, types.float64)


# Type-level refusals are decided when numba compiles a call (the overloads below) and surface
# at run time as the Python API's TypeError/ValueError, not as a numba typing error; value-level
# checks run in the compiled code. Both before anything is written.
def _unwrap(x: Any) -> Any:
    """The numba type of an argument, or of its default value when the caller omitted it."""
    if isinstance(x, types.Omitted):
        return numba.typeof(x.value)
    return x if isinstance(x, types.Type) else numba.typeof(x)


def _array_refusal(name: str, x: Any, *, writable: bool, like: tuple[str, Any] | None = None,
                   ndim: int | None = None) -> tuple[type[Exception], str] | None:
    """Why `x` (a numba type) cannot be the array `name` (of the dtype of the array `like`
    names, if given), or None."""
    if not isinstance(x, types.Array):
        return TypeError, f"`{name}` must be a numpy.ndarray"
    if x.dtype not in _FLOATS:
        return TypeError, f"`{name}` has an unsupported dtype; fastadagrad supports float32 and float64"
    if like is not None and x.dtype != like[1].dtype:
        return TypeError, f"`{name}` must have the dtype of `{like[0]}`"
    if writable and not x.mutable:
        return ValueError, f"`{name}` is read-only; it must be writable to be updated in place"
    if ndim is not None and x.ndim != ndim:
        return ValueError, f"`{name}` must be {ndim}-D"
    return None


def _hyper_refusal(**named: Any) -> tuple[type[Exception], str] | None:
    """Why one of the hyper-parameters (numba types) has the wrong kind, or None."""
    for name, x in named.items():
        x = _unwrap(x)
        if name == "eps_placement":
            if not isinstance(x, (types.UnicodeType, types.StringLiteral)) or (
                    isinstance(x, types.StringLiteral)
                    and x.literal_value not in ("outside", "inside")):
                return ValueError, "`eps_placement` must be 'outside' or 'inside'"
        elif name == "maximize":
            if not isinstance(x, types.Boolean):
                return TypeError, "`maximize` must be a bool"
        elif name == "step":
            if not isinstance(x, types.Integer):
                return TypeError, "`step` must be an integer"
        elif not isinstance(x, (types.Integer, types.Float)):
            return TypeError, f"`{name}` must be a real number"
    return None


def _refuse(exc: type[Exception], message: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    """An implementation with `impl`'s signature (names, annotations, defaults) that raises
    `message` (numba requires an overload's implementations to share one signature)."""
    args = ", ".join(p.name + ": Any" + ("" if p.default is p.empty else f" = {p.default!r}")
                     for p in inspect.signature(impl).parameters.values())
    namespace: dict[str, Any] = {"exc": exc, "message": message}
    exec(f"from __future__ import annotations\ndef refuse({args}) -> Any:\n"
         "    raise exc(message)\n", namespace)
    return namespace["refuse"]  # type: ignore[no-any-return]


@_jit
def _bad_real(x: float) -> bool:
    """Not a finite number >= 0 (NaN fails both comparisons)."""
    return not (x >= 0.0 and x < np.inf)


@_jit
def _overlap(a: Any, b: Any) -> bool:
    """Two contiguous arrays share memory (for contiguous arrays the byte ranges meeting is the
    exact test)."""
    if a.size == 0 or b.size == 0:
        return False
    alo, blo = a.ctypes.data, b.ctypes.data
    return bool(alo < blo + b.size * b.itemsize and blo < alo + a.size * a.itemsize)


@_jit
def _misaligned(a: Any) -> bool:
    return bool(a.ctypes.data % a.itemsize != 0)


@_jit
def _check_hyper(lr: float, eps: float, weight_decay: float, lr_decay: float, step: int) -> None:
    """Validate the numeric hyper-parameters' values."""
    if _bad_real(lr):
        raise ValueError("`lr` must be a finite real number >= 0")
    if _bad_real(eps):
        raise ValueError("`eps` must be a finite real number >= 0")
    if _bad_real(weight_decay):
        raise ValueError("`weight_decay` must be a finite real number >= 0")
    if _bad_real(lr_decay):
        raise ValueError("`lr_decay` must be a finite real number >= 0")
    if step < 1:
        raise ValueError("`step` must be >= 1 (it counts from 1)")


def _eps_inside(eps_placement: Any) -> Any:
    """Stub: numba compiles the overload below."""


@overload(_eps_inside, prefer_literal=True)
def _eps_inside_overload(eps_placement: Any) -> Any:
    """True for "inside", False for "outside": decided when numba compiles the call if the
    string is a constant there (a literal or the default), else compared at run time."""
    value = eps_placement.literal_value if isinstance(eps_placement, types.StringLiteral) else (
        eps_placement.value if isinstance(eps_placement, types.Omitted) else eps_placement)
    if value in ("outside", "inside"):
        inside = value == "inside"

        def constant(eps_placement: Any) -> Any:
            return inside
        return constant

    def compared(eps_placement: Any) -> Any:
        if eps_placement == "inside":
            return True
        if eps_placement != "outside":
            raise ValueError("`eps_placement` must be 'outside' or 'inside'")
        return False
    return compared
