"""Gradient clipping fused into the step (issue 14): clipnorm in adagrad_update and the
optimizer, global_clipnorm across the optimizer's arrays. Fixed summation order: identical
bytes on both backends and every thread count; against Keras' clip rule (a transcription)."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import reference, reference_family
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

BACKENDS = ["numpy"] + (["cython"] if _kernels is not None else [])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 4095, 4096, 4097, 70_001])
def test_sum_of_squares_fixed_order(compiled, restore_threads, dtype, n):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    want = reference_family.sum_of_squares(x)
    assert want == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-12)
    for threads in (1, 2, 3):
        fastadagrad.set_num_threads(threads)
        assert compiled.sum_of_squares(x) == want
    assert compiled.sum_of_squares(x.reshape(-1, 1)[::-1]) == reference_family.sum_of_squares(x[::-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", [1e-3, 1.0, 1e6])
def test_clipnorm_dense(compiled, dtype, clip):
    rng = np.random.default_rng(1)
    p, g = (rng.standard_normal(70_001).astype(dtype) for _ in range(2))
    a = np.abs(rng.standard_normal(70_001)).astype(dtype)
    outs = []
    for fn in (compiled.adagrad_update, reference.adagrad_update):
        pp, aa = p.copy(), a.copy()
        fn(pp, g, aa, lr=0.1, clipnorm=clip, maximize=True, weight_decay=0.01)
        outs.append((pp, aa))
    assert_same_bits(outs[0][0], outs[1][0])
    assert_same_bits(outs[0][1], outs[1][1])
    # the definition: the step on g * min(1, clip/||g||)
    norm = np.sqrt(reference_family.sum_of_squares(g))
    scale = 1.0 if norm <= clip else clip / norm
    pp, aa = p.copy(), a.copy()
    reference.adagrad_update(pp, (g * dtype(scale)) if scale != 1.0 else g, aa, lr=0.1,
                             maximize=True, weight_decay=0.01)
    assert_same_bits(outs[1][0], pp)
    if clip == 1e6:   # within the norm: exactly the unclipped step
        pp, aa = p.copy(), a.copy()
        reference.adagrad_update(pp, g, aa, lr=0.1, maximize=True, weight_decay=0.01)
        assert_same_bits(outs[1][0], pp)


def keras_clip_by_norm(g, clip):
    """keras/src/optimizers/base_optimizer.py clip_by_norm: g * clip / max(||g||, clip)."""
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g * clip / max(norm, clip)


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_clipnorm_and_global(backend):
    rng = np.random.default_rng(2)
    ws = [rng.standard_normal(s) for s in (100, 3000, 7)]
    grads = [10 * rng.standard_normal(w.shape) for w in ws]
    # per array
    got = [w.copy() for w in ws]
    with fastadagrad.backend(backend):
        fastadagrad.AdaGrad(got, lr=0.1, clipnorm=1.0).step(grads)
    for w0, w1, g in zip(ws, got, grads):
        want, acc = w0.copy(), np.zeros_like(w0)
        fastadagrad.adagrad_update(want, g, acc, lr=0.1, clipnorm=1.0)
        assert_same_bits(w1, want)
        ref, racc = w0.copy(), np.zeros_like(w0)
        reference.adagrad_update(ref, keras_clip_by_norm(g, 1.0), racc, lr=0.1)
        np.testing.assert_allclose(w1, ref, rtol=1e-12)   # Keras' rule; scale rounded apart
    # global
    got = [w.copy() for w in ws]
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad(got, lr=0.1, global_clipnorm=2.0)
        opt.step(grads)
    total = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    for w0, w1, g in zip(ws, got, grads):
        ref, racc = w0.copy(), np.zeros_like(w0)
        reference.adagrad_update(ref, g * (2.0 / total), racc, lr=0.1)
        np.testing.assert_allclose(w1, ref, rtol=1e-12)
    assert opt.groups[0].step == 1


def test_optimizer_clipping_same_bytes_on_both_backends():
    if _kernels is None:
        pytest.skip("compiled extension not built")
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(s).astype(np.float32) for s in (100, 50_000)]
    grads = [rng.standard_normal(w.shape).astype(np.float32) for w in ws]
    outs = []
    for backend in BACKENDS:
        got = [w.copy() for w in ws]
        with fastadagrad.backend(backend):
            opt = fastadagrad.AdaGrad(got, lr=0.1, global_clipnorm=1.0)
            for _ in range(3):
                opt.step(grads)
        outs.append(got)
    for a, b in zip(*outs):
        assert_same_bits(a, b)


def test_clipping_validation_writes_nothing():
    w = np.ones(5)
    for kw, exc in ((dict(clipnorm=0.0), ValueError), (dict(clipnorm=-1.0), ValueError),
                    (dict(global_clipnorm="1"), TypeError),
                    (dict(clipnorm=1.0, global_clipnorm=1.0), ValueError)):
        with pytest.raises(exc, match="clipnorm"):
            fastadagrad.AdaGrad([w], **kw)
    a = np.zeros(5)
    for backend in BACKENDS:
        with fastadagrad.backend(backend):
            with pytest.raises(ValueError, match="`clipnorm`"):
                fastadagrad.adagrad_update(w, np.ones(5), a, clipnorm=np.inf)
    assert_same_bits(w, np.ones(5))
    assert_same_bits(a, np.zeros(5))
    # a SparseGrad is clipped too (over its values as passed): tests/test_clipvalue.py


@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm"])
def test_clipping_refuses_half_precision_params_before_writing(kind):
    """The norm pass reads float32/float64 only: float16 params with clipping are refused
    (ValueError naming the param), nothing written, on every backend."""
    for name in ["numpy"] + (["cython"] if fastadagrad.compiled_available() else []):
        with fastadagrad.backend(name):
            p = np.ones(64, np.float16)
            opt = fastadagrad.AdaGrad([p], lr=0.1, **{kind: 1.0})
            before = p.copy()
            with pytest.raises(ValueError, match="float32/float64 params"):
                opt.step([np.ones(64, np.float16)])
            assert p.tobytes() == before.tobytes() and opt.groups[0].step == 0


@pytest.mark.skipif(not fastadagrad.compiled_available(), reason="needs the compiled extension")
def test_compiled_norm_pass_refuses_other_dtypes():
    from fastadagrad._backend import _kernels
    with pytest.raises(TypeError, match="float32 or float64"):
        _kernels.sum_of_squares(np.ones(8, np.float16))


def test_adagrad_update_refuses_clipnorm_with_half_precision():
    p, g, a = np.ones(8, np.float16), np.ones(8, np.float16), np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="`clipnorm` is not available for float16"):
        fastadagrad.adagrad_update(p, g, a, clipnorm=1.0)
    assert (p == 1).all() and (a == 0).all()
