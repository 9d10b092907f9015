"""duplicates="sum" | "sequential" | "keras" and update_slots=False in sparse_adagrad_update:
each rule against its definition in terms of dense steps, both backends byte for byte, every
ISA and thread count (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import reference
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

ISAS = _kernels.isa_available() if _kernels is not None else ()


def batch(dtype, n=40, d=13, b=64, seed=0):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n, d)).astype(dtype)
    accum = np.abs(rng.standard_normal((n, d))).astype(dtype) + dtype(0.1)
    idx = rng.integers(0, n // 2, b)            # many repeats
    grads = rng.standard_normal((b, d)).astype(dtype)
    return table, accum, idx, grads


def run(fn, table, accum, idx, grads, **kw):
    t, a = table.copy(), accum.copy()
    fn(t, a, idx, grads, **kw)
    return t, a


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("rowwise", (False, True))
def test_sequential_is_one_step_per_occurrence(dtype, rowwise):
    """TF's raw op / FBGEMM: the same as a batch of one index per occurrence, in order."""
    table, accum, idx, grads = batch(dtype)
    if rowwise:
        accum = accum[:, 0].copy()
    for backend in ("numpy",) + (("cython",) if _kernels is not None else ()):
        with fastadagrad.backend(backend):
            got = run(fastadagrad.sparse_adagrad_update, table, accum, idx, grads, lr=0.1,
                      eps=1e-6, duplicates="sequential")
            t, a = table.copy(), accum.copy()
            for k in range(idx.size):
                fastadagrad.sparse_adagrad_update(t, a, idx[k:k + 1], grads[k:k + 1], lr=0.1,
                                                  eps=1e-6)
        assert_same_bits(got[0], t, backend)
        assert_same_bits(got[1], a, backend)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_keras_definition(dtype):
    """Keras 3 with IndexedSlices: accum gets every g_i^2 (in order), then every occurrence's
    update lr*g_i / sqrt(accum + eps) with that final accumulator, in order."""
    table, accum, idx, grads = batch(dtype)
    t, a = table.copy(), accum.copy()
    lr, eps = dtype(0.1), dtype(1e-6)
    for k in range(idx.size):
        a[idx[k]] = a[idx[k]] + grads[k] * grads[k]
    for k in range(idx.size):
        t[idx[k]] = t[idx[k]] - (lr * grads[k]) / np.sqrt(a[idx[k]] + eps)
    for backend in ("numpy",) + (("cython",) if _kernels is not None else ()):
        with fastadagrad.backend(backend):
            got = run(fastadagrad.sparse_adagrad_update, table, accum, idx, grads, lr=0.1,
                      eps=1e-6, eps_placement="inside", duplicates="keras")
        assert_same_bits(got[0], t, backend)
        assert_same_bits(got[1], a, backend)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_rules_differ_only_on_duplicates(dtype):
    """With unique indices the three rules are the same step; with repeats they differ."""
    table, accum, idx, grads = batch(dtype)
    uniq = np.unique(idx)[::-1].copy()
    g = grads[:uniq.size]
    outs = [run(reference.sparse_adagrad_update, table, accum, uniq, g, duplicates=r)
            for r in ("sum", "sequential", "keras")]
    for o in outs[1:]:
        assert_same_bits(o[0], outs[0][0])
    outs = [run(reference.sparse_adagrad_update, table, accum, idx, grads, duplicates=r)[0]
            for r in ("sum", "sequential", "keras")]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])


OPTIONS = [dict(lr=0.1, eps=1e-6, maximize=m, weight_decay=wd, eps_placement=pl,
                update_slots=us)
           for m in (False, True) for wd in (0.0, 0.05) for pl in ("outside", "inside")
           for us in (True, False)]


@pytest.mark.parametrize("duplicates, rowwise",   # keras is element-wise only (raises: below)
                         [("sum", False), ("sum", True), ("sequential", False),
                          ("sequential", True), ("keras", False)])
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("isa", ISAS)
def test_compiled_equals_numpy(compiled, restore_isa, restore_threads, duplicates, rowwise,
                               dtype, isa):
    compiled.set_isa(isa)
    # 3000 indices x 13 columns: above PARALLEL_MIN_ELEMENTS, so threads split the rows
    table, accum, idx, grads = batch(dtype, n=2000, b=3000, seed=3)
    if rowwise:
        accum = accum[:, 0].copy()
    for options in OPTIONS:
        if duplicates == "keras" and options["weight_decay"]:
            continue
        want = run(reference.sparse_adagrad_update, table, accum, idx, grads,
                   duplicates=duplicates, **options)
        for threads in (1, 2, 3):
            fastadagrad.set_num_threads(threads)
            got = run(compiled.sparse_adagrad_update, table, accum, idx, grads,
                      duplicates=duplicates, **options)
            assert_same_bits(got[0], want[0], f"{duplicates} {options} threads={threads}")
            assert_same_bits(got[1], want[1], f"{duplicates} {options} threads={threads}")
        assert not np.array_equal(want[0], table)
        if options["update_slots"]:
            assert not np.array_equal(want[1], accum)
        else:
            assert_same_bits(want[1], accum)


