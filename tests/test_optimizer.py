"""fastadagrad.AdaGrad: structures, one-call multi-array steps, state, non-finite policy, packing."""

from __future__ import annotations


import re

import numpy as np
import pytest

import fastadagrad
from fastadagrad import AdaGrad, SparseGrad
from fastadagrad._backend import compiled_available
from _helpers import assert_same_bits

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])
SIZES = [1, 17, 1000, 40_000, 3, 70_001, 0, 16]   # crosses the thread split between arrays


def arrays(sizes, dtype=np.float32, seed=0, shape2d=False):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(n).astype(dtype) for n in sizes]
    if shape2d:
        out[2] = out[2].reshape(10, 100) if out[2].size == 1000 else out[2]
    return out


def grads_for(params, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def run(backend_name, params, steps=5, opt_kwargs=None, **kw):
    with fastadagrad.backend(backend_name):
        opt = AdaGrad(params, **(opt_kwargs or {}), **kw)
        for s in range(steps):
            opt.step(grads_for(params, 100 + s))
    return opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [
    {}, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, maximize=True, eps_placement="inside",
             initial_accumulator_value=0.5),
    dict(convention="keras", weight_decay=0.004), dict(convention="optax", lr=0.3),
    dict(convention="tf"), dict(convention="torch", lr_decay=1e-3),
])
def test_compiled_step_equals_numpy_step(compiled, dtype, kw):
    p_fast = arrays(SIZES, dtype, shape2d=True)
    p_slow = [p.copy() for p in p_fast]
    fast = run("cython", p_fast, **kw)
    slow = run("numpy", p_slow, **kw)
    for a, b in zip(p_fast, p_slow):
        assert_same_bits(a, b, f"param {kw}")
    for a, b in zip(fast.groups[0].accums, slow.groups[0].accums):
        assert_same_bits(a, b, f"accum {kw}")
    assert fast.groups[0].step == slow.groups[0].step == 5


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_step_equals_adagrad_update_per_array(backend_name):
    """The optimizer is the per-array function with an int64 step counter, nothing more."""
    params = arrays(SIZES)
    ref = [p.copy() for p in params]
    accs = [np.zeros_like(p) for p in ref]
    run(backend_name, params, steps=4, lr=0.2, lr_decay=0.1, weight_decay=0.01)
    for s in range(4):
        for p, g, a in zip(ref, grads_for(ref, 100 + s), accs):
            fastadagrad.reference.adagrad_update(p, g, a, lr=0.2, lr_decay=0.1, weight_decay=0.01,
                                                 step=s + 1)
    for a, b in zip(params, ref):
        assert_same_bits(a, b, "param")


def test_thread_counts_give_identical_bytes(compiled, restore_threads):
    results = []
    for threads in (1, 2, 3):
        fastadagrad.set_num_threads(threads)
        params = arrays(SIZES + [100_000, 5])
        run("cython", params, steps=3, lr=0.1)
        results.append(params)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_same_bits(a, b, "param")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_param_groups_and_dict(backend_name):
    a, b, c = arrays([10, 20, 30])
    a2, b2, c2 = a.copy(), b.copy(), c.copy()
    with fastadagrad.backend(backend_name):
        groups = AdaGrad([{"params": [a, b]}, {"params": [c], "lr": 0.5, "maximize": True}], lr=0.1)
        named = AdaGrad({"a": a2, "b": b2, "c": c2}, lr=0.1)
        ga, gb, gc = grads_for([a, b, c], 1)
        assert groups.step([[ga, gb], [gc]]) is True
        named.step({"c": gc, "b": gb, "a": ga})
    assert a.tobytes() == a2.tobytes() and b.tobytes() == b2.tobytes()
    assert c.tobytes() != c2.tobytes()  # group 2 had its own lr and maximize
    c3 = arrays([10, 20, 30])[2]
    fastadagrad.reference.adagrad_update(c3, gc, np.zeros_like(c3), lr=0.5, maximize=True)
    assert c.tobytes() == c3.tobytes()
    assert [g.step for g in groups.groups] == [1, 1]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_state_is_int64_step_and_param_dtype_accumulators(backend_name):
    opt = run(backend_name, arrays([5, 6], np.float64), steps=3, initial_accumulator_value=0.25)
    sd = opt.state_dict()
    assert sd["group0.step"] == 3 and isinstance(sd["group0.step"], int)
    assert sd["group0.accum0"].dtype == np.float64
    opt.groups[0].step = 2**40   # far beyond float32's 2**24: still exact
    opt.step(grads_for(opt.groups[0].params, 9))
    assert opt.groups[0].step == 2**40 + 1


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_resume_from_npz_is_bit_identical(backend_name, tmp_path):
    kw = dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1)
    with fastadagrad.backend(backend_name):
        straight = arrays([100, 3, 2000], seed=4)
        opt = AdaGrad([{"params": straight[:2]}, {"params": straight[2:], "lr": 0.2}], **kw)
        for s in range(100):
            g = grads_for(straight, s)
            opt.step([g[:2], g[2:]])

        first = arrays([100, 3, 2000], seed=4)
        opt1 = AdaGrad([{"params": first[:2]}, {"params": first[2:], "lr": 0.2}], **kw)
        for s in range(50):
            g = grads_for(first, s)
            opt1.step([g[:2], g[2:]])
        np.savez(tmp_path / "ckpt.npz", **opt1.state_dict())
        np.savez(tmp_path / "params.npz", *first)

        loaded = np.load(tmp_path / "params.npz")
        resumed = [loaded[f"arr_{i}"].copy() for i in range(3)]
        opt2 = AdaGrad([{"params": resumed[:2]}, {"params": resumed[2:], "lr": 999.0}], **kw)
        opt2.load_state_dict(np.load(tmp_path / "ckpt.npz"))
        assert opt2.groups[1].options.lr == 0.2  # restored from the checkpoint
        for s in range(50, 100):
            g = grads_for(resumed, s)
            opt2.step([g[:2], g[2:]])
    for a, b in zip(straight, resumed):
        assert_same_bits(a, b, "resumed param")
    assert [g.step for g in opt2.groups] == [100, 100]


