"""Thread-count invariance, thread settings, the default thread count, fork safety,
threadpoolctl, and the GIL released during large updates."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Iterator

import numpy as np
import pytest

import fastadagrad
from fastadagrad._registry import DTYPES, KERNELS, thread_split_sizes
from fastadagrad import _cpus
from _helpers import assert_same_bits, run_python


@pytest.fixture
def always_parallel(compiled: object) -> Iterator[None]:
    """Every large call really runs on the pool (no serial choice from measured times), so a
    thread-count test cannot pass by running serially."""
    compiled._set_adaptive(False)   # type: ignore[attr-defined]
    yield
    compiled._set_adaptive(True)   # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [*thread_split_sizes()[:3], 65536 + 17, 1_000_003])
def test_same_bytes_for_every_thread_count(compiled, restore_threads, always_parallel, dtype, n):
    kernel = KERNELS["adagrad_update"]
    inputs = kernel.make_inputs(np.random.default_rng(n), (n,), dtype)
    outs = []
    for threads in (1, 2, 3):
        fastadagrad.set_num_threads(threads)
        arrays = {k: v.copy() for k, v in inputs.items()}
        fastadagrad.adagrad_update(*arrays.values(), **kernel.options[-1])
        outs.append(arrays)
    for other in outs[1:]:
        for name in kernel.outputs:
            assert_same_bits(outs[0][name], other[name], f"{name} n={n}")


@pytest.mark.parametrize("rowwise", [False, True], ids=["elementwise", "rowwise"])
def test_sparse_and_multi_same_bytes_for_every_thread_count(compiled, restore_threads,
                                                            always_parallel, rowwise):
    """The sparse step (chunks of rows) and the many-array step (chunks across array
    boundaries) give the same bytes on 1, 2 and 3 threads."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((20_000, 24)).astype(np.float32)
    accum0 = np.abs(rng.standard_normal(20_000 if rowwise else (20_000, 24))).astype(np.float32)
    idx = rng.integers(0, 20_000, 6_000)
    grads = rng.standard_normal((6_000, 24)).astype(np.float32)
    sizes = [5, 40_000, 17, 70_001, 3]
    params0 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    mgrads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    outs = []
    for threads in (1, 2, 3):
        fastadagrad.set_num_threads(threads)
        t, a = table.copy(), accum0.copy()
        fastadagrad.sparse_adagrad_update(t, a, idx, grads, lr=0.1)
        params = [p.copy() for p in params0]
        opt = fastadagrad.AdaGrad(params, lr=0.1, initial_accumulator_value=0.1)
        opt.step(mgrads)
        outs.append([t, a] + params + opt.accumulators[0])
    for other in outs[1:]:
        for i, (x, y) in enumerate(zip(outs[0], other)):
            assert_same_bits(x, y, f"array {i}")


