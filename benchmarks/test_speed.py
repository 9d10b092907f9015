"""pytest-benchmark suite over the same case registry as `python -m fastadagrad bench`.

    pytest benchmarks --benchmark-only                      # everything
    pytest benchmarks --benchmark-only -k "float32 and 1e6" --benchmark-group-by=param:case

Kept out of the default test run (pyproject's testpaths is tests/). Compare implementations
within one run: `--benchmark-group-by=param:case,param:dtype` puts fastadagrad, the NumPy
backend, the 3-read/2-write probe and torch side by side. Nothing here asserts a speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastadagrad._backend import _kernels
from fastadagrad.bench_cases import BENCH_CASES

pytestmark = pytest.mark.skipif(_kernels is None, reason="compiled extension not built")

CASES = [c for c in BENCH_CASES if c.make is not None]
IMPLS = ["fastadagrad", "numpy", "probe", "torch"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.replace(" ", "-"))
def test_step(benchmark, case, dtype, impl):
    work = case.make(np.dtype(dtype), np.random.default_rng(0))
    if impl == "fastadagrad":
        fn = work.fast
    elif impl == "numpy":
        fn = work.numpy
    elif impl == "probe":
        if work.probe is None:
            pytest.skip("the bandwidth probe is defined for dense cases only")
        fn = work.probe
    else:
        pytest.importorskip("torch", reason="torch is not installed")
        fn = work.torch()
        if fn is None:
            pytest.skip("torch has no equivalent of this case (row-wise AdaGrad)")
    benchmark.extra_info.update(elements=case.elements, dtype=dtype, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ["adagrad_update", "AdaGrad.step"])
def test_optimizer_overhead_one_array(benchmark, impl):
    """The cost of the optimizer object over the bare kernel: one float32 array of 1,000."""
    import fastadagrad

    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    if impl == "adagrad_update":
        a = np.zeros_like(p)
        benchmark(fastadagrad.adagrad_update, p, g, a, lr=0.01)
    else:
        opt = fastadagrad.AdaGrad([p], lr=0.01)
        benchmark(opt.step, [g])
