"""fastadagrad.torch.Adagrad.step() against torch.optim.Adagrad.step() (fused and foreach).

    pytest benchmarks/test_torch_dropin.py --benchmark-only --benchmark-group-by=param:elements

One float32 parameter of 1,000 or 16M elements, its grad set once before timing (no backward
in the timed part): what is timed is the optimizer's step alone, per-step Python overhead
included. Targets (issue 7): at 1,000 elements at least 5x faster than torch fused; at 16M at
least as fast as torch fused. Nothing here asserts a speed; compare within one run.
"""

from __future__ import annotations

import pytest

from fastadagrad._backend import _kernels

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

pytestmark = pytest.mark.skipif(_kernels is None, reason="compiled extension not built")

IMPLS = ["fastadagrad", "torch-fused", "torch-foreach"]


def make_step(impl: str, elements: int):
    import fastadagrad.torch

    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(elements, generator=g))
    p.grad = torch.randn(elements, generator=g) * 1e-3
    if impl == "fastadagrad":
        opt = fastadagrad.torch.Adagrad([p], lr=1e-3)
    elif impl == "torch-fused":
        opt = torch.optim.Adagrad([p], lr=1e-3, fused=True)
    else:
        opt = torch.optim.Adagrad([p], lr=1e-3)   # torch's default: foreach on CPU
    opt.step()   # warm-up: caches built, pages touched
    return opt.step


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("elements", [1_000, 16_000_000], ids=["1k", "16M"])
def test_step(benchmark, elements, impl):
    step = make_step(impl, elements)
    benchmark.extra_info.update(elements=elements, dtype="float32", impl=impl)
    if elements >= 1_000_000:
        benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=2)
    else:
        benchmark(step)
