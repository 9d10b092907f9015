"""The C fast gate of the family's dense functions (kernels.family_fast): what it accepts gives
the validated path's bytes; what it refuses falls through to the full validation (same
errors, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import family
from _helpers import assert_same_bits

pytestmark = pytest.mark.skipif(not fastadagrad.compiled_available(),
                                reason="needs the compiled extension")

CALLS = {
    "proximal": (lambda p, g, s, **k: fastadagrad.proximal_adagrad_update(p, g, *s, **k),
                 dict(lr=0.1, l1=0.05, l2=0.01), 1, None),
    "da": (lambda p, g, s, **k: fastadagrad.adagrad_da_update(p, g, *s, step=3, **k),
           dict(lr=0.1, l1=0.01, l2=0.01), 2, 3),
    "glove": (lambda p, g, s, **k: fastadagrad.glove_adagrad_update(p, g, *s, **k),
              dict(lr=0.1), 1, None),
}


def _arrays(rng, shape, dtype, k, order="C"):
    p = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
    g = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
    states = [np.asarray(np.abs(rng.standard_normal(shape)) + 0.1, dtype=dtype, order=order)
              for _ in range(k)]
    return p, g, states


@pytest.mark.parametrize("rule", list(CALLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, order", [((1000,), "C"), ((40, 33), "F"), ((), "C"),
                                          ((0,), "C"), ((70000,), "C")])
def test_gate_gives_the_validated_bytes(compiled, rule, dtype, shape, order):
    fn, hyper, k, step = CALLS[rule]
    rng = np.random.default_rng(0)
    p, g, states = _arrays(rng, shape, dtype, k, order)
    hyper_gate = {"l1": 0.0, "l2": 0.0, **{x: y for x, y in hyper.items() if x != "lr"}}
    got = [p.copy(order="K")] + [s.copy(order="K") for s in states]
    assert compiled.family_fast(fastadagrad.reference_family.RULE_IDS[rule], got[0], g,
                                got[1], got[2] if k == 2 else None, hyper["lr"],
                                hyper_gate["l1"], hyper_gate["l2"], step)
    want = [p.copy(order="K")] + [s.copy(order="K") for s in states]
    family.rule_update(rule, want[0], g, *want[1:], step=step, backend="numpy", **hyper)
    for x, y in zip(got, want):
        assert_same_bits(x, y)
    public = [p.copy(order="K")] + [s.copy(order="K") for s in states]
    fn(public[0], g, public[1:], **hyper)
    for x, y in zip(public, want):
        assert_same_bits(x, y)


def test_gate_refuses_and_validation_names_the_problem(compiled):
    rng = np.random.default_rng(1)
    p, g, (a,) = _arrays(rng, (100,), np.float64, 1)
    p0, a0 = p.copy(), a.copy()
    ro = p.copy()
    ro.flags.writeable = False
    refused = [
        (dict(param=p, grad=g, accum=p), ValueError, "overlap"),          # accum is param
        (dict(param=ro, grad=g, accum=a), ValueError, "param"),            # read-only
        (dict(param=p, grad=g.astype(np.float32), accum=a), (TypeError, ValueError), "grad"),
        (dict(param=p, grad=list(g), accum=a), TypeError, "grad"),
        (dict(param=p, grad=g[:50], accum=a), ValueError, "shape"),
    ]
    for kw, exc, match in refused:
        assert not compiled.family_fast(1, kw["param"], kw["grad"], kw["accum"], None, 0.1,
                                        0.0, 0.0, None)
        with pytest.raises(exc, match=match):
            fastadagrad.proximal_adagrad_update(kw["param"], kw["grad"], kw["accum"], lr=0.1)
    for bad in (dict(lr=-1.0), dict(lr=np.nan), dict(l1=-0.5), dict(lr="0.1")):
        args = {**dict(lr=0.1, l1=0.0, l2=0.0), **bad}
        assert not compiled.family_fast(1, p, g, a, None, args["lr"], args["l1"], args["l2"],
                                        None)
        with pytest.raises((TypeError, ValueError), match=next(iter(bad))):
            fastadagrad.proximal_adagrad_update(p, g, a, **args)
    for step in (0, -3, 1.5, True, 2 ** 70):
        assert not compiled.family_fast(2, p, g, a, a0.copy(), 0.1, 0.0, 0.0, step)
    assert_same_bits(p, p0)
    assert_same_bits(a, a0)


def test_gate_leaves_numpy_backend_alone():
    """With the NumPy backend selected, the public functions run the twin (the gate is the
    compiled backend's)."""
    rng = np.random.default_rng(2)
    p, g, (a,) = _arrays(rng, (257,), np.float32, 1)
    outs = []
    for name in ["numpy"] + (["cython"] if fastadagrad.compiled_available() else []):
        q, b = p.copy(), a.copy()
        with fastadagrad.backend(name):
            fastadagrad.proximal_adagrad_update(q, g, b, lr=0.1, l1=0.01)
        outs.append((q, b))
    assert_same_bits(outs[0][0], outs[-1][0])
    assert_same_bits(outs[0][1], outs[-1][1])


# ----------------------------------------------------------------------------- the sparse gate
SPARSE_CALLS = {
    "proximal": (lambda t, s, i, g, **k: fastadagrad.sparse_proximal_adagrad_update(t, *s, i, g, **k),
                 dict(lr=0.1, l1=0.05, l2=0.01), 1, None),
    "da": (lambda t, s, i, g, **k: fastadagrad.sparse_adagrad_da_update(t, *s, i, g, step=3, **k),
           dict(lr=0.1, l1=0.01, l2=0.01), 2, 3),
    "glove": (lambda t, s, i, g, **k: fastadagrad.sparse_glove_adagrad_update(t, *s, i, g, **k),
              dict(lr=0.1), 1, None),
}


@pytest.mark.parametrize("rule", list(SPARSE_CALLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("duplicates", ["sum", "sequential"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_sparse_gate_gives_the_validated_bytes(compiled, rule, dtype, duplicates, index_dtype):
    """kernels.family_sparse_fast does the step (the public functions take it) with the bytes
    of the fully checked path (family.sparse_rule_update) and of the NumPy twin."""
    fn, hyper, k, step = SPARSE_CALLS[rule]
    rng = np.random.default_rng(4)
    table, _, states = _arrays(rng, (60, 12), dtype, k)
    idx = rng.integers(0, 60, 90).astype(index_dtype)
    grads = rng.standard_normal((90, 12)).astype(dtype)
    hyper_gate = {"l1": 0.0, "l2": 0.0, **{x: y for x, y in hyper.items() if x != "lr"}}
    got = [table.copy()] + [s.copy() for s in states]
    assert compiled.family_sparse_fast(
        fastadagrad.reference_family.RULE_IDS[rule], got[0], got[1], got[2] if k == 2 else None,
        idx, grads, hyper["lr"], hyper_gate["l1"], hyper_gate["l2"], step, duplicates)
    for backend in ("cython", "numpy"):
        want = [table.copy()] + [s.copy() for s in states]
        family.sparse_rule_update(rule, want[0], want[1:], idx, grads, duplicates=duplicates,
                                  step=step, backend=backend, **hyper)
        for x, y in zip(got, want):
            assert_same_bits(x, y)
    public = [table.copy()] + [s.copy() for s in states]
    fn(public[0], public[1:], idx, grads, duplicates=duplicates, **hyper)
    for x, y in zip(public, got):
        assert_same_bits(x, y)


def test_sparse_gate_refuses_and_validation_names_the_problem(compiled):
    """Whatever kernels.family_sparse_fast refuses writes nothing there and reaches the full
    checks, which raise naming the problem (still nothing written)."""
    rng = np.random.default_rng(5)
    t, _, (a, b) = _arrays(rng, (20, 4), np.float64, 2)
    idx = np.array([1, 2, 3])
    g = rng.standard_normal((3, 4))
    snapshot = [x.copy() for x in (t, a, b)]
    ro = t.copy()
    ro.flags.writeable = False
    refused = [   # (table, state, indices, grads, exception, message)
        (t, t, idx, g, ValueError, "overlap"),
        (ro, a, idx, g, ValueError, "read-only"),
        (t, a[:, 0].copy(), idx, g, ValueError, "element-wise"),
        (t, a, np.array([1, 20, 3]), g, ValueError, r"`indices\[1\]` = 20"),
        (t, a, np.array([1, -1, 3], np.int32), g, ValueError, r"`indices\[1\]` = -1"),
        (t, a, idx, g.astype(np.float32), TypeError, "grads"),
        (t, a, idx, g[:2], ValueError, "grads"),
        (t, a, idx, t[:3], ValueError, "overlap"),
    ]
    for table, state, indices, grads, exc, match in refused:
        assert not compiled.family_sparse_fast(1, table, state, None, indices, grads, 0.1, 0.0,
                                               0.0, None, "sum")
        with pytest.raises(exc, match=match):
            fastadagrad.sparse_proximal_adagrad_update(table, state, indices, grads, lr=0.1)
    for bad in (dict(lr=-1.0), dict(lr=np.nan), dict(l1=-0.5), dict(lr="0.1")):
        args = {**dict(lr=0.1, l1=0.0, l2=0.0), **bad}
        assert not compiled.family_sparse_fast(1, t, a, None, idx, g, args["lr"], args["l1"],
                                               args["l2"], None, "sum")
        with pytest.raises((TypeError, ValueError), match=next(iter(bad))):
            fastadagrad.sparse_proximal_adagrad_update(t, a, idx, g, **args)
    for step in (0, -3, 1.5, True, 2 ** 70):
        assert not compiled.family_sparse_fast(2, t, a, b, idx, g, 0.1, 0.0, 0.0, step, "sum")
    assert not compiled.family_sparse_fast(2, t, a, a, idx, g, 0.1, 0.0, 0.0, 3, "sum")
    with pytest.raises(ValueError, match="overlap"):   # the two states of dual averaging
        fastadagrad.sparse_adagrad_da_update(t, a, a, idx, g, step=3, lr=0.1)
    for dup in ("keras", "max", None):
        assert not compiled.family_sparse_fast(1, t, a, None, idx, g, 0.1, 0.0, 0.0, None, dup)
        with pytest.raises(ValueError, match="duplicates"):
            fastadagrad.sparse_proximal_adagrad_update(t, a, idx, g, lr=0.1, duplicates=dup)
    for x, y in zip((t, a, b), snapshot):
        assert_same_bits(x, y)
