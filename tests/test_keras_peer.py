"""convention="keras" against Keras 3 itself (KERAS_BACKEND=torch, the backend CI installs
cheaply: torch is already there). Skipped with a reason when keras is not installed."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch", reason="torch (Keras' backend in these tests) is not installed")
keras = pytest.importorskip("keras", reason="keras (Keras 3) is not installed")

import fastadagrad  # noqa: E402

# Keras' torch backend calls np.array() on tensors whose __array__ predates NumPy 2's `copy`
# keyword: its own DeprecationWarning, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

STEPS = 20


def keras_run(p0, grads, **kw):
    dt = str(p0.dtype)
    v = keras.Variable(p0.copy(), dtype=dt)
    opt = keras.optimizers.Adagrad(**kw)
    out = []
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype=dt), v)])
        out.append((keras.ops.convert_to_numpy(v).copy(),
                    keras.ops.convert_to_numpy(opt._accumulators[0].value).copy()))
    return out


def ours(p0, grads, **kw):
    p = p0.copy()
    opt = fastadagrad.AdaGrad([p], convention="keras", **kw)
    out = []
    for g in grads:
        opt.step([g])
        out.append((p.copy(), opt.accumulators[0][0].copy()))
    return out


def problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(300).astype(dtype),
            [rng.standard_normal(300).astype(dtype) for _ in range(STEPS)])


def rel(x, y):
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="tested on Keras' torch backend")
@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if fastadagrad.compiled_available()
                                                 else []))
@pytest.mark.parametrize("kw", [dict(), dict(learning_rate=0.01),
                                dict(learning_rate=0.1, epsilon=1e-3,
                                     initial_accumulator_value=0.5)], ids=str)
def test_float64_uses_keras_float32_lr(backend, kw):
    """float64 variables: Keras computes with float64(float32(learning_rate)) (its lr is a
    float32 variable) and convention="keras" does the same: accumulators identical bytes at
    every step; parameters equal up to torch.sqrt's rounding (Keras' torch backend: torch's
    float64 sqrt is not always correctly rounded, 1 ulp here and there), < 1e-13 relative.
    With the exact double lr the difference is ~1e-8 (what this convention fixes)."""
    p0, grads = problem(np.float64)
    names = {"lr": "learning_rate", "eps": "epsilon",
             "initial_accumulator_value": "initial_accumulator_value",
             "weight_decay": "weight_decay"}
    ours_kw = {k: kw[v] for k, v in names.items() if v in kw}
    want = keras_run(p0, grads, **kw)
    with fastadagrad.backend(backend):
        got = ours(p0, grads, **ours_kw)
    for step, ((p, a), (kp, ka)) in enumerate(zip(got, want)):
        assert a.tobytes() == ka.tobytes(), f"accumulator, step {step + 1}"
        assert rel(p, kp) < 1e-13, f"param, step {step + 1}: {rel(p, kp)}"
    exact = fastadagrad.AdaGrad  # the same rule with lr in full double precision
    p = p0.copy()
    opt = exact([p], convention="torch", eps_placement="inside", lr=kw.get("learning_rate", 0.001),
                eps=kw.get("epsilon", 1e-7),
                initial_accumulator_value=kw.get("initial_accumulator_value", 0.1))
    if "weight_decay" not in kw:
        for g in grads:
            opt.step([g])
        assert rel(p, want[-1][0]) > 1e-10


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="tested on Keras' torch backend")
def test_float32_per_step():
    """float32: accumulators identical; parameters within 1 ulp of the parameter plus 2 of the
    step's update (torch.sqrt, which Keras' torch backend runs, is not always correctly
    rounded), checked per step from Keras' own previous state."""
    p0, grads = problem(np.float32)
    want = keras_run(p0, grads, learning_rate=0.01)
    prev = p0
    for step, (g, (kp, ka)) in enumerate(zip(grads, want)):
        p = prev.copy()
        acc = np.full_like(p0, 0.1) if step == 0 else want[step - 1][1].copy()
        fastadagrad.adagrad_update(p, g, acc, lr=0.01, eps=1e-7, eps_placement="inside")
        assert acc.tobytes() == ka.tobytes(), f"accumulator, step {step + 1}"
        update = np.abs(kp - prev)
        bound = np.spacing(np.abs(kp)) + 2 * np.spacing(update)   # 1 ulp of p, 2 of the update
        assert (np.abs(p - kp) <= bound).all(), f"step {step + 1}"
        prev = kp
