"""Memory safety and state integrity under hostile but legal input (issue 11): aliasing views,
indices changed by another thread, params changed in place, self-overlapping and masked arrays,
the optimizer's state (atomic loads, locks, Ctrl-C). Every test runs on both backends where
the behaviour is backend-independent; a rejected call must leave every array bit-unchanged."""

from __future__ import annotations

import enum
import re
import signal
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import fastadagrad
from fastadagrad import AdaGrad, SparseGrad
from fastadagrad._backend import _kernels, compiled_available

from _helpers import assert_same_bits

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastadagrad.backend(request.param):
        yield request.param


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, arrays):
    for b, a in zip(before, arrays):
        assert_same_bits(np.asarray(a), b, "a rejected call changed an array")


# ----------------------------------------------------------------------------- 1.2 aliasing
def test_sparse_indices_viewing_another_params_accumulator_rejected(backend):
    """Issue 11 repro 1.2: SIGSEGV (compiled) / IndexError after P0 was written (NumPy)."""
    P0, P1 = np.zeros((4, 4)), np.zeros((4, 4))
    opt = AdaGrad([P0, P1], lr=0.1)
    idx = opt.groups[0].accums[0].reshape(-1).view(np.int64)[:2]
    before = snapshot(P0, P1, *opt.groups[0].accums)
    with pytest.raises(ValueError, match=r"`grads\[1\]\.indices` and `the accumulator of params\[0\]` overlap"):
        opt.step([SparseGrad(np.array([0]), np.ones((1, 4))), SparseGrad(idx, np.ones((2, 4)))])
    assert_unchanged(before, [P0, P1, *opt.groups[0].accums])
    assert opt.groups[0].step == 0


def test_sparse_indices_viewing_a_param_rejected(backend):
    P0, P1 = np.zeros((4, 4)), np.zeros((4, 4))
    opt = AdaGrad([{"params": [P0]}, {"params": [P1]}], lr=0.1)
    idx = P0.reshape(-1).view(np.int64)[:2]
    before = snapshot(P0, P1)
    with pytest.raises(ValueError, match=r"`grads\[1\]\[0\]\.indices` and `params\[0\]\['params'\]\[0\]` overlap"):
        opt.step([[np.ones((4, 4))], [SparseGrad(idx, np.ones((2, 4)))]])
    assert_unchanged(before, [P0, P1])


def test_sparse_values_viewing_another_group_rejected(backend):
    P0, P1 = np.zeros((4, 4)), np.zeros((4, 4))
    opt = AdaGrad([{"params": [P0]}, {"params": [P1]}], lr=0.1)
    before = snapshot(P0, P1)
    with pytest.raises(ValueError, match=r"`grads\[1\]\[0\]\.values` and `params\[0\]\['params'\]\[0\]` overlap"):
        opt.step([[np.ones((4, 4))], [SparseGrad(np.array([0, 1]), P0[:2])]])
    assert_unchanged(before, [P0, P1])


@pytest.mark.parametrize("target", ["table", "accum"])
def test_sparse_update_indices_viewing_table_or_accum_rejected(backend, target):
    table, accum = np.zeros((8, 4)), np.zeros((8, 4))
    victim = table if target == "table" else accum
    idx = victim.reshape(-1).view(np.int64)[:3]
    before = snapshot(table, accum)
    with pytest.raises(ValueError, match=rf"`{target}` and `indices` overlap"):
        fastadagrad.sparse_adagrad_update(table, accum, idx, np.ones((3, 4)))
    assert_unchanged(before, [table, accum])


