"""fastadagrad.torch.Adagrad under torch.distributed: DDP, ZeroRedundancyOptimizer and FSDP2.

Each test runs tests/torch_dist_worker.py, which spawns 2 processes (gloo backend, CPU, loopback
only: 127.0.0.1 and a free port) training a small MLP for 20 steps with our optimizer and with
torch.optim.Adagrad; see that file for what is compared. Skipped, with the reason, without torch
or torch.distributed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
if not torch.distributed.is_available():
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

from _helpers import same_package_env  # noqa: E402

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ENGINES = ["ddp", "zero", "fsdp2"]


def test_two_processes_match_torch_and_one_process(tmp_path: Path) -> None:
    """One spawn of 2 processes (torch imports dominate the time) runs every engine in turn.
    ddp: DistributedDataParallel; zero: ZeroRedundancyOptimizer(optimizer_class=
    fastadagrad.torch.Adagrad), with and without parameters_as_bucket_view, sharded state_dict
    consolidated, saved and loaded; fsdp2: fully_shard (DTensor params, updated on their local
    shards), checkpointed with torch.distributed.checkpoint, plus Replicate/Partial DTensors."""
    env = same_package_env({"OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, str(HERE / "torch_dist_worker.py"), ",".join(ENGINES),
           str(free_port()), str(tmp_path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out: {exc.stdout!r} {exc.stderr!r}")
    assert out.returncode == 0, f"failed:\n{out.stdout}\n{out.stderr[-6000:]}"
    for engine in ENGINES:
        assert f"OK {engine} on 2 processes" in out.stdout, out.stdout
