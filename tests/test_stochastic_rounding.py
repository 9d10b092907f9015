"""Stochastic rounding of float16 / bfloat16 stores (issue 15 §1): the compiled loops (every ISA
path, every thread count) against the NumPy twin (fastadagrad._stochastic), byte for byte; the
rounding is unbiased (statistical test with a fixed seed); the key makes it reproducible;
bad arguments are refused before anything is written."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastadagrad
from fastadagrad import _stochastic, reference
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (the bfloat16 tests need it)")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
LOW = (F16, BF16)
ISAS = _kernels.isa_available() if _kernels is not None else ()
COMBOS = [(p, g, a) for p in LOW for g, a in itertools.product((p, F32), (F32, p))]
COMBO_IDS = [f"{p.name}-g{g.name}-a{a.name}" for p, g, a in COMBOS]


def edge_values(n, rng):
    """float32 values at and around every float16/bfloat16 rounding boundary, subnormals,
    overflow, inf, NaN, zeros, and random ones."""
    rand = (rng.standard_normal(n) * 10.0 ** rng.integers(-9, 6, n)).astype(np.float32)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.0, 65520.0, 65536.0,
                        6.1e-5, 6.0e-8, 3.0e-8, 2.9e-8, 1e-40, -1e-45, 3.39e38, 1.0, -1.0,
                        1.0 + 2.0**-9, 1.0 + 3 * 2.0**-12], dtype=np.float32)
    return np.concatenate([special, rand, bits])


def both(param, grad, accum, master=None, **options):
    """(compiled outputs, NumPy outputs) on copies."""
    out = []
    for fn in (fastadagrad.adagrad_update, reference.adagrad_update):
        arrays = [x.copy() for x in (param, grad, accum)]
        m = None if master is None else master.copy()
        fn(*arrays, master=m, **options)
        out.append((arrays, m))
    return out


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", (1, 2))
def test_compiled_equals_numpy_every_isa_and_thread_count(compiled, restore_isa, restore_threads,
                                                          combo, isa, threads):
    compiled.set_isa(isa)
    fastadagrad.set_num_threads(threads)
    rng = np.random.default_rng(7)
    n = 70_001   # above the parallel threshold, an odd tail
    p, g, a = combo
    param = rng.standard_normal(n).astype(p)
    grad = rng.standard_normal(n).astype(g)
    accum = np.abs(rng.standard_normal(n)).astype(a)
    for master in (None, param.astype(F32) + np.float32(1e-3)):
        (fast, fm), (slow, sm) = both(param, grad, accum, master, lr=0.05, step=3, weight_decay=0.01,
                                      stochastic_rounding=True, seed=12345)
        for x, y, name in zip(fast, slow, ("param", "grad", "accum")):
            assert_same_bits(x, y, name)
        if master is not None:
            assert_same_bits(fm, sm, "master")


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("isa", ISAS)
def test_rounding_of_edge_values_equals_numpy(compiled, restore_isa, dtype, isa):
    """lr=0 with float32 master weights: the param receives the master rounded stochastically,
    so every edge value goes through the compiled rounding and the twin's."""
    compiled.set_isa(isa)
    master = edge_values(50_000, np.random.default_rng(3))
    n = master.size
    param = np.zeros(n, dtype)
    grad = np.ones(n, np.float32)
    accum = np.ones(n, np.float32)
    (fast, fm), (slow, sm) = both(param, grad, accum, master, lr=0.0, stochastic_rounding=True,
                                  seed=2**64 - 1, step=2**40 + 5)
    assert_same_bits(fast[0], slow[0], "param")
    # and the result is one of the two neighbours (or the value itself), NaN where NaN
    with np.errstate(all="ignore"):
        near = master.astype(dtype)
    finite = np.isfinite(master) & np.isfinite(near.astype(np.float32))
    got = fast[0].astype(np.float32)[finite]
    x = master[finite]
    lo = np.minimum(near.astype(np.float32)[finite], got)
    hi = np.maximum(near.astype(np.float32)[finite], got)
    assert np.all((lo <= x) & (x <= hi) | (got == near.astype(np.float32)[finite]))
    assert np.array_equal(np.isnan(fast[0].astype(np.float32)), np.isnan(master))


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("frac", (0.1, 0.5, 0.77))
def test_rounding_is_unbiased(dtype, frac):
    """x a fraction `frac` of the way between two neighbours (a normal value, and a float16
    subnormal): rounded up in a fraction `frac` of 200,000 elements, within 5 standard
    deviations (fixed seed: deterministic)."""
    for lo in (1.0, 3.0 * 2.0**-24 if dtype == F16 else 3.0 * 2.0**-133):
        lo = np.array(lo, np.float32).astype(dtype)
        hi = np.nextafter(lo.astype(np.float32), np.float32(np.inf)).astype(dtype)
        if hi == lo:   # nextafter in float32 is below the storage dtype's spacing
            bits = lo.view(np.uint16) + np.uint16(1)
            hi = bits.view(dtype)
        gap = hi.astype(np.float64) - lo.astype(np.float64)
        x = np.float32(lo.astype(np.float64) + frac * gap)
        n = 200_000
        xs = np.full(n, x, np.float32)
        r = _stochastic.bits(_stochastic.keys(99, 1), np.arange(n))
        out = _stochastic.narrow(xs, dtype, r).astype(np.float64)
        assert set(np.unique(out)) <= {float(lo.astype(np.float64)), float(hi.astype(np.float64))}
        up = np.mean(out == hi.astype(np.float64))
        exact = (x.astype(np.float64) - lo.astype(np.float64)) / gap
        assert abs(up - exact) < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-6


