"""The backend object: the compiled kernels ("cython") or the NumPy twin ("numpy").

Every caller (the public functions' wrappers, the optimizer, the family functions, the torch
adapter) asks `current()` for the selected backend and calls its entry points; none tests the
backend's name. Both implementations take the same arguments, entry point for entry point
(the twin's functions carry the compiled functions' names), so a caller has one code path:

    backend = _backend.current()
    backend.update_validated(param, grad, accum, opts)      # arrays that passed _validation

Dependencies point one way: API (fastadagrad, optimizer, family, torch) -> this module ->
kernels (compiled) / reference + reference_family (NumPy twin) -> _validation. The compiled
module never imports the twin: `_bind` hands it the twin's entry points, which it uses for the
memory its C loops cannot address (unaligned or byte-swapped arrays, updated in place by the
twin with the same bits) and to forward its public functions while the NumPy backend is
selected (so `from fastadagrad import adagrad_update` follows `set_backend`).

Chosen at import from FASTADAGRAD_BACKEND (default "cython"); if the extension cannot be imported
the NumPy backend is used with a RuntimeWarning (none when numpy was asked for).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import threading
import warnings
from typing import Any, Callable, Iterator, Optional

import numpy as np

from fastadagrad import reference, reference_family

BACKENDS = ("cython", "numpy")
__all__ = ["BACKENDS", "IMPORT_ERROR", "Backend", "CompiledBackend", "NumpyBackend", "_kernels",
           "available", "backend", "compiled_available", "current", "data_address", "get_backend",
           "named", "set_backend"]

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

Fn = Callable[..., Any]


def _interface_address(a: Any) -> int:
    return int(a.__array_interface__["data"][0])


#: data_address(a): the address of an ndarray's first element (the compiled module's helper
#: when it is built: ~50 ns instead of ~1.3 us for __array_interface__; the same number).
data_address: Callable[[Any], int] = (_kernels.data_address if _kernels is not None
                                      else _interface_address)


# The entry points both backends define under the same name and arguments (the compiled
# module's functions; the twin's in reference / reference_family). apply_steps and family_fast
# are added per backend: the twin wraps the first and has no gate for the second.
ENTRY_POINTS = ("adagrad_update", "sparse_adagrad_update", "update_validated",
                "update_clip_validated", "update_multi_validated", "sparse_dup_validated",
                "family_validated", "family_sparse_validated", "sum_of_squares")


class Backend:
    """The entry points every backend provides, each taking validated arguments unless noted.

    - adagrad_update, sparse_adagrad_update: the public functions (they validate).
    - update_validated(param, grad, accum, opts, master=None): one dense step, any layout;
      update_clip_validated(param, grad, accum, opts, clip): the same with every grad element
      clipped to [-clip, clip] (clipvalue).
    - update_multi_validated(params, grads, accums, masters, opts): dense steps of many arrays
      of one dtype combination (one compiled call over those the C loops can address).
    - sparse_dup_validated(table, accum, idx, grads, opts, duplicates, clip=0.0): the sparse
      step (clip > 0: every occurrence clipped first).
    - apply_steps(steps): the optimizer's writes of one step, every group, and its counts
      (`(counter, group, grads, opts, clr, items)` per group, see kernels.apply_steps); a
      KeyboardInterrupt lands before the first write or after the last count.
    - array_group(params, accums, guard): the compiled pointer group of an optimizer group
      (one C call per step, with its own C-level gate), or None when this backend has none.
    - mixed_group_gate(params, accums, guard): the C-level gate alone, for a group that mixes
      dtypes (its grads then skip the Python validation), or None.
    - sparse_grad_gate(guard, params): the C-level check of an optimizer's SparseGrad
      (kernels.SparseGradGate: `checked(param, accum, indices, values)` gives the private int64
      indices, or None: validate in Python; `prepare(...)`: a group's grads, SparseGrads and
      plain dense grads, checked in C as apply_steps' items), or None.
    - family_validated, family_sparse_validated, sum_of_squares: the AdaGrad family and the
      clipping norm; family_fast(...), family_sparse_fast(...): the compiled family gates
      (False: not taken).
    - all_finite(a): np.isfinite(a).all() (the compiled one scans plain float arrays in C).
    """

    name: str
    compiled: bool   # has compiled pointer groups (array_group never returns None for them)
    adagrad_update: Fn
    sparse_adagrad_update: Fn
    update_validated: Fn
    update_clip_validated: Fn
    update_multi_validated: Fn
    sparse_dup_validated: Fn
    apply_steps: Fn
    family_validated: Fn
    family_sparse_validated: Fn
    sum_of_squares: Fn

    def array_group(self, params: list[Any], accums: list[Any],
                    guard: list[Any] | None = None) -> Any:
        return None

    def mixed_group_gate(self, params: list[Any], accums: list[Any], guard: list[Any]) -> Any:
        return None

    def sparse_grad_gate(self, guard: list[Any], params: list[Any] | None = None) -> Any:
        return None

    @staticmethod
    def all_finite(a: Any) -> bool:
        return bool(np.isfinite(a).all())

    def family_fast(self, *args: Any) -> bool:
        """The compiled family gate (kernels.family_fast): True when it did the step."""
        return False

    def family_sparse_fast(self, *args: Any) -> bool:
        """The compiled sparse family gate (kernels.family_sparse_fast): True when it did the
        step."""
        return False

    def __repr__(self) -> str:
        return f"<fastadagrad backend {self.name!r}>"


class NumpyBackend(Backend):
    """The NumPy twin (reference.py, reference_family.py): same names, same bytes."""

    name = "numpy"
    compiled = False

    def __init__(self) -> None:
        for name in ENTRY_POINTS:
            module = reference if hasattr(reference, name) else reference_family
            setattr(self, name, getattr(module, name))
        # what the compiled module calls back for float16/bfloat16 memory its loops skip
        self.update_mixed_validated = reference.update_mixed_validated
        self.sparse_mixed_step = reference.sparse_mixed_step

    @staticmethod
    def apply_steps(steps: list[Any]) -> None:
        """reference.apply_steps with Ctrl-C held back until every write and count is done
        (the compiled twin gets this for free: it runs no Python bytecode in between)."""
        with _InterruptsDeferred():
            reference.apply_steps(steps)


class CompiledBackend(Backend):
    """The compiled module fastadagrad.kernels."""

    name = "cython"
    compiled = True

    def __init__(self, kernels: Any) -> None:
        self.kernels = kernels
        for name in ENTRY_POINTS + ("apply_steps", "family_fast", "family_sparse_fast",
                                    "all_finite"):
            setattr(self, name, getattr(kernels, name))

    def array_group(self, params: list[Any], accums: list[Any],
                    guard: list[Any] | None = None) -> Any:
        return self.kernels.ArrayGroup(params, accums, guard)

    def mixed_group_gate(self, params: list[Any], accums: list[Any], guard: list[Any]) -> Any:
        return self.kernels.MixedGroupGate(params, accums, guard)

    def sparse_grad_gate(self, guard: list[Any], params: list[Any] | None = None) -> Any:
        return self.kernels.SparseGradGate(guard, params)


class _InterruptsDeferred:
    """Hold back Ctrl-C (SIGINT) while a step writes: the step's arrays and counters are
    updated completely, then KeyboardInterrupt is raised. Only in the main thread (the only
    one Python delivers KeyboardInterrupt to) and only while Python's default SIGINT handler
    is installed (a custom handler is left alone)."""

    __slots__ = ("old", "pending")

    def __enter__(self) -> "_InterruptsDeferred":
        self.old: Any = None
        self.pending = False
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.old = signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.pending = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            if self.pending and exc_type is None:
                raise KeyboardInterrupt


_NUMPY = NumpyBackend()
_COMPILED: Optional[CompiledBackend] = None if _kernels is None else CompiledBackend(_kernels)
_BY_NAME: dict[str, Backend] = {"numpy": _NUMPY}
if _COMPILED is not None:
    _BY_NAME["cython"] = _COMPILED
    # The compiled functions take the twin's docstrings (one text for both backends).
    _kernels.adagrad_update.__doc__ = reference.adagrad_update.__doc__
    _kernels.sparse_adagrad_update.__doc__ = reference.sparse_adagrad_update.__doc__
_active: Backend = _NUMPY


def current() -> Backend:
    """The selected backend object (call its entry points; never compare its name)."""
    return _active


def available() -> list[Backend]:
    """Every backend that can run here, the compiled one first."""
    return [b for b in (_COMPILED, _NUMPY) if b is not None]


def named(name: str | None) -> Backend:
    """The backend called `name` (None: the selected one); "cython" without the extension
    gives the NumPy twin (same bytes)."""
    return _active if name is None else _BY_NAME.get(name, _NUMPY)


def compiled_available() -> bool:
    """True when the compiled extension imported."""
    return _kernels is not None


def set_backend(name: str) -> None:
    """Select "cython" (compiled kernels) or "numpy" (the NumPy twin) for every public function."""
    global _active
    if name not in BACKENDS:
        raise ValueError(f"`name` must be one of {BACKENDS}, got {name!r}")
    if name == "cython" and _kernels is None:
        raise ValueError(f"the compiled backend is not available: {IMPORT_ERROR}")
    _active = _BY_NAME[name]
    if _kernels is not None:
        _kernels._bind_twin(_NUMPY, _active is _NUMPY)


def get_backend() -> str:
    """The backend in use: "cython" or "numpy"."""
    return _active.name


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