def test_bad_state_leaves_optimizer_unchanged():
    params = arrays([4, 5])
    opt = run("numpy", params, steps=2)
    good = opt.state_dict()
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state_dict().items()}
    bad_states = [
        ({**good, "group0.accum1": np.zeros(4, np.float32)}, "accum1"),
        ({**good, "group0.accum0": np.zeros(4, np.float64)}, "accum0"),
        ({**good, "group0.step": -1}, "step"),
        ({**good, "group0.lr": float("nan")}, "lr"),
        ({**good, "groups": 2}, "groups"),
        ({**good, "format": "other"}, "format"),
        ({k: v for k, v in good.items() if k != "group0.accum1"}, "accum1"),
    ]
    for state, fragment in bad_states:
        if "group0.accum0" in state and state is not bad_states[1][0]:
            state["group0.accum0"] = state["group0.accum0"] + 1  # would change if written
        with pytest.raises((ValueError, TypeError), match=fragment):
            opt.load_state_dict(state)
        after = opt.state_dict()
        for k, v in before.items():
            if isinstance(v, np.ndarray):
                assert v.tobytes() == after[k].tobytes(), k
            else:
                assert v == after[k], k


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_invalid_grads_write_nothing(backend_name):
    params = arrays([10, 20, 30])
    with fastadagrad.backend(backend_name):
        opt = AdaGrad(params, lr=0.1)
        opt.step(grads_for(params, 0))
    snapshot = [p.copy() for p in params] + [a.copy() for a in opt.groups[0].accums]
    g = grads_for(params, 1)
    cases = [
        (g[:2], ValueError, "has 2 arrays"),
        ([g[0], g[1], g[2][:29]], ValueError, "`grads[2]` has shape (29,)"),
        ([g[0], g[1].astype(np.float64), g[2]], TypeError, "`grads[1]` has dtype float64"),
        ([g[0], list(g[1]), g[2]], TypeError, "`grads[1]` must be a numpy.ndarray"),
        ([g[0], params[1], g[2]], ValueError, "overlap"),
        ([g[0], params[2][5:25], g[2]], ValueError, "`grads[1]` and `params[2]` overlap"),
        ({"a": g[0]}, TypeError, "`grads` must be a list"),
    ]
    for bad, exc, fragment in cases:
        with fastadagrad.backend(backend_name), pytest.raises(exc) as info:
            opt.step(bad)
        assert fragment in str(info.value), str(info.value)
        now = [p for p in params] + list(opt.groups[0].accums)
        for a, b in zip(snapshot, now):
            assert a.tobytes() == b.tobytes(), fragment
        assert opt.groups[0].step == 1


