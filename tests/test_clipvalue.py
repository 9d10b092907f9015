"""Clipping by value (Keras' `clipvalue`, torch's `clip_grad_value_`), clipping of sparse grads
and clipping with the family rules (issue 14): bit for bit against the NumPy twin on every ISA
and thread count, bit for bit against the peers' rule transcribed (clip a copy of the grads,
then the unclipped step), and against torch and Keras themselves where installed."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import _backend
from _helpers import assert_same_bits

BACKENDS = ["numpy"] + (["cython"] if fastadagrad.compiled_available() else [])
DTYPES = [np.float32, np.float64]


def _clip(g, v):
    """The peers' clip: np.clip (Keras' numpy backend), torch.clamp, tf.clip_by_value."""
    t = g.dtype.type
    return np.clip(g, -t(v), t(v))


def _grad(rng, shape, dtype):
    g = (3 * rng.standard_normal(shape)).astype(dtype)
    g.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 0.5]   # NaN kept, inf clipped, +-0 kept
    return g


def _both(fn, arrays, **kw):
    """fn run on copies with each backend: the outputs of the NumPy twin and of the loops."""
    outs = []
    for name in BACKENDS:
        got = [a.copy() for a in arrays]
        with fastadagrad.backend(name):
            fn(*got, **kw)
        outs.append(got)
    return outs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(), dict(maximize=True, weight_decay=0.1),
                                dict(update_slots=False), dict(eps_placement="inside")], ids=str)
def test_dense_clipvalue_is_clip_then_step(dtype, kw):
    """adagrad_update(clipvalue=v) == np.clip(grad, -v, v) then the unclipped step, bit for
    bit (the peers' order: clip the raw gradient, then maximize's sign and weight decay), on
    both backends; the caller's grad is not modified."""
    rng = np.random.default_rng(0)
    p, g, a = rng.standard_normal(1003).astype(dtype), _grad(rng, 1003, dtype), \
        np.abs(rng.standard_normal(1003)).astype(dtype)
    g0 = g.copy()
    want = [p.copy(), a.copy()]
    fastadagrad.adagrad_update(want[0], _clip(g, 0.5), want[1], lr=0.1, **kw)
    for got in _both(lambda p, a: fastadagrad.adagrad_update(p, g, a, lr=0.1, clipvalue=0.5, **kw),
                     [p, a]):
        assert_same_bits(got[0], want[0])
        assert_same_bits(got[1], want[1])
    assert_same_bits(g, g0)


@pytest.mark.skipif(not fastadagrad.compiled_available(), reason="needs the compiled extension")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 33, 32768 + 17, 100_003])
def test_dense_clipvalue_every_isa_and_thread_count(restore_isa, restore_threads, dtype, n):
    from fastadagrad._backend import _kernels
    rng = np.random.default_rng(n)
    p, g, a = rng.standard_normal(n).astype(dtype), _grad(rng, n, dtype), \
        np.abs(rng.standard_normal(n)).astype(dtype)
    want = [p.copy(), a.copy()]
    with fastadagrad.backend("numpy"):
        fastadagrad.adagrad_update(want[0], g, want[1], lr=0.1, clipvalue=0.25)
    for isa in _kernels.isa_available():
        _kernels.set_isa(isa)
        for threads in (1, 2, 3):
            fastadagrad.set_num_threads(threads)
            got = [p.copy(), a.copy()]
            with fastadagrad.backend("cython"):
                fastadagrad.adagrad_update(got[0], g, got[1], lr=0.1, clipvalue=0.25)
            assert_same_bits(got[0], want[0], f"{isa}, {threads} threads")
            assert_same_bits(got[1], want[1], f"{isa}, {threads} threads")


@pytest.mark.parametrize("layout", ["F", "strided", "byteswapped"])
def test_dense_clipvalue_views_in_place(layout):
    rng = np.random.default_rng(1)
    base = [rng.standard_normal((40, 30)), _grad(rng, (40, 30), np.float64),
            np.abs(rng.standard_normal((40, 30)))]
    if layout == "F":
        base = [np.asfortranarray(x) for x in base]
    elif layout == "byteswapped":
        base = [x.astype(x.dtype.newbyteorder(">")) for x in base]
    outs = []
    for name in BACKENDS:
        p, g, a = (x.copy(order="K") for x in base)
        view = (lambda x: x[::2, 1::3]) if layout == "strided" else (lambda x: x)
        with fastadagrad.backend(name):
            fastadagrad.adagrad_update(view(p), view(g), view(a), lr=0.1, clipvalue=0.5)
        outs.append((p, a))
    want = [base[0].astype(np.float64), base[2].astype(np.float64)]
    view = (lambda x: x[::2, 1::3]) if layout == "strided" else (lambda x: x)
    fastadagrad.adagrad_update(view(want[0]), _clip(view(base[1]).astype(np.float64), 0.5),
                               view(want[1]), lr=0.1)
    for p, a in outs:
        assert_same_bits(p.astype(np.float64), want[0])
        assert_same_bits(a.astype(np.float64), want[1])


