"""fastadagrad: fused, in-place AdaGrad updates for NumPy arrays.

    accum += g * g;  param -= clr * g / (sqrt(accum) + eps)     (eps_placement="outside")

Compiled Cython kernels (float32/float64, runtime AVX2/AVX-512 dispatch, a worker pool, GIL released)
with a bit-identical pure-NumPy twin (`fastadagrad.reference`). See README.md.
"""

from __future__ import annotations

from typing import Any

from fastadagrad import _backend, reference
from fastadagrad._backend import (
    backend,
    compiled_available,
    get_backend,
    set_backend,
)
from fastadagrad._backend import _kernels
from fastadagrad.optimizer import CONVENTIONS, AdaGrad, SparseGrad, pack
from fastadagrad.family import (
    adagrad_da_update,
    glove_adagrad_update,
    proximal_adagrad_update,
    sparse_adagrad_da_update,
    sparse_glove_adagrad_update,
    sparse_proximal_adagrad_update,
)

__version__ = "0.1.0"
__all__ = [
    "adagrad_update", "backend", "get_backend", "set_backend", "compiled_available",
    "get_num_threads", "set_num_threads", "get_isa", "show_config", "get_include", "__version__",
    "AdaGrad", "CONVENTIONS", "SparseGrad", "pack", "sparse_adagrad_update",
    # issue 14: the AdaGrad family
    "proximal_adagrad_update", "adagrad_da_update", "glove_adagrad_update",
    "sparse_proximal_adagrad_update", "sparse_adagrad_da_update", "sparse_glove_adagrad_update",
]


# The most capable backend's public functions: the compiled ones forward to the NumPy twin
# themselves while that backend is selected (set_backend), so early-bound references follow
# the backend too (see _backend).
adagrad_update = _backend.available()[0].adagrad_update
sparse_adagrad_update = _backend.available()[0].sparse_adagrad_update
if _kernels is not None:
    from fastadagrad import _threadpoolctl
    _threadpoolctl.register()   # threadpoolctl.threadpool_limits(...) limits our pool too


def get_include() -> str:
    """The directory to put on the C include path (`Extension(..., include_dirs=[...])`) and,
    if needed, the Cython include path: it resolves `#include "fastadagrad/fastadagrad.h"` (the
    C API for C/C++ extensions) and lets `cimport fastadagrad.kernels` find kernels.pxd and the
    C header it declares (the Cython API)."""
    import os
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_num_threads() -> int:
    """Threads the compiled kernels use for large arrays (1 without the compiled backend)."""
    return _kernels.get_num_threads() if _kernels is not None else 1


def set_num_threads(n: int) -> int:
    """Set the thread count for large arrays; returns the previous one. Default: OMP_NUM_THREADS
    if set, else the CPUs this process may use (affinity mask, cgroup quota). Results are
    bit-identical for every thread count."""
    if _kernels is None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be an int >= 1, got {n!r}")
        return 1
    return int(_kernels.set_num_threads(n))


def get_isa() -> str:
    """The instruction-set path of the compiled kernels: "avx512", "avx2", "generic" or "none"."""
    return _kernels.get_isa() if _kernels is not None else "none"


def show_config() -> dict[str, Any]:
    """Version, backend, ISA paths, threads, as a dict."""
    return {
        "version": __version__,
        "backend": get_backend(),
        "compiled_available": compiled_available(),
        "isa": get_isa(),
        "isa_available": list(_kernels.isa_available()) if _kernels is not None else [],
        "isa_compiled": list(_kernels.isa_compiled()) if _kernels is not None else [],
        "thread_pool": bool(_kernels.threads_enabled()) if _kernels is not None else False,
        "threads": get_num_threads(),
        "parallel_min_elements": _kernels.PARALLEL_MIN_ELEMENTS if _kernels is not None else None,
    }