def test_constructor_validation():
    p = arrays([3])
    with pytest.raises(ValueError, match="`convention`"):
        AdaGrad(p, convention="jax")
    with pytest.raises(TypeError, match="`lr` is required"):
        AdaGrad(p, convention="optax")
    with pytest.raises(ValueError, match="`lr` must be >= 0"):
        AdaGrad(p, lr=-1)
    with pytest.raises(ValueError, match="`nonfinite`"):
        AdaGrad(p, nonfinite="ignore")
    with pytest.raises(ValueError, match="unknown options"):
        AdaGrad([{"params": p, "momentum": 0.9}])
    with pytest.raises(TypeError, match="`params\\[0\\]` has dtype int64"):
        AdaGrad([np.zeros(3, np.int64)])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        AdaGrad([ro])
    base = np.zeros(10)
    with pytest.raises(ValueError, match="overlap"):
        AdaGrad([base[:6], base[4:]])
    AdaGrad([base[::2], base[1::2]])  # interleaved, disjoint: fine


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nonfinite_policies(backend_name, bad_value):
    params = arrays(SIZES)
    grads = grads_for(params, 3)
    grads[5][123] = bad_value
    for policy in ("propagate", "skip", "raise"):
        ps = [p.copy() for p in params]
        with fastadagrad.backend(backend_name):
            opt = AdaGrad(ps, lr=0.1, nonfinite=policy)
            before = [p.copy() for p in ps] + [a.copy() for a in opt.groups[0].accums]
            if policy == "raise":
                with pytest.raises(ValueError, match=r"`grads\[5\]` holds NaN or inf"):
                    opt.step(grads)
            else:
                applied = opt.step(grads)
        after = ps + list(opt.groups[0].accums)
        if policy == "propagate":
            assert applied is True and opt.groups[0].step == 1
            assert not np.isfinite(ps[5][123])
            assert np.isfinite(ps[5][:123]).all()
        else:
            assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after)), policy
            assert opt.groups[0].step == 0
            if policy == "skip":
                assert applied is False and opt.last_step_skipped and opt.skipped_steps == 1
                assert opt.step(grads_for(params, 4)) is True and not opt.last_step_skipped


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("kw", [dict(clipnorm=1.0), dict(global_clipnorm=1.0),
                                dict(clipvalue=0.5), dict(rule="proximal", l1=0.01),
                                dict(rule="da"), dict(rule="glove", clipnorm=1.0)],
                         ids=["clipnorm", "global_clipnorm", "clipvalue", "proximal", "da",
                              "glove+clipnorm"])
@pytest.mark.parametrize("where", ["dense", "sparse"])
def test_nonfinite_policies_with_clipping_and_rules(backend_name, kw, where):
    """The clipping and family-rule steps check finiteness too (their own code path): skip
    and raise leave every param and state untouched and name the grad; propagate applies."""
    table = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    dense = arrays([1000, 33])
    rng = np.random.default_rng(2)
    idx = np.array([3, 7, 3, 49])
    values = rng.standard_normal((4, 8)).astype(np.float32)
    gdense = grads_for(dense, 3)
    if where == "dense":
        gdense[1][32] = np.nan
        bad_name = r"`grads\[1\]`"
    else:
        values[2, 5] = np.inf
        bad_name = r"`grads\[2\]`"
    for policy in ("propagate", "skip", "raise"):
        ps = [p.copy() for p in dense] + [table.copy()]
        with fastadagrad.backend(backend_name):
            opt = AdaGrad(ps, nonfinite=policy, **kw)
            grads = gdense + [SparseGrad(idx, values)]
            state = [x.copy() for x in ps] + [x.copy() for x in _all_state(opt)]
            if policy == "raise":
                with pytest.raises(ValueError, match=bad_name + " holds NaN or inf"):
                    opt.step(grads)
            else:
                applied = opt.step(grads)
            now = ps + _all_state(opt)
            if policy == "propagate":
                assert applied is True and opt.groups[0].step == 1
                assert any(a.tobytes() != b.tobytes() for a, b in zip(state, now))
                continue
            assert all(a.tobytes() == b.tobytes() for a, b in zip(state, now)), policy
            assert opt.groups[0].step == 0
            if policy == "skip":
                assert applied is False and opt.last_step_skipped and opt.skipped_steps == 1
            finite = grads_for(dense, 4) + [SparseGrad(idx, np.ones((4, 8), np.float32))]
            assert opt.step(finite) is True and opt.groups[0].step == 1


def _all_state(opt):
    """Every state array of every group: accumulators and, for a family rule, its extra
    states."""
    out = []
    for g in opt.groups:
        out += list(g.accums) + [x for xs in (getattr(g, "extra", None) or []) for x in xs]
    return out


