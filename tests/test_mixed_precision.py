"""Mixed precision (issue 15): float16 / bfloat16 params with float32 or low-precision grads and
accumulators, float32 master weights. Compiled loops (every ISA path) against the NumPy twin,
byte for byte, and the conversions against NumPy's / ml_dtypes' own casts."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastadagrad
from fastadagrad import reference
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (the bfloat16 tests need it)")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
LOW = (F16, BF16)
ISAS = _kernels.isa_available() if _kernels is not None else ()


def combos():
    """Every accepted (param, grad, accum) dtype combination."""
    for p in LOW:
        for g, a in itertools.product((p, F32), (F32, p)):
            yield p, g, a


COMBOS = list(combos())
COMBO_IDS = [f"{p.name}-g{g.name}-a{a.name}" for p, g, a in COMBOS]


def specials(dtype):
    """Zeros, subnormals (of float32 and of the storage type), huge values, NaN, inf."""
    tiny = [1e-45, 1e-40, 6e-8, 6e-5, 1e-38, 9e-41]
    big = [65504.0, 65520.0, 6e4, 3e38, 3.3e38]
    vals = [0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -3.0, 0.5, 1e-3] + tiny + big
    vals += [-v for v in tiny + big]
    with np.errstate(over="ignore"):
        return np.array(vals, dtype=np.float32).astype(dtype)


def random_inputs(rng, n, p, g, a, special=False):
    if special:
        pick = lambda dt: rng.choice(specials(dt), n)  # noqa: E731
        return pick(p), pick(g), np.abs(pick(a))
    return (rng.standard_normal(n).astype(p), rng.standard_normal(n).astype(g),
            np.abs(rng.standard_normal(n)).astype(a))


def both(param, grad, accum, master=None, **options):
    """(compiled outputs, NumPy outputs) on copies."""
    fast = [x.copy() for x in (param, grad, accum)]
    slow = [x.copy() for x in (param, grad, accum)]
    fm = None if master is None else master.copy()
    sm = None if master is None else master.copy()
    fastadagrad.adagrad_update(*fast, master=fm, **options)
    reference.adagrad_update(*slow, master=sm, **options)
    return (fast, fm), (slow, sm)


OPTIONS = [dict(lr=0.1, eps=1e-6, maximize=m, weight_decay=wd, eps_placement=pl,
                lr_decay=ld, step=st_)
           for m, wd, pl, (ld, st_) in itertools.product(
               (False, True), (0.0, 0.05), ("outside", "inside"), ((0.0, 1), (0.1, 7)))]


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", (1, 15, 16, 17, 32, 47, 48, 1000, 40_003))   # 16+: pipelined loop
def test_compiled_equals_numpy_every_isa(compiled, restore_isa, combo, isa, n):
    compiled.set_isa(isa)
    rng = np.random.default_rng(n)
    param, grad, accum = random_inputs(rng, n, *combo)
    for options in (OPTIONS[0], OPTIONS[-1]):
        (f, _), (s, _) = both(param, grad, accum, **options)
        assert_same_bits(f[0], s[0], f"{isa} param {options}")
        assert_same_bits(f[2], s[2], f"{isa} accum {options}")
        assert not np.array_equal(f[0], param)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_special_values_every_switch(compiled, restore_isa, combo, isa, layout):
    """Zeros, subnormals, huge values, NaN, inf through all 32 switch combinations (with and
    without master weights), contiguous and strided loops."""
    from test_equivalence import all_option_switches
    compiled.set_isa(isa)
    rng = np.random.default_rng(5)
    n = 1003
    base = random_inputs(rng, n, *combo, special=True)
    master0 = rng.choice(specials(F32), n)
    for opts, use_master in itertools.product(all_option_switches(), (False, True)):
        fast = [x.copy() for x in base]
        slow = [x.copy() for x in base]
        fm = master0.copy() if use_master else None
        sm = master0.copy() if use_master else None
        if layout == "strided":
            fast = [np.repeat(x, 2)[::2] for x in fast]
            fm = None if fm is None else np.repeat(fm, 2)[::2]
        compiled.update_validated(*fast, opts, fm)
        with np.errstate(all="ignore"):
            reference.update_mixed_validated(*slow, opts, sm)
        for k, name in ((0, "param"), (2, "accum")):
            assert_same_bits(np.ascontiguousarray(fast[k]), slow[k], f"{isa} {name} {opts}")
        if use_master:
            assert_same_bits(np.ascontiguousarray(fm), sm, f"{isa} master {opts}")


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("isa", ISAS)
def test_every_storage_value_round_trips(compiled, restore_isa, dtype, isa):
    """All 65536 bit patterns: widened to float32 and stored back unchanged (lr = 0)."""
    compiled.set_isa(isa)
    bits = np.arange(2**16, dtype=np.uint16)
    param = bits.view(dtype).copy()
    grad = np.ones(param.size, np.float32)
    accum = np.ones(param.size, np.float32)
    fastadagrad.adagrad_update(param, grad, accum, lr=0.0)
    nan = np.isnan(bits.view(dtype).astype(np.float32))
    assert np.array_equal(np.isnan(param.astype(np.float32)), nan)
    assert np.array_equal(param.view(np.uint16)[~nan], bits[~nan])


def rounding_cases():
    """float32 values around every rounding boundary of float16 and bfloat16: every top-16-bit
    pattern combined with low-bit patterns at, below and above the ties."""
    low = np.array([0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7fff, 0x8000,
                    0x8001, 0xc000, 0xefff, 0xf000, 0xffff], dtype=np.uint32)
    top = np.arange(2**16, dtype=np.uint32) << 16
    return (top[:, None] | low[None, :]).ravel().view(np.float32)


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_rounding_matches_numpy_casts(compiled, restore_isa, dtype, isa, backend_name):
    """param = round(master) with lr = 0 (master unchanged): the narrowing of ~1M float32
    values, every rounding boundary, against NumPy's float16 / ml_dtypes' bfloat16 cast."""
    compiled.set_isa(isa)
    master = rounding_cases()
    with np.errstate(all="ignore"):
        expected = master.astype(dtype)
    finite = np.isfinite(master)
    master = master.copy()
    param = np.zeros(master.size, dtype)
    grad = np.ones(master.size, np.float32)
    accum = np.ones(master.size, np.float32)
    with fastadagrad.backend(backend_name):
        fastadagrad.adagrad_update(param, grad, accum, lr=0.0, master=master)
    # master - 0 is master for finite values (inf - 0 = inf; NaN stays NaN)
    assert np.array_equal(np.isnan(param.astype(np.float32)), np.isnan(expected.astype(np.float32)))
    keep = ~np.isnan(expected.astype(np.float32))
    assert np.array_equal(param.view(np.uint16)[keep & finite], expected.view(np.uint16)[keep & finite])


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_arithmetic_is_float32_then_one_rounding(compiled, combo, backend_name):
    """The definition, written out in NumPy float32: widen; acc = a + g*g;
    param = p - (lr*g) / (sqrt(acc) + eps); then each stored result rounded once (the update
    uses the float32 acc, not its rounded copy: a float16 accumulator that underflows to 0 must
    not turn the step into lr*g/eps)."""
    p, g, a = combo
    rng = np.random.default_rng(1)
    param, grad, accum = random_inputs(rng, 5000, p, g, a)
    grad[:3] = 1e-4                      # g*g underflows in float16, not in float32
    accum[:3] = 0
    p32, g32, a32 = (x.astype(np.float32) for x in (param, grad, accum))
    lr, eps = np.float32(0.1), np.float32(1e-6)
    acc = a32 + g32 * g32
    expected = (p32 - (lr * g32) / (np.sqrt(acc) + eps)).astype(p)
    with fastadagrad.backend(backend_name):
        fastadagrad.adagrad_update(param, grad, accum, lr=0.1, eps=1e-6)
    assert param.tobytes() == expected.tobytes()
    assert accum.tobytes() == acc.astype(a).tobytes()
    assert np.all(np.abs(param[:3].astype(np.float32) - p32[:3]) < 0.2)   # a sane step


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
def test_master_weights(compiled, dtype):
    """master is the float32 trajectory; param its rounded copy, in the same pass."""
    rng = np.random.default_rng(2)
    n = 70_001
    master = rng.standard_normal(n).astype(np.float32)
    param = master.astype(dtype)
    accum = np.zeros(n, np.float32)
    ref_p, ref_a = master.copy(), accum.copy()
    for step in range(1, 4):
        grad = rng.standard_normal(n).astype(dtype)
        fastadagrad.adagrad_update(param, grad, accum, lr=0.05, master=master, step=step)
        fastadagrad.adagrad_update(ref_p, grad.astype(np.float32), ref_a, lr=0.05, step=step)
    assert master.tobytes() == ref_p.tobytes()
    assert accum.tobytes() == ref_a.tobytes()
    assert param.tobytes() == ref_p.astype(dtype).tobytes()


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_thread_counts_give_the_same_bytes(compiled, combo):
    rng = np.random.default_rng(4)
    inputs = random_inputs(rng, 3 * compiled.PARALLEL_MIN_ELEMENTS + 5, *combo)
    outs = []
    old = fastadagrad.get_num_threads()
    try:
        for nt in (1, 2, 3):
            fastadagrad.set_num_threads(nt)
            x = [v.copy() for v in inputs]
            fastadagrad.adagrad_update(*x, lr=0.1)
            outs.append(x)
    finally:
        fastadagrad.set_num_threads(old)
    for x in outs[1:]:
        assert x[0].tobytes() == outs[0][0].tobytes() and x[2].tobytes() == outs[0][2].tobytes()


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_views_are_updated_in_place(compiled, dtype, backend_name):
    """Non-contiguous low-precision views (grad and accum in the param's dtype): the caller's
    memory changes and equals the NumPy twin on contiguous copies."""
    from test_equivalence import layouts
    rng = np.random.default_rng(8)
    for label, p, g, a in layouts(rng, dtype):
        ref_p, ref_a = np.array(p, order="C"), np.array(a, order="C")
        reference.adagrad_update(ref_p, np.array(g, order="C"), ref_a, lr=0.1, weight_decay=0.01)
        before = p.copy()
        with fastadagrad.backend(backend_name):
            fastadagrad.adagrad_update(p, g, a, lr=0.1, weight_decay=0.01)
        assert_same_bits(p, ref_p, f"{label} param")
        assert_same_bits(a, ref_a, f"{label} accum")
        if p.size:
            assert not np.array_equal(p, before), label


def test_unaligned_and_byteswapped_float16(compiled):
    rng = np.random.default_rng(3)
    n = 1000
    raw = np.zeros(2 * n + 1, dtype=np.uint8)
    param = raw[1:].view(np.float16)
    assert not param.flags.aligned
    param[...] = rng.standard_normal(n)
    swapped = np.zeros(n, dtype=">f2")
    swapped[...] = rng.standard_normal(n)
    grad = rng.standard_normal(n).astype(np.float32)
    for p in (param, swapped):
        ref = np.array(p, dtype=np.float16)
        acc, ref_acc = np.ones(n, np.float32), np.ones(n, np.float32)
        reference.adagrad_update(ref, grad, ref_acc, lr=0.1)
        fastadagrad.adagrad_update(p, grad, acc, lr=0.1)
        assert_same_bits(np.array(p, dtype=np.float16), ref, "param")
        assert_same_bits(acc, ref_acc, "accum")


floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(floats32, floats32, floats32, floats32), min_size=1, max_size=70),
       combo=st.sampled_from(COMBOS), lr=st.sampled_from([0.0, 1e-3, 0.1, 10.0]),
       wd=st.sampled_from([0.0, 0.5]), inside=st.booleans(), use_master=st.booleans())
def test_hypothesis_against_numpy(compiled, values, combo, lr, wd, inside, use_master):
    p, g, a = combo
    arr = np.array(values, dtype=np.float32)
    with np.errstate(all="ignore"):
        param, grad = arr[:, 0].astype(p), arr[:, 1].astype(g)
        accum = np.abs(arr[:, 2]).astype(a)
    master = arr[:, 3].copy() if use_master else None
    options = dict(lr=lr, eps=1e-8, weight_decay=wd,
                   eps_placement="inside" if inside else "outside")
    (f, fm), (s, sm) = both(param, grad, accum, master, **options)
    assert_same_bits(f[0], s[0], "param")
    assert_same_bits(f[2], s[2], "accum")
    if use_master:
        assert_same_bits(fm, sm, "master")


# ----------------------------------------------------------------------------- bad input
def bad_calls():
    n = 8
    h, b, f, d = (np.zeros(n, t) for t in (F16, BF16, F32, np.float64))
    yield "grad", "`grad` has dtype bfloat16 but `param` has dtype float16", (h.copy(), b.copy(), f.copy()), {}
    yield "accum", "`accum` has dtype float64", (b.copy(), f.copy(), d.copy()), {}
    yield "grad", "`grad` has dtype float16 but `param` has dtype float32", (f.copy(), h.copy(), f.copy()), {}
    yield "param", "`param` has dtype float64", (d.copy(), h.copy(), f.copy()), {}
    yield "master", "`master` has dtype float16", (h.copy(), f.copy(), f.copy()), {"master": h.copy()}
    yield "master", "`master` is only accepted with a float16 or bfloat16 `param`", (f.copy(), f.copy(), f.copy()), {"master": f.copy()}
    yield "master", "`master` has shape (3,)", (h.copy(), f.copy(), f.copy()), {"master": np.zeros(3, F32)}
    yield "accum", "`accum` has shape (3,)", (h.copy(), f.copy(), np.zeros(3, F32)), {}
    ro = h.copy()
    ro.flags.writeable = False
    yield "param", "`param` is read-only", (ro, f.copy(), f.copy()), {}
    buf = np.zeros(2 * n, F32)
    yield "master", "overlap", (h.copy(), buf[:n], f.copy()), {"master": buf[:n]}
    yield "lr", "`lr` must be >= 0", (h.copy(), f.copy(), f.copy()), {"lr": -1.0}


@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_bad_input_raises_and_writes_nothing(compiled, backend_name):
    for name, message, arrays, kwargs in bad_calls():
        for x in arrays:
            if x.flags.writeable:
                x[...] = 1
        before = [x.copy() for x in arrays] + [v.copy() for v in kwargs.values() if isinstance(v, np.ndarray)]
        with fastadagrad.backend(backend_name):
            with pytest.raises((TypeError, ValueError)) as info:
                fastadagrad.adagrad_update(*arrays, **kwargs)
        assert message in str(info.value), (name, str(info.value))
        after = list(arrays) + [v for v in kwargs.values() if isinstance(v, np.ndarray)]
        for x, y in zip(before, after):
            assert x.tobytes() == y.tobytes()


def test_accepted_combinations_are_named_in_the_error(compiled):
    with pytest.raises(TypeError, match="accepted combinations: param float16 or bfloat16"):
        fastadagrad.adagrad_update(np.zeros(2, F16), np.zeros(2, np.float64), np.zeros(2, F32))


def test_missing_ml_dtypes_gives_a_clear_message(compiled, monkeypatch):
    param = np.zeros(8, BF16)[::2]   # a view: past the C-level gate (which knows bfloat16 by now)
    grad, accum = np.zeros(4, F32), np.zeros(4, F32)
    from fastadagrad import _mixed_precision
    monkeypatch.setattr(_mixed_precision, "_CODES", {})     # forget the dtypes seen so far
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)   # import ml_dtypes -> ImportError
    with pytest.raises(TypeError, match="needs the optional package ml_dtypes"):
        fastadagrad.adagrad_update(param, grad, accum)
    assert not param.view(np.uint16).any()


# ----------------------------------------------------------------------------- sparse, optimizer
def sparse_inputs(rng, p, g, a, rowwise, n=41, d=13, b=60):
    idx = rng.integers(0, n, b)
    idx[::4] = idx[1::4][: idx[::4].size]          # duplicates
    table = rng.standard_normal((n, d)).astype(p)
    accum = np.abs(rng.standard_normal((n,) if rowwise else (n, d))).astype(a)
    grads = rng.standard_normal((b, d)).astype(g)
    return table, accum, idx, grads


F32_STATE = [c for c in COMBOS if c[2] == F32]


@pytest.mark.parametrize("combo", F32_STATE, ids=[f"{p.name}-g{g.name}" for p, g, _ in F32_STATE])
@pytest.mark.parametrize("rowwise", [False, True], ids=["element-wise", "row-wise"])
def test_sparse_compiled_equals_numpy_and_the_definition(compiled, combo, rowwise):
    p, g, a = combo
    rng = np.random.default_rng(12)
    table, accum, idx, grads = sparse_inputs(rng, p, g, a, rowwise)
    for options in (dict(lr=0.1, eps=1e-6), dict(lr=0.2, eps=1e-3, maximize=True,
                                                   weight_decay=0.05, eps_placement="inside")):
        fast = [table.copy(), accum.copy()]
        slow = [table.copy(), accum.copy()]
        fastadagrad.sparse_adagrad_update(fast[0], fast[1], idx, grads, **options)
        reference.sparse_adagrad_update(slow[0], slow[1], idx, grads, **options)
        # the definition: the float32 sparse step on a float32 copy, rounded once
        t32, a32 = table.astype(np.float32), accum.astype(np.float32)
        fastadagrad.sparse_adagrad_update(t32, a32, idx, grads.astype(np.float32), **options)
        for x, y, z in zip(fast, slow, (t32.astype(p), a32.astype(a))):
            assert_same_bits(x, y, f"{options}")
            assert_same_bits(x, z, f"{options}")
        assert not np.array_equal(fast[0], table)
        untouched = np.setdiff1d(np.arange(table.shape[0]), idx)
        assert fast[0][untouched].tobytes() == table[untouched].tobytes()


def test_sparse_bad_input(compiled):
    table = np.zeros((5, 3), BF16)
    for accum, grads, message in (
            (np.zeros((5, 3), F16), np.zeros((2, 3), F32), "`accum` has dtype float16"),
            (np.zeros((5, 3), BF16), np.zeros((2, 3), F32), "needs a float32 accumulator"),
            (np.zeros((5, 3), F32), np.zeros((2, 3), np.float64), "`grads` has dtype float64"),
            (np.zeros((5, 3), F32), np.zeros((2, 4), F32), "`grads` has shape (2, 4)")):
        with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")):
            fastadagrad.sparse_adagrad_update(table, accum, np.array([0, 7]) % 5, grads)
    accum = np.zeros((5, 3), F32)
    with pytest.raises(ValueError, match="out of range"):
        fastadagrad.sparse_adagrad_update(table, accum, np.array([0, 7]), np.ones((2, 3), F32))
    assert not table.view(np.uint16).any() and not accum.any()


def mixed_model(rng):
    return [
        {"params": [rng.standard_normal((30, 7)).astype(BF16), rng.standard_normal(50).astype(np.float32)],
         "lr": 0.05},
        {"params": [rng.standard_normal(40_000).astype(F16), rng.standard_normal((9, 4)).astype(BF16)],
         "weight_decay": 0.01},
    ]


def mixed_grads(rng, groups, f32_grads=False):
    out = []
    for grp in groups:
        out.append([rng.standard_normal(p.shape).astype(np.float32 if f32_grads else p.dtype)
                    for p in grp["params"]])
    return out


@pytest.mark.parametrize("f32_grads", [False, True], ids=["param-dtype grads", "float32 grads"])
def test_optimizer_groups_mixing_dtypes(compiled, f32_grads):
    """Groups mixing float32, float16 and bfloat16 params: float32 accumulators for the low
    precision ones; compiled and NumPy backends give the same bytes, and each array equals the
    function API with a float32 accumulator."""
    from fastadagrad import AdaGrad
    rng = np.random.default_rng(21)
    groups = mixed_model(rng)
    copies = [[{**g, "params": [p.copy() for p in g["params"]]} for g in groups] for _ in range(3)]
    fast = AdaGrad(copies[0], lr=0.1)
    slow = AdaGrad(copies[1], lr=0.1)
    assert [a.dtype for a in fast.accumulators[0]] == [F32, F32]
    assert [a.dtype for a in fast.accumulators[1]] == [F32, F32]
    ref_acc = [[np.zeros(p.shape, F32) for p in g["params"]] for g in copies[2]]
    for step in range(1, 4):
        grads = mixed_grads(rng, groups, f32_grads)
        assert fast.step(grads) is True
        with fastadagrad.backend("numpy"):
            assert slow.step(grads) is True
        for gi, g in enumerate(copies[2]):
            for p, gr, a in zip(g["params"], grads[gi], ref_acc[gi]):
                reference.adagrad_update(p, gr, a, lr=g.get("lr", 0.1),
                                         weight_decay=g.get("weight_decay", 0.0), step=step)
    for gi in range(2):
        for x, y, z in zip(copies[0][gi]["params"], copies[1][gi]["params"], copies[2][gi]["params"]):
            assert x.tobytes() == y.tobytes() == z.tobytes()
        for x, y, z in zip(fast.accumulators[gi], slow.accumulators[gi], ref_acc[gi]):
            assert x.tobytes() == y.tobytes() == z.tobytes()
    state = fast.state_dict()
    again = AdaGrad([{**g, "params": [p.copy() for p in g["params"]]} for g in groups], lr=0.1)
    again.load_state_dict(state)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(again.accumulators[1], fast.accumulators[1]))


def test_optimizer_mixed_sparse_and_nonfinite(compiled):
    from fastadagrad import AdaGrad, SparseGrad
    rng = np.random.default_rng(22)
    table = rng.standard_normal((20, 8)).astype(BF16)
    dense = rng.standard_normal(10).astype(F16)
    opt = AdaGrad([{"params": [table], "rowwise": True}, {"params": [dense]}], lr=0.1,
                  nonfinite="skip")
    idx = np.array([3, 5, 3])
    vals = rng.standard_normal((3, 8)).astype(np.float32)
    before = table.copy(), dense.copy()
    bad = np.full(10, np.nan, F16)
    assert opt.step([[SparseGrad(idx, vals)], [bad]]) is False
    assert table.tobytes() == before[0].tobytes() and dense.tobytes() == before[1].tobytes()
    ref_t, ref_a = table.copy(), np.zeros(20, F32)
    assert opt.step([[SparseGrad(idx, vals)], [np.ones(10, F16)]]) is True
    reference.sparse_adagrad_update(ref_t, ref_a, idx, vals, lr=0.1)
    assert table.tobytes() == ref_t.tobytes()
    assert opt.accumulators[0][0].tobytes() == ref_a.tobytes()
    with pytest.raises(TypeError, match="`grads\\[1\\]\\[0\\]` has dtype float64"):
        opt.step([[SparseGrad(idx, vals)], [np.ones(10)]])


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
def test_c_gate_takes_valid_calls_and_leaves_the_rest_to_the_validator(compiled, dtype):
    """adagrad_update's C-level gate for float16/bfloat16 (contiguous arrays) gives the
    validated path's bytes, and everything it must not take still raises before any write."""
    rng = np.random.default_rng(21)
    param = rng.standard_normal(100).astype(dtype)
    grad = rng.standard_normal(100).astype(F32)
    accum = np.abs(rng.standard_normal(100)).astype(F32)
    fast = [x.copy() for x in (param, grad, accum)]
    slow = [x.copy() for x in (param, grad, accum)]
    fastadagrad.adagrad_update(*fast, lr=0.1, step=3, lr_decay=0.01)
    reference.adagrad_update(*slow, lr=0.1, step=3, lr_decay=0.01)
    assert_same_bits(fast[0], slow[0], "param")
    assert_same_bits(fast[2], slow[2], "accum")
    buf = param.copy()
    readonly = param.copy()
    readonly.flags.writeable = False
    bad = [
        ((buf[:60], buf[40:], accum[:60]), ValueError),           # param and grad overlap
        ((buf[:60], grad[:60], buf[40:]), ValueError),            # param and accum overlap
        ((readonly, grad, accum), ValueError),                    # read-only param
        ((param.copy(), grad[:99], accum), ValueError),           # shapes differ
        ((param.copy(), grad.astype(np.float64), accum), TypeError),
        ((param.copy(), grad, accum.astype(np.float64)), TypeError),
    ]
    for (p, g, a), exc in bad:
        before = [x.copy() for x in (p, g, a)]
        with pytest.raises(exc):
            fastadagrad.adagrad_update(p, g, a, lr=0.1)
        for x, y in zip((p, g, a), before):
            assert_same_bits(x, y, "unchanged")
    with pytest.raises(ValueError, match="`lr`"):
        fastadagrad.adagrad_update(param.copy(), grad, accum.copy(), lr=-1.0)


def test_avx_units_convert_in_vector_registers(compiled):
    """The AVX2/AVX-512 loops convert float16 with F16C on ymm registers and bfloat16 with
    vector integer code (the issue's 'conversions vectorised'), read from objdump."""
    import re

    from test_isa_isolation import disassembly

    functions = disassembly()
    for isa in [i for i in compiled.isa_compiled() if i in ("avx2", "avx512")]:
        unit = {name: body for name, body in functions.items() if name.startswith(f"fa_{isa}_")}
        text = "\n".join(line for body in unit.values() for line in body)
        assert re.search(r"vcvtph2ps\s.*%ymm", text), f"{isa}: no vector float16 widening"
        assert re.search(r"vcvtps2ph\s.*%ymm", text), f"{isa}: no vector float16 narrowing"
        bf16 = [body for name, body in unit.items() if "bf16" in name and "dense" in name]
        assert bf16, f"{isa}: no bfloat16 dense loop found"
        assert any(any(re.search(r"vpsrld\s.*%ymm", line) for line in body) for body in bf16)


def bf16_edge_bits():
    """float32 bit patterns at the corners of the bfloat16 store: NaN payloads whose
    round-to-nearest-even increment would carry into the exponent or the sign (0x7fff8001,
    0xffffffff), NaNs with only low payload bits (0x7f800001: must not become inf), ties below
    and at the largest finite value (rounding to inf), ties on subnormals, signed zeros."""
    corners = [0x7F800000, 0x7F800001, 0x7F808000, 0x7FBF8001, 0x7FBFFFFF, 0x7FC00000,
               0x7FFF7FFF, 0x7FFF8000, 0x7FFF8001, 0x7FFFFFFF, 0x7F7F7FFF, 0x7F7F8000,
               0x7F7F8001, 0x7F7EFFFF, 0x7F7E8000, 0x00008000, 0x00018000, 0x00007FFF,
               0x00010000, 0x0000FFFF, 0x00000001, 0x00000000, 0x3F808000, 0x3F818000,
               0x3F7FFFFF, 0x3F7F8000]
    bits = np.array(corners, dtype=np.uint32)
    return np.concatenate([bits, bits | np.uint32(0x80000000)])


def test_bfloat16_store_edge_bits_every_isa(compiled, restore_isa):
    """The vector bfloat16 store gives the scalar function's exact bits (NaN payloads
    included: (u >> 16) | 0x40) on every ISA path, wherever the element falls (16-wide,
    8-wide and scalar tail): param = round(master) with lr = 0."""
    bits = bf16_edge_bits()
    for n in (bits.size, 16 * 7 + 8 + 5):
        master0 = np.resize(bits, n).view(np.float32)
        u = master0.view(np.uint32)
        nan = np.isnan(master0)
        with np.errstate(all="ignore"):
            expected = master0.astype(BF16).view(np.uint16)
        expected = np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), expected)
        for isa in ISAS:
            compiled.set_isa(isa)
            master = master0.copy()
            param = np.zeros(n, BF16)
            fastadagrad.adagrad_update(param, np.ones(n, np.float32), np.ones(n, np.float32),
                                       lr=0.0, master=master)
            got = param.view(np.uint16)
            wrong = np.nonzero(got != expected)[0]
            assert wrong.size == 0, (f"{isa} n={n}: {[hex(int(u[i])) for i in wrong[:5]]} -> "
                                     f"{[hex(int(got[i])) for i in wrong[:5]]}, expected "
                                     f"{[hex(int(expected[i])) for i in wrong[:5]]}")


