"""numba and llvmlite for fastadagrad.numba, imported as Any (they carry no complete type
information, so mypy --strict checks the adapter the same with or without them), with typed
wrappers of the decorators it uses. Importing it without numba raises an ImportError saying how
to get it."""

from __future__ import annotations

import importlib
from typing import Any, Callable, cast

# numba and llvmlite are optional and carry no complete type information: imported as Any, so
# that mypy --strict checks this module the same with or without them.
try:
    numba: Any = importlib.import_module("numba")
    ir: Any = importlib.import_module("llvmlite.ir")
    cgutils: Any = importlib.import_module("numba.core.cgutils")
    _extending: Any = importlib.import_module("numba.extending")
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastadagrad.numba needs numba (pip install numba); the rest of "
                      "fastadagrad works without it") from exc
types = numba.types
_Decorator = Callable[[Callable[..., Any]], Any]


def _decorator(d: Any) -> _Decorator:
    """A numba decorator, typed for mypy."""
    return cast(_Decorator, d)


def overload(func: Callable[..., Any], **options: Any) -> _Decorator:
    return _decorator(_extending.overload(func, **options))


intrinsic = _decorator(_extending.intrinsic)
_jit = _decorator(numba.njit(nogil=True))
