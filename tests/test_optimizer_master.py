"""AdaGrad(master=True) (issue 15 §3): float32 master weights for float16/bfloat16 params in the
optimizer, equal to the function API's `master=` byte for byte on both backends, and kept in
checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import SparseGrad
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (the bfloat16 tests need it)")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
BACKENDS = ["numpy"] + (["cython"] if _kernels is not None else [])


def params(rng):
    return [rng.standard_normal((40, 7)).astype(BF16), rng.standard_normal(300).astype(F16),
            rng.standard_normal(50).astype(F32)]


def grads(rng, ps):
    return [rng.standard_normal(p.shape).astype(F32 if i == 0 else p.dtype)
            for i, p in enumerate(ps)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_equal_the_function_api_with_master(backend):
    rng = np.random.default_rng(0)
    ps = params(rng)
    ref = [p.copy() for p in ps]
    masters = [p.astype(F32) if p.dtype != F32 else None for p in ref]
    accs = [np.zeros(p.shape, F32) for p in ref]
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad(ps, lr=0.05, lr_decay=0.01, master=True)
        for step in range(1, 6):
            gs = grads(rng, ps)
            opt.step(gs)
            for p, g, a, m in zip(ref, gs, accs, masters):
                fastadagrad.adagrad_update(p, g, a, lr=0.05, lr_decay=0.01, step=step, master=m)
    for p, r in zip(ps, ref):
        assert_same_bits(p, r, "param")
    for a, r in zip(opt.accumulators[0], accs):
        assert_same_bits(a, r, "accum")
    for m, r in zip(opt.groups[0].masters, masters):
        if r is not None:
            assert_same_bits(m, r, "master")
    assert opt.groups[0].masters[2] is None   # float32 params need none


def test_backends_agree_and_masters_differ_from_rounding_each_step():
    rng = np.random.default_rng(1)
    base = params(rng)
    gs = [grads(rng, base) for _ in range(4)]
    out = {}
    for backend in BACKENDS:
        for master in (False, True):
            ps = [p.copy() for p in base]
            with fastadagrad.backend(backend):
                opt = fastadagrad.AdaGrad(ps, lr=1e-3, master=master)
                for g in gs:
                    opt.step(g)
            out[backend, master] = ps
    for master in (False, True):
        for x, y in zip(out[BACKENDS[0], master], out[BACKENDS[-1], master]):
            assert_same_bits(x, y, "param")
    # small steps: float32 masters keep what per-step rounding loses
    assert not np.array_equal(out[BACKENDS[0], True][0].view(np.uint16),
                              out[BACKENDS[0], False][0].view(np.uint16))


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_keeps_the_masters(backend, tmp_path):
    rng = np.random.default_rng(2)
    base = params(rng)
    gs = [grads(rng, base) for _ in range(6)]
    with fastadagrad.backend(backend):
        straight = [p.copy() for p in base]
        opt = fastadagrad.AdaGrad(straight, lr=0.01, master=True)
        for g in gs:
            opt.step(g)
        first = [p.copy() for p in base]
        opt1 = fastadagrad.AdaGrad(first, lr=0.01, master=True)
        for g in gs[:3]:
            opt1.step(g)
        np.savez(tmp_path / "ckpt.npz", **opt1.state_dict())
        resumed = [p.copy() for p in first]
        opt2 = fastadagrad.AdaGrad(resumed, lr=0.01, master=True)
        opt2.load_state_dict(dict(np.load(tmp_path / "ckpt.npz")))
        for g in gs[3:]:
            opt2.step(g)
    for x, y in zip(resumed, straight):
        assert_same_bits(x, y, "param")


def test_state_without_masters_is_refused_and_nothing_changes():
    rng = np.random.default_rng(3)
    ps = params(rng)
    opt = fastadagrad.AdaGrad(ps, lr=0.01, master=True)
    opt.step(grads(rng, ps))
    plain = fastadagrad.AdaGrad([p.copy() for p in ps], lr=0.01).state_dict()
    before = opt.state_dict()
    with pytest.raises(ValueError, match="`group0.master0`"):
        opt.load_state_dict(plain)
    after = opt.state_dict()
    for k in before:
        if isinstance(before[k], np.ndarray):
            assert_same_bits(before[k], after[k], k)


@pytest.mark.parametrize("options", [dict(rowwise=True), dict(clipnorm=1.0),
                                     dict(rule="proximal", l1=0.1), dict(master=1)])
def test_refused_combinations(options):
    rng = np.random.default_rng(4)
    p = rng.standard_normal((10, 4)).astype(BF16)
    with pytest.raises((ValueError, TypeError), match="`master`"):
        fastadagrad.AdaGrad([p], **{"master": True, **options})


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_grad_with_master_is_refused_before_any_write(backend):
    rng = np.random.default_rng(5)
    p = rng.standard_normal((10, 4)).astype(BF16)
    q = rng.standard_normal(8).astype(F32)
    p0, q0 = p.copy(), q.copy()
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad([q, p], lr=0.1, master=True)
        with pytest.raises(ValueError, match="master"):
            opt.step([np.ones(8, F32), SparseGrad(np.array([1, 2]), np.ones((2, 4), F32))])
    assert_same_bits(p, p0, "param")
    assert_same_bits(q, q0, "param")
    assert opt.groups[0].step == 0