# ----------------------------------------------------------------------------- 1.3 threads
def test_indices_changed_by_another_thread_never_reach_the_rows(backend):
    """Issue 11 repro 1.3: a thread toggling an index to 1 << 40 while the kernel runs with the
    GIL released segfaulted; now every call either applies checked indices or raises."""
    b = 200_000
    table = np.zeros((1000, 4), np.float32)
    accum = np.zeros_like(table)
    idx = np.arange(b, dtype=np.int64) % 1000
    grads = np.ones((b, 4), np.float32)
    k = b - 1            # read late by the kernel's merge: the other thread is running by then
    stop = threading.Event()

    def toggle():
        while not stop.is_set():
            idx[k] = 1 << 40
            idx[k] = k % 1000

    t = threading.Thread(target=toggle)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # hand the GIL over as often as possible
    t.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                fastadagrad.sparse_adagrad_update(table, accum, idx, grads)
            except ValueError as exc:
                # the value may be torn (a byte-wise copy racing the writer): any value the
                # message names must be out of range, for index k, and nothing written
                found = re.search(rf"`indices\[{k}\]` = (\d+) is out of range", str(exc))
                assert found and int(found.group(1)) >= len(table), str(exc)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    assert np.isfinite(table).all() and (accum >= 0).all()


@pytest.mark.skipif(not compiled_available(), reason="needs the compiled extension")
@pytest.mark.parametrize("rowwise", [False, True])
def test_sparse_kernel_checks_its_private_copy_of_the_indices(rowwise):
    """sparse_validated trusts nothing: indices that went bad after _validation are caught by
    the kernel's own check of its private copy, before any write."""
    table = np.zeros((8, 4), np.float32)
    accum = np.zeros(8 if rowwise else (8, 4), np.float32)
    opts = fastadagrad._validation.check_hyper(0.1, 1e-10, "outside", 0.0, 0.0, 1, False)
    for bad in (8, -1, 1 << 40):
        idx = np.array([0, 3, bad, 1], dtype=np.int64)
        with pytest.raises(ValueError, match=rf"`indices\[2\]` = {bad} is out of range for a table of 8 rows"):
            _kernels.sparse_validated(table, accum, idx, np.ones((4, 4), np.float32), opts)
    assert not table.any() and not accum.any()


@pytest.mark.skipif(not compiled_available(), reason="needs the compiled extension")
@pytest.mark.parametrize("kernel", ["sequential", "keras", "proximal", "glove"])
def test_every_sparse_kernel_checks_its_private_copy_of_the_indices(kernel):
    """The same for the other sparse kernels (duplicates rules, AdaGrad family): indices that
    went bad after validation are caught in the kernel's private copy, nothing is written."""
    from fastadagrad import _rules
    table = np.zeros((8, 4), np.float32)
    accum = np.full((8, 4), 0.1, np.float32)
    grads = np.ones((4, 4), np.float32)
    opts = fastadagrad._validation.check_hyper(0.1, 1e-10, "outside", 0.0, 0.0, 1, False)
    for bad in (8, -1, 1 << 40):
        idx = np.array([0, 3, bad, 1], dtype=np.int64)
        with pytest.raises(ValueError, match=rf"`indices\[2\]` = {bad} is out of range for a table of 8 rows"):
            if kernel in ("sequential", "keras"):
                _kernels.sparse_dup_validated(table, accum, idx, grads, opts, kernel)
            else:
                spec = _rules.get_rule(kernel)
                fopts = _rules.check_hyper(spec, {"lr": 0.1})
                _kernels.family_sparse_validated(table, [accum], idx, grads, fopts, "sequential")
    assert not table.any() and (accum == np.float32(0.1)).all()


def test_check_indices_returns_a_private_copy():
    idx = np.arange(5, dtype=np.int64)
    out = fastadagrad._validation.check_indices(idx, 5)
    assert not np.shares_memory(out, idx)


