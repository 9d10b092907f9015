"""Backend choice: the compiled kernels ("cython") or the NumPy twin ("numpy").

Chosen at import from FASTADAGRAD_BACKEND (default "cython"); if the extension cannot be imported
the NumPy backend is used with a RuntimeWarning (none when numpy was asked for).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from typing import Any, Iterator

from fastadagrad import reference

BACKENDS = ("cython", "numpy")
__all__ = ["BACKENDS", "IMPORT_ERROR", "_kernels", "backend", "compiled_available",
           "get_backend", "set_backend"]

_kernels: Any  # the compiled module fastadagrad.kernels, or None when it is not built
IMPORT_ERROR: ImportError | None
try:
    if importlib.util.find_spec("fastadagrad.kernels") is None:
        raise ImportError("fastadagrad.kernels is not built (installed without a working C "
                          "compiler, or with FASTADAGRAD_PUREPYTHON=1)")
    from fastadagrad import kernels as _compiled
    _kernels = _compiled
    IMPORT_ERROR = None
except ImportError as exc:  # not built, or built but not loadable (e.g. a missing libgomp)
    _kernels = None
    IMPORT_ERROR = exc

_current = "numpy"


def compiled_available() -> bool:
    """True when the compiled extension imported."""
    return _kernels is not None


def set_backend(name: str) -> None:
    """Select "cython" (compiled kernels) or "numpy" (the NumPy twin) for every public function."""
    global _current
    if name not in BACKENDS:
        raise ValueError(f"`name` must be one of {BACKENDS}, got {name!r}")
    if name == "cython" and _kernels is None:
        raise ValueError(f"the compiled backend is not available: {IMPORT_ERROR}")
    if _kernels is not None:
        _kernels._set_delegate(reference if name == "numpy" else None)
    _current = name


def get_backend() -> str:
    """The backend in use: "cython" or "numpy"."""
    return _current


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Use backend `name` inside a with-block, restoring the previous one after."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _select_at_import() -> None:
    requested = os.environ.get("FASTADAGRAD_BACKEND", "").strip().lower() or "cython"
    if requested not in BACKENDS:
        warnings.warn(f"FASTADAGRAD_BACKEND={requested!r} is not one of {BACKENDS}; "
                      "using the default", RuntimeWarning, stacklevel=3)
        requested = "cython"
    if requested == "cython" and _kernels is None:
        warnings.warn("fastadagrad: the compiled extension could not be imported "
                      f"({IMPORT_ERROR}); using the NumPy backend (same results, several times "
                      "slower). To get the compiled kernels, install a C compiler and the "
                      "Python headers, then reinstall: pip install --force-reinstall "
                      "--no-cache-dir fastadagrad. Set FASTADAGRAD_BACKEND=numpy to silence "
                      "this warning.", RuntimeWarning, stacklevel=3)
        requested = "numpy"
    set_backend(requested)


_select_at_import()
