"""Thread-count invariance, thread settings, and the GIL released during large updates."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastadagrad
from fastadagrad._registry import DTYPES, KERNELS
from conftest import assert_same_bits, run_python


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [32767, 32768, 32769, 65536 + 17, 1_000_003])
def test_same_bytes_for_every_thread_count(compiled, restore_threads, dtype, n):
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


def test_thread_settings(compiled, restore_threads):
    old = fastadagrad.set_num_threads(1)
    assert fastadagrad.get_num_threads() == 1
    assert isinstance(old, int) and old >= 1
    expected = 2 if compiled.openmp_enabled() else 1
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
    assert out.stdout.strip() == (value if compiled.openmp_enabled() else "1")


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
