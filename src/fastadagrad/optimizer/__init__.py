"""fastadagrad.AdaGrad and its helpers: `AdaGrad`, `SparseGrad`, `pack`, `CONVENTIONS`.

The package splits the optimizer by concern (see README "Architecture"); this module only re-exports.
"""

from fastadagrad.optimizer._core import CONVENTIONS, AdaGrad, SparseGrad, pack

__all__ = ["AdaGrad", "CONVENTIONS", "SparseGrad", "pack"]