def test_small_updates_are_not_lost():
    """bfloat16 param 1.0 with updates of a quarter ulp: round-to-nearest never moves it,
    stochastic rounding moves its mean by the sum of the updates."""
    n, steps = 100_000, 8
    param_rn = np.ones(n, BF16)
    param_sr = np.ones(n, BF16)
    grad = np.ones(n, np.float32)
    for step in range(1, steps + 1):
        # accum huge so that lr*g/sqrt(accum) = 2^-10 (a quarter of bfloat16's ulp at 1: 2^-7 / 2)
        acc = np.full(n, 1.0, np.float32)
        fastadagrad.adagrad_update(param_rn, grad, acc.copy(), lr=2.0**-10 * np.sqrt(2.0), eps=0.0)
        fastadagrad.adagrad_update(param_sr, grad, acc.copy(), lr=2.0**-10 * np.sqrt(2.0), eps=0.0,
                                   step=step, seed=5, stochastic_rounding=True)
    assert np.all(param_rn == 1.0)
    mean = param_sr.astype(np.float64).mean()
    assert abs(mean - (1.0 - steps * 2.0**-10)) < 2e-4


def test_key_makes_it_reproducible(compiled):
    rng = np.random.default_rng(1)
    param = rng.standard_normal(10_000).astype(BF16)
    grad = rng.standard_normal(10_000).astype(np.float32)

    def run(**kw):
        p, a = param.copy(), np.ones(param.shape, np.float32)
        fastadagrad.adagrad_update(p, grad, a, lr=0.01, stochastic_rounding=True, **kw)
        return p.view(np.uint16)

    assert np.array_equal(run(seed=1, step=4), run(seed=1, step=4))
    assert not np.array_equal(run(seed=1, step=4), run(seed=2, step=4))
    assert not np.array_equal(run(seed=1, step=4), run(seed=1, step=5))


@pytest.mark.parametrize("layout", ("F", "strided"))
def test_views_use_the_c_order_index(compiled, layout):
    """A non-C-contiguous view is rounded with its elements' C-order counters (both backends)."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((64, 48)).astype(F16)
    param = np.asfortranarray(base) if layout == "F" else base[:, ::2]
    grad = np.asarray(rng.standard_normal(param.shape), F32)
    accum = np.ones(param.shape, F32)
    options = dict(lr=0.01, stochastic_rounding=True, seed=3)
    p1 = param.copy(order="K") if layout == "F" else base.copy()[:, ::2]
    fastadagrad.adagrad_update(p1, grad, accum.copy(), **options)
    p2 = np.ascontiguousarray(param)
    fastadagrad.adagrad_update(p2, grad, accum.copy(), **options)
    assert_same_bits(p1, p2, "param")


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("rowwise", (False, True))
def test_sparse_compiled_equals_numpy(compiled, dtype, rowwise):
    rng = np.random.default_rng(4)
    table = rng.standard_normal((500, 33)).astype(dtype)
    accum = np.ones(500 if rowwise else (500, 33), np.float32)
    idx = rng.integers(0, 500, 300)
    grads = rng.standard_normal((300, 33)).astype(np.float32)
    out = []
    for fn in (fastadagrad.sparse_adagrad_update, reference.sparse_adagrad_update):
        t, a = table.copy(), accum.copy()
        fn(t, a, idx, grads, lr=0.05, stochastic_rounding=True, seed=8, step=3)
        out.append((t, a))
    assert_same_bits(out[0][0], out[1][0], "table")
    assert_same_bits(out[0][1], out[1][1], "accum")
    t, a = table.copy(), accum.copy()
    fastadagrad.sparse_adagrad_update(t, a, idx, grads, lr=0.05, stochastic_rounding=True, seed=8,
                                      step=4)
    assert not np.array_equal(t.view(np.uint16), out[0][0].view(np.uint16))


@pytest.mark.parametrize("backend", ("cython", "numpy"))
def test_bad_arguments_write_nothing(backend):
    if backend == "cython" and _kernels is None:
        pytest.skip("compiled extension not built")
    rng = np.random.default_rng(5)
    p16 = rng.standard_normal(100).astype(F16)
    p32 = rng.standard_normal(100).astype(F32)
    cases = [
        (p32, dict(stochastic_rounding=True), TypeError, "stochastic_rounding"),
        (p16, dict(stochastic_rounding=1), TypeError, "stochastic_rounding"),
        (p16, dict(stochastic_rounding=True, seed=-1), ValueError, "seed"),
        (p16, dict(stochastic_rounding=True, seed=2**64), ValueError, "seed"),
        (p16, dict(stochastic_rounding=True, seed=1.5), TypeError, "seed"),
        (p16, dict(stochastic_rounding=True, seed=True), TypeError, "seed"),
    ]
    with fastadagrad.backend(backend):
        for param, kw, exc, name in cases:
            p, a = param.copy(), np.ones(100, np.float32 if param.dtype == F16 else param.dtype)
            g = np.ones(100, param.dtype)
            with pytest.raises(exc, match=f"`{name}`"):
                fastadagrad.adagrad_update(p, g, a, **kw)
            assert_same_bits(p, param, "param")
            assert np.all(a == 1)
        table = p16.reshape(10, 10).copy()
        with pytest.raises(ValueError, match="`seed`"):
            fastadagrad.sparse_adagrad_update(table, np.ones((10, 10), np.float32), np.arange(3),
                                              np.ones((3, 10), np.float32), seed=-2,
                                              stochastic_rounding=True)
        assert_same_bits(table, p16.reshape(10, 10), "table")
