"""threadpoolctl support: `threadpoolctl.threadpool_limits(1)` limits fastadagrad's pool too.

threadpoolctl finds thread pools by scanning the shared libraries loaded in the process; this
controller matches the compiled module (fastadagrad/kernels.*.so, recognised by its exported
C symbols fastadagrad_get_num_threads / fastadagrad_set_num_threads) and drives those symbols,
so the limit is the one fastadagrad.set_num_threads sets. It reports itself under the "openmp"
user API (the role OpenMP played before), so `threadpool_limits(1, user_api="openmp")`, as
scikit-learn uses it, limits fastadagrad as well. Registered at `import fastadagrad` when
threadpoolctl (>= 3.0, which has `register`) is installed; nothing happens otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any


def register() -> bool:
    """Register the controller with threadpoolctl; False when threadpoolctl is unavailable."""
    try:
        threadpoolctl: Any = importlib.import_module("threadpoolctl")
    except ImportError:
        return False
    if not (hasattr(threadpoolctl, "LibController") and hasattr(threadpoolctl, "register")):
        return False

    class FastadagradController(threadpoolctl.LibController):  # type: ignore[misc]
        user_api = "openmp"
        internal_api = "fastadagrad"
        filename_prefixes = ("kernels",)
        check_symbols = ("fastadagrad_get_num_threads", "fastadagrad_set_num_threads")

        def get_num_threads(self) -> int:
            return int(self.dynlib.fastadagrad_get_num_threads())

        def set_num_threads(self, num_threads: int) -> Any:
            return self.dynlib.fastadagrad_set_num_threads(int(num_threads))

        def get_version(self) -> str:
            from fastadagrad import __version__
            return __version__

    threadpoolctl.register(FastadagradController)
    return True
