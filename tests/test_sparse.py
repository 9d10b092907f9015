"""sparse_adagrad_update (element-wise and row-wise), its validation, and AdaGrad's SparseGrad."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad import AdaGrad, SparseGrad
from fastadagrad._backend import compiled_available
from fastadagrad.reference import rowwise_mean_square
from _helpers import assert_same_bits

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])
DTYPES = [np.float32, np.float64]


def make(n=50, d=13, b=40, dtype=np.float32, rowwise=False, seed=0, idx=None):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n, d)).astype(dtype)
    accum = np.abs(rng.standard_normal((n,) if rowwise else (n, d))).astype(dtype)
    if idx is None:
        idx = rng.integers(0, n, b)
    grads = rng.standard_normal((len(idx), d)).astype(dtype)
    return table, accum, np.asarray(idx), grads


def both(table, accum, idx, grads, **kw):
    out = []
    for name in BACKENDS:
        t, a = table.copy(), accum.copy()
        with fastadagrad.backend(name):
            fastadagrad.sparse_adagrad_update(t, a, idx, grads, **kw)
        out.append((t, a))
    for t, a in out[1:]:
        assert_same_bits(t, out[0][0], "table")
        assert_same_bits(a, out[0][1], "accum")
    return out[-1]


def explicit_elementwise(table, accum, idx, grads, lr=0.01, eps=1e-10):
    """The definition, one unique row at a time, with the merged gradient summed in order."""
    table, accum = table.copy(), accum.copy()
    for r in dict.fromkeys(idx.tolist()):
        rows = [k for k in range(len(idx)) if idx[k] == r]
        g = grads[rows[0]].copy()
        for k in rows[1:]:
            g = g + grads[k]
        fastadagrad.reference.adagrad_update(table[r], g, accum[r], lr=lr, eps=eps)
    return table, accum


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", ["random", "all equal", "half equal", "no duplicates"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_elementwise_duplicates_summed_before_squaring(dtype, pattern, index_dtype):
    b = 64
    idx = {"random": np.random.default_rng(1).integers(0, 50, b),
           "all equal": np.full(b, 7),
           "half equal": np.where(np.arange(b) % 2 == 0, 3, np.arange(b) % 50),
           "no duplicates": np.random.default_rng(2).permutation(50)[:40]}[pattern]
    table, accum, idx, grads = make(dtype=dtype, idx=idx.astype(index_dtype))
    got_t, got_a = both(table, accum, idx, grads)
    exp_t, exp_a = explicit_elementwise(table, accum, idx, grads)
    assert_same_bits(got_t, exp_t, "table")
    assert_same_bits(got_a, exp_a, "accum")
    untouched = np.setdiff1d(np.arange(50), idx)
    assert got_t[untouched].tobytes() == table[untouched].tobytes()
    if pattern == "all equal":   # one row, one update with the summed gradient
        assert np.allclose(got_a[7], accum[7] + grads.sum(axis=0) ** 2, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 8, 13, 16, 64, 100])
def test_rowwise_definition_and_summation_order(dtype, d):
    table, accum, idx, grads = make(d=d, dtype=dtype, rowwise=True, idx=[4, 9, 4, 0])
    got_t, got_a = both(table, accum, idx, grads, lr=0.1)
    g4 = grads[0] + grads[2]
    for r, g in ((4, g4), (9, grads[1]), (0, grads[3])):
        ms = rowwise_mean_square(g[None, :])[0]
        # the fixed order is a sum of squares: close to the plain mean, exact to its own rule
        assert np.isclose(ms, np.mean(g.astype(np.float64) ** 2), rtol=1e-5)
        acc = accum[r] + ms
        assert got_a[r] == acc
        expected = table[r] - (dtype(0.1) * g) / (np.sqrt(acc) + dtype(1e-10))
        assert got_t[r].tobytes() == expected.astype(dtype).tobytes()
    others = np.setdiff1d(np.arange(len(accum)), [0, 4, 9])
    assert got_a[others].tobytes() == accum[others].tobytes()


def test_rowwise_lane_order_is_what_the_docs_say():
    g = np.arange(1, 20, dtype=np.float32)[None, :] / 7
    sq = (g * g)[0]
    lanes = [np.float32(0)] * 8
    for j, v in enumerate(sq):
        lanes[j % 8] = np.float32(lanes[j % 8] + v)
    total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    assert rowwise_mean_square(g)[0] == np.float32(total / np.float32(19))


@pytest.mark.parametrize("rowwise", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_give_identical_bytes(compiled, restore_threads, rowwise, dtype):
    rng = np.random.default_rng(3)
    n, d, b = 20_000, 64, 4096
    table = rng.standard_normal((n, d)).astype(dtype)
    accum = np.full((n,) if rowwise else (n, d), 0.1, dtype)
    idx = rng.integers(0, n, b)
    idx[: b // 4] = idx[b // 4: b // 2]   # a quarter duplicates
    grads = rng.standard_normal((b, d)).astype(dtype)
    results = []
    for threads in (1, 2, 3):
        fastadagrad.set_num_threads(threads)
        t, a = table.copy(), accum.copy()
        fastadagrad.sparse_adagrad_update(t, a, idx, grads, weight_decay=0.01)
        results.append((t, a))
    ref_t, ref_a = table.copy(), accum.copy()
    fastadagrad.reference.sparse_adagrad_update(ref_t, ref_a, idx, grads, weight_decay=0.01)
    for t, a in results:
        assert t.tobytes() == ref_t.tobytes() and a.tobytes() == ref_a.tobytes()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("rowwise", [False, True])
def test_empty_batch_is_a_no_op(backend_name, rowwise):
    table, accum, _, _ = make(rowwise=rowwise)
    t, a = table.copy(), accum.copy()
    with fastadagrad.backend(backend_name):
        fastadagrad.sparse_adagrad_update(t, a, np.zeros(0, np.int64), np.zeros((0, 13), np.float32))
    assert t.tobytes() == table.tobytes() and a.tobytes() == accum.tobytes()


def bad_sparse_calls():
    t, a, i, g = make()
    yield "index N", ValueError, "`indices[2]` = 50 is out of range", (t, a, np.array([1, 2, 50, 3]), g[:4]), {}
    yield "index -1", ValueError, "`indices[1]` = -1 is out of range", (t, a, np.array([0, -1, 5]), g[:3]), {}
    yield "index N int32", ValueError, "`indices[2]` = 50 is out of range", (t, a, np.array([1, 2, 50, 3], np.int32), g[:4]), {}
    yield "index -1 int32", ValueError, "`indices[1]` = -1 is out of range", (t, a, np.array([0, -1, 5], np.int32), g[:3]), {}
    yield "index huge", ValueError, "`indices[0]` = 9223372036854775807", (t, a, np.array([2**63 - 1]), g[:1]), {}
    yield "index int8", TypeError, "`indices` has dtype int8", (t, a, np.array([1], np.int8), g[:1]), {}
    yield "index float", TypeError, "`indices` has dtype float64", (t, a, np.array([1.0]), g[:1]), {}
    yield "index list", TypeError, "`indices` must be a numpy.ndarray", (t, a, [1, 2], g[:2]), {}
    yield "index 2-D", ValueError, "`indices` must be 1-D", (t, a, np.array([[1, 2]]), g[:2]), {}
    yield "grads rows", ValueError, "`grads` has shape (3, 13)", (t, a, np.array([1, 2]), g[:3]), {}
    yield "grads dtype", TypeError, "`grads` has dtype float64", (t, a, i, g.astype(np.float64)), {}
    yield "accum shape", ValueError, "`accum` has shape (50, 12)", (t, a[:, :12].copy(), i, g), {}
    yield "accum dtype", TypeError, "`accum` has dtype float64", (t, a.astype(np.float64), i, g), {}
    yield "table 1-D", ValueError, "`table` must be 2-D", (t[0], a[0], np.array([0]), g[:1, :1]), {}
    yield "table view", ValueError, "`table` must be C-contiguous", (t[:, :12], a[:, :12], i, g[:, :12]), {}
    yield "table int", TypeError, "`table` has dtype int64", (t.astype(np.int64), a, i, g), {}
    yield "grads overlap", ValueError, "`table` and `grads` overlap", (t, a, np.array([0, 1]), t[:2]), {}
    yield "lr", ValueError, "`lr` must be >= 0", (t, a, i, g), dict(lr=-1.0)
    yield "eps", ValueError, "`eps` must be finite", (t, a, i, g), dict(eps=float("nan"))
    yield "maximize", TypeError, "`maximize` must be a bool", (t, a, i, g), dict(maximize="yes")
    yield "placement", ValueError, "`eps_placement`", (t, a, i, g), dict(eps_placement="both")
    # the edges of the compiled backend's C-level gate (plain arrays and numbers skip the
    # Python checks): each must still reach them and be refused, naming the argument
    yield "accum is table", ValueError, "`table` and `accum` overlap", (t, t, i, g), {}
    t64, g64 = t.astype(np.float64), g.astype(np.float64)
    in_grads = g64[0].view(np.int64)[:4]          # C-contiguous int64 bytes of grads
    in_grads[:] = [1, 2, 3, 4]
    yield "indices in grads", ValueError, "`grads` and `indices` overlap", (t64, a.astype(np.float64), in_grads, g64[:4]), {}
    in_table = t64[40].view(np.int64)[:2]
    in_table[:] = [0, 1]
    yield "indices in table", ValueError, "`table` and `indices` overlap", (t64, a.astype(np.float64), in_table, g64[:2]), {}
    ro = t.copy()
    ro.setflags(write=False)
    yield "table read-only", ValueError, "`table` is read-only", (ro, a, i, g), {}
    yield "accum rows", ValueError, "`accum` has shape (49,)", (t, a[:49, 0].copy(), i, g), {}
    yield "step 0", ValueError, "`step` must be >= 1", (t, a, i, g), dict(step=0)
    yield "step float", TypeError, "`step` must be an integer", (t, a, i, g), dict(step=1.0)
    yield "seed -1", ValueError, "`seed` must be in [0, 2**64)", (t, a, i, g), dict(seed=-1)
    yield "seed 2**64", ValueError, "`seed` must be in [0, 2**64)", (t, a, i, g), dict(seed=2**64)
    yield "seed bool", TypeError, "`seed` must be an int, got bool", (t, a, i, g), dict(seed=True)
    yield "update_slots", TypeError, "`update_slots` must be a bool", (t, a, i, g), dict(update_slots=1)
    yield "duplicates", ValueError, "`duplicates` must be one of", (t, a, i, g), dict(duplicates="max")
    yield "duplicates bytes", ValueError, "`duplicates` must be one of", (t, a, i, g), dict(duplicates=b"sum")


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", list(bad_sparse_calls()), ids=lambda c: c[0])
def test_bad_calls_leave_everything_unchanged(backend_name, case):
    label, exc, fragment, args, kwargs = case
    snapshot = [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in args]
    with fastadagrad.backend(backend_name), pytest.raises(exc) as info:
        fastadagrad.sparse_adagrad_update(*args, **kwargs)
    assert fragment in str(info.value), str(info.value)
    for x, snap in zip(args, snapshot):
        if snap is not None:
            assert x.tobytes() == snap.tobytes(), label


def test_bad_index_after_good_ones_writes_nothing(compiled):
    """FBGEMM stops midway after writing earlier rows; we check every index first."""
    table, accum, _, grads = make(b=5)
    idx = np.array([1, 2, 3, 4, 50])
    t, a = table.copy(), accum.copy()
    with pytest.raises(ValueError, match=r"`indices\[4\]` = 50"):
        fastadagrad.sparse_adagrad_update(t, a, idx, grads)
    assert t.tobytes() == table.tobytes() and a.tobytes() == accum.tobytes()


@pytest.mark.parametrize("rowwise", [False, True])
@pytest.mark.parametrize("duplicates", ["sum", "sequential"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_gate_and_full_checks_give_the_same_bytes(compiled, rowwise, duplicates, index_dtype):
    """A plain call (the C-level gate, no Python checks) and the same call sent through the full
    checks (an ndarray subclass fails the gate's exact-type test) update the same bytes."""
    class Sub(np.ndarray):
        pass

    table, accum, idx, grads = make(n=300, d=16, b=500, rowwise=rowwise)
    idx = idx.astype(index_dtype)
    out = []
    for wrap in (lambda x: x, lambda x: x.view(Sub)):
        t, a = table.copy(), accum.copy()
        fastadagrad.sparse_adagrad_update(wrap(t), wrap(a), wrap(idx), wrap(grads), lr=0.1,
                                          duplicates=duplicates, weight_decay=0.01)
        out.append((t, a))
    assert_same_bits(out[0][0], out[1][0], "table")
    assert_same_bits(out[0][1], out[1][1], "accum")
    assert out[0][0].tobytes() != table.tobytes()


def test_plain_calls_skip_the_python_checks(compiled, monkeypatch):
    """The gate is taken for plain float32/float64 arrays (int32 or int64 indices; "sum" and
    "sequential"); byte-swapped indices, another duplicates rule or a clip take the full
    checks."""
    from fastadagrad import _validation
    calls = []
    full = _validation.check_sparse
    monkeypatch.setattr(_validation, "check_sparse", lambda *a: calls.append(1) or full(*a))
    for dtype in DTYPES:
        for rowwise in (False, True):
            table, accum, idx, grads = make(dtype=dtype, rowwise=rowwise)
            for dup in ("sum", "sequential"):
                for index_dtype in (np.int32, np.int64):
                    fastadagrad.sparse_adagrad_update(table, accum, idx.astype(index_dtype),
                                                      grads, duplicates=dup)
    assert calls == []
    table, accum, idx, grads = make()
    fastadagrad.sparse_adagrad_update(table, accum, idx.astype(">i8"), grads)   # byte-swapped
    fastadagrad.sparse_adagrad_update(table, accum, idx, grads, duplicates="keras")
    fastadagrad.sparse_adagrad_update(table, accum, idx, grads, clipvalue=1.0)
    assert calls == [1, 1, 1]


# ----------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("rowwise", [False, True])
def test_optimizer_routes_sparse_grads(backend_name, rowwise, tmp_path):
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((30, 8)).astype(np.float32)
    w = rng.standard_normal(4).astype(np.float32)
    emb_ref = emb.copy()
    acc_ref = np.full((30,) if rowwise else (30, 8), 0.2, np.float32)
    with fastadagrad.backend(backend_name):
        opt = AdaGrad([{"params": [emb], "rowwise": rowwise}, {"params": [w]}], lr=0.1,
                      lr_decay=0.01, initial_accumulator_value=0.2)
        assert opt.groups[0].accums[0].shape == acc_ref.shape
        for step in range(1, 6):
            idx = rng.integers(0, 30, 12)
            vals = rng.standard_normal((12, 8)).astype(np.float32)
            opt.step([[SparseGrad(idx, vals)], [rng.standard_normal(4).astype(np.float32)]])
            # the group's clr includes lr_decay; the public function takes the effective lr
            fastadagrad.sparse_adagrad_update(emb_ref, acc_ref, idx, vals,
                                              lr=0.1 / (1 + (step - 1) * 0.01))
    assert emb.tobytes() == emb_ref.tobytes()
    assert opt.groups[0].accums[0].tobytes() == acc_ref.tobytes()
    # state_dict round trip through npz
    np.savez(tmp_path / "s.npz", **opt.state_dict())
    opt2 = AdaGrad([{"params": [emb.copy()], "rowwise": rowwise}, {"params": [w.copy()]}], lr=0.1)
    opt2.load_state_dict(np.load(tmp_path / "s.npz"))
    assert opt2.groups[0].accums[0].tobytes() == acc_ref.tobytes()
    assert opt2.groups[0].step == 5


def test_optimizer_sparse_validation_names_the_grad():
    emb = np.zeros((10, 4), np.float32)
    opt = AdaGrad([emb])
    with pytest.raises(ValueError, match=r"grads\[0\].*`indices\[1\]` = 10"):
        opt.step([SparseGrad(np.array([1, 10]), np.ones((2, 4), np.float32))])
    assert opt.groups[0].step == 0 and not emb.any()
    with pytest.raises(ValueError, match="2-D"):
        AdaGrad([np.zeros(3)]).step([SparseGrad(np.array([0]), np.ones((1, 1)))])
    with pytest.raises(ValueError, match="rowwise=True needs 2-D"):
        AdaGrad([np.zeros(3)], rowwise=True)
    with pytest.raises(ValueError, match="rowwise"):
        AdaGrad([np.zeros((3, 2))], rowwise=True, convention="optax", lr=0.1)


def test_optimizer_sparse_refusals_write_nothing(compiled):
    """The edges of the optimizer's C-level SparseGrad check (kernels.SparseGradGate): each
    refused before anything is written, by the Python checks that name the problem; a bad
    second SparseGrad leaves the first one's rows alone too."""
    emb = np.zeros((10, 4), np.float32)
    other = np.zeros((10, 4), np.float32)
    opt = AdaGrad([emb, other])
    good = SparseGrad(np.array([1, 2], np.int32), np.ones((2, 4), np.float32))
    cases = [
        ("values are a param", SparseGrad(np.array([0, 1]), emb[:2]), "overlap in memory"),
        ("values are another param", SparseGrad(np.array([0, 1]), other[:2]),
         "overlap in memory"),
        ("values are an accumulator", SparseGrad(np.array([0, 1]), opt.groups[0].accums[1][:2]),
         "overlap in memory"),
        ("index out of range", SparseGrad(np.array([3, 10]), np.ones((2, 4), np.float32)),
         r"`indices\[1\]` = 10"),
        ("negative index", SparseGrad(np.array([-1], np.int32), np.ones((1, 4), np.float32)),
         r"`indices\[0\]` = -1"),
        ("values dtype", SparseGrad(np.array([0]), np.ones((1, 4), np.float64)), "dtype"),
        ("values rows", SparseGrad(np.array([0, 1]), np.ones((3, 4), np.float32)), "shape"),
        ("duplicates", SparseGrad(np.array([0]), np.ones((1, 4), np.float32), "max"),
         "must be one of"),
    ]
    for label, bad, message in cases:
        with pytest.raises((TypeError, ValueError), match=message):
            opt.step([good, bad])
        assert not emb.any() and not other.any(), label
        assert opt.groups[0].step == 0 and not opt.groups[0].accums[0].any(), label
    assert opt.step([good, SparseGrad(np.array([9]), np.ones((1, 4), np.float32))])
    assert emb[1:3].all() and other[9].all() and not emb[0].any()


@pytest.mark.parametrize("rowwise", [False, True])
def test_optimizer_sparse_gate_is_taken_and_equal(compiled, monkeypatch, rowwise):
    """A plain SparseGrad (int32 or int64 indices, "sum" or "sequential") skips the Python
    checks, with the bytes of the Python-checked path (a "keras" SparseGrad, or one with
    byte-swapped indices, takes that path)."""
    from fastadagrad import _validation
    calls = []
    full = _validation.check_sparse
    monkeypatch.setattr(_validation, "check_sparse", lambda *a: calls.append(1) or full(*a))
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((40, 8)).astype(np.float32)
    gated, checked = emb.copy(), emb.copy()
    opts = [AdaGrad([{"params": [x], "rowwise": rowwise}], lr=0.1) for x in (gated, checked)]
    for step in range(4):
        idx = rng.integers(0, 40, 30)
        vals = rng.standard_normal((30, 8)).astype(np.float32)
        dup = ("sum", "sequential")[step % 2]
        opts[0].step([[SparseGrad(idx.astype((np.int32, np.int64)[step // 2]), vals, dup)]])
        n = len(calls)
        opts[1].step([[SparseGrad(idx.astype(">i8"), vals, dup)]])
        assert len(calls) == n + 1
    assert len(calls) == 4
    assert_same_bits(gated, checked, "param")
    assert_same_bits(opts[0].groups[0].accums[0], opts[1].groups[0].accums[0], "accum")


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad, at", [(np.inf, (1, 2)), (np.nan, (0, 0)), (-np.inf, (2, 3))])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_optimizer_nonfinite_sparse_values(policy, layout, bad, at, dtype, backend):
    """A SparseGrad whose values hold NaN or inf anywhere (C-gated contiguous values and
    strided ones, which the Python path checks) is refused or skipped before any write, on
    both backends; the same grad with finite values is applied."""
    if backend == "cython" and not compiled_available():
        pytest.skip("compiled extension not built")
    with fastadagrad.backend(backend):
        emb = np.ones((10, 4), dtype)
        opt = AdaGrad([emb], nonfinite=policy)
        full = np.ones((3, 8), dtype)
        vals = full[:, :4] if layout == "contiguous" else full[:, ::2]
        if layout == "contiguous":
            vals = np.ascontiguousarray(vals)
        vals[at] = bad
        grad = SparseGrad(np.array([1, 2, 5]), vals)
        if policy == "raise":
            with pytest.raises(ValueError, match=r"`grads\[0\]` holds NaN or inf"):
                opt.step([grad])
        else:
            assert opt.step([grad]) is False
        assert (emb == 1).all() and opt.groups[0].step == 0
        assert (opt.groups[0].accums[0] == 0).all()
        vals[at] = 1
        assert opt.step([grad]) is True
        assert opt.groups[0].step == 1 and (emb[[1, 2, 5]] < 1).all()


# ----------------------------------------------------------------------------- torch
# torch's own sparse Adagrad builds a sparse tensor without invariant checks and warns about it
@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled:UserWarning")
def test_against_torch_sparse_embedding():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    rng = np.random.default_rng(8)
    n, d = 200, 16
    init = rng.standard_normal((n, d)).astype(np.float32)
    emb = torch.nn.Embedding.from_pretrained(torch.from_numpy(init.copy()), freeze=False, sparse=True)
    topt = torch.optim.Adagrad(emb.parameters(), lr=0.05)
    table, accum = init.copy(), np.zeros((n, d), np.float32)
    worst, acc_ulps = 0.0, 0
    for step in range(30):
        idx = rng.integers(0, n, 64)
        idx[:16] = idx[16:32]   # duplicates
        out_grad = rng.standard_normal((64, d)).astype(np.float32)
        topt.zero_grad()
        emb(torch.from_numpy(idx)).backward(torch.from_numpy(out_grad))
        topt.step()
        before = table.copy()
        fastadagrad.sparse_adagrad_update(table, accum, idx, out_grad, lr=0.05)
        t = emb.weight.detach().numpy()
        # torch computes p + (-clr) * (g / std): one rounding apart from (clr * g) / std, so
        # measure the difference in ulps of this step's update (plus the parameter's own ulp)
        update = np.abs(t - before)
        diff = np.abs(table - t) - np.spacing(np.abs(t))
        ulps_of_update = np.where(diff > 0, diff / np.spacing(np.maximum(update, 1e-30)), 0)
        worst = max(worst, float(ulps_of_update.max()))
        tsum = topt.state[emb.weight]["sum"].to_dense().numpy()
        # accumulators: equal up to the order torch's coalesce sums duplicates in (3+ repeats;
        # three gradients ~1 summed in another order differ by ~3e-7 in g, so by up to ~1e-6
        # in g*g after cancellation)
        np.testing.assert_allclose(accum, tsum, rtol=4 * np.finfo(np.float32).eps, atol=1e-6)
        acc_ulps = max(acc_ulps, int(np.abs(accum.view(np.int32).astype(np.int64)
                                            - tsum.view(np.int32).astype(np.int64)).max()))
        table[...] = t                      # re-sync to torch's state each step
        accum[...] = topt.state[emb.weight]["sum"].to_dense().numpy()
    print(f"\nsparse vs torch: accumulators within {acc_ulps} ulps; params within 1 ulp + "
          f"{worst:.1f} ulps of the step's update")
    assert worst <= 4


@pytest.mark.parametrize("merge", ["hash", "sort"])
@pytest.mark.parametrize("rowwise", [False, True])
@pytest.mark.parametrize("n_rows", [1, 300, 70_000])
@pytest.mark.parametrize("d", [5, 32, 33])
def test_hash_and_sort_merges_give_the_same_bytes(compiled, merge, rowwise, n_rows, d):
    """Both duplicate-merge strategies (the benchmark knob kernels._set_merge) equal the NumPy
    twin, for tables whose row numbers need 0 to 3 radix digits, with rows summed inline
    (d <= 32) and by the ISA loop (d = 33)."""
    rng = np.random.default_rng(12)
    idx = rng.integers(0, n_rows, 300)
    idx[:100] = idx[100:200]   # duplicates
    table = rng.standard_normal((n_rows, d)).astype(np.float32)
    accum = np.full((n_rows,) if rowwise else (n_rows, d), 0.3, np.float32)
    grads = rng.standard_normal((300, d)).astype(np.float32)
    old = compiled._set_merge(merge)
    try:
        t, a = table.copy(), accum.copy()
        fastadagrad.sparse_adagrad_update(t, a, idx, grads, lr=0.1)
    finally:
        compiled._set_merge(old)
    rt, ra = table.copy(), accum.copy()
    fastadagrad.reference.sparse_adagrad_update(rt, ra, idx, grads, lr=0.1)
    assert t.tobytes() == rt.tobytes() and a.tobytes() == ra.tobytes()


@pytest.mark.parametrize("d", [1, 3, 4, 5, 8, 9, 16, 31, 32, 64, 127, 128, 130])
@pytest.mark.parametrize("rowwise", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("duplicates", ["sum", "sequential"])
def test_every_row_width_on_every_isa(compiled, restore_isa, d, rowwise, dtype, duplicates):
    """The sparse loops are specialised for some row widths (element-wise 4, 8, ..., 128;
    row-wise 8, ..., 128): each of those and its neighbours, with and without weight decay, on
    every ISA path, gives the twin's bytes (row-wise when the accumulator has one entry per
    row); also maximizing with eps inside. "sum" runs them on merged rows (a pointer per row),
    one-thread "sequential" on the caller's grads rows as they lie (no pointer array)."""
    table, accum, idx, grads = make(n=300, d=d, b=200, dtype=dtype, rowwise=rowwise, seed=d)
    for opts in ({"duplicates": duplicates}, {"weight_decay": 0.1, "duplicates": duplicates},
                 {"maximize": True, "eps_placement": "inside", "duplicates": duplicates}):
        ref_t, ref_a = table.copy(), accum.copy()
        fastadagrad.reference.sparse_adagrad_update(ref_t, ref_a, idx, grads, **opts)
        assert not np.array_equal(ref_t, table)
        for isa in compiled.isa_available():
            compiled.set_isa(isa)
            t, a = table.copy(), accum.copy()
            fastadagrad.sparse_adagrad_update(t, a, idx, grads, **opts)
            assert_same_bits(t, ref_t, f"table {isa} d={d} {opts}")
            assert_same_bits(a, ref_a, f"accum {isa} d={d} {opts}")


def misaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `a` whose data starts one byte past an element boundary."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rowwise", [False, True])
def test_misaligned_grads_are_read_through_an_aligned_copy(dtype, rowwise):
    """The C loops load whole elements: a C-contiguous but misaligned `grads` view (legal in
    NumPy) is copied before them (UBSan found the direct load), with the aligned call's bytes."""
    table, accum, idx, grads = make(dtype=dtype, rowwise=rowwise)
    from fastadagrad import _validation
    _, _, g = _validation.check_sparse(table, accum, idx, misaligned(grads), 0.1, 1e-10,
                                       "outside", False, 0.0)
    assert g.flags.aligned and g.flags.c_contiguous and np.array_equal(g, grads)
    expect_t, expect_a = both(table, accum, idx, grads, lr=0.1)
    got_t, got_a = both(table, accum, idx, misaligned(grads), lr=0.1)
    assert_same_bits(got_t, expect_t, "table")
    assert_same_bits(got_a, expect_a, "accum")


@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_index_range_check_on_every_isa(compiled, restore_isa, itype):
    """The indices' copy-and-check is an ISA loop (vectorised, no compare): on every path, a
    batch of any length around the vector widths with one bad index anywhere (the largest and
    smallest values of the type, -1, n) is refused naming the first bad position, writing
    nothing; the edges 0 and n - 1 pass. A table of 0 rows refuses every index."""
    info = np.iinfo(itype)
    table, accum, _, grads = make(n=50, d=4, b=40)
    for isa in compiled.isa_available():
        compiled.set_isa(isa)
        for b in (1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 33):
            good = np.arange(b, dtype=itype) % 2 * 49   # 0, 49, 0, ...: both edges
            t, a = table.copy(), accum.copy()
            fastadagrad.sparse_adagrad_update(t, a, good, grads[:b], duplicates="sequential")
            assert not np.array_equal(t, table)
            for pos in {0, b // 2, b - 1}:
                for bad in (-1, 50, info.min, info.max):
                    idx = good.copy()
                    idx[pos] = bad
                    if pos + 1 < b:
                        idx[pos + 1:] = -2   # later bad ones: the first is named
                    t, a = table.copy(), accum.copy()
                    with pytest.raises(ValueError, match=rf"`indices\[{pos}\]` = {bad} is out"):
                        fastadagrad.sparse_adagrad_update(t, a, idx, grads[:b])
                    assert t.tobytes() == table.tobytes() and a.tobytes() == accum.tobytes()
        empty_t, empty_a = np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)
        with pytest.raises(ValueError, match=r"`indices\[0\]` = 0 is out of range for a table of 0"):
            fastadagrad.sparse_adagrad_update(empty_t, empty_a, np.zeros(1, itype), grads[:1])


@pytest.mark.parametrize("b", [1, 3, 4, 5, 8, 33])
def test_merge_hash_collisions_and_wraparound(compiled, b):
    """The merge's open-addressing table (Fibonacci hash of the row, linear probing over the
    smallest power of two >= max(16, 4b) slots): rows that all hash to the table's last slot
    probe past it and wrap to slot 0; with repeats among them the merged sums must still be
    the twin's bytes (and the explicit definition's)."""
    cap = 16
    while cap < 4 * b:
        cap *= 2
    shift = 64 - cap.bit_length() + 1
    n = 200_000
    rows = np.arange(n, dtype=np.uint64)
    slot = (rows * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift)
    last = np.flatnonzero(slot == cap - 1)[:max(2, (b + 1) // 2)]
    assert len(last) >= 2
    rng = np.random.default_rng(b)
    idx = rng.choice(last, b)   # collide on the last slot, with repeats
    idx[0] = last[0]
    table, accum, idx, grads = make(n=n, d=5, b=b, idx=idx.astype(np.int64))
    got_t, got_a = both(table, accum, idx, grads)
    exp_t, exp_a = explicit_elementwise(table, accum, idx, grads)
    assert_same_bits(got_t, exp_t, "table")
    assert_same_bits(got_a, exp_a, "accum")


@pytest.mark.parametrize("b", [1, 7, 64, 1000])
@pytest.mark.parametrize("kw,threads", [(dict(duplicates="keras"), 1),
                                        (dict(duplicates="sequential", clipvalue=0.5), 1),
                                        (dict(duplicates="sequential"), 2)])
def test_grouping_hash_collisions_and_wraparound(compiled, restore_threads, b, kw, threads):
    """The same RowHash at the grouping pass's size (the smallest power of two >=
    max(16, 2b) slots; used by "keras", by "sequential" with clipvalue, and by "sequential"
    split over threads, which needs b * d past the parallel threshold): rows that all hash to
    the last slot wrap to slot 0; with repeats among them, the twin's bytes."""
    cap = 16
    while cap < 2 * b:
        cap *= 2
    shift = 64 - cap.bit_length() + 1
    n = 200_000 if threads == 1 else 50_000   # (n, 64) tables on 2 threads: kept small
    rows = np.arange(n, dtype=np.uint64)
    slot = (rows * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift)
    last = np.flatnonzero(slot == cap - 1)[:max(2, (b + 1) // 2)]
    assert len(last) >= 2
    idx = np.random.default_rng(b).choice(last, b)
    idx[0] = last[0]
    table, accum, idx, grads = make(n=n, d=64 if threads > 1 else 5, b=b,
                                    idx=idx.astype(np.int64))
    fastadagrad.set_num_threads(threads)
    both(table, accum, idx, grads, **kw)


@pytest.mark.parametrize("kw", [dict(), dict(rowwise=True), dict(lr_decay=0.1, weight_decay=0.01),
                                dict(maximize=True, nonfinite="skip"),
                                dict(duplicates="sequential", nonfinite="raise"),
                                dict(convention="torch"), dict(convention="keras")],
                         ids=["plain", "rowwise", "lr_decay+wd", "maximize+skip",
                              "sequential+raise", "torch", "keras"])
@pytest.mark.parametrize("with_dense", [False, True], ids=["sparse", "sparse+dense"])
def test_optimizer_sparse_step_checked_in_c(compiled, monkeypatch, kw, with_dense):
    """A one-group step whose grads are plain SparseGrads (with_dense: and plain dense grads
    of other params: 1-D, 2-D C- and Fortran-ordered, empty, float64 among float32) is checked by SparseGradGate.prepare (no
    Python validation: a spy on validate_group sees no call), with the bytes, step counts and
    state of the NumPy backend's step, over several steps (clr changes with lr_decay) and
    each grad's own duplicates rule."""
    from fastadagrad.optimizer import _grads
    calls = []
    full = _grads.validate_group
    monkeypatch.setattr(_grads, "validate_group", lambda *a: calls.append(1) or full(*a))
    rng = np.random.default_rng(5)
    tables = [rng.standard_normal((40, 8)).astype(np.float32),
              rng.standard_normal((30, 16)).astype(np.float32)]
    dense = ([rng.standard_normal(1000).astype(np.float32),
              np.asfortranarray(rng.standard_normal((7, 33)).astype(np.float32)),
              rng.standard_normal((5, 3)).astype(np.float32), np.zeros(0, np.float32),
              rng.standard_normal(50)]   # float64: its own batch
             if with_dense and not kw.get("rowwise") else [])
    fast = [t.copy() for t in tables[:1]] + [d.copy(order="K") for d in dense] + [tables[1].copy()]
    ref = [t.copy(order="K") for t in fast]
    opt = AdaGrad(fast, lr=0.1, **kw)
    with fastadagrad.backend("numpy"):
        ref_opt = AdaGrad(ref, lr=0.1, **kw)
    for step in range(5):
        grads = [SparseGrad(rng.integers(0, len(t), 12).astype((np.int32, np.int64)[step % 2]),
                            rng.standard_normal((12, t.shape[1])).astype(np.float32),
                            (None, "sum", "sequential")[step % 3]) for t in tables]
        grads = (grads[:1] + [rng.standard_normal(d.shape).astype(d.dtype)
                              if d.flags.c_contiguous else
                              np.asfortranarray(rng.standard_normal(d.shape).astype(d.dtype))
                              for d in dense] + grads[1:])
        assert opt.step(grads) is True
        with fastadagrad.backend("numpy"):
            assert ref_opt.step(grads) is True
    assert calls == [1] * 5   # the NumPy backend's five steps only
    for a, b in zip(fast + opt.accumulators[0], ref + ref_opt.accumulators[0]):
        assert_same_bits(a, b, "table or accumulator")
    assert opt.groups[0].step == ref_opt.groups[0].step == 5


@pytest.mark.parametrize("nonfinite", ["skip", "raise"])
@pytest.mark.parametrize("where", ["sparse", "dense"])
def test_optimizer_sparse_step_checked_in_c_nonfinite_writes_nothing(compiled, nonfinite, where):
    """NaN in the second grad (a SparseGrad's values, or a dense grad) of a step checked in C:
    the other arrays are untouched too, the step is not counted, and raise names
    `grads[1]`."""
    emb, other, w = (np.zeros((10, 4), np.float32), np.zeros((12, 4), np.float32),
                     np.zeros(6, np.float32))
    opt = AdaGrad([emb, other, w], nonfinite=nonfinite)
    vals = np.ones((2, 4), np.float32)
    dense = np.ones((12, 4), np.float32)
    (vals if where == "sparse" else dense)[1, 3] = np.nan
    grads = [SparseGrad(np.array([1, 2]), np.ones((2, 4), np.float32)),
             SparseGrad(np.array([3, 4]), vals) if where == "sparse" else dense,
             np.ones(6, np.float32)]
    if nonfinite == "raise":
        with pytest.raises(ValueError, match=r"`grads\[1\]` holds NaN or inf"):
            opt.step(grads)
    else:
        assert opt.step(grads) is False and opt.last_step_skipped
    assert not emb.any() and not other.any() and not w.any()
    assert opt.groups[0].step == 0 and not any(a.any() for a in opt.groups[0].accums)
    (vals if where == "sparse" else dense)[1, 3] = 1.0
    assert opt.step(grads) is True and emb[1:3].all() and other[3:5].all() and w.all()


def test_sparse_grad_gate_prepare_refusals(compiled):
    """SparseGradGate.prepare refuses (None, nothing written) whatever the C checks do not
    cover, so the general path decides: a dense grad of another dtype or shape, strided,
    byte-swapped or guarded, a "keras" rule, master weights, decoupled weight decay, a param
    that is not the array it was built with (or was changed in place), a wrong count; the
    plain cases give apply_steps' items (a SparseGrad's private int64 indices; dense grads in
    one batch per dtype)."""
    from fastadagrad import _backend
    from fastadagrad._validation import DenseOptions
    emb = np.zeros((10, 4), np.float32)
    opt = AdaGrad([emb])
    group = opt.groups[0]
    gate = group.sparse_gates[_backend.current()]
    good = SparseGrad(np.array([1], np.int32), np.ones((1, 4), np.float32))
    opts = group.opts_at(1)
    assert isinstance(opts, DenseOptions)

    def run(params=None, grads=None, masters=None, o=None, dup="sum"):
        return gate.prepare(group.params if params is None else params, group.accums,
                            [None] if masters is None else masters,
                            [good] if grads is None else grads, SparseGrad, dup,
                            opts if o is None else o)

    refused = [dict(grads=[np.ones((10, 4), np.float64)]),            # dense, other dtype
               dict(grads=[np.ones((10, 8), np.float32)[:, ::2]]),    # dense, strided
               dict(grads=[np.ones((4, 10), np.float32)]),            # dense, other shape
               dict(grads=[group.accums[0]]),                         # dense, guarded
               dict(grads=[np.ones((10, 4), ">f4")]),                 # dense, byte-swapped
               dict(grads=[SparseGrad(np.array([1]), np.ones((1, 4), np.float32), "keras")]),
               dict(dup="keras"), dict(masters=[np.zeros((10, 4), np.float32)]),
               dict(o=opts._replace(decoupled_weight_decay=0.1)), dict(params=[emb.copy()]),
               dict(params=[emb[:5]]), dict(params=[emb[:, :2]]),
               dict(params=[emb.reshape(20, 2)]), dict(grads=[good, good])]
    for kw in refused:
        assert run(**kw) is None, kw
    [(p, values, a, idx, dup)] = run()
    assert p is emb and values is good.values and a is group.accums[0] and dup == "sum"
    assert idx.dtype == np.int64 and idx.tolist() == [1] and idx is not good.indices
    dense = np.ones((10, 4), np.float32)
    assert run(grads=[dense]) == [([emb], [dense], [group.accums[0]], None, None, [None])]
    assert not emb.any() and group.step == 0


@pytest.mark.parametrize("structure", ["list", "groups"])
def test_optimizer_prepare_refusal_not_repeated(compiled, monkeypatch, structure):
    """A one-group step whose grads the C checks refuse (a SparseGrad with a strided dense grad)
    runs SparseGradGate.prepare once, not again on the general path, and gives the NumPy
    backend's bytes."""
    from fastadagrad.optimizer import _core
    rng = np.random.default_rng(13)
    emb, w = rng.standard_normal((10, 4)).astype(np.float32), np.zeros((6, 3), np.float32)
    ref = [emb.copy(), w.copy()]
    wrap = (lambda x: x) if structure == "list" else (lambda x: [x])   # grads
    group = (lambda x: x) if structure == "list" else (lambda x: [{"params": x}])
    opt = AdaGrad(group([emb, w]), lr=0.1)
    with fastadagrad.backend("numpy"):
        ref_opt = AdaGrad(group(ref), lr=0.1)
    calls = []
    real = _core.AdaGrad._prepare

    def counting(self, per_group, backend):
        out = real(self, per_group, backend)
        calls.append(out is None)
        return out

    monkeypatch.setattr(_core.AdaGrad, "_prepare", counting)
    grads = [SparseGrad(np.array([1, 3, 1]), rng.standard_normal((3, 4)).astype(np.float32)),
             rng.standard_normal((6, 6)).astype(np.float32)[:, ::2]]   # strided: refused
    assert opt.step(wrap(grads)) is True
    assert calls == [True]   # refused once; the Python checks took it from there
    calls.clear()
    assert opt.step(wrap([grads[0], np.ascontiguousarray(grads[1])])) is True
    assert calls == [False]   # a plain step: prepared once, no general path
    with fastadagrad.backend("numpy"):
        assert ref_opt.step(wrap(grads)) is True
        assert ref_opt.step(wrap([grads[0], np.ascontiguousarray(grads[1])])) is True
    for a, b in zip([emb, w] + opt.accumulators[0], ref + ref_opt.accumulators[0]):
        assert_same_bits(a, b, "param or accumulator")
    assert opt.groups[0].step == ref_opt.groups[0].step == 2


def test_optimizer_sparse_step_param_changed_in_place(compiled):
    """A table reshaped in place after the optimizer was built: the C checks refuse it and
    the general path names it (nothing written)."""
    emb = np.zeros((10, 4), np.float32)
    opt = AdaGrad([emb])
    emb.shape = (20, 2)
    with pytest.raises(ValueError, match="changed in place"):
        opt.step([SparseGrad(np.array([1]), np.ones((1, 2), np.float32))])
    assert not emb.any() and opt.groups[0].step == 0


@pytest.mark.parametrize("nonfinite", ["propagate", "skip"])
def test_optimizer_sparse_groups_checked_in_c(compiled, monkeypatch, nonfinite):
    """Several groups (a table group with its own lr, a dense group, a rowwise group) with
    SparseGrads: every group's grads checked in C (no validate_group call), then one write
    of every group; the NumPy backend's bytes and step counts. skip: NaN in the last group's
    dense grad leaves every group untouched."""
    from fastadagrad.optimizer import _grads
    calls = []
    full = _grads.validate_group
    monkeypatch.setattr(_grads, "validate_group", lambda *a: calls.append(1) or full(*a))
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal((50, 8)).astype(np.float32),
              rng.standard_normal(300).astype(np.float32),
              rng.standard_normal((20, 4)).astype(np.float32),
              rng.standard_normal((30, 16)).astype(np.float32)]

    def build(xs):
        return AdaGrad([{"params": [xs[0]], "lr": 0.5}, {"params": [xs[1], xs[2]]},
                        {"params": [xs[3]], "rowwise": True}], lr=0.1, nonfinite=nonfinite)

    fast, ref = [x.copy() for x in arrays], [x.copy() for x in arrays]
    opt = build(fast)
    with fastadagrad.backend("numpy"):
        ref_opt = build(ref)
    for step in range(4):
        def values(b, d):
            return rng.standard_normal((b, d)).astype(np.float32)

        grads = [[SparseGrad(rng.integers(0, 50, 9), values(9, 8))],
                 [rng.standard_normal(300).astype(np.float32),
                  SparseGrad(rng.integers(0, 20, 5), values(5, 4), "sequential")],
                 [SparseGrad(rng.integers(0, 30, 7), values(7, 16))]]
        assert opt.step(grads) is True
        with fastadagrad.backend("numpy"):
            assert ref_opt.step(grads) is True
    assert calls == [1, 1, 1] * 4    # the NumPy backend's steps only
    for a, b in zip(fast + [a for g in opt.accumulators for a in g],
                    ref + [a for g in ref_opt.accumulators for a in g]):
        assert_same_bits(a, b, "param or accumulator")
    assert [g.step for g in opt.groups] == [g.step for g in ref_opt.groups] == [4, 4, 4]
    if nonfinite == "skip":
        before = [x.copy() for x in fast]
        bad = rng.standard_normal(300).astype(np.float32)
        bad[7] = np.inf
        grads[1][0] = bad
        assert opt.step(grads) is False
        assert all(x.tobytes() == y.tobytes() for x, y in zip(fast, before))
        assert [g.step for g in opt.groups] == [4, 4, 4]


def test_optimizer_sparse_grads_of_subclass_params(compiled):
    """A param that is an ndarray subclass (np.memmap) is refused by the C checks (exact
    ndarrays only) and stepped by the general path: the same bytes as a plain array."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.memmap(f"{tmp}/t.bin", dtype=np.float32, mode="w+", shape=(10, 4))
        plain = np.zeros((10, 4), np.float32)
        grads = [SparseGrad(np.array([1, 3, 1]), np.full((3, 4), 0.5, np.float32))]
        for p in (mm, plain):
            opt = AdaGrad([p], lr=0.1)
            assert opt.step(grads) is True and opt.groups[0].step == 1
        assert_same_bits(np.asarray(mm), plain, "memmap param")
        del mm