@pytest.mark.parametrize("rowwise", [False, True], ids=["elementwise", "rowwise"])
def test_sequential_parts_by_row_owner(compiled, restore_threads, always_parallel, rowwise):
    """"sequential" on several threads splits the occurrences by row owner (no grouping pass):
    with every row repeated ~12 times in the batch, rows consecutive or strided, on 2 and 3
    threads, the plain and the proximal step give the twin's bytes (a row split across two
    parts, or its occurrences reordered, would not)."""
    from fastadagrad import family, reference
    rng = np.random.default_rng(8)
    n, b, d = 1_000, 6_000, 24
    for idx in (rng.integers(0, 500, b), 2 * rng.integers(0, 500, b)):   # consecutive, even
        table = rng.standard_normal((n, d)).astype(np.float32)
        accum = np.abs(rng.standard_normal(n if rowwise else (n, d))).astype(np.float32) + 0.1
        state = np.abs(rng.standard_normal((n, d))).astype(np.float32) + 0.1   # proximal's
        grads = rng.standard_normal((b, d)).astype(np.float32)
        want = (table.copy(), accum.copy())
        reference.sparse_adagrad_update(*want, idx, grads, lr=0.1, duplicates="sequential")
        want_p = (table.copy(), [state.copy()])
        family.sparse_rule_update("proximal", *want_p, idx, grads, lr=0.1, l1=0.01,
                                  duplicates="sequential", backend="numpy")
        for threads in (2, 3):
            fastadagrad.set_num_threads(threads)
            got = (table.copy(), accum.copy())
            fastadagrad.sparse_adagrad_update(*got, idx, grads, lr=0.1, duplicates="sequential")
            got_p = (table.copy(), [state.copy()])
            family.sparse_rule_update("proximal", *got_p, idx, grads, lr=0.1, l1=0.01,
                                      duplicates="sequential", backend="cython")
            for x, y, what in ((got[0], want[0], "table"), (got[1], want[1], "accum"),
                               (got_p[0], want_p[0], "proximal table"),
                               (got_p[1][0], want_p[1][0], "proximal state")):
                assert_same_bits(x, y, f"{what}, {threads} threads")


def test_thread_settings(compiled, restore_threads):
    old = fastadagrad.set_num_threads(1)
    assert fastadagrad.get_num_threads() == 1
    assert isinstance(old, int) and old >= 1
    expected = 2 if compiled.threads_enabled() else 1
    fastadagrad.set_num_threads(2)
    assert fastadagrad.get_num_threads() == expected
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        fastadagrad.set_num_threads(0)
    with pytest.raises(TypeError, match="`n` must be an int"):
        fastadagrad.set_num_threads(2.0)


@pytest.mark.parametrize("value", ["1", "3"])
def test_omp_num_threads_is_honoured(compiled, tmp_path, value):
    code = "import fastadagrad; print(fastadagrad.get_num_threads())"
    out = run_python(code, env={"OMP_NUM_THREADS": value}, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (value if compiled.threads_enabled() else "1")


def test_default_threads_follow_affinity_mask(compiled, tmp_path):
    """Without OMP_NUM_THREADS the default is the CPUs the process may run on, not the cores."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("os.sched_setaffinity is not available on this platform")
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "import fastadagrad; print(fastadagrad.get_num_threads())")
    out = run_python(code, env={"OMP_NUM_THREADS": ""}, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_omp_num_threads_parsing():
    assert _cpus.omp_num_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert _cpus.omp_num_threads({"OMP_NUM_THREADS": " 4,2"}) == 4
    for bad in ("", "0", "-2", "two", "1.5"):
        assert _cpus.omp_num_threads({"OMP_NUM_THREADS": bad}) is None
    assert _cpus.omp_num_threads({}) is None


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cgroup_cpu_quota(tmp_path, version):
    """cgroup quotas (docker --cpus=1.5) cap the default: 150000/100000 -> 1.5 CPUs; with
    nested cgroups the tightest one counts; "max" means no limit."""
    proc = tmp_path / "cgroup"
    if version == "v2":
        proc.write_text("0::/outer/inner\n")
        (tmp_path / "outer" / "inner").mkdir(parents=True)
        (tmp_path / "outer" / "cpu.max").write_text("150000 100000\n")
        (tmp_path / "outer" / "inner" / "cpu.max").write_text("max 100000\n")
    else:
        proc.write_text("4:cpu,cpuacct:/job\n")
        (tmp_path / "cpu,cpuacct" / "job").mkdir(parents=True)
        (tmp_path / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us").write_text("150000\n")
        (tmp_path / "cpu,cpuacct" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cpus.cgroup_cpu_limit(str(tmp_path), str(proc)) == 1.5
    (tmp_path / "none").write_text("0::/\n")
    assert _cpus.cgroup_cpu_limit(str(tmp_path / "empty"), str(tmp_path / "none")) is None


def _child_parallel_call(queue: "multiprocessing.Queue[object]") -> None:
    """In a forked child: one call on the parallel path, compared with the NumPy twin."""
    import numpy as np
    import fastadagrad
    from fastadagrad import reference
    rng = np.random.default_rng(1)
    p, g, a = (rng.standard_normal(400_000).astype(np.float32) for _ in range(3))
    a = np.abs(a)
    rp, ra = p.copy(), a.copy()
    kernels = fastadagrad._backend._kernels
    before = kernels._pool_workers()   # the parent's workers do not exist here
    fastadagrad.adagrad_update(p, g, a, lr=0.1)
    reference.adagrad_update(rp, g, ra, lr=0.1)
    queue.put((before, kernels._pool_workers(),
               p.tobytes() == rp.tobytes() and a.tobytes() == ra.tobytes()))


def test_fork_child_after_parallel_use(compiled, restore_threads, always_parallel):
    """The parent has used its worker pool; a child started with "fork" makes a parallel call
    too and finishes (GNU libgomp would hang here), with fresh workers of its own."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the fork start method is not available on this platform")
    fastadagrad.set_num_threads(2)
    n = 400_000
    p, g, a = (np.ones(n, np.float32) for _ in range(3))
    for _ in range(3):
        fastadagrad.adagrad_update(p, g, a, lr=0.1)
    assert compiled._pool_workers() >= 1 or not compiled.threads_enabled()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_parallel_call, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the forked child hung on its first parallel call")
    assert child.exitcode == 0
    before, after, same = queue.get(timeout=10)
    assert same
    assert before == 0
    assert after == (1 if compiled.threads_enabled() else 0)