def test_clipvalue_validation_writes_nothing():
    w, a = np.ones(5), np.zeros(5)
    for backend in BACKENDS:
        with fastadagrad.backend(backend):
            for kw, exc in ((dict(clipvalue=0.0), ValueError), (dict(clipvalue=-1.0), ValueError),
                            (dict(clipvalue=np.nan), ValueError), (dict(clipvalue="1"), TypeError),
                            (dict(clipvalue=1.0, clipnorm=1.0), ValueError)):
                with pytest.raises(exc, match="clipvalue"):
                    fastadagrad.adagrad_update(w, np.ones(5), a, **kw)
                with pytest.raises(exc, match="clipvalue"):
                    fastadagrad.sparse_adagrad_update(np.ones((3, 5)), np.zeros((3, 5)),
                                                      np.array([0]), np.ones((1, 5)), **kw)
                with pytest.raises(exc, match="clipvalue"):
                    fastadagrad.proximal_adagrad_update(w, np.ones(5), a + 1, **kw)
            with pytest.raises(ValueError, match="row-wise"):
                fastadagrad.sparse_adagrad_update(np.ones((3, 5)), np.zeros(3), np.array([0]),
                                                  np.ones((1, 5)), clipvalue=1.0)
            with pytest.raises(ValueError, match="float16/bfloat16"):
                fastadagrad.adagrad_update(np.ones(4, np.float16), np.ones(4, np.float16),
                                           np.zeros(4, np.float32), clipvalue=1.0)
    assert_same_bits(w, np.ones(5))
    assert_same_bits(a, np.zeros(5))
    for kw in (dict(clipvalue=1.0, clipnorm=1.0), dict(clipvalue=1.0, global_clipnorm=1.0)):
        with pytest.raises(ValueError, match="exclusive"):
            fastadagrad.AdaGrad([w], **kw)


