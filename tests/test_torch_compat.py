"""Against torch.optim.Adagrad itself (skipped with a reason when torch is not installed;
.ci/run installs torch==2.13.0 so this runs in CI).

torch accumulates with a fused multiply-add (sum = fma(g, g, sum); upstream:
aten/src/ATen/native/cpu/FusedAdagradKernel.cpp and torch/optim/adagrad.py) and NumPy cannot,
so bit equality is not possible; we check every step relative to that step's scale and report the largest difference in ulps after 50 steps (printed with -s, and recorded in the
junit properties)."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import AdaGrad
from fastadagrad._backend import compiled_available

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in units in the last place between two same-dtype arrays."""
    ints = {4: np.int32, 8: np.int64}[a.dtype.itemsize]
    lowest = np.iinfo(ints).min

    def line(x: np.ndarray) -> np.ndarray:  # sign-magnitude bits -> monotonic integers
        i = x.view(ints)
        return np.where(i < 0, lowest - i, i).astype(object)   # exact Python ints

    return int(np.max(np.abs(line(a) - line(b)))) if a.size else 0


CONFIGS = [
    dict(lr=0.05),
    dict(lr=0.05, lr_decay=0.01),
    dict(lr=0.05, weight_decay=0.01),
    dict(lr=0.05, maximize=True),
    dict(lr=0.05, initial_accumulator_value=0.3),
    dict(lr=0.1, lr_decay=0.001, weight_decay=1e-3, maximize=True, initial_accumulator_value=0.1,
         eps=1e-6),
]


def make_pair(backend_name, dtype, config, fused, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(40, 30), (30,), (7, 3, 5)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(50)]
    tparams = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    topt = torch.optim.Adagrad([{"params": tparams[:2]}, {"params": tparams[2:], "lr": 0.02}],
                               fused=fused, **config)
    ours = [x.copy() for x in init]
    with fastadagrad.backend(backend_name):
        opt = AdaGrad([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.02}],
                      convention="torch", **config)
    return grads, tparams, topt, ours, opt


def torch_step(tparams, topt, gs):
    for tp, g in zip(tparams, gs):
        tp.grad = torch.from_numpy(g.copy())
    topt.step()


PARAMS = [
    pytest.mark.parametrize("backend_name", BACKENDS),
    pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"]),
    pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())),
    pytest.mark.parametrize("fused", [False, True], ids=["torch-foreach", "torch-fused"]),
]


def with_params(fn):
    for mark in reversed(PARAMS):
        fn = mark(fn)
    return fn


@with_params
def test_each_step_matches_torch_from_the_same_state(backend_name, dtype, config, fused):
    """Each of 50 steps starts from torch's state; the results differ by at most 1 ulp of the
    parameter plus a few ulps of that step's update, and the accumulators by a few ulps
    (torch's FMAs and, unfused, its clr * (g / std) order)."""
    grads, tparams, topt, ours, opt = make_pair(backend_name, dtype, config, fused)
    eps = np.finfo(dtype).eps
    accums = [a for g in opt.groups for a in g.accums]
    with fastadagrad.backend(backend_name):
        for step, gs in enumerate(grads):
            before = [tp.detach().numpy().copy() for tp in tparams]
            torch_step(tparams, topt, gs)
            opt.step([gs[:2], gs[2:]])
            for x, a, tp, b in zip(ours, accums, tparams, before):
                t = tp.detach().numpy()
                bound = np.spacing(np.abs(t)) + 4 * eps * np.abs(t - b)
                assert np.all(np.abs(x - t) <= bound), f"step {step}"
                # sum = fma(g, g, sum) in torch, and with weight decay g itself comes from an
                # FMA (g + wd * p): a few ulps of the accumulator, never more
                ta = topt.state[tp]["sum"].numpy()
                assert np.all(np.abs(a - ta) <= 8 * eps * np.abs(ta)), f"step {step}"
                np.copyto(x, t)                               # re-sync to torch's state
                np.copyto(a, topt.state[tp]["sum"].numpy())


@with_params
def test_fifty_steps_close_to_torch(backend_name, dtype, config, fused, record_property):
    """Independent 50-step runs: report the largest difference in ulps (the trajectories
    drift apart by rounding only; aim 0, achievable only without FMA on torch's side)."""
    grads, tparams, topt, ours, opt = make_pair(backend_name, dtype, config, fused)
    with fastadagrad.backend(backend_name):
        for gs in grads:
            torch_step(tparams, topt, gs)
            opt.step([gs[:2], gs[2:]])
    worst_param = max(ulps(x, tp.detach().numpy()) for x, tp in zip(ours, tparams))
    worst_accum = max(ulps(a, topt.state[tp]["sum"].numpy())
                      for a, tp in zip([a for g in opt.groups for a in g.accums], tparams))
    record_property("max_ulps_param", worst_param)
    record_property("max_ulps_accum", worst_accum)
    print(f"\n{np.dtype(dtype).name} {config} fused={fused}: max ulps param {worst_param}, "
          f"accum {worst_accum}")
    tol = 2e-5 if dtype == np.float32 else 1e-13
    for x, tp in zip(ours, tparams):
        np.testing.assert_allclose(x, tp.detach().numpy(), rtol=tol, atol=tol)
    assert [g.step for g in opt.groups] == [50, 50]
    assert [int(topt.state[tp]["step"]) for tp in tparams] == [50, 50, 50]


def test_without_fma_torch_is_bit_identical():
    """The only difference is torch's FMA: emulate sum = fma(g, g, sum) exactly in float64 for
    float32 data (g*g is exact in float64, one rounding to float32), and the parameters match
    torch's fused kernel bit for bit."""
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(20)]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.Adagrad([tp], lr=0.05, fused=True)
    p, acc = p0.copy(), np.zeros(1000, np.float32)
    clr = np.float32(0.05)
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        acc = (acc.astype(np.float64) + g.astype(np.float64) ** 2).astype(np.float32)  # fma
        p = p - (clr * g) / (np.sqrt(acc) + np.float32(1e-10))
    assert acc.tobytes() == topt.state[tp]["sum"].numpy().tobytes()
    assert p.tobytes() == tp.detach().numpy().tobytes()
