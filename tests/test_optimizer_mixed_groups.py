"""AdaGrad groups that mix dtypes (issue 15 §2): one compiled call per (param, grad, accum
dtype, master or not) combination, equal byte for byte to per-array adagrad_update calls and to
the NumPy backend, on every ISA path and 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import reference
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (the bfloat16 tests need it)")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
ISAS = _kernels.isa_available() if _kernels is not None else ()
OPTIONS = dict(lr=0.05, lr_decay=0.01, weight_decay=0.001)

# (param dtype, grad dtype, shape, layout); sizes are odd so the pool's chunks start mid-array,
# and every combination but float64 holds more than PARALLEL_MIN_ELEMENTS (32,768) elements
SPECS = [(F32, F32, (33_011,), "C"), (F64, F64, (9_001,), "C"), (F32, F32, (333,), "C"),
         (F16, F16, (21_007,), "C"), (F16, F32, (40_001,), "C"), (F16, F16, (3, 1001), "F"),
         (BF16, BF16, (18_003,), "C"), (BF16, F32, (35_011,), "C"), (BF16, BF16, (7,), "C"),
         (BF16, BF16, (401, 37), "F"), (BF16, F32, (2_000,), "strided"),
         (F16, F16, (13_000,), "C")]
# the distinct (param, grad, accum, master) combinations of SPECS (accums are float32 for the
# half params; F-contiguous and strided arrays belong to their dtypes' combination)
COMBINATIONS = len({(p, g) for p, g, _, _ in SPECS})


def make(rng, p_dtype, shape, layout):
    x = (rng.standard_normal(shape) * 2).astype(p_dtype)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        return np.zeros((shape[0], 2), p_dtype)[:, 0]   # filled by the caller
    return x


def build(seed):
    rng = np.random.default_rng(seed)
    params = []
    for p_dtype, _, shape, layout in SPECS:
        x = make(rng, p_dtype, shape, layout)
        x[...] = (rng.standard_normal(shape) * 2).astype(p_dtype)
        params.append(x)
    grads = [[np.asarray(rng.standard_normal(shape), order="F" if layout == "F" else "C")
              .astype(g_dtype, order="K") for _, g_dtype, shape, layout in SPECS]
             for _ in range(3)]
    return params, grads


def reference_run(params, grads, master):
    """Per-array adagrad_update calls (the compiled function API)."""
    ps = [p.copy(order="K") for p in params]
    accs = [np.zeros(p.shape, F32 if p.dtype in (F16, BF16) else p.dtype) for p in ps]
    ms = [p.astype(F32) if master and p.dtype in (F16, BF16) else None for p in ps]
    for step, gs in enumerate(grads, 1):
        for p, g, a, m in zip(ps, gs, accs, ms):
            fastadagrad.adagrad_update(p, g, a, step=step, master=m, **OPTIONS)
    return ps, accs, ms


def optimizer_run(params, grads, master, backend):
    ps = [p.copy(order="K") for p in params]
    ps[10] = np.zeros((ps[10].shape[0], 2), BF16)[:, 0]   # keep the strided param strided
    ps[10][...] = params[10]
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad(ps, master=master, **OPTIONS)
        for gs in grads:
            assert opt.step(gs)
    return ps, opt.accumulators[0], opt.groups[0].masters


@pytest.fixture
def parallel_pool():
    """Every call above the size threshold runs in parallel (no adaptive serial choice)."""
    _kernels._set_adaptive(False)
    yield
    _kernels._set_adaptive(True)


@pytest.mark.skipif(_kernels is None, reason="compiled extension not built")
@pytest.mark.parametrize("master", [False, True])
def test_grouped_step_equals_per_array_calls_and_numpy(restore_isa, restore_threads,
                                                        parallel_pool, master):
    params, grads = build(1)
    want = optimizer_run(params, grads, master, "numpy")
    for isa in ISAS:
        _kernels.set_isa(isa)
        for threads in (1, 2):
            fastadagrad.set_num_threads(threads)
            for got in (optimizer_run(params, grads, master, "cython"),
                        reference_run(params, grads, master)):
                for kind, xs, ys in zip(("param", "accum", "master"), got, want):
                    for i, (x, y) in enumerate(zip(xs, ys)):
                        if y is None:
                            assert x is None
                        else:
                            assert_same_bits(x, y, f"{kind} {i} {SPECS[i][:2]} {isa} {threads}")
    assert not np.array_equal(want[0][3], params[3])   # it really ran


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
@pytest.mark.parametrize("master", [False, True])
def test_one_call_per_dtype_combination(monkeypatch, backend, master):
    """apply_steps hands every combination's arrays to update_multi_validated in ONE call."""
    module = _kernels if backend == "cython" else reference
    real = module.update_multi_validated
    calls: list[list[np.dtype]] = []

    def spy(params, grads, accums, masters, opts):
        calls.append([p.dtype for p in params])
        real(params, grads, accums, masters, opts)

    monkeypatch.setattr(module, "update_multi_validated", spy)
    params, grads = build(2)
    got = optimizer_run(params, grads[:1], master, backend)
    assert len(calls) == COMBINATIONS
    assert sorted(len(c) for c in calls) == sorted(
        sum(1 for p, g, _, _ in SPECS if (p, g) == key) for key in {(p, g) for p, g, _, _ in SPECS})
    monkeypatch.undo()
    want = optimizer_run(params, grads[:1], master, "numpy")
    for x, y in zip(got[0], want[0]):
        assert_same_bits(x, y, "param")