def test_skip_covers_all_groups(compiled):
    a, b = arrays([50_000, 10])
    ga, gb = grads_for([a, b], 0)
    gb[3] = np.nan
    opt = AdaGrad([{"params": [a]}, {"params": [b]}], nonfinite="skip")
    a0 = a.copy()
    assert opt.step([[ga], [gb]]) is False
    assert a.tobytes() == a0.tobytes() and [g.step for g in opt.groups] == [0, 0]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_non_contiguous_params_and_grads(backend_name):
    base = np.random.default_rng(0).standard_normal((40, 60))
    p1, p2 = base[:, ::2], base.T[1::4]         # views of one buffer, disjoint elements
    ref = [np.array(p1), np.array(p2)]
    with fastadagrad.backend(backend_name):
        opt = AdaGrad([p1, p2], lr=0.1)
        g = [np.asfortranarray(x) for x in grads_for([p1, p2], 0)]
        opt.step(g)
    for r, gg in zip(ref, g):
        fastadagrad.reference.adagrad_update(r, np.array(gg), np.zeros_like(r), lr=0.1)
    assert_same_bits(p1, ref[0], "p1")
    assert_same_bits(p2, ref[1], "p2")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_pack_and_packed_step(backend_name):
    originals = arrays([12, 1000, 7]) + [np.arange(6, dtype=np.float32).reshape(2, 3)]
    views, arena = fastadagrad.pack(originals)
    assert arena.size == sum(o.size for o in originals)
    for v, o in zip(views, originals):
        assert v.shape == o.shape and v.tobytes() == o.tobytes()
        assert np.shares_memory(v, arena)
    ref = [o.copy() for o in originals]
    with fastadagrad.backend(backend_name):
        opt = AdaGrad(views, packed=True, lr=0.1)
        ref_opt = AdaGrad(ref, lr=0.1)
        for s in range(3):
            g = grads_for(originals, s)
            flat = np.concatenate([x.ravel() for x in g])
            assert opt.step(flat if s % 2 == 0 else g)
            ref_opt.step(g)
    for v, r in zip(views, ref):
        assert v.tobytes() == r.tobytes()
    with pytest.raises(ValueError, match="fastadagrad.pack"):
        AdaGrad(arrays([3, 4]), packed=True)
    with pytest.raises(ValueError, match="flat grad"):
        opt.step(np.zeros(5, np.float32))
    before = arena.copy()
    with pytest.raises(ValueError, match="overlap"):
        opt.step(arena)   # the params' own memory as the flat grad
    assert arena.tobytes() == before.tobytes()


