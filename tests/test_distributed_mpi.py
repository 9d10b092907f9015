"""fastadagrad.distributed under mpirun: 1, 2, 3 and 4 ranks (oversubscribed on small machines).

Each MPI test launches tests/mpi_worker.py with mpirun; every rank checks its shard byte for
byte against a single-process run of the same kernels (see that file). Skipped, with the reason,
when mpirun or mpi4py is missing. The partition and import-error tests need neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastadagrad.distributed import BlockPartition, CyclicPartition

from _helpers import same_package_env

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi_worker.py"
MPIRUN = shutil.which("mpirun")
# Forwarded to the ranks (when set), so that e.g. the NumPy-backend rerun also runs under MPI.
FORWARD = ("FASTADAGRAD_BACKEND", "FASTADAGRAD_ISA", "FASTADAGRAD_REQUIRE_COMPILED")


def _mpi4py_missing() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return f"mpi4py is not installed (pip install 'fastadagrad[mpi]'): {exc}"
    return ""


needs_mpi = pytest.mark.skipif(
    MPIRUN is None or bool(_mpi4py_missing()),
    reason=("Open MPI is not installed: mpirun not found (apt-get install openmpi-bin "
            "libopenmpi-dev)" if MPIRUN is None
            else _mpi4py_missing()))


def mpirun(np_: int, *args: str) -> None:
    """Run the worker on `np_` ranks; fail with its output when any rank fails."""
    assert MPIRUN is not None
    version = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True).stdout
    cmd = [MPIRUN, "-np", str(np_)]
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe", "--mca", "btl", "self,vader,tcp",
                "--mca", "btl_tcp_if_include", "lo"]
        if os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
    env = same_package_env({"OMP_NUM_THREADS": "1"})
    for var in ("OMP_NUM_THREADS", "PYTHONPATH") + FORWARD:
        if var in env and ("Open MPI" in version or "OpenRTE" in version):
            cmd += ["-x", var]
    cmd += [sys.executable, str(WORKER), *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    except subprocess.TimeoutExpired as exc:   # a hang is a failure, not a stuck suite
        pytest.fail(f"{' '.join(cmd)} timed out: {exc.stdout!r} {exc.stderr!r}")
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    assert f"OK {args[0]} on {np_} ranks" in out.stdout, out.stdout + out.stderr


@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_bit_identical_to_one_process_and_consistent_rejection(ranks: int) -> None:
    """Sparse (element-wise and row-wise, float32/float64, block/cyclic/user partitions) and
    dense ZeRO-1 steps bit-identical to one process; bad input on one rank raises the same
    error on every rank and changes nothing."""
    mpirun(ranks, "check")


@needs_mpi
def test_checkpoint_resharded_from_2_to_3_ranks(tmp_path: Path) -> None:
    """Saved by 2 ranks (cyclic partition), loaded by 3 (block partition): the state, and the
    training after it, are those of one process."""
    mpirun(2, "save", str(tmp_path))
    mpirun(3, "load", str(tmp_path))


@pytest.mark.parametrize("cls", [BlockPartition, CyclicPartition])
@pytest.mark.parametrize("n_rows,size", [(0, 1), (10, 1), (10, 3), (2, 4), (1001, 4)])
def test_partitions_hold_every_row_once(cls, n_rows: int, size: int) -> None:
    part = cls(n_rows, size)
    held = [part.rows_of(r) for r in range(size)]
    assert np.array_equal(np.sort(np.concatenate(held)), np.arange(n_rows))
    for r, rows in enumerate(held):
        assert np.array_equal(part.owner(rows), np.full(rows.size, r))
        assert np.array_equal(part.local(rows), np.arange(rows.size))
    counts = [h.size for h in held]
    assert max(counts) - min(counts) <= 1


def test_missing_mpi4py_is_a_clear_import_error() -> None:
    """Importing the module never needs mpi4py; using it without mpi4py says what to install."""
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import fastadagrad.distributed as d\n"
            "try:\n    d.ShardedEmbedding(10, 4)\n"
            "except ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=same_package_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR fastadagrad.distributed needs mpi4py" in out.stdout
    assert "pip install 'fastadagrad[mpi]'" in out.stdout