def test_bfloat16_signalling_nan_params_every_switch(compiled, restore_isa):
    """Signalling-NaN bfloat16 params (kept unquieted by the zero mask when the accumulator
    stays 0) and payload NaNs through every switch: the same bits on every ISA path as the
    generic (scalar-definition) path."""
    from test_equivalence import all_option_switches
    pbits = np.array([0x7F81, 0xFF81, 0x7FBF, 0x7FC1, 0x7FFF, 0x3F80, 0x0001, 0x8000],
                     dtype=np.uint16)
    n = 16 * 5 + 8 + 3
    param0 = np.resize(pbits, n).view(BF16)
    grad0 = np.resize(np.array([0.0, 0.0, 1.0, -0.0], np.float32), n)
    accum0 = np.zeros(n, np.float32)
    for opts in all_option_switches():
        results = {}
        for isa in ISAS:
            compiled.set_isa(isa)
            p, g, a = param0.copy(), grad0.copy(), accum0.copy()
            compiled.update_validated(p, g, a, opts, None)
            results[isa] = (p.view(np.uint16).copy(), a.view(np.uint32).copy())
        for isa, (p, a) in results.items():
            assert np.array_equal(p, results["generic"][0]), f"{isa} param {opts}"
            assert np.array_equal(a, results["generic"][1]), f"{isa} accum {opts}"