# ----------------------------------------------------------------------------- 1.4 params changed in place
def _mutations():
    def dtype(p):
        p.dtype = np.float64

    def shape(p):
        p.shape = (2, 4)

    def strides(p):
        p.strides = (8,)

    return [dtype, shape, strides]


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("groups", [1, 2])
def test_param_changed_in_place_after_construction_is_refused(backend, mutate, groups):
    """Issue 11 repro 1.4: p.dtype = float64 after the optimizer was built read past the heap
    block (the C gate compared the grad with the param's new shape, the table's old dtype)."""
    base = np.ones(16, np.float32)
    p = base[:8]
    other = np.ones(4, np.float32)
    params = [p, other] if groups == 1 else [{"params": [p]}, {"params": [other]}]
    opt = AdaGrad(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # NumPy deprecates these setters
        mutate(p)
    grads = [np.ones(p.shape, p.dtype), np.ones(4, np.float32)]
    if groups == 2:
        grads = [[grads[0]], [grads[1]]]
    before = snapshot(base, other, *opt.groups[0].accums)
    with pytest.raises(ValueError, match=r"`params\[0\].*` was changed in place after the optimizer was built"):
        opt.step(grads)
    assert_unchanged(before, [base, other, *opt.groups[0].accums])


def test_issue_repro_dtype_changed_grad_of_the_old_dtype(backend):
    """The exact repro: the grad has the table's dtype and the param's new shape, which the
    C gate used to accept (heap-buffer-overflow reading the grad)."""
    p = np.ones(8, np.float32)
    opt = AdaGrad([p])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        p.dtype = np.float64
    before = snapshot(p, *opt.groups[0].accums)
    with pytest.raises(ValueError, match=r"`params\[0\]` was changed in place"):
        opt.step([np.ones(4, np.float32)])
    assert_unchanged(before, [p, *opt.groups[0].accums])


# ----------------------------------------------------------------------------- 1.5
@pytest.mark.skipif(not compiled_available(), reason="needs the compiled extension")
def test_prefetch_ahead_must_be_a_small_nonnegative_int():
    with pytest.raises(ValueError, match="`n` must be in"):
        _kernels._set_prefetch_ahead(-1)
    with pytest.raises(ValueError, match="`n` must be in"):
        _kernels._set_prefetch_ahead(1 << 62)
    with pytest.raises(TypeError, match="`n` must be an int"):
        _kernels._set_prefetch_ahead(2.0)
    old = _kernels._set_prefetch_ahead(0)
    assert _kernels._set_prefetch_ahead(old) == 0


# ----------------------------------------------------------------------------- 2. self-overlap, masked
def _self_overlapping(kind):
    buf = np.zeros(64)
    if kind == "zero stride":
        return as_strided(buf, (8,), (0,), writeable=True)
    if kind == "half-overlapping rows":
        return as_strided(buf, (4, 4), (2 * 8, 8), writeable=True)
    return as_strided(buf, (3, 2), (0, 8), writeable=True)   # broadcast rows


@pytest.mark.parametrize("kind", ["zero stride", "half-overlapping rows", "repeated rows"])
@pytest.mark.parametrize("target", ["param", "accum"])
def test_self_overlapping_param_or_accum_rejected(backend, kind, target):
    """Issue 11 §2: compiled gave 0.19999993, NumPy 0.9 for a zero-stride param."""
    bad = _self_overlapping(kind)
    other = np.zeros(bad.shape)
    grad = np.arange(1.0, 1.0 + bad.size).reshape(bad.shape)
    args = (bad, grad, other) if target == "param" else (other, grad, bad)
    before = snapshot(bad.base, other)
    with pytest.raises(ValueError, match=rf"`{target}` has elements that share memory"):
        fastadagrad.adagrad_update(*args)
    assert_unchanged(before, [bad.base, other])


def test_self_overlapping_param_rejected_by_the_optimizer(backend):
    with pytest.raises(ValueError, match=r"`params\[1\]` has elements that share memory"):
        AdaGrad([np.zeros(3), as_strided(np.zeros(4), (8,), (0,), writeable=True)])


def test_self_overlapping_grad_is_fine(backend):
    """A broadcast grad is only read: accepted, and both backends agree."""
    p, a = np.ones(8), np.zeros(8)
    fastadagrad.adagrad_update(p, np.broadcast_to(np.float64(2.0), (8,)), a, lr=0.1)
    q, b = np.ones(8), np.zeros(8)
    fastadagrad.adagrad_update(q, np.full(8, 2.0), b, lr=0.1)
    assert_same_bits(p, q)


def test_internal_overlap_is_exact():
    from fastadagrad._validation import has_internal_overlap

    buf = np.zeros(64)
    assert not has_internal_overlap(buf[::2])
    assert not has_internal_overlap(buf.reshape(8, 8)[::-1, ::3].T)
    # interleaved but disjoint: offsets 16i + 24j = 0, 16, 24, 32, 40, 56
    assert not has_internal_overlap(as_strided(buf, (3, 2), (16, 24)))
    assert has_internal_overlap(as_strided(buf, (3, 2), (16, 32)))   # 32 = 2 * 16
    assert has_internal_overlap(as_strided(buf.view(np.float32), (3,), (2,)))  # half-overlapping
    assert not has_internal_overlap(as_strided(buf, (1, 5), (0, 8)))   # a size-1 dim's stride
    assert not has_internal_overlap(as_strided(buf, (0, 5), (0, 0)))


@pytest.mark.parametrize("target", ["param", "grad", "accum"])
def test_masked_arrays_rejected(backend, target):
    arrays = {"param": np.ones(4), "grad": np.ones(4), "accum": np.zeros(4)}
    arrays[target] = np.ma.masked_array(arrays[target], mask=[0, 1, 0, 0])
    before = snapshot(*arrays.values())
    with pytest.raises(TypeError, match=rf"`{target}` is a masked array"):
        fastadagrad.adagrad_update(arrays["param"], arrays["grad"], arrays["accum"])
    assert_unchanged(before, list(arrays.values()))


def test_masked_arrays_rejected_by_the_optimizer(backend):
    with pytest.raises(TypeError, match=r"`params\[0\]` is a masked array"):
        AdaGrad([np.ma.masked_array(np.ones(4))])
    p = np.ones(4)
    opt = AdaGrad([p])
    with pytest.raises(TypeError, match=r"`grads\[0\]` is a masked array"):
        opt.step([np.ma.masked_array(np.ones(4), mask=[1, 0, 0, 0])])
    assert (p == 1).all()


# ----------------------------------------------------------------------------- 3. optimizer state
def _trained(backend_name=None):
    rng = np.random.default_rng(1)
    params = [rng.standard_normal((6, 3)), rng.standard_normal(5)]
    opt = AdaGrad([{"params": [params[0]], "rowwise": True}, {"params": [params[1]]}], lr=0.1)
    for _ in range(3):
        opt.step([[rng.standard_normal((6, 3))], [rng.standard_normal(5)]])
    return opt


def _state_bytes(opt):
    return {k: (v.tobytes() if isinstance(v, np.ndarray) else repr(v))
            for k, v in opt.state_dict().items()}


@pytest.mark.parametrize("key, value, message", [
    ("skipped_steps", "x", "`skipped_steps` must be an integer"),
    ("skipped_steps", -1, r"`skipped_steps` must be in \[0, 2\*\*63 - 1\]"),
    ("skipped_steps", True, "`skipped_steps` must be an integer"),
    ("group1.step", -1, r"`group1.step` must be in"),
    ("group1.step", 2**63, r"`group1.step` must be in"),
    ("group1.step", 2.0, "`group1.step` must be an integer"),
    ("group1.accum0", np.array([0, 1, np.nan, 0, 0.0]), "`group1.accum0` must be finite and >= 0"),
    ("group1.accum0", np.array([0, 1, np.inf, 0, 0.0]), "`group1.accum0` must be finite and >= 0"),
    ("group1.accum0", np.array([0, 1, -1, 0, 0.0]), "`group1.accum0` must be finite and >= 0"),
    ("group0.rowwise", False, "`group0.rowwise` is False but this optimizer's group 0 was built"),
    ("group1.eps_placement", "middle", "`group1.eps_placement` must be 'outside' or 'inside'"),
    ("nonfinite", "ignore", "`nonfinite` must be one of"),
])
def test_rejected_load_state_dict_changes_nothing(backend, key, value, message):
    """Issue 11 §3: skipped_steps="x" raised after accumulators, steps and options were written."""
    opt = _trained()
    state = opt.state_dict()
    state["group0.step"] = 99                          # valid entries that would be written first
    state["group0.accum0"] = state["group0.accum0"] + 1
    state["group1.lr"] = 0.5
    state[key] = value
    before = _state_bytes(opt)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(state)
    assert _state_bytes(opt) == before


def test_packed_rowwise_refused():
    views, _ = fastadagrad.pack([np.zeros((4, 3)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="`rowwise` cannot be combined with packed=True"):
        AdaGrad(views, packed=True, rowwise=True)
    with pytest.raises(ValueError, match=r"`params\[0\]\.rowwise` cannot be combined"):
        AdaGrad([{"params": views, "rowwise": True}], packed=True)


class Color(enum.Enum):
    RED = 1


@pytest.mark.parametrize("key", [Color.RED, np.int64(3), (1, "a"), frozenset({2})],
                         ids=["enum", "np.int64", "tuple", "frozenset"])
def test_dict_params_keep_their_key_objects(backend, key):
    """Issue 11 §3: keys whose repr is not a literal built fine, then step() raised."""
    p, q = np.ones(4), np.ones(4)
    opt = AdaGrad({key: p, "b": q}, lr=0.1)
    assert opt.step({key: np.ones(4), "b": np.ones(4)})
    ref_p, ref_a = np.ones(4), np.zeros(4)
    fastadagrad.adagrad_update(ref_p, np.ones(4), ref_a, lr=0.1)
    assert_same_bits(p, ref_p)
    with pytest.raises(ValueError, match="`grads` keys"):
        opt.step({key: np.ones(4), "c": np.ones(4)})


def test_group_level_eps_placement_error_names_the_group():
    with pytest.raises(ValueError, match=r"`params\[1\]\.eps_placement` must be 'outside' or 'inside'"):
        AdaGrad([{"params": [np.ones(2)]}, {"params": [np.ones(2)], "eps_placement": "both"}])


def _main_thread_with_default_sigint():
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("KeyboardInterrupt is only delivered to the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # pragma: no cover
        pytest.skip("a custom SIGINT handler is installed (the optimizer leaves it alone)")


def test_ctrl_c_in_the_middle_of_a_numpy_step_completes_the_step(monkeypatch):
    """Issue 11 §3: Ctrl-C during step() left the arrays updated and the counter not. Now the
    interrupt is held back until the step (arrays and counter) is complete, then raised."""
    _main_thread_with_default_sigint()
    base = np.ones(40)
    params = [base[::2], base[1::2]]
    ref = [p.copy() for p in params]
    grads = [np.full(20, 0.5), np.full(20, 2.0)]
    with fastadagrad.backend("numpy"):
        opt = AdaGrad(params, lr=0.1)
        AdaGrad(ref, lr=0.1).step(grads)
        calls = []
        real_update = fastadagrad.reference.update_validated

        def update_validated(*args):
            real_update(*args)
            if not calls:
                signal.raise_signal(signal.SIGINT)   # arrives right after the first array
            calls.append(1)

        monkeypatch.setattr(fastadagrad.reference, "update_validated", update_validated)
        with pytest.raises(KeyboardInterrupt):
            opt.step(grads)
    assert len(calls) == 2                      # the second array was still written
    assert opt.groups[0].step == 1              # and the step counted
    for p, r in zip(params, ref):
        assert_same_bits(p, r)


def _interrupt_at_fractions(fresh):
    """`fresh()` -> (params all ones, a one-group optimizer over them, the step's grads). Time
    one step, then send a real SIGINT at 25/50/75% of that time into a step of a fresh copy:
    afterwards either nothing of the step was written and it was not counted, or every array
    was (the uninterrupted step's bytes) and it was counted."""
    params, opt, g = fresh()
    t0 = time.perf_counter()
    opt.step(g)
    duration = time.perf_counter() - t0
    done = [p.copy() for p in params]
    for delay in (0.25, 0.5, 0.75):
        params, opt, g = fresh()
        timer = threading.Timer(duration * delay, signal.raise_signal, (signal.SIGINT,))
        try:
            timer.start()
            opt.step(g)
            while timer.is_alive():   # the signal, if it came after the step, lands here
                time.sleep(0.001)
            time.sleep(0.01)
        except KeyboardInterrupt:
            pass
        timer.join()
        if opt.groups[0].step == 1:
            for p, d in zip(params, done):
                assert_same_bits(p, d)
        else:
            assert opt.groups[0].step == 0
            assert all((p == 1).all() for p in params)


@pytest.mark.skipif(not compiled_available(), reason="needs the compiled extension")
@pytest.mark.parametrize("packed", [False, True])
def test_ctrl_c_during_a_compiled_general_step_is_all_or_nothing(compiled, packed):
    """A real SIGINT sent while a compiled multi-array step runs: afterwards either nothing of
    the step was written and it was not counted, or every array was and it was counted."""
    _main_thread_with_default_sigint()
    n = 1 << 21
    grads = [np.full(n, 0.5, np.float32), np.full(n, 2.0, np.float32), np.ones(3, np.float32)]

    def fresh():
        if packed:
            views, _ = fastadagrad.pack([np.ones(n, np.float32), np.ones(n, np.float32),
                                         np.ones(3, np.float32)])
            return views, AdaGrad(views, packed=True, lr=0.1), np.concatenate(grads)
        bases = [np.ones(2 * n, np.float32), np.ones(2 * n, np.float32)]
        params = [bases[0][::2], bases[1][::2], np.ones(3, np.float32)]   # one call per array
        return params, AdaGrad(params, lr=0.1), grads

    _interrupt_at_fractions(fresh)


@pytest.mark.skipif(not compiled_available(), reason="needs the compiled extension")
def test_ctrl_c_during_a_one_call_sparse_step_is_all_or_nothing(compiled):
    """The same for a step with SparseGrads checked in C (SparseGradGate.prepare): two
    tables and a dense array, a real SIGINT at 25/50/75% of the step's time."""
    _main_thread_with_default_sigint()
    rows, b = 1 << 17, 1 << 17
    idx = np.random.default_rng(0).integers(0, rows, b)
    grads = [SparseGrad(idx, np.full((b, 8), 0.5, np.float32)),
             np.full(1 << 20, 0.25, np.float32),
             SparseGrad(idx[::-1].copy(), np.full((b, 8), 2.0, np.float32), "sequential")]

    def fresh():
        params = [np.ones((rows, 8), np.float32), np.ones(1 << 20, np.float32),
                  np.ones((rows, 8), np.float32)]
        return params, AdaGrad(params, lr=0.1), grads

    _interrupt_at_fractions(fresh)


@pytest.mark.skipif(not compiled_available(), reason="needs the compiled extension")
def test_ctrl_c_right_after_the_one_call_step_still_counts(compiled, monkeypatch):
    """The fast path (one C call for the whole group) counts the step inside that call: an
    interrupt arriving as it returns cannot separate the arrays from the counter."""
    _main_thread_with_default_sigint()
    p = np.ones(10)
    opt = AdaGrad([p], lr=0.1)
    group = opt.groups[0]
    backend = fastadagrad._backend.current()
    real = group.pointers[backend]

    class Interrupting:
        def step(self, *args):
            bad = real.step(*args)
            signal.raise_signal(signal.SIGINT)
            return bad

    group.pointers[backend] = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        opt.step([np.ones(10)])
    assert group.step == 1 and (p < 1).all()


def test_concurrent_steps_are_serialised(backend, monkeypatch):
    """Issue 11 §3: two threads stepping one optimizer raced silently. Steps of one optimizer
    now run one at a time, and the result equals the sequential run."""
    params = [np.ones(50_000, np.float32), np.ones(3, np.float32)]
    opt = AdaGrad({"w": params[0], "b": params[1]}, lr=0.1)   # dict: the general path
    inside, overlaps = [0], [0]
    real_split = opt._split_grads

    def split(grads):
        inside[0] += 1
        if inside[0] > 1:
            overlaps[0] += 1
        time.sleep(0.002)   # invite the other thread in
        try:
            return real_split(grads)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(opt, "_split_grads", split)
    grads = {"w": np.full(50_000, 0.5, np.float32), "b": np.full(3, 0.5, np.float32)}
    threads = [threading.Thread(target=lambda: [opt.step(grads) for _ in range(10)])
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 0 and opt.groups[0].step == 20
    ref = [np.ones(50_000, np.float32), np.ones(3, np.float32)]
    ref_opt = AdaGrad({"w": ref[0], "b": ref[1]}, lr=0.1)
    for _ in range(20):
        ref_opt.step(grads)
    for p, r in zip(params, ref):
        assert_same_bits(p, r)