@pytest.mark.skipif(_kernels is None or not _kernels.threads_enabled(),
                    reason="compiled extension with its thread pool not built")
def test_one_pool_dispatch_per_combination(restore_threads, parallel_pool):
    """Four bfloat16 and four float16 arrays of 10,000 elements (each below the parallel
    threshold, together above it): a step dispatches the pool once per combination."""
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(10_000).astype(d) for d in [BF16] * 4 + [F16] * 4]
    grads = [rng.standard_normal(10_000).astype(F32) for _ in params]
    fastadagrad.set_num_threads(2)
    with fastadagrad.backend("cython"):
        opt = fastadagrad.AdaGrad(params, lr=0.1)
        before = _kernels._pool_stats()["parallel"]
        opt.step(grads)
        assert _kernels._pool_stats()["parallel"] - before == 2


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
def test_a_bad_grad_in_a_mixed_group_writes_nothing(backend):
    params, grads = build(4)
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad(params, master=True, **OPTIONS)
        before = [x.copy() for x in params] + [a.copy() for a in opt.accumulators[0]]
        bad = list(grads[0])
        bad[-1] = bad[-1].astype(F64)   # a float16 param takes float16 or float32 grads
        with pytest.raises(TypeError, match="grads"):
            opt.step(bad)
        after = list(params) + list(opt.accumulators[0])
        for x, y in zip(after, before):
            assert_same_bits(x, y, "untouched")
        assert opt.groups[0].step == 0


# ----------------------------------------------------------------------------- the C gate
# A group of plain (contiguous, aligned, native) arrays that mixes dtypes has a C gate
# (kernels.MixedGroupGate): grads that pass it skip the Python validation. What it refuses is
# validated in Python, which names the problem; so the compiled backend (gate) and the NumPy
# backend (Python validation only) must agree on every input.
PLAIN = [i for i, spec in enumerate(SPECS) if spec[3] != "strided"]


def plain_build(seed):
    params, grads = build(seed)
    return [params[i] for i in PLAIN], [[gs[i] for i in PLAIN] for gs in grads]


@pytest.mark.skipif(_kernels is None, reason="compiled extension not built")
@pytest.mark.parametrize("master", [False, True])
def test_the_gate_replaces_the_python_validation(monkeypatch, master):
    """Plain arrays: the compiled optimizer's steps never call the Python validator and give
    the NumPy backend's bytes (which validates in Python)."""
    from fastadagrad.optimizer import _grads

    params, grads = plain_build(5)
    with fastadagrad.backend("numpy"):
        want_opt = fastadagrad.AdaGrad([p.copy(order="K") for p in params], master=master,
                                       **OPTIONS)
        for gs in grads:
            want_opt.step(gs)

    def no_python_validation(*args):
        raise AssertionError("the C gate should have accepted these grads")

    monkeypatch.setattr(_grads, "validate_group", no_python_validation)
    with fastadagrad.backend("cython"):
        ps = [p.copy(order="K") for p in params]
        opt = fastadagrad.AdaGrad(ps, master=master, **OPTIONS)
        assert type(opt.groups[0].gates[fastadagrad._backend.current()]).__name__ == \
            "MixedGroupGate"
        for gs in grads:
            assert opt.step(gs)
    for x, y in zip(ps + opt.accumulators[0], [p for p in want_opt.groups[0].params]
                    + want_opt.accumulators[0]):
        assert_same_bits(x, y, "gate path vs NumPy backend")
    assert opt.groups[0].step == 3


class _Sub(np.ndarray):
    pass