def test_serial_parallel_history_is_kept_per_loop(compiled, restore_threads):
    """The pool's serial/parallel choice is judged on each loop's own times: interleaved calls
    of one size through different loops (float32, float64, float16, float16 with master
    weights, the bandwidth probe) record their samples in separate histories. One shared
    history judged a bfloat16 step by a float32 step's times and sent it serial."""
    if not compiled.threads_enabled():
        pytest.skip("built without the worker pool: every call is serial, no history")
    fastadagrad.set_num_threads(2)
    compiled._set_adaptive(True)   # clears the histories
    n = 300_000
    f32, f64, f16 = ([np.ones(n, t) for _ in range(3)] for t in (np.float32, np.float64, np.float16))
    acc16, master = np.ones(n, np.float32), np.ones(n, np.float32)
    # at most 3 calls each: a loop's first 3 calls are its serial reference, always recorded
    # (a later parallel call that no worker joined in time is not)
    calls = {"float32": 3, "float64": 1, "float16": 2, "float16+master": 1, "probe": 3}
    for k in range(3):
        if k < calls["float32"]:
            fastadagrad.adagrad_update(*f32, lr=0.1)
        if k < calls["float64"]:
            fastadagrad.adagrad_update(*f64, lr=0.1)
        if k < calls["float16"]:
            fastadagrad.adagrad_update(f16[0], f16[1], acc16, lr=0.1)
        if k < calls["float16+master"]:
            fastadagrad.adagrad_update(f16[0], f16[1], acc16, master=master, lr=0.1)
        if k < calls["probe"]:
            compiled.bandwidth_probe(*f32)
    history = compiled._pool_history(n)
    assert sorted(history.values()) == sorted((c, 0) for c in calls.values())
    assert compiled._pool_history(4 * n) == {s: (0, 0) for s in history}   # another size class


