"""The NumPy backend: the same functions as the compiled kernels, the same operation order.

It is the fallback when the extension is not built and the oracle the tests hold the extension
to: every function here mirrors one in `fastadagrad.kernels`, argument for argument, and must
give identical bytes. Arithmetic is done in the arrays' dtype with NumPy ufuncs writing through
`out=`, so non-contiguous views are updated in place.
"""

from __future__ import annotations

import numpy as np

from fastadagrad._validation import DenseOptions, check_dense


def _dense_step(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, o: DenseOptions) -> None:
    """param, accum updated in place; every ufunc rounds once, in the arrays' dtype."""
    t = param.dtype.type
    clr, eps, wd, dwd = t(o.clr), t(o.eps), t(o.weight_decay), t(o.decoupled_weight_decay)
    g = np.negative(grad) if o.maximize else grad
    if o.weight_decay != 0:
        g = np.add(g, np.multiply(wd, param))
    if o.decoupled_weight_decay != 0:
        np.subtract(param, np.multiply(np.multiply(param, dwd), clr), out=param)
    np.add(accum, np.multiply(g, g), out=accum)
    if o.eps_inside:
        denom = np.sqrt(np.add(accum, eps))
    else:
        denom = np.add(np.sqrt(accum), eps)
    update = np.divide(np.multiply(clr, g), denom)
    if o.zero_if_accum_zero:
        update = np.where(accum == 0, t(0), update)
    np.subtract(param, update, out=param)


def adagrad_update(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, *, lr: float = 0.01,
                   eps: float = 1e-10, eps_placement: str = "outside", weight_decay: float = 0.0,
                   lr_decay: float = 0.0, step: int = 1, maximize: bool = False) -> None:
    """Apply one AdaGrad step to `param` and `accum` in place (PyTorch's operation order).

    Per element, in the arrays' dtype (float32 or float64; others raise TypeError)::

        g     = -grad if maximize else grad
        g     = g + weight_decay * param              (only when weight_decay != 0)
        clr   = lr / (1 + (step - 1) * lr_decay)      (once, in double, then cast to the dtype)
        accum = accum + g * g
        denom = sqrt(accum) + eps   (eps_placement="outside": PyTorch, TF ApplyAdagradV2)
              = sqrt(accum + eps)   (eps_placement="inside": Keras 3, optax, textbooks)
        param = param - (clr * g) / denom

    `param`, `grad`, `accum`: ndarrays of one shape and dtype, any number of dimensions,
    contiguous or not (views are updated in place), not overlapping in memory; `grad` may be
    read-only. lr, eps, weight_decay, lr_decay: finite and >= 0; step: int >= 1.
    Every argument is checked before anything is written: a bad one raises TypeError or
    ValueError naming it and leaves all arrays untouched. NaN/inf in `grad` propagate as the
    formula says. Returns None.
    """
    o = check_dense(param, grad, accum, lr, eps, eps_placement, weight_decay, lr_decay, step,
                    maximize)
    if param.size:
        with np.errstate(all="ignore"):  # like the compiled loops: IEEE results, no warnings
            _dense_step(param, grad, accum, o)


def bandwidth_probe(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
    """The memory probe's arithmetic: z += y; x -= z (3 reads, 2 writes, no sqrt/div)."""
    np.add(z, y, out=z)
    np.subtract(x, z, out=x)


def multi_update(params: list[np.ndarray], grads: list[np.ndarray], accums: list[np.ndarray],
                 o: DenseOptions) -> None:
    """The optimizer's step over many validated arrays: one dense step each, in order."""
    with np.errstate(all="ignore"):
        for p, g, a in zip(params, grads, accums):
            if p.size:
                _dense_step(p, g, a, o)