def _hostile_steps():
    """(name, function(opt, params, grads) -> the grads to step with): grads the gate must
    refuse, each either refused by the Python validation or (layouts it does not take)
    applied by it."""
    def swap(g):
        return g.astype(g.dtype.newbyteorder(">"))

    def misaligned(g):
        buf = np.zeros(g.nbytes + 1, np.uint8)[1:].view(g.dtype).reshape(g.shape)
        buf[...] = g
        return buf

    def replace(i, fn):
        def make(opt, params, grads):
            gs = list(grads)
            gs[i] = fn(opt, gs[i])
            return gs
        return make

    half = next(i for i, p in enumerate(PLAIN) if SPECS[p][0] == BF16)   # bf16, bf16 grad
    f32 = next(i for i, p in enumerate(PLAIN) if SPECS[p][0] == F32)
    fort = next(i for i, p in enumerate(PLAIN) if SPECS[p][3] == "F")
    return [
        ("float64 grad of a bfloat16 param", replace(half, lambda o, g: g.astype(F64))),
        ("float16 grad of a float32 param", replace(f32, lambda o, g: g.astype(F16))),
        ("a grad of another shape", replace(half, lambda o, g: g[:-1])),
        ("a C-order grad of an F-order param", replace(fort, lambda o, g: np.ascontiguousarray(g))),
        ("an ndarray subclass", replace(half, lambda o, g: g.view(_Sub))),
        ("a byte-swapped grad", replace(f32, lambda o, g: swap(g))),
        ("a misaligned grad", replace(f32, lambda o, g: misaligned(g))),
        ("a list", replace(half, lambda o, g: g.tolist())),
        ("the accumulator as grad", replace(f32, lambda o, g: o.accumulators[0][f32])),
        ("another param as grad", replace(half, lambda o, g: o.groups[0].params[half - 1]
                                          if o.groups[0].params[half - 1].shape == g.shape
                                          else o.groups[0].params[half])),
        ("a master weight as grad", replace(half, lambda o, g: o.groups[0].masters[half]
                                            if o.groups[0].masters[half] is not None
                                            else g.astype(F32))),
        ("one grad too few", lambda o, ps, gs: gs[:-1]),
    ]


@pytest.mark.skipif(_kernels is None, reason="compiled extension not built")
@pytest.mark.parametrize("case", range(len(_hostile_steps())),
                         ids=[name for name, _ in _hostile_steps()])
@pytest.mark.parametrize("master", [False, True])
def test_what_the_gate_refuses_goes_to_the_python_validation(case, master):
    """Each hostile grad list: the compiled backend (gate first) and the NumPy backend raise
    the same error and leave every array untouched, or apply the same bytes."""
    name, make = _hostile_steps()[case]
    params, grads = plain_build(6)
    outcomes = []
    for backend in ("cython", "numpy"):
        with fastadagrad.backend(backend):
            ps = [p.copy(order="K") for p in params]
            opt = fastadagrad.AdaGrad(ps, master=master, **OPTIONS)
            opt.step(grads[0])
            states = ps + opt.accumulators[0] + [m for m in opt.groups[0].masters if m is not None]
            before = [x.copy() for x in states]
            try:
                opt.step(make(opt, ps, grads[1]))
            except (TypeError, ValueError) as exc:
                for x, y in zip(states, before):
                    assert_same_bits(x, y, f"{name}: untouched after a refused step")
                outcomes.append((type(exc), str(exc).replace(hex(id(0)), "")))
            else:
                outcomes.append([x.copy() for x in states])
    got, want = outcomes
    if isinstance(want, tuple):
        assert got == want, name
    else:
        assert not isinstance(got, tuple), (name, got)
        for x, y in zip(got, want):
            assert_same_bits(x, y, name)


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
def test_a_grad_aliasing_another_groups_master_weights_is_refused(backend):
    """A float32 group (compiled: ArrayGroup's gate) whose grad is the master weights of a
    bfloat16 param in another group: refused, naming both, nothing written."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal(64).astype(F32)
    h = rng.standard_normal(64).astype(BF16)
    with fastadagrad.backend(backend):
        opt = fastadagrad.AdaGrad([{"params": [w]}, {"params": [h]}], master=True, lr=0.1)
        master = opt.groups[1].masters[0]
        before = [w.copy(), h.copy(), master.copy()]
        with pytest.raises(ValueError, match=r"`grads\[0\]\[0\]` and `the master weights of "
                                             r"params\[1\]\['params'\]\[0\]` overlap"):
            opt.step([[master], [np.ones(64, F32)]])
        for x, y in zip([w, h, master], before):
            assert_same_bits(x, y, "untouched")


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
def test_grad_dtypes_changing_between_steps(monkeypatch, backend):
    """The step's batches are kept while the grads' dtypes stay the same: steps whose grads
    switch between the param's dtype and float32 (and back) are batched by their own dtypes
    (one call per combination of that step) and equal per-array calls."""
    module = _kernels if backend == "cython" else reference
    real = module.update_multi_validated
    calls: list[tuple[np.dtype, np.dtype]] = []

    def spy(params, grads, accums, masters, opts):
        calls.append((params[0].dtype, grads[0].dtype))
        assert all(g.dtype == grads[0].dtype for g in grads)   # one combination per call
        real(params, grads, accums, masters, opts)

    monkeypatch.setattr(module, "update_multi_validated", spy)
    params, grads = plain_build(8)
    half = [i for i, p in enumerate(params) if p.dtype in (F16, BF16)]
    steps = [grads[0], [g.astype(F32) if i in half else g for i, g in enumerate(grads[1])],
             grads[2]]
    want, _, _ = reference_run(params, steps, False)
    with fastadagrad.backend(backend):
        ps = [p.copy(order="K") for p in params]
        opt = fastadagrad.AdaGrad(ps, **OPTIONS)
        for gs in steps:
            calls.clear()
            assert opt.step(gs)
            assert sorted(calls, key=str) == sorted(
                {(p.dtype, g.dtype) for p, g in zip(params, gs)}, key=str)
    for x, y in zip(ps, want):
        assert_same_bits(x, y, "param")