def test_serial_reference_is_taken_before_the_first_parallel_call(compiled, restore_threads):
    """A loop's first 3 calls run serially (the reference that tells a stalled parallel call;
    the workers are started meanwhile), the 4th is its first parallel call."""
    if not compiled.threads_enabled():
        pytest.skip("built without the worker pool: every call is serial, no history")
    fastadagrad.set_num_threads(2)
    compiled._set_adaptive(True)   # clears the histories
    n = 300_000
    p, g, a = (np.ones(n, np.float32) for _ in range(3))
    seen = []
    for _ in range(4):
        before = compiled._pool_stats()
        fastadagrad.adagrad_update(p, g, a, lr=0.1)
        after = compiled._pool_stats()
        seen.append((after["serial"] - before["serial"], after["parallel"] - before["parallel"]))
    assert seen == [(1, 0), (1, 0), (1, 0), (0, 1)]
    assert compiled._pool_history(n) and list(compiled._pool_history(n).values())[0][0] == 3
    assert compiled._pool_workers() >= 1   # started during the serial calls


def test_a_moment_of_slow_parallel_calls_does_not_switch_to_serial(compiled):
    """The serial/parallel rule alone (`_simulate_choices`: no job runs), 1e5 elements, 48 us
    serial and 27 us parallel per call, as on a quiet 2-CPU VM. Four parallel calls in a row at
    the serial time (the second CPU away for a moment: seen on the quiet VM) change no choice:
    before FA_FLIP_NS they sent the loop serial until the next re-try, 50 ms later. Parallel
    calls that stay slower than serial switch it to serial after FA_FLIP_NS (2 ms)."""
    quiet = [27_000] * 3000
    if compiled._simulate_choices(100_000, 48_000, quiet) is None:
        pytest.skip("built without the worker pool: every call is serial")
    moment = quiet[:1000] + [48_000] * 4 + quiet[1004:]
    as_quiet = compiled._simulate_choices(100_000, 48_000, quiet)
    choices = compiled._simulate_choices(100_000, 48_000, moment)
    assert all(choices[900:1700])   # (the first serial re-try comes 50 ms in: call ~1786)
    assert choices.count(False) == as_quiet.count(False)   # (its timing moves by 84 us)
    slow = quiet[:1000] + [60_000] * 2000   # parallel slower than serial from call 1000 on
    choices = compiled._simulate_choices(100_000, 48_000, slow)
    first_serial = choices.index(False, 1000)
    # 2 ms of 60 us calls (34), plus the calls until the median of 5 turns (3)
    assert 1000 + 30 <= first_serial <= 1000 + 34 + 5
    assert sum(choices[first_serial:]) <= 60   # then serial, but for one re-try (one burst)


def test_threadpoolctl_limits_fastadagrad(compiled, restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    fastadagrad.set_num_threads(2)
    info = [c for c in threadpoolctl.threadpool_info() if c["internal_api"] == "fastadagrad"]
    assert len(info) == 1 and info[0]["num_threads"] == 2 and info[0]["user_api"] == "openmp"
    with threadpoolctl.threadpool_limits(1):
        assert fastadagrad.get_num_threads() == 1
    assert fastadagrad.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastadagrad.get_num_threads() == 1
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert fastadagrad.get_num_threads() == 2
    assert fastadagrad.get_num_threads() == 2


def test_gil_released_two_python_threads(compiled):
    """Two Python threads update two large arrays at once: both finish and both are correct.
    (Whether they overlapped in time is a benchmark question; nothing is timed here.)"""
    n = 4_000_000
    rng = np.random.default_rng(5)
    jobs = []
    for _ in range(2):
        p, g, a = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
        np.abs(a, out=a)
        ref_p, ref_a = p.copy(), a.copy()
        for _ in range(3):
            fastadagrad.reference.adagrad_update(ref_p, g, ref_a, lr=0.05)
        jobs.append((p, g, a, ref_p, ref_a))
    barrier = threading.Barrier(2)
    errors = []

    def work(p, g, a):
        try:
            barrier.wait(timeout=30)
            for _ in range(3):
                fastadagrad.adagrad_update(p, g, a, lr=0.05)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job[:3]) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for p, g, a, ref_p, ref_a in jobs:
        assert_same_bits(p, ref_p, "param")
        assert_same_bits(a, ref_a, "accum")