def test_update_slots_false_reads_the_accumulator():
    """TF update_slots=False: accum unchanged, the step divides by its current root."""
    table, accum, idx, grads = batch(np.float64)
    uniq = np.unique(idx)
    g = grads[:uniq.size]
    t, a = run(fastadagrad.sparse_adagrad_update, table, accum, uniq, g, lr=0.1, eps=1e-6,
               update_slots=False)
    assert_same_bits(a, accum)
    want = table.copy()
    want[uniq] = table[uniq] - (0.1 * g) / (np.sqrt(accum[uniq]) + 1e-6)
    assert_same_bits(t, want)


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
def test_bad_rules_raise_and_write_nothing(backend):
    table, accum, idx, grads = batch(np.float32)
    t, a = table.copy(), accum.copy()
    with fastadagrad.backend(backend):
        with pytest.raises(ValueError, match="`duplicates`"):
            fastadagrad.sparse_adagrad_update(t, a, idx, grads, duplicates="mean")
        with pytest.raises(ValueError, match="`duplicates`='keras' is element-wise"):
            fastadagrad.sparse_adagrad_update(t, a[:, 0].copy(), idx, grads, duplicates="keras")
        with pytest.raises(ValueError, match="`duplicates`='keras' does not combine"):
            fastadagrad.sparse_adagrad_update(t, a, idx, grads, duplicates="keras",
                                              weight_decay=0.1)
        with pytest.raises(TypeError, match="`update_slots`"):
            fastadagrad.sparse_adagrad_update(t, a, idx, grads, update_slots=1)
        with pytest.raises(TypeError, match="`update_slots`"):
            fastadagrad.adagrad_update(t, grads[:40], a, update_slots="no")
    assert_same_bits(t, table)
    assert_same_bits(a, accum)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("layout", ("contiguous", "strided", "big"))
def test_dense_update_slots_false(compiled, dtype, layout):
    """adagrad_update(update_slots=False): accum untouched; both backends the same bytes, on
    every option combination (contiguous, strided views, and the threaded size)."""
    rng = np.random.default_rng(5)
    shape = (70_001,) if layout == "big" else (40, 30)
    p, g = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    a = np.abs(rng.standard_normal(shape)).astype(dtype)
    a.flat[:5] = 0
    view = (lambda x: x[:, ::3]) if layout == "strided" else (lambda x: x)
    for options in OPTIONS:
        options = {**options, "lr_decay": 0.1, "step": 3, "update_slots": False}
        outs = []
        for fn in (compiled.adagrad_update, reference.adagrad_update):
            pp, aa = p.copy(), a.copy()
            with np.errstate(all="ignore"):
                fn(view(pp), view(g), view(aa), **options)
            outs.append((pp, aa))
        assert_same_bits(outs[0][0], outs[1][0], f"{layout} {options}")
        assert_same_bits(outs[0][1], a)
        assert_same_bits(outs[1][1], a)
        assert not np.array_equal(outs[0][0], p)


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
@pytest.mark.parametrize("where", ("optimizer", "sparsegrad"))
def test_optimizer_duplicates(backend, where):
    """AdaGrad(duplicates=...) and SparseGrad(..., duplicates=...) give the function's bytes."""
    table, accum, idx, grads = batch(np.float32)
    for rule in ("sum", "sequential", "keras"):
        w = table.copy()
        kw = {"duplicates": rule} if where == "optimizer" else {}
        g = (fastadagrad.SparseGrad(idx, grads) if where == "optimizer"
             else fastadagrad.SparseGrad(idx, grads, rule))
        opt = fastadagrad.AdaGrad([w], lr=0.1, eps=1e-6, initial_accumulator_value=0.5, **kw)
        with fastadagrad.backend(backend):
            opt.step([g])
        t, a = table.copy(), np.full_like(accum, 0.5)
        fastadagrad.sparse_adagrad_update(t, a, idx, grads, lr=0.1, eps=1e-6, duplicates=rule)
        assert_same_bits(w, t, rule)
        assert_same_bits(opt.accumulators[0][0], a, rule)
    with pytest.raises(ValueError, match="`duplicates`"):
        fastadagrad.AdaGrad([table.copy()], duplicates="max")
