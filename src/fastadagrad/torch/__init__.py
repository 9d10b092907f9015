"""fastadagrad.torch: ``Adagrad``, a drop-in replacement for ``torch.optim.Adagrad``.

The implementation lives in ``_optimizer``; see its docstring. Importing ``fastadagrad`` does
not import torch; import this package explicitly.
"""

import torch  # noqa: F401  (an absolute import: the real torch, never this package)

from fastadagrad.torch._optimizer import Adagrad, accelerated

# Pickles of an optimizer name the class by its public path, as when this was one module.
Adagrad.__module__ = __name__

__all__ = ["Adagrad", "accelerated"]