# ----------------------------------------------------------------------------- sparse
def _sparse_problem(dtype, b=40, d=13, n=50, seed=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype(dtype),
            np.abs(rng.standard_normal((n, d))).astype(dtype),
            rng.integers(0, 20, b), _grad(rng, (b, d), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dup", ["sum", "sequential", "keras"])
@pytest.mark.parametrize("maximize", [False, True])
def test_sparse_clipvalue_clips_every_occurrence_first(dtype, dup, maximize):
    """Keras clips an IndexedSlices' values as passed (before any deduplication); TF 2's Keras
    optimizers then summed duplicates: clipvalue == clip a copy of `grads`, then the unclipped
    step with that duplicates rule, bit for bit, on both backends."""
    t, a, idx, g = _sparse_problem(dtype)
    want = [t.copy(), a.copy()]
    fastadagrad.sparse_adagrad_update(want[0], want[1], idx, _clip(g, 0.5), lr=0.1,
                                      duplicates=dup, maximize=maximize)
    for got in _both(lambda t, a: fastadagrad.sparse_adagrad_update(
            t, a, idx, g, lr=0.1, duplicates=dup, maximize=maximize, clipvalue=0.5), [t, a]):
        assert_same_bits(got[0], want[0])
        assert_same_bits(got[1], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rowwise", [False, True])
def test_sparse_clipnorm_is_the_norm_of_the_rows_as_passed(dtype, rowwise):
    """clipnorm on a sparse batch: norm = sqrt of the sum of squares of every row of `grads`
    (duplicates counted per occurrence, as Keras' clip_by_norm / global_norm of an
    IndexedSlices); with duplicates="sequential" each occurrence steps with grad * scale, i.e.
    the unclipped step on the grads scaled by dtype(scale), bit for bit."""
    t, a, idx, g = _sparse_problem(dtype)
    g = np.nan_to_num(g, nan=1.0, posinf=2.0, neginf=-2.0)
    if rowwise:
        a = a[:, 0].copy()
    norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    assert norm > 2.0
    scale = dtype(2.0 / norm)
    want = [t.copy(), a.copy()]
    fastadagrad.sparse_adagrad_update(want[0], want[1], idx, g * scale, lr=0.1,
                                      duplicates="sequential")
    outs = _both(lambda t, a: fastadagrad.sparse_adagrad_update(
        t, a, idx, g, lr=0.1, duplicates="sequential", clipnorm=2.0), [t, a])
    for got in outs:
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert_same_bits(outs[0][0], outs[-1][0])
    assert_same_bits(outs[0][1], outs[-1][1])


@pytest.mark.skipif(not fastadagrad.compiled_available(), reason="needs the compiled extension")
@pytest.mark.parametrize("dup", ["sum", "sequential", "keras"])
@pytest.mark.parametrize("clip", [dict(clipvalue=0.5), dict(clipnorm=20.0)], ids=str)
def test_sparse_clipping_every_isa_and_thread_count(restore_isa, restore_threads, dup, clip):
    from fastadagrad._backend import _kernels
    t, a, idx, g = _sparse_problem(np.float32, b=4096, d=13, n=3000)
    want = [t.copy(), a.copy()]
    with fastadagrad.backend("numpy"):
        fastadagrad.sparse_adagrad_update(*want, idx, g, lr=0.1, duplicates=dup, **clip)
    for isa in _kernels.isa_available():
        _kernels.set_isa(isa)
        for threads in (1, 2, 3):
            fastadagrad.set_num_threads(threads)
            got = [t.copy(), a.copy()]
            with fastadagrad.backend("cython"):
                fastadagrad.sparse_adagrad_update(*got, idx, g, lr=0.1, duplicates=dup, **clip)
            assert_same_bits(got[0], want[0], f"{isa}, {threads} threads")
            assert_same_bits(got[1], want[1], f"{isa}, {threads} threads")


# ----------------------------------------------------------------------------- family rules
FAMILY = [
    ("proximal", lambda p, g, s, **k: fastadagrad.proximal_adagrad_update(p, g, *s, **k),
     dict(l1=0.05, l2=0.01), 1),
    ("da", lambda p, g, s, **k: fastadagrad.adagrad_da_update(p, g, *s, step=3, **k),
     dict(l1=0.01, l2=0.01), 2),
    ("glove", lambda p, g, s, **k: fastadagrad.glove_adagrad_update(p, g, *s, **k), {}, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule, fn, hyper, k", FAMILY, ids=[f[0] for f in FAMILY])
def test_family_rules_see_the_clipped_gradient(dtype, rule, fn, hyper, k):
    """The family rules clip the gradient before the rule: clipvalue == the rule on
    np.clip(grad) and clipnorm == the rule on grad * dtype(scale), bit for bit, both
    backends (the fused loop applies the clip; nothing is copied)."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal(1000).astype(dtype)
    g = np.nan_to_num(_grad(rng, 1000, dtype), nan=0.25, posinf=4.0, neginf=-4.0)
    states = [np.abs(rng.standard_normal(1000)).astype(dtype) + dtype(0.1) for _ in range(k)]
    norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    for clip, g_peer in ((dict(clipvalue=0.5), _clip(g, 0.5)),
                         (dict(clipnorm=5.0), g * dtype(5.0 / norm))):
        want = [p.copy()] + [s.copy() for s in states]
        fn(want[0], g_peer, want[1:], lr=0.1, **hyper)
        for got in _both(lambda p, *s: fn(p, g, list(s), lr=0.1, **hyper, **clip),
                         [p] + states):
            for x, y in zip(got, want):
                assert_same_bits(x, y, str(clip))


@pytest.mark.parametrize("rule", ["proximal", "glove", "da"])
@pytest.mark.parametrize("dup", ["sum", "sequential"])
def test_sparse_family_clipvalue_clips_every_occurrence_first(rule, dup):
    from fastadagrad import family
    t, a, idx, g = _sparse_problem(np.float64)
    states = [a.copy() for _ in range(2 if rule == "da" else 1)]
    hyper = dict(step=2) if rule == "da" else {}
    want = [t.copy()] + [s.copy() for s in states]
    family.sparse_rule_update(rule, want[0], want[1:], idx, _clip(g, 0.5), duplicates=dup,
                              lr=0.1, **hyper)
    for got in _both(lambda t, *s: family.sparse_rule_update(
            rule, t, list(s), idx, g, duplicates=dup, lr=0.1, clipvalue=0.5, **hyper),
            [t] + states):
        for x, y in zip(got, want):
            assert_same_bits(x, y)


@pytest.mark.skipif(not fastadagrad.compiled_available(), reason="needs the compiled extension")
@pytest.mark.parametrize("dup", ["sum", "sequential"])
def test_sparse_family_clipping_thread_counts(restore_threads, dup):
    from fastadagrad import family
    t, a, idx, g = _sparse_problem(np.float32, b=4096, d=13, n=3000)
    for clip in (dict(clipvalue=0.5), dict(clipnorm=20.0)):
        want = [t.copy(), a.copy()]
        family.sparse_rule_update("proximal", want[0], want[1:], idx, g, duplicates=dup,
                                  lr=0.1, l1=0.01, backend="numpy", **clip)
        for threads in (1, 2, 3):
            fastadagrad.set_num_threads(threads)
            got = [t.copy(), a.copy()]
            family.sparse_rule_update("proximal", got[0], got[1:], idx, g, duplicates=dup,
                                      lr=0.1, l1=0.01, backend="cython", **clip)
            assert_same_bits(got[0], want[0], f"{clip} {threads}")
            assert_same_bits(got[1], want[1], f"{clip} {threads}")


# ----------------------------------------------------------------------------- the optimizer
@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_clipvalue_dense_sparse_and_rules(backend):
    """AdaGrad(clipvalue=v) gives the function API's bytes: dense arrays, a SparseGrad
    (every occurrence clipped before its duplicates rule), and rule="proximal"."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal(100)
    e = rng.standard_normal((30, 5))
    gw = _grad(rng, 100, np.float64)
    idx = np.array([3, 7, 3, 29, 7, 3])
    vals = 3 * rng.standard_normal((6, 5))
    with fastadagrad.backend(backend):
        p = [w.copy(), e.copy()]
        opt = fastadagrad.AdaGrad(p, lr=0.1, clipvalue=0.5, duplicates="keras")
        opt.step([gw, fastadagrad.SparseGrad(idx, vals)])
        want = [w.copy(), e.copy()]
        acc = [np.zeros(100), np.zeros((30, 5))]
        fastadagrad.adagrad_update(want[0], gw, acc[0], lr=0.1, clipvalue=0.5)
        fastadagrad.sparse_adagrad_update(want[1], acc[1], idx, vals, lr=0.1, clipvalue=0.5,
                                          duplicates="keras")
        for x, y in zip(p, want):
            assert_same_bits(x, y)
        q = w.copy()
        opt = fastadagrad.AdaGrad([q], rule="proximal", lr=0.1, l1=0.01, clipvalue=0.5)
        opt.step([gw])
        want_q, acc_q = w.copy(), np.full(100, 0.1)
        fastadagrad.proximal_adagrad_update(want_q, gw, acc_q, lr=0.1, l1=0.01, clipvalue=0.5)
        assert_same_bits(q, want_q)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["adagrad", "proximal"])
def test_optimizer_global_clipnorm_with_sparse_grads(backend, rule):
    """global_clipnorm over a dense grad and a SparseGrad: the norm adds the dense grad's
    sum of squares and the SparseGrad values' (rows as passed), then every array steps with
    that scale; both backends give the same bytes."""
    rng = np.random.default_rng(5)
    w, e = rng.standard_normal(100), rng.standard_normal((30, 5))
    gw, vals = rng.standard_normal(100), 3 * rng.standard_normal((6, 5))
    idx = np.array([3, 7, 3, 29, 7, 3])
    outs = []
    for name in BACKENDS:
        p = [w.copy(), e.copy()]
        with fastadagrad.backend(name):
            opt = fastadagrad.AdaGrad(p, lr=0.1, rule=rule, global_clipnorm=1.0)
            for _ in range(3):
                opt.step([gw, fastadagrad.SparseGrad(idx, vals)])
        outs.append(p)
    for x, y in zip(*outs):
        assert_same_bits(x, y)
    # the scale: clipnorm / norm over every grad as passed
    norm = np.sqrt(np.sum(gw ** 2) + np.sum(vals ** 2))
    p = [w.copy(), e.copy()]
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad(p, lr=0.1, rule=rule, duplicates="sequential")
        opt.step([gw / norm, fastadagrad.SparseGrad(idx, vals / norm)])
        q = [w.copy(), e.copy()]
        opt2 = fastadagrad.AdaGrad(q, lr=0.1, rule=rule, duplicates="sequential",
                                   global_clipnorm=1.0)
        opt2.step([gw, fastadagrad.SparseGrad(idx, vals)])
    for x, y in zip(p, q):
        np.testing.assert_allclose(x, y, rtol=1e-13)


# ----------------------------------------------------------------------------- the peers
def test_clipvalue_matches_torch_clip_grad_value():
    """torch.nn.utils.clip_grad_value_ then torch.optim.Adagrad against AdaGrad(clipvalue):
    the same clipped grads bit for bit; the steps within torch's FMA (README conventions)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(500)
    grads = [_grad(rng, 500, np.float64) for _ in range(5)]
    for g in grads:
        g[:3] = [0.3, 4.0, -4.0]   # torch's Adagrad with NaN/inf would poison both runs
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.Adagrad([tp], lr=0.1)
    ours = p0.copy()
    opt = fastadagrad.AdaGrad([ours], lr=0.1, clipvalue=0.5)
    for g in grads:
        g = np.nan_to_num(g, nan=1.0, posinf=3.0, neginf=-3.0)
        tp.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_value_([tp], 0.5)
        assert_same_bits(tp.grad.numpy(), _clip(g, 0.5))
        topt.step()
        opt.step([g])
        np.testing.assert_allclose(ours, tp.detach().numpy(), rtol=1e-12, atol=1e-15)


def _keras_against_ours(clip, ulps, exact_accum):
    """Keras 3's Adagrad(**clip) (torch backend, the one CI installs) against
    AdaGrad(convention="keras", **clip) over 10 float32 steps: the params within `ulps` ulps
    (torch.sqrt, and the clip scale rounded differently), the accumulators identical bytes
    (`exact_accum`) or within 1e-5."""
    import os
    import warnings
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch", reason="torch (Keras' backend here) is not installed")
    keras = pytest.importorskip("keras", reason="keras (Keras 3) is not installed")
    if keras.backend.backend() != "torch":
        pytest.skip("tested on Keras' torch backend")
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(300).astype(np.float32)
    grads = [(3 * rng.standard_normal(300)).astype(np.float32) for _ in range(10)]
    v = keras.Variable(p0.copy(), dtype="float32")
    kopt = keras.optimizers.Adagrad(learning_rate=0.01, **clip)
    ours = p0.copy()
    opt = fastadagrad.AdaGrad([ours], convention="keras", lr=0.01, **clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for g in grads:
            kopt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype="float32"), v)])
            opt.step([g])
            ka = keras.ops.convert_to_numpy(kopt._accumulators[0].value)
            if exact_accum:
                assert_same_bits(opt.accumulators[0][0], ka)
            else:
                np.testing.assert_allclose(opt.accumulators[0][0], ka, rtol=1e-5)
            kp = keras.ops.convert_to_numpy(v)
            ulp = np.spacing(np.abs(kp).astype(np.float32))
            assert np.all(np.abs(ours - kp) <= ulps * ulp + 1e-7)


def test_clipvalue_matches_keras():
    """Keras' clipvalue: the same clipped grads, so identical accumulators; params within
    torch.sqrt's rounding (as tests/test_keras_peer.py)."""
    _keras_against_ours(dict(clipvalue=0.5), 4, True)


def test_global_clipnorm_matches_torch_clip_grad_norm():
    """torch.nn.utils.clip_grad_norm_ (foreach) then torch.optim.Adagrad against
    AdaGrad(global_clipnorm=c) over two arrays: torch scales by c / (norm + 1e-6) where Keras
    and we take c / max(norm, c), so the steps agree to ~1e-6 / norm relative, plus torch's FMA."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(8)
    p0 = [rng.standard_normal(200), rng.standard_normal((10, 7))]
    grads = [[3 * rng.standard_normal(200), 3 * rng.standard_normal((10, 7))] for _ in range(5)]
    tps = [torch.nn.Parameter(torch.tensor(p)) for p in p0]
    topt = torch.optim.Adagrad(tps, lr=0.1)
    ours = [p.copy() for p in p0]
    opt = fastadagrad.AdaGrad(ours, lr=0.1, global_clipnorm=1.0)
    for gs in grads:
        for tp, g in zip(tps, gs):
            tp.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(tps, 1.0, foreach=True)
        topt.step()
        opt.step(gs)
        for p, tp in zip(ours, tps):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm"])
def test_clipnorm_matches_keras(kind):
    """Keras rounds g*c / max(norm, c), we fold c / max(norm, c) into the step."""
    _keras_against_ours({kind: 2.0}, 8, False)
