"""convention="keras" | "optax" | "tf" against NumPy transcriptions of each peer's published
update rule (those libraries are not installed here), and torch's defaults."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import AdaGrad
from fastadagrad._backend import compiled_available

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])
STEPS = 20


def problem(dtype, seed=0, n=300):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(STEPS)]
    for g in grads:
        g[:10] = 0  # coordinates whose accumulator can stay 0 (optax's special case)
    return p, grads


def keras3(p, grads, lr=0.001, eps=1e-7, init=0.1, wd=0.0):
    """keras/src/optimizers/adagrad.py (Keras 3) update_step, with the base optimizer's
    _apply_weight_decay run first: variable.assign_sub(variable * wd * lr);
    accumulator.assign_add(square(g)); variable.assign_sub(divide(multiply(lr, g),
    sqrt(add(accumulator, epsilon))))."""
    t = p.dtype.type
    lr = t(np.float32(lr))   # Keras' learning_rate is a float32 variable, cast to the dtype
    eps, wd = t(eps), t(wd)
    acc = np.full_like(p, init)
    for g in grads:
        if wd != 0:
            p = p - p * wd * lr
        acc = acc + np.square(g)
        p = p - np.divide(np.multiply(lr, g), np.sqrt(np.add(acc, eps)))
    return p, acc


def tf_v2(p, grads, lr=0.001, eps=1e-7, init=0.1):
    """tensorflow/core/kernels/training_ops.cc ApplyAdagradV2 (update_slots=True):
    accum += grad.square(); var -= lr * grad / (accum.sqrt() + epsilon)."""
    t = p.dtype.type
    lr, eps = t(lr), t(eps)
    acc = np.full_like(p, init)
    for g in grads:
        acc = acc + g * g
        p = p - lr * g / (np.sqrt(acc) + eps)
    return p, acc


def optax_adagrad(p, grads, lr, eps=1e-7, init=0.1):
    """optax/_src/transform.py scale_by_rss + scale_by_learning_rate, optax.apply_updates:
    sum = g**2 + sum; inv = where(sum > 0, rsqrt(sum + eps), 0); u = -lr * (inv * g); p + u."""
    t = p.dtype.type
    lr, eps = t(lr), t(eps)
    acc = np.full_like(p, init)
    for g in grads:
        acc = g ** 2 + acc
        safe = np.where(acc > 0, acc + eps, t(1))
        inv = np.where(acc > 0, t(1) / np.sqrt(safe), t(0))
        p = p + (-lr) * (inv * g)
    return p, acc


def ours(p, grads, backend_name, **kw):
    p = p.copy()
    with fastadagrad.backend(backend_name):
        opt = AdaGrad([p], **kw)
        for g in grads:
            opt.step([g])
    return p, opt.groups[0].accums[0]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.004])
def test_keras3_bit_exact(backend_name, dtype, wd):
    p, grads = problem(dtype)
    expected_p, expected_a = keras3(p, grads, wd=wd)
    got_p, got_a = ours(p, grads, backend_name, convention="keras", weight_decay=wd)
    assert got_p.tobytes() == expected_p.tobytes()
    assert got_a.tobytes() == expected_a.tobytes()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tf_apply_adagrad_v2_bit_exact(backend_name, dtype):
    p, grads = problem(dtype)
    expected_p, expected_a = tf_v2(p, grads)
    got_p, got_a = ours(p, grads, backend_name, convention="tf")
    assert got_p.tobytes() == expected_p.tobytes()
    assert got_a.tobytes() == expected_a.tobytes()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optax(backend_name, dtype):
    """optax multiplies by rsqrt where we divide by sqrt: the same value up to rounding (a few
    ulps of the update); where the accumulator is exactly 0 both leave the parameter alone."""
    p, grads = problem(dtype)
    expected_p, expected_a = optax_adagrad(p, grads, lr=0.3, init=0.0)
    got_p, got_a = ours(p, grads, backend_name, convention="optax", lr=0.3,
                        initial_accumulator_value=0.0)
    assert got_a.tobytes() == expected_a.tobytes()   # g*g + acc == acc + g*g exactly
    zero = expected_a == 0
    assert zero[:10].all() and not zero[10:].any()
    assert got_p[zero].tobytes() == p[zero].tobytes() == expected_p[zero].tobytes()
    tol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(got_p, expected_p, rtol=tol, atol=tol * 0.3 * STEPS)


def test_optax_zero_accumulator_with_eps_zero():
    """eps = 0 and a zero accumulator: 0/0 would be NaN; optax's rule gives exactly 0."""
    for backend_name in BACKENDS:
        p = np.array([1.0, 2.0])
        with fastadagrad.backend(backend_name):
            opt = AdaGrad([p], convention="optax", lr=1.0, eps=0.0, initial_accumulator_value=0.0)
            opt.step([np.array([0.0, 1.0])])
        assert p[0] == 1.0 and p[1] == 1.0   # 2 - 1 * 1 / sqrt(1)
        p2 = np.array([1.0])
        fastadagrad.adagrad_update(p2, np.array([0.0]), np.array([0.0]), eps=0.0)
        assert np.isnan(p2[0])   # the plain formula (torch's) does give 0/0 there


@pytest.mark.parametrize("convention, defaults", [
    (None, dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.0, eps_placement="outside")),
    ("torch", dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.0, eps_placement="outside")),
    ("keras", dict(lr=float(np.float32(0.001)), eps=1e-7, initial_accumulator_value=0.1,
                   eps_placement="inside")),
    ("tf", dict(lr=0.001, eps=1e-7, initial_accumulator_value=0.1, eps_placement="outside")),
])
def test_defaults_and_overrides(convention, defaults):
    opt = AdaGrad([np.zeros(2)], convention=convention)
    for k, v in defaults.items():
        assert getattr(opt.groups[0].options, k) == v, k
    assert np.all(opt.groups[0].accums[0] == defaults["initial_accumulator_value"])
    opt = AdaGrad([np.zeros(2)], convention=convention, lr=0.5, eps=1e-3,
                  initial_accumulator_value=2.0, eps_placement="outside")
    assert opt.groups[0].options.lr == 0.5 and opt.groups[0].options.eps == 1e-3
    assert np.all(opt.groups[0].accums[0] == 2.0)
    if convention == "keras":   # lr through float32, as Keras stores it
        opt = AdaGrad([np.zeros(2)], convention=convention, lr=0.1)
        assert opt.groups[0].options.lr == float(np.float32(0.1)) != 0.1
