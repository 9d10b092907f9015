"""The rows of the benchmark table: which workload (bench_workloads.py) at which size.

The CLI (`python -m fastadagrad bench`), benchmarks/test_speed.py and .ci/check_bench_json.py all
iterate over BENCH_CASES, so a new case is benchmarked by adding one entry here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fastadagrad._rules import RULES
from fastadagrad.bench_workloads import (ClipWorkload, DenseWorkload, FamilyWorkload,
                                         MixedWorkload, OptimizerWorkload, SparseWorkload, TorchDropinWorkload,
                                         Workload)


def _torch_dropin(n: int, dtype: Any, rng: np.random.Generator) -> Workload:
    return TorchDropinWorkload(n, dtype, rng)


def _sparse_workload(dim: int, dtype: Any, rng: np.random.Generator) -> Workload:
    return SparseWorkload(1_000_000, dim, 4096, dtype, rng)


def _mixed_workload(n: int, dtype: Any, rng: np.random.Generator) -> Workload:
    return MixedWorkload(n, rng)   # fixes its own dtypes


def _installed(package: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(package) is not None


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark table."""

    name: str            # e.g. "dense 1e6"
    kind: str            # "dense" | "multi" | "sparse"
    elements: int        # elements updated per step
    bytes_per_element: float   # memory traffic per element per step, in units of the itemsize
    make: Callable[[Any, np.random.Generator], Workload] | None  # None: not available yet
    quick: bool = True   # part of --quick
    only_dtype: str | None = None   # listed in this dtype's table only (it fixes its own dtypes)


def _dense_case(n: int, quick: bool = True) -> BenchCase:
    mantissa, exponent = f"{n:.1e}".split("e")
    label = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    def make(dtype: Any, rng: np.random.Generator) -> Workload:
        return DenseWorkload(n, dtype, rng)
    return BenchCase(name=f"dense {label}", kind="dense", elements=n, bytes_per_element=5,
                     make=make, quick=quick)


DENSE_SIZES = (1_000, 10_000, 100_000, 1_000_000, 16_000_000, 64_000_000)


BENCH_CASES: list[BenchCase] = [
    *(_dense_case(n, quick=n < 64_000_000) for n in DENSE_SIZES),
    BenchCase("optimizer 200x1000", "multi", 200 * 1000, 5,
              lambda dtype, rng: OptimizerWorkload(200, 1000, dtype, rng)),
    BenchCase("sparse 1e6x64 batch 4096", "sparse", 4096 * 64, 5,
              lambda dtype, rng: SparseWorkload(1_000_000, 64, 4096, dtype, rng)),
    *(BenchCase(f"sparse 1e6x{d} batch 4096", "sparse", 4096 * d, 5,   # small rows (issue 12)
                functools.partial(_sparse_workload, d))
      for d in (8, 16)),
    BenchCase("sparse row-wise 1e6x64 batch 4096", "sparse", 4096 * 64, 3,
              lambda dtype, rng: SparseWorkload(1_000_000, 64, 4096, dtype, rng, rowwise=True)),
    # issue 14: the peers' duplicate rules on the same workload (goal: <= 1.5x the "sum" step)
    *(BenchCase(f"sparse 1e6x64 batch 4096 {dup}", "sparse", 4096 * 64, 5,
                functools.partial(lambda d, dtype, rng: SparseWorkload(
                    1_000_000, 64, 4096, dtype, rng, duplicates=d), dup), quick=False)
      for dup in ("sequential", "keras")),
    *(BenchCase(f"torch drop-in {label}", "torch", n, 5,
                functools.partial(_torch_dropin, n) if _installed("torch") else None)
      for n, label in ((1_000, "1e3"), (16_000_000, "1.6e7"))),
    # mixed precision (issue 15): listed in the float32 table, next to the float32 step
    *(BenchCase(f"bf16 param+grad, f32 accum {label}", "mixed", n, 3.5,
                functools.partial(_mixed_workload, n) if _installed("ml_dtypes") else None,
                only_dtype="float32")
      for n, label in ((1_000, "1e3"), (16_000_000, "1.6e7"))),
]


def _clip_case(n: int, label: str, **clip: float) -> BenchCase:
    kind = next(iter(clip))
    return BenchCase(f"dense {label} {kind}", "dense", n, 6 if kind == "clipnorm" else 5,
                     lambda dtype, rng: ClipWorkload(n, dtype, rng, clip))


# issue 14: clipping fused into the step, against torch's clip_grad_*_ + fused Adagrad.
BENCH_CASES.extend([_clip_case(1_000, "1e3", clipvalue=0.5),
                    _clip_case(1_000_000, "1e6", clipvalue=0.5),
                    _clip_case(1_000_000, "1e6", clipnorm=1.0)])

# issue 14: each rule of fastadagrad._rules.RULES gets dense 1e6 / sparse 1e6x64 cases.
BENCH_CASES.extend(
    case for rule, spec in RULES.items() for case in (
        BenchCase(f"{rule} 1e6", "family", 1_000_000, 3 + 2 * len(spec.states),
                  functools.partial(lambda r, dtype, rng: FamilyWorkload(r, dtype, rng, n=1_000_000), rule)),
        BenchCase(f"sparse {rule} 1e6x64 batch 4096", "family", 4096 * 64, 3 + 2 * len(spec.states),
                  functools.partial(lambda r, dtype, rng: FamilyWorkload(r, dtype, rng, sparse=(1_000_000, 64, 4096)), rule),
                  quick=False)))
