"""The AdaGrad family (issue 14): proximal AdaGrad, dual averaging, the GloVe/LightFM rule.
Byte equality with the NumPy twin is in test_equivalence.py (registry entries); here: each rule
against a NumPy transcription of its peer's source (TensorFlow and GloVe are not installable
within CI's budget), its defining properties, sparse duplicates, validation."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import family
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

BACKENDS = ["numpy"] + (["cython"] if _kernels is not None else [])


def data(dtype, n=500, steps=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n).astype(dtype),
            [rng.standard_normal(n).astype(dtype) for _ in range(steps)])


def tf_proximal(p, grads, lr, l1, l2, init=0.1):
    """training_ops.cc ApplyProximalAdagrad (CPU functor), with lr * rsqrt(accum) written
    lr / sqrt(accum) (Eigen's rsqrt may round differently): accum += grad.square();
    learning_rate = lr * accum.rsqrt(); prox_var = var - grad * learning_rate;
    var = sign(prox) * max(|prox| - learning_rate * l1, 0) / (1 + l2 * learning_rate)."""
    t = p.dtype.type
    lr, l1, l2 = t(lr), t(l1), t(l2)
    acc = np.full_like(p, init)
    for g in grads:
        acc = acc + np.square(g)
        a = lr / np.sqrt(acc)
        prox = p - g * a
        if l1 > 0:
            p = np.sign(prox) * np.maximum(np.abs(prox) - a * l1, t(0)) / (t(1) + l2 * a)
        else:
            p = prox / (t(1) + l2 * a)
    return p, acc


def tf_da(p, grads, lr, l1, l2, init=0.1):
    """training_ops.cc ApplyAdagradDA: gradient_accum += grad; gradient_squared_accum +=
    grad.square(); var = lr * -1 * sign(gacc) * max(|gacc| - T(step) * l1, 0) /
    (l2 * (T(step) * lr) + sqrt(gg))  (or lr * gacc * -1 / (...) when l1 == 0)."""
    t = p.dtype.type
    lr, l1, l2 = t(lr), t(l1), t(l2)
    gacc, gg = np.zeros_like(p), np.full_like(p, init)
    for step, g in enumerate(grads, start=1):
        gacc = gacc + g
        gg = gg + np.square(g)
        T = t(step)
        den = l2 * (T * lr) + np.sqrt(gg)
        if l1 > 0:
            p = lr * t(-1) * np.sign(gacc) * np.maximum(np.abs(gacc) - T * l1, t(0)) / den
        else:
            p = lr * gacc * t(-1) / den
    return p, gacc, gg


def glove_c(w, grads, eta):
    """glove.c: fdiff *= eta; temp = fdiff * W[other]  (the gradient times eta);
    W[b] -= temp / sqrt(gradsq[b]); gradsq[b] += temp * temp;  gradsq starts at 1."""
    t = w.dtype.type
    gradsq = np.ones_like(w)
    for g in grads:
        temp = t(eta) * g
        w = w - temp / np.sqrt(gradsq)
        gradsq = gradsq + temp * temp
    return w, gradsq


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.0, 0.01), (1.0, 0.0), (1.0, 0.01)])
def test_proximal_against_tf(backend, dtype, l1, l2):
    p0, grads = data(dtype)
    want_p, want_a = tf_proximal(p0, grads, 0.1, l1, l2)
    p, a = p0.copy(), np.full_like(p0, 0.1)
    with fastadagrad.backend(backend):
        for g in grads:
            fastadagrad.proximal_adagrad_update(p, g, a, lr=0.1, l1=l1, l2=l2)
    assert_same_bits(a, want_a)
    # np.sign/np.maximum versus the branch-free C selects: equal values, the sign of a zero
    # may differ (sign(-0) * 0); compare values
    np.testing.assert_array_equal(p, want_p)
    if l1:
        assert (p == 0).sum() > 20   # the L1 prox gives exact zeros


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.0, 0.01), (0.05, 0.0), (0.05, 0.01)])
def test_da_against_tf(backend, dtype, l1, l2):
    p0, grads = data(dtype)
    want_p, want_g, want_gg = tf_da(p0, grads, 0.1, l1, l2)
    p, gacc, gg = p0.copy(), np.zeros_like(p0), np.full_like(p0, 0.1)
    with fastadagrad.backend(backend):
        for step, g in enumerate(grads, start=1):
            fastadagrad.adagrad_da_update(p, g, gacc, gg, step=step, lr=0.1, l1=l1, l2=l2)
    assert_same_bits(gacc, want_g)
    assert_same_bits(gg, want_gg)
    np.testing.assert_array_equal(p, want_p)
    if l1:
        assert (p == 0).sum() > 20


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_glove_against_glove_c(backend, dtype):
    """GloVe folds eta into the gradient: our rule with lr=1 on eta*g is glove.c bit for bit."""
    w0, grads = data(dtype)
    want_w, want_sq = glove_c(w0, grads, 0.05)
    w, sq = w0.copy(), np.ones_like(w0)
    with fastadagrad.backend(backend):
        for g in grads:
            fastadagrad.glove_adagrad_update(w, dtype(0.05) * g, sq, lr=1.0)
    assert_same_bits(w, want_w)
    assert_same_bits(sq, want_sq)


def test_glove_uses_the_accumulator_from_before():
    w, g, acc = np.array([1.0]), np.array([2.0]), np.array([1.0])
    fastadagrad.glove_adagrad_update(w, g, acc, lr=0.5)
    assert w[0] == 1.0 - 0.5 * 2.0 / 1.0 and acc[0] == 5.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["proximal", "da", "glove"])
def test_sparse_sequential_is_one_step_per_occurrence(backend, rule):
    rng = np.random.default_rng(1)
    n, d, b = 30, 9, 50
    spec = family._rules.RULES[rule]
    table = rng.standard_normal((n, d))
    states = [np.abs(rng.standard_normal((n, d))) + 0.1 for _ in spec.states]
    idx = rng.integers(0, 10, b)
    grads = rng.standard_normal((b, d))
    kw = {"step": 3} if spec.needs_step else {}
    with fastadagrad.backend(backend):
        t1, s1 = table.copy(), [s.copy() for s in states]
        family.sparse_rule_update(rule, t1, s1, idx, grads, duplicates="sequential", lr=0.1, **kw)
        t2, s2 = table.copy(), [s.copy() for s in states]
        for k in range(b):
            family.sparse_rule_update(rule, t2, s2, idx[k:k + 1], grads[k:k + 1], lr=0.1, **kw)
        t3, s3 = table.copy(), [s.copy() for s in states]
        family.sparse_rule_update(rule, t3, s3, idx, grads, lr=0.1, **kw)   # "sum"
    assert_same_bits(t1, t2)
    for x, y in zip(s1, s2):
        assert_same_bits(x, y)
    assert not np.array_equal(t1, t3)
    untouched = np.setdiff1d(np.arange(n), idx)
    assert_same_bits(t3[untouched], table[untouched])


@pytest.mark.parametrize("rule", ["proximal", "da", "glove"])
@pytest.mark.parametrize("d", [1, 7, 8, 9, 17, 64, 130])
@pytest.mark.parametrize("duplicates", ["sum", "sequential"])
def test_sparse_rows_every_width_isa_and_thread_count(compiled, restore_isa, restore_threads,
                                                      rule, d, duplicates):
    """The sparse family row loop (one vectorised element loop per row, the rule's switches
    and coefficients fixed for the run of rows; one-thread "sequential" ungrouped, on the
    caller's grads rows; two threads grouped) gives the twin's bytes at row widths around the
    vector widths, on every ISA path, on 1 and 2 threads, float32 and float64, with l1, l2
    and clipvalue; rows repeat ~100 times in a batch, so the order of each row's steps counts."""
    spec = family._rules.RULES[rule]
    rng = np.random.default_rng(d)
    n, b = 300, 32768 // d + 7   # b * d >= the parallel threshold: 2 threads really split
    hyper = {"lr": 0.1, **({"l1": 0.05} if "l1" in spec.hyper else {}),
             **({"l2": 0.01} if "l2" in spec.hyper else {}),
             **({"step": 3} if spec.needs_step else {})}
    idx = rng.integers(0, n, b)
    compiled._set_adaptive(False)   # 2 threads run on the pool, not serially by choice
    try:
        for dtype in (np.float32, np.float64):
            table = rng.standard_normal((n, d)).astype(dtype)
            states = [(np.abs(rng.standard_normal((n, d))) + 0.1).astype(dtype)
                      for _ in spec.states]
            grads = rng.standard_normal((b, d)).astype(dtype)
            for opts in (hyper, dict(hyper, clipvalue=0.5)):
                want_t, want_s = table.copy(), [s.copy() for s in states]
                family.sparse_rule_update(rule, want_t, want_s, idx, grads,
                                          duplicates=duplicates, backend="numpy", **opts)
                assert not np.array_equal(want_t, table)
                for isa in compiled.isa_available():
                    compiled.set_isa(isa)
                    for threads in (1, 2):
                        fastadagrad.set_num_threads(threads)
                        got_t, got_s = table.copy(), [s.copy() for s in states]
                        family.sparse_rule_update(rule, got_t, got_s, idx, grads,
                                                  duplicates=duplicates, backend="cython",
                                                  **opts)
                        where = f"{isa} {threads} threads {np.dtype(dtype).name} {opts}"
                        assert_same_bits(got_t, want_t, f"table {where}")
                        for x, y in zip(got_s, want_s):
                            assert_same_bits(x, y, f"state {where}")
    finally:
        compiled._set_adaptive(True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_writes_nothing(backend):
    rng = np.random.default_rng(2)
    p, g, a, b = (np.abs(rng.standard_normal((6, 4))) + 0.1 for _ in range(4))
    keep = [x.copy() for x in (p, a, b)]
    bad = [
        (TypeError, "`accum`", lambda: fastadagrad.proximal_adagrad_update(p, g, [1.0])),
        (ValueError, "`l1`", lambda: fastadagrad.proximal_adagrad_update(p, g, a, l1=-1.0)),
        (ValueError, "`lr`", lambda: fastadagrad.glove_adagrad_update(p, g, a, lr=np.inf)),
        (TypeError, "`l1`", lambda: family.rule_update("glove", p, g, a, l1=0.1)),
        (ValueError, "`grad_sq_accum`", lambda: fastadagrad.adagrad_da_update(p, g, a, a[:3], step=1)),
        (ValueError, "overlap", lambda: fastadagrad.adagrad_da_update(p, g, a, a, step=1)),
        (TypeError, "`step`", lambda: fastadagrad.adagrad_da_update(p, g, a, b, step=1.5)),
        (ValueError, "`step`", lambda: fastadagrad.adagrad_da_update(p, g, a, b, step=0)),
        (ValueError, "`rule`", lambda: family.rule_update("adam", p, g, a)),
        (ValueError, r"`indices\[1\]`", lambda: fastadagrad.sparse_proximal_adagrad_update(
            p, a, np.array([0, 6]), g[:2])),
        (ValueError, "`duplicates`", lambda: fastadagrad.sparse_glove_adagrad_update(
            p, a, np.array([0, 1]), g[:2], duplicates="keras")),
        (ValueError, "`grad_sq_accum`", lambda: fastadagrad.sparse_adagrad_da_update(
            p, a, b[:, 0].copy(), np.array([0, 1]), g[:2], step=1)),
    ]
    with fastadagrad.backend(backend):
        for exc, match, call in bad:
            with pytest.raises(exc, match=match):
                call()
    for x, y in zip((p, a, b), keep):
        assert_same_bits(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_views_updated_in_place(backend):
    """Strided views (the C strided loop / the twin's in-place writes): same as contiguous."""
    rng = np.random.default_rng(3)
    base = [np.abs(rng.standard_normal((20, 30))) + 0.1 for _ in range(4)]
    for rule, k in (("proximal", 1), ("da", 2), ("glove", 1)):
        kw = {"step": 2} if rule == "da" else {}
        views = [x.copy()[:, ::3] for x in base]
        dense = [np.ascontiguousarray(x) for x in views]
        with fastadagrad.backend(backend):
            family.rule_update(rule, views[0], views[1], *views[2:2 + k], lr=0.1, **kw)
            family.rule_update(rule, dense[0], dense[1], *dense[2:2 + k], lr=0.1, **kw)
        for x, y in zip(views, dense):
            assert_same_bits(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["proximal", "da", "glove"])
def test_optimizer_rule(backend, rule):
    """AdaGrad(rule=...): the same bytes as the functions, dense and SparseGrad params, two
    groups, state_dict round trip."""
    rng = np.random.default_rng(4)
    spec = family._rules.RULES[rule]
    w, e = rng.standard_normal(50), rng.standard_normal((20, 6))
    kw = dict(l1=0.01, l2=0.001) if "l1" in spec.hyper else {}
    opt = fastadagrad.AdaGrad([{"params": [w]}, {"params": [e], "lr": 0.2}], rule=rule, **kw)
    w_ref, e_ref = w.copy(), e.copy()
    init = spec.state_init
    ws = [np.full_like(w, 0.0 if len(init) > 1 and k == 0 else init[k]) for k in range(len(init))]
    es = [np.full_like(e, 0.0 if len(init) > 1 and k == 0 else init[k]) for k in range(len(init))]
    lr = spec.hyper["lr"]
    for t in range(1, 6):
        gw = rng.standard_normal(50)
        idx = rng.integers(0, 20, 8)
        ge = rng.standard_normal((8, 6))
        with fastadagrad.backend(backend):
            assert opt.step([[gw], [fastadagrad.SparseGrad(idx, ge, "sequential")]])
        step_kw = {"step": t} if spec.needs_step else {}
        family.rule_update(rule, w_ref, gw, *ws, lr=lr, **kw, **step_kw)
        family.sparse_rule_update(rule, e_ref, es, idx, ge, duplicates="sequential", lr=0.2,
                                  **kw, **step_kw)
        if t == 3:
            saved = opt.state_dict()
    assert_same_bits(w, w_ref)
    assert_same_bits(e, e_ref)
    assert_same_bits(opt.accumulators[0][0], ws[-1])
    fresh = fastadagrad.AdaGrad([{"params": [w.copy()]}, {"params": [e.copy()], "lr": 0.2}],
                                rule=rule, **kw)
    fresh.load_state_dict(saved)
    assert fresh.groups[0].step == 3
    if len(spec.states) > 1:
        assert not np.array_equal(fresh.groups[0].extra[0][0], 0)
    with pytest.raises(ValueError, match="`rule`"):
        fastadagrad.AdaGrad([w], rule="adamw")
    with pytest.raises(ValueError, match="`weight_decay`"):
        fastadagrad.AdaGrad([w], rule=rule, weight_decay=0.1)
