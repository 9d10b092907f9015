"""fastadagrad.distributed on this machine: 1, 2 and 4 MPI ranks next to the single-process kernel.

    python benchmarks/distributed_bench.py            # launches mpirun -np 1, 2, 4 itself
    python benchmarks/distributed_bench.py --quick    # fewer repeats, smaller arrays
    mpirun -np N python benchmarks/distributed_bench.py --rank-job   # one world size, JSON out

Sparse: a 1e6 x 64 float32 table (element-wise accumulator), every rank steps a batch of 4,096
indices per step (25% repeats, as the single-process benchmark), so the global batch is
4,096 x ranks; reported as global rows/s, with `lookup` time too. Dense: ZeroAdaGrad over 4e6
float32 elements. Each step is timed between barriers and the slowest rank counts (median over
the repeats; the fastest repeat in parentheses). Every rank runs one OpenMP thread, not bound
to a core (`--bind-to none`). The single-process rows run the kernels alone
(no MPI) on the same total work, with 1 thread and with every core.

Caveat, printed with the numbers: on a 2-core machine, 4 ranks are oversubscribed (two
processes per core), and all ranks share one memory bus: these runs measure the software
overhead of the exchange (packing, Alltoallv through shared memory, the fixed-order sum), not a
network and not a scale-out. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_ROWS, DIM, BATCH, DENSE = 1_000_000, 64, 4096, 4_000_000


def batches(seed: int, n_rows: int, batch: int, count: int) -> list[np.ndarray]:
    from fastadagrad._registry import sparse_batches
    return sparse_batches(np.random.default_rng(seed), n_rows, batch, count)


def median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def min_ms(samples: list[float]) -> float:
    """The fastest repeat: on a loaded machine, the closest to the undisturbed cost."""
    return float(np.min(samples)) * 1e3


def rank_job(repeats: int, n_rows: int, dense: int) -> dict[str, float]:
    """Run under mpirun: time the distributed steps; rank 0 returns the numbers."""
    from mpi4py import MPI

    import fastadagrad
    from fastadagrad.distributed import ShardedEmbedding, ZeroAdaGrad

    comm = MPI.COMM_WORLD
    fastadagrad.set_num_threads(1)

    def timed(fn, *args) -> float:
        comm.Barrier()
        t = time.perf_counter()
        fn(*args)
        dt = np.array([time.perf_counter() - t])
        comm.Allreduce(MPI.IN_PLACE, dt, op=MPI.MAX)
        return float(dt[0])

    emb = ShardedEmbedding(n_rows, DIM, lr=0.01)
    idx = batches(comm.rank, n_rows, BATCH, repeats + 2)
    grads = np.random.default_rng(100 + comm.rank).standard_normal((BATCH, DIM)).astype(np.float32)
    step = [timed(emb.step, i, grads) for i in idx][2:]
    look = [timed(emb.lookup, i) for i in idx][2:]
    # the owner's kernel alone: a batch of BATCH rows into this rank's shard
    local = batches(50 + comm.rank, emb.rows.size, BATCH, repeats + 2)
    kernel = [timed(fastadagrad.sparse_adagrad_update, emb.table, emb.accum, i, grads)
              for i in local][2:]

    params = [np.zeros(dense, np.float32)]
    opt = ZeroAdaGrad(params)
    g = np.random.default_rng(7).standard_normal(dense).astype(np.float32)
    dstep = [timed(opt.step, g) for _ in range(repeats + 2)][2:]
    mine = np.ones(opt.hi - opt.lo, np.float32)
    dker = [timed(fastadagrad.adagrad_update, opt.arena[opt.lo:opt.hi], mine, opt.accum)
            for _ in range(repeats + 2)][2:]
    return {"ranks": comm.size, "sparse_step_ms": median_ms(step),
            "sparse_step_min_ms": min_ms(step), "lookup_min_ms": min_ms(look),
            "dense_step_min_ms": min_ms(dstep),
            "sparse_rows_per_s": comm.size * BATCH / float(np.median(step)),
            "lookup_ms": median_ms(look), "sparse_kernel_ms": median_ms(kernel),
            "dense_step_ms": median_ms(dstep), "dense_kernel_ms": median_ms(dker)}


def single_process(repeats: int, n_rows: int, dense: int, ranks: int, threads: int
                   ) -> dict[str, float]:
    """The kernels alone on the same global work as `ranks` ranks (no MPI)."""
    import fastadagrad
    old = fastadagrad.set_num_threads(threads)
    try:
        table = np.zeros((n_rows, DIM), np.float32)
        accum = np.zeros_like(table)
        idx = batches(1, n_rows, BATCH * ranks, repeats + 2)
        grads = np.random.default_rng(2).standard_normal((BATCH * ranks, DIM)).astype(np.float32)
        t = []
        for i in idx:
            s = time.perf_counter()
            fastadagrad.sparse_adagrad_update(table, accum, i, grads, lr=0.01)
            t.append(time.perf_counter() - s)
        del table, accum
        p, a = np.zeros(dense, np.float32), np.zeros(dense, np.float32)
        g = np.ones(dense, np.float32)
        d = []
        for _ in range(repeats + 2):
            s = time.perf_counter()
            fastadagrad.adagrad_update(p, g, a)
            d.append(time.perf_counter() - s)
        return {"sparse_step_ms": median_ms(t[2:]), "sparse_step_min_ms": min_ms(t[2:]),
                "sparse_rows_per_s": BATCH * ranks / float(np.median(t[2:])),
                "dense_step_ms": median_ms(d[2:]), "dense_step_min_ms": min_ms(d[2:])}
    finally:
        fastadagrad.set_num_threads(old)


def mpirun(ranks: int, args: list[str]) -> dict[str, float]:
    mpirun_ = shutil.which("mpirun")
    if mpirun_ is None:
        raise SystemExit("mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    cmd = [mpirun_, "-np", str(ranks), "--oversubscribe", "--bind-to", "none",
           "--mca", "btl", "self,vader,tcp",
           "--mca", "btl_tcp_if_include", "lo"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "src"),
                                                      os.environ.get("PYTHONPATH")]))
    cmd += ["-x", "OMP_NUM_THREADS", "-x", "PYTHONPATH", sys.executable, __file__,
            "--rank-job"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller arrays")
    ap.add_argument("--rank-job", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (5 if args.quick else 25)
    n_rows, dense = (100_000, 1_000_000) if args.quick else (N_ROWS, DENSE)
    sub = ["--repeats", str(repeats)] + (["--quick"] if args.quick else [])
    if args.rank_job:
        res = rank_job(repeats, n_rows, dense)
        from mpi4py import MPI
        if MPI.COMM_WORLD.rank == 0:
            print(json.dumps(res), flush=True)
        return
    import fastadagrad
    load = os.getloadavg()
    print(f"fastadagrad {fastadagrad.__version__}, {os.cpu_count()} cores, ISA "
          f"{fastadagrad.get_isa()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"sparse: {n_rows:,} x {DIM} float32 table, {BATCH} indices per rank and step "
          f"(25% repeats); dense: {dense:,} float32 elements; medians of {repeats} steps\n")
    print("| ranks | sparse step (min) | global rows/s | lookup (min) | owner kernel | "
          "dense step (min) | dense kernel | one process, same work, 1 thread: sparse step (min), "
          "dense step (min) | all cores: sparse, dense |")
    print("|---|---|---|---|---|---|---|---|---|")
    cores = os.cpu_count() or 1
    for ranks in (1, 2, 4):
        r = mpirun(ranks, sub)
        s1 = single_process(repeats, n_rows, dense, ranks, 1)
        sn = single_process(repeats, n_rows, dense, ranks, cores)
        note = " (oversubscribed)" if ranks > cores else ""
        print(f"| {ranks}{note} | {r['sparse_step_ms']:.2f} ({r['sparse_step_min_ms']:.2f}) ms | "
              f"{r['sparse_rows_per_s']/1e6:.2f} M | {r['lookup_ms']:.2f} "
              f"({r['lookup_min_ms']:.2f}) ms | {r['sparse_kernel_ms']:.2f} ms | "
              f"{r['dense_step_ms']:.2f} ({r['dense_step_min_ms']:.2f}) ms | "
              f"{r['dense_kernel_ms']:.2f} ms | {s1['sparse_step_ms']:.2f} "
              f"({s1['sparse_step_min_ms']:.2f}) ms, {s1['dense_step_ms']:.2f} "
              f"({s1['dense_step_min_ms']:.2f}) ms | {sn['sparse_step_ms']:.2f} ms, "
              f"{sn['dense_step_ms']:.2f} ms |", flush=True)
    print(f"\n{cores} cores: with more ranks than cores the ranks take turns on the CPU, and all "
          "ranks share one memory bus, so these numbers measure the overhead of the exchange "
          "(packing, Alltoallv through shared memory, the fixed-order sum), not a network.")


if __name__ == "__main__":
    main()
