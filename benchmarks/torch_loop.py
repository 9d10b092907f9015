"""The optimizer step inside a torch loop: a torch op, then the step, again and again.

    python benchmarks/torch_loop.py [--sizes 1e5,1e6,1.6e7] [--steps 1500] [--op-elements 200000]

Each iteration runs one parallel torch op (`torch.exp` over --op-elements floats: it stands in
for the forward/backward pass) and then `opt.step()`, for fastadagrad.torch.Adagrad and
torch.optim.Adagrad(fused=True), alternating in blocks. GNU libgomp, which torch uses for its
CPU threads, keeps its idle threads spinning for a while after each parallel region
(GOMP_SPINCOUNT, ~10 ms here by default): the step that follows finds a core taken, and
fastadagrad's pool then runs it serially, while torch's own step runs on the spinning team.
The script runs every configuration in a fresh process, under three libgomp settings: torch's
default, `GOMP_SPINCOUNT=3000` (a short spin) and `OMP_WAIT_POLICY=PASSIVE` (no spin).
Printed: medians of the step alone and of the whole iteration (op + step). Nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SETTINGS = {"torch's default": {}, "GOMP_SPINCOUNT=3000": {"GOMP_SPINCOUNT": "3000"},
            "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
IMPLS = ("fastadagrad", "torch fused")
ROUNDS = 6      # blocks per optimizer, alternating: drifts of the machine hit both alike
WARM = 20       # the first calls of a block are not timed


def child(n: int, steps: int, op_elements: int) -> None:
    """Time both optimizers in this process; print one line per optimizer."""
    import numpy as np
    import torch

    import fastadagrad.torch as fat

    x = torch.rand(op_elements)
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in IMPLS}
    opts = {}
    for impl in IMPLS:
        p = torch.nn.Parameter(torch.rand(n))
        p.grad = torch.rand(n)
        opts[impl] = (fat.Adagrad([p], lr=1e-6) if impl == "fastadagrad"
                      else torch.optim.Adagrad([p], lr=1e-6, fused=True))
    block = max(1, steps // ROUNDS)
    for _ in range(ROUNDS):
        for impl in IMPLS:
            opt = opts[impl]
            for i in range(block + WARM):
                t0 = time.perf_counter()
                torch.exp(x)
                t1 = time.perf_counter()
                opt.step()
                t2 = time.perf_counter()
                if i >= WARM:
                    out[impl][0].append(t2 - t1)
                    out[impl][1].append(t2 - t0)
    for impl, (step, it) in out.items():
        print(f"{impl}\t{np.median(step)}\t{np.median(it)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e5,1e6,1.6e7")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--op-elements", type=int, default=200_000)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.steps, args.op_elements)
        return
    import fastadagrad
    from fastadagrad import bench
    fmt = bench.fmt_time
    print(f"{bench.cpu_model()}, ISA path {fastadagrad.get_isa()}, "
          f"{fastadagrad.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
          f"op: torch.exp over {args.op_elements:,} floats; medians: step (whole iteration)")
    print(f"{'parameters':>11s}  {'libgomp setting':24s} {'fastadagrad':>22s} {'torch fused':>22s}")
    for size in args.sizes.split(","):
        n = int(float(size))
        steps = args.steps if n < 10_000_000 else max(60, args.steps // 50)
        for name, extra in SETTINGS.items():
            env = {k: v for k, v in os.environ.items()
                   if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
            env.update(extra)
            res = subprocess.run([sys.executable, __file__, "--child", str(n), "--steps",
                                  str(steps), "--op-elements", str(args.op_elements)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            cells = {}
            for line in res.strip().splitlines():
                impl, step, it = line.split("\t")
                cells[impl] = f"{fmt(float(step))} ({fmt(float(it))})"
            print(f"{n:>11,}  {name:24s} {cells['fastadagrad']:>22s} {cells['torch fused']:>22s}")


if __name__ == "__main__":
    main()