def test_accumulators_are_read_only_views():
    opt = AdaGrad(arrays([3]), initial_accumulator_value=0.5)
    acc = opt.accumulators[0][0]
    assert np.all(acc == 0.5)
    with pytest.raises(ValueError):
        acc[0] = 1.0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_grads_may_not_touch_any_param_or_accumulator_of_any_group(backend_name):
    """The C gate and the Python validator guard every param and accumulator of the optimizer,
    not only the grad's own: a grad viewing another group's param or an accumulator is refused
    before anything is written."""
    a, b, c = arrays([10, 20, 30])
    with fastadagrad.backend(backend_name):
        opt = AdaGrad([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1)
        good = grads_for([a, b, c], 0)
        opt.step([good[:2], good[2:]])
        snapshot = [x.copy() for x in (a, b, c)] + [x.copy() for g in opt.groups for x in g.accums]
        for bad, fragment in (
                ([[good[0], c[5:25]], [good[2]]], "`grads[0][1]` and `params[1]['params'][0]` overlap"),
                ([[good[0], opt.accumulators[1][0][:20]], [good[2]]], "the accumulator of")):
            with pytest.raises(ValueError, match=re.escape(fragment)):
                opt.step(bad)
        now = [a, b, c] + [x for g in opt.groups for x in g.accums]
        assert all(x.tobytes() == y.tobytes() for x, y in zip(snapshot, now))
        assert [g.step for g in opt.groups] == [1, 1]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_packed_flat_step_keeps_every_check(backend_name):
    """The packed flat step (one C call on the compiled backend) still refuses a flat grad
    that views the accumulator arena or has the wrong dtype, skips or raises on NaN as the
    list step does (naming `grads`), and writes nothing when it refuses."""
    views, arena = fastadagrad.pack(arrays([12, 1000, 7]))
    with fastadagrad.backend(backend_name):
        for nonfinite in ("skip", "raise"):
            opt = AdaGrad(views, packed=True, lr=0.1, nonfinite=nonfinite)
            acc_arena = opt.groups[0].flat[1]
            flat = np.concatenate([g.ravel() for g in grads_for(views, 0)])
            snapshot = (arena.copy(), acc_arena.copy())
            bad = flat.copy()
            bad[500] = np.nan
            if nonfinite == "skip":
                assert opt.step(bad) is False and opt.last_step_skipped
            else:
                with pytest.raises(ValueError, match="`grads` holds NaN or inf"):
                    opt.step(bad)
            with pytest.raises(ValueError, match="overlap"):
                opt.step(acc_arena)
            with pytest.raises(TypeError, match="dtype"):
                opt.step(flat.astype(np.float64))
            assert arena.tobytes() == snapshot[0].tobytes()
            assert acc_arena.tobytes() == snapshot[1].tobytes()
            assert opt.groups[0].step == 0
            ref = [v.copy() for v in views]
            ref_opt = AdaGrad(ref, lr=0.1)
            assert opt.step(flat) is True
            ref_opt.step([flat[:12], flat[12:1012], flat[1012:]])
            for v, r in zip(views, ref):
                assert v.tobytes() == r.tobytes()


@pytest.mark.parametrize("backend_name", ["numpy"] + (["cython"] if fastadagrad.compiled_available() else []))
def test_packed_flat_steps_are_counted(backend_name):
    """Every packed flat step counts (the step drives lr_decay): three steps give the list
    step's bytes and a count of 3."""
    rng = np.random.default_rng(5)
    shapes = [(40,), (7, 3), (1000,)]
    flat_grads = [rng.standard_normal(sum(int(np.prod(s)) for s in shapes)).astype(np.float32)
                  for _ in range(3)]
    with fastadagrad.backend(backend_name):
        views, _ = fastadagrad.pack([np.ones(s, np.float32) for s in shapes])
        packed = AdaGrad(views, packed=True, lr=0.1, lr_decay=0.5)
        plain_params = [np.ones(s, np.float32) for s in shapes]
        plain = AdaGrad(plain_params, lr=0.1, lr_decay=0.5)
        for g in flat_grads:
            packed.step(g)
            parts, start = [], 0
            for s in shapes:
                size = int(np.prod(s))
                parts.append(g[start:start + size].reshape(s))
                start += size
            plain.step(parts)
    assert packed.groups[0].step == plain.groups[0].step == 3
    for v, p in zip(views, plain_params):
        assert v.tobytes() == p.tobytes()


def test_opts_at_follows_the_rate_and_reloaded_options():
    """ParamGroup.opts_at keeps its last options while the rate is unchanged and builds new
    ones when it changes (lr_decay) or when load_state_dict sets other options: always the
    precomputed options with that step's rate."""
    p = np.ones(4, np.float32)
    opt = AdaGrad([p], lr=0.5, lr_decay=0.25)
    group = opt.groups[0]
    for step in (1, 2, 2, 7, 1):
        want = group.options.step_options(step)
        assert group.opts_at(step) == want
    constant = AdaGrad([np.ones(4, np.float32)], lr=0.5).groups[0]
    assert constant.opts_at(3) is constant.opts_at(9) == constant.options.step_options(9)
    other = AdaGrad([np.ones(4, np.float32)], lr=0.125, eps=1e-3)
    opt.load_state_dict(other.state_dict())
    for step in (1, 5):
        assert group.opts_at(step) == other.groups[0].options.step_options(step)
        assert group.opts_at(step).eps == 1e-3


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_grads_structure_checked_alike_on_both_backends(kind):
    """step(grads) takes the structure of params on every backend, fast paths included: a
    one-group list of groups takes [[g]] (not [g], a TypeError naming grads[0]), a list of
    arrays takes [g] (not [[g]]), a dict takes a dict; the accepted forms give the same bytes
    on both backends."""
    def grad():
        if kind == "dense":
            return np.full((10, 8), 0.5, np.float32)
        return SparseGrad(np.array([1, 3, 1]), np.full((3, 8), 0.5, np.float32))

    results = {}
    for name in BACKENDS:
        with fastadagrad.backend(name):
            out = []
            for structure in ("list", "groups", "dict"):
                x = np.zeros((10, 8), np.float32)
                params = {"list": [x], "groups": [{"params": [x]}], "dict": {"w": x}}[structure]
                opt = AdaGrad(params, lr=0.1)
                good = {"list": [grad()], "groups": [[grad()]], "dict": {"w": grad()}}[structure]
                bad = {"list": [[grad()]], "groups": [grad()], "dict": [grad()]}[structure]
                with pytest.raises((TypeError, ValueError), match=r"`grads"):
                    opt.step(bad)
                assert not x.any() and opt.groups[0].step == 0
                assert opt.step(good) is True and opt.groups[0].step == 1
                out.append(x.copy())
            results[name] = out
    for got in results.values():
        for a, b in zip(got, results["numpy"]):
            assert_same_bits(a, b, "param")