NAN_GRAD_BITS = {"bfloat16": [0x7F81, 0xFF81, 0x7FBF, 0x7FC1, 0x7FFF, 0x3F80, 0x0001, 0x8000, 0],
                 "float16": [0x7C01, 0xFC01, 0x7DFF, 0x7E01, 0x7FFF, 0x3C00, 0x0001, 0x8000, 0]}


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
@pytest.mark.parametrize("isa", ISAS)
def test_nan_payload_grads_and_negative_zero_accums(compiled, restore_isa, dtype, isa):
    """Grads holding signalling and payload NaNs, accumulators of -0.0 and negative values,
    with the default options (the AVX loops' `plain` copies leave out g * 1 and acc + 0) and
    with maximize and eps inside (which keep them): the NumPy twin's bytes on every ISA path."""
    compiled.set_isa(isa)
    n = 16 * 5 + 8 + 3
    grad0 = np.resize(np.array(NAN_GRAD_BITS[dtype.name], np.uint16), n).view(dtype)
    accum0 = np.resize(np.array([-0.0, 0.0, -1.0, 2.0, -0.0, 1e-40, 3.0], np.float32), n)
    param0 = np.random.default_rng(2).standard_normal(n).astype(dtype)
    for options in (dict(lr=0.1), dict(lr=0.1, maximize=True, eps_placement="inside")):
        (f, _), (s, _) = both(param0, grad0, accum0, **options)
        assert_same_bits(f[0], s[0], f"{isa} param {options}")
        assert_same_bits(f[2], s[2], f"{isa} accum {options}")
