"""Rejected calls: the right exception naming the argument, and every array bit-unchanged.

Both backends are held to the same behaviour (same exception type and message)."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad._backend import compiled_available

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])


def fresh(n=64, dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype),
            np.abs(rng.standard_normal(n)).astype(dtype))


def readonly(x):
    x.flags.writeable = False
    return x


def bad_calls():
    """(label, exception, message fragment, args builder, kwargs)."""
    f32, f64 = np.float32, np.float64
    yield "param list", TypeError, "`param` must be a numpy.ndarray", lambda p, g, a: ([1.0] * 64, g, a), {}
    yield "grad list", TypeError, "`grad` must be a numpy.ndarray", lambda p, g, a: (p, list(g), a), {}
    yield "accum scalar", TypeError, "`accum` must be a numpy.ndarray", lambda p, g, a: (p, g, f32(1)), {}
    yield "int param", TypeError, "`param` has dtype int64", lambda p, g, a: (np.zeros(64, np.int64), g, a), {}
    yield "float16 param, float64 grad", TypeError, "`grad` has dtype float64; accepted combinations", lambda p, g, a: (p.astype(np.float16), g.astype(f64), a.astype(np.float16)), {}
    yield "complex grad", TypeError, "`grad` has dtype complex64", lambda p, g, a: (p, g.astype(np.complex64), a), {}
    yield "dtype mismatch grad", TypeError, "`grad` has dtype float64 but `param` has dtype float32", lambda p, g, a: (p, g.astype(f64), a), {}
    yield "dtype mismatch accum", TypeError, "`accum` has dtype float64", lambda p, g, a: (p, g, a.astype(f64)), {}
    yield "shape mismatch grad", ValueError, "`grad` has shape (63,)", lambda p, g, a: (p, g[:63], a), {}
    yield "shape mismatch accum", ValueError, "`accum` has shape (8, 8)", lambda p, g, a: (p, g, a.reshape(8, 8)), {}
    yield "read-only param", ValueError, "`param` is read-only", lambda p, g, a: (readonly(p), g, a), {}
    yield "read-only accum", ValueError, "`accum` is read-only", lambda p, g, a: (p, g, readonly(a)), {}
    yield "param is grad", ValueError, "`param` and `grad` overlap", lambda p, g, a: (p, p, a), {}
    yield "param is accum", ValueError, "`param` and `accum` overlap", lambda p, g, a: (p, g, p), {}
    yield "grad overlaps accum", ValueError, "`grad` and `accum` overlap", lambda p, g, a: (p, a, a), {}
    yield "partial overlap", ValueError, "overlap", lambda p, g, a: (p[:32], g[:32], p[16:48]), {}
    yield "lr < 0", ValueError, "`lr` must be >= 0", None, dict(lr=-0.1)
    yield "eps < 0", ValueError, "`eps` must be >= 0", None, dict(eps=-1e-8)
    yield "lr nan", ValueError, "`lr` must be finite", None, dict(lr=float("nan"))
    yield "lr inf", ValueError, "`lr` must be finite", None, dict(lr=np.inf)
    yield "eps inf", ValueError, "`eps` must be finite", None, dict(eps=float("inf"))
    yield "weight_decay nan", ValueError, "`weight_decay` must be finite", None, dict(weight_decay=float("nan"))
    yield "weight_decay < 0", ValueError, "`weight_decay` must be >= 0", None, dict(weight_decay=-1.0)
    yield "lr_decay inf", ValueError, "`lr_decay` must be finite", None, dict(lr_decay=float("inf"))
    yield "lr_decay < 0", ValueError, "`lr_decay` must be >= 0", None, dict(lr_decay=-0.5)
    yield "lr str", TypeError, "`lr` must be a real number", None, dict(lr="0.1")
    yield "lr None", TypeError, "`lr` must be a real number", None, dict(lr=None)
    yield "lr huge int", ValueError, "`lr` must be finite", None, dict(lr=10**400)
    yield "step 0", ValueError, "`step` must be >= 1", None, dict(step=0)
    yield "step -3", ValueError, "`step` must be >= 1", None, dict(step=-3)
    yield "step huge", ValueError, "`step` must be <= 2**63 - 1", None, dict(step=2**63)
    yield "step float", TypeError, "`step` must be an integer", None, dict(step=2.0)
    yield "step bool", TypeError, "`step` must be an integer", None, dict(step=True)
    yield "eps_placement", ValueError, "`eps_placement` must be 'outside' or 'inside'", None, dict(eps_placement="middle")
    yield "eps_placement None", ValueError, "`eps_placement`", None, dict(eps_placement=None)
    yield "maximize int", TypeError, "`maximize` must be a bool", None, dict(maximize=1)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", list(bad_calls()), ids=lambda c: c[0])
def test_rejected_call_changes_nothing(backend_name, case):
    label, exc, fragment, build, kwargs = case
    p, g, a = fresh()
    args = build(p, g, a) if build else (p, g, a)
    snapshots = [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in (p, g, a)]
    with fastadagrad.backend(backend_name):
        with pytest.raises(exc) as info:
            fastadagrad.adagrad_update(*args, **kwargs)
    assert fragment in str(info.value), str(info.value)
    for original, snap in zip((p, g, a), snapshots):
        assert original.tobytes() == snap.tobytes(), f"{label}: an array was written"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_accepted_number_types(backend_name):
    """NumPy scalars and ints are fine hyper-parameters; both backends agree on the result."""
    results = []
    for kwargs in (dict(lr=0.5, eps=1e-8, step=3, lr_decay=0.25),
                   dict(lr=np.float64(0.5), eps=np.float32(1e-8), step=np.int64(3), lr_decay=0.25),
                   dict(lr=0.5, eps=1e-8, step=np.uint8(3), lr_decay=np.float16(0.25), maximize=np.bool_(False))):
        p, g, a = fresh()
        with fastadagrad.backend(backend_name):
            fastadagrad.adagrad_update(p, g, a, **kwargs)
        results.append(p)
    # eps=np.float32(1e-8) is a different double than 1e-8, so compare 0 vs 2 and check 1 ran.
    assert results[0].tobytes() == results[2].tobytes()
    assert not np.array_equal(results[1], fresh()[0])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_readonly_grad_and_zero_lr(backend_name):
    p, g, a = fresh()
    g.flags.writeable = False
    p0, a0 = p.copy(), a.copy()
    with fastadagrad.backend(backend_name):
        fastadagrad.adagrad_update(p, g, a, lr=0)
    assert p.tobytes() == p0.tobytes()  # lr = 0 moves nothing
    assert np.array_equal(a, a0 + g * g)  # but the accumulator still accumulates


def test_messages_agree_between_backends():
    if not compiled_available():
        pytest.skip("compiled extension not built")
    for label, exc, _, build, kwargs in bad_calls():
        messages = []
        for name in ("numpy", "cython"):
            p, g, a = fresh()
            args = build(p, g, a) if build else (p, g, a)
            with fastadagrad.backend(name), pytest.raises(exc) as info:
                fastadagrad.adagrad_update(*args, **kwargs)
            messages.append(str(info.value))
        assert messages[0] == messages[1], label
