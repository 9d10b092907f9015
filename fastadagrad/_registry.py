"""The one registry of kernels: each compiled function, its NumPy twin, and how to make inputs.

Tests (equivalence over dtypes, sizes, layouts, options), the benchmark CLI and benchmarks/
all iterate over KERNELS, so a new kernel is tested and benchmarked by adding one entry here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fastadagrad import reference
from fastadagrad._backend import _kernels

DTYPES = (np.float32, np.float64)

#: Sizes that straddle SIMD widths (4/8/16 lanes) and the thread split (PARALLEL_MIN_ELEMENTS,
#: chunks rounded to 16 elements).
_PMIN = 32768
SIZES = (0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, 100_003,
         _PMIN - 1, _PMIN, _PMIN + 1, _PMIN + 17, 2 * _PMIN + 31)


def _dense_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
    return {
        "param": rng.standard_normal(shape).astype(dtype),
        "grad": rng.standard_normal(shape).astype(dtype),
        "accum": np.abs(rng.standard_normal(shape)).astype(dtype),
    }


def _dense_options() -> list[dict[str, Any]]:
    """Every combination of the options that change the arithmetic."""
    out = []
    for maximize, wd, placement, (lr_decay, step) in itertools.product(
            (False, True), (0.0, 0.05), ("outside", "inside"), ((0.0, 1), (0.1, 7))):
        out.append(dict(lr=0.1, eps=1e-6, maximize=maximize, weight_decay=wd,
                        eps_placement=placement, lr_decay=lr_decay, step=step))
    return out


@dataclass(frozen=True)
class Kernel:
    """A public kernel: `fast(*arrays, **options)` must equal `slow(...)` byte for byte."""

    name: str
    fast: Callable[..., None] | None
    slow: Callable[..., None]
    make_inputs: Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]
    outputs: tuple[str, ...]
    options: list[dict[str, Any]] = field(default_factory=list)
    formula: str = ""


KERNELS: dict[str, Kernel] = {
    "adagrad_update": Kernel(
        name="adagrad_update",
        fast=_kernels.adagrad_update if _kernels is not None else None,
        slow=reference.adagrad_update,
        make_inputs=_dense_inputs,
        outputs=("param", "accum"),
        options=_dense_options(),
        formula="accum += g*g; param -= clr*g / (sqrt(accum) + eps)",
    ),
}
