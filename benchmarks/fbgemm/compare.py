"""fastadagrad against FBGEMM's CPU JIT sparse AdaGrad (fbgemm::GenerateSparseAdaGrad<int64_t>),
side by side in one process, on the workload of ../sparse_small_d.py: an (n, D) float32 table,
16 pre-drawn batches of 4,096 int64 indices (25% repeats), 4 gradient arrays, cycled; 1 thread;
element-wise (accum (n, D)) and row-wise (accum (n,)). Benchmark only: FBGEMM is not a
dependency and nothing here runs in CI (fbgemm-gpu's wheels do not load with torch 2.13, so
its kernel is built from source with a small ctypes shim, fbshim.cc):

    benchmarks/fbgemm/get_fbgemm.sh          # FBGEMM 71d6f8b + asmjit + cpuinfo (git)
    cmake -S benchmarks/fbgemm -B benchmarks/fbgemm/build -DCMAKE_BUILD_TYPE=Release
    cmake --build benchmarks/fbgemm/build -j 2
    cp benchmarks/fbgemm/build/libfbshim.so benchmarks/fbgemm/
    python benchmarks/fbgemm/compare.py [--dims 8,16,32,64,128] [--rows 1e6] [--align 16]
                                        [--baseline KERNELS.so] [--samples 9]

fastadagrad runs sparse_adagrad_update(..., lr=0.01, eps=1e-10, duplicates="sequential"): one
step per occurrence in batch order, FBGEMM's rule; the element-wise bytes of the two are
checked equal in the same run ("same bytes"; row-wise FBGEMM rounds differently:
g * (lr / (sqrt(h) + eps))). `--align` places every timed table and accumulator the same
number of bytes past a 64-byte line (see sparse_small_d.py: placement changes how many lines
a step touches); `--baseline` also times another build's compiled module. Timing:
bench_timing.interleaved (one sample of each contender in turn per round), medians; "fb/fa" =
FBGEMM time / fastadagrad time (> 1: fastadagrad is faster). Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # benchmarks/: sparse_small_d's helpers

import numpy as np  # noqa: E402

import fbgemm_peer  # noqa: E402
from sparse_small_d import (add_workload_args, baseline, fastadagrad, placed,  # noqa: E402
                            stepper)

from fastadagrad import bench, bench_timing  # noqa: E402
from fastadagrad._registry import sparse_batches  # noqa: E402

LR, EPS = 0.01, 1e-10
FBGEMM_COMMIT = "71d6f8b229d964e61cac24df9bbd2ffcc4b4d378"


def sequential(update: Callable[..., None]) -> Callable[..., None]:
    return functools.partial(update, duplicates="sequential")


def same_bytes(start: np.ndarray, acc0: np.ndarray, batches: list[np.ndarray],
               grads: list[np.ndarray], steps: int) -> bool:
    """The two from the same arrays, `steps` steps each: identical bytes (and the table moved)."""
    fa = (start.copy(), acc0.copy())
    fb = (start.copy(), acc0.copy())
    s_fa = stepper(sequential(fastadagrad.sparse_adagrad_update), *fa, batches, grads)
    s_fb = fbgemm_peer.FbgemmSparseAdagrad(*fb, batches, grads, lr=LR, eps=EPS)
    for _ in range(steps):
        s_fa()
        s_fb.step()
    return (all(x.tobytes() == y.tobytes() for x, y in zip(fa, fb))
            and not np.array_equal(fa[0], start))


def measure(d: int, args: argparse.Namespace, before: Any) -> dict[str, Any]:
    rng = np.random.default_rng(d)
    n, b = int(args.rows), int(args.batch)
    batches = sparse_batches(rng, n, b, 16)
    grads = [rng.uniform(-1, 1, (b, d)).astype(np.float32) for _ in range(4)]
    start = rng.uniform(-1, 1, (n, d)).astype(np.float32)
    same = same_bytes(start, np.full((n, d), 0.1, np.float32), batches, grads, 4)
    fns: dict[str, Callable[[], None]] = {}
    keep = []
    contenders = [("fa", False), ("fb", False), ("fa rw", True), ("fb rw", True)]
    if before is not None:
        contenders.insert(1, ("before", False))
    for name, rowwise in contenders:
        # np.full touches every page now (no first-touch faults inside the timed steps)
        table = placed(start.copy(), args.align)
        accum = placed(np.full((n,) if rowwise else (n, d), 0.1, np.float32), args.align)
        keep.append((table, accum))
        if name.startswith("fb"):
            fns[name] = fbgemm_peer.FbgemmSparseAdagrad(table, accum, batches, grads, lr=LR,
                                                        eps=EPS).step
        else:
            module = before if name == "before" else fastadagrad
            fns[name] = stepper(sequential(module.sparse_adagrad_update), table, accum,
                                batches, grads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    t = bench_timing.interleaved(fns, min_time=args.min_time, samples=args.samples, clock=clock)
    return {"same": same, **{k: bench.summary(v)["median"] for k, v in t.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_args(ap)
    args = ap.parse_args()
    fastadagrad.set_num_threads(1)
    before = baseline(args.baseline) if args.baseline else None
    print(f"{bench.header_line(bench.header(1))}, load {os.getloadavg()[0]:.2f}")
    print(f"FBGEMM {FBGEMM_COMMIT[:9]} ({fbgemm_peer.LIB_PATH}): {fbgemm_peer.isa()}")
    print(f"sparse AdaGrad, {int(args.rows):,} rows x D, batch {int(args.batch):,} "
          f"(25% repeats), float32, 1 thread, duplicates=sequential; medians of "
          f"{args.samples} interleaved samples of {'CPU' if args.cpu_time else 'wall'} time; "
          "arrays " + ("where NumPy put them" if args.align is None
                       else f"{args.align} bytes past a 64-byte line"))
    cols = ("D", "fastadagrad", "FBGEMM", "fb/fa", "same bytes", "fa row-wise", "FBGEMM rw",
            "fb/fa rw") + (("before", "before/fa") if before is not None else ())
    print("  ".join(f"{c:>12}" for c in cols))
    for d in (int(x) for x in args.dims.split(",")):
        r = measure(d, args, before)
        cells: tuple[str, ...] = (str(d), bench.fmt_time(r["fa"]), bench.fmt_time(r["fb"]),
                                 f"{r['fb'] / r['fa']:.2f}", "yes" if r["same"] else "NO",
                                 bench.fmt_time(r["fa rw"]), bench.fmt_time(r["fb rw"]),
                                 f"{r['fb rw'] / r['fa rw']:.2f}")
        if before is not None:
            cells += (bench.fmt_time(r["before"]), f"{r['before'] / r['fa']:.2f}")
        print("  ".join(f"{c:>12}" for c in cells), flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
