"""`python -m fastadagrad bench --busy`: the default thread count against one thread while
other processes keep the CPUs busy.

For 0, 1, 2 (``--competitors``) CPU-bound competitor processes, started here and always stopped
(also on Ctrl-C or an error; each also exits by itself when this process is gone), every case
is timed with 1 thread and with the default thread count, samples interleaved (1-thread sample,
default sample, ...). A sample is one call, or a batch of calls lasting >= 0.2 ms for the small
sizes. Reported per case: medians and 95th percentiles of both, and their ratios (default /
1 thread): below 1 the extra threads help, above 1 they hurt; and "slow": the share of each
one's samples slower than twice the 1-thread median. With competitors on every core this
process itself is descheduled for milliseconds in a few percent of the samples, with any
thread count: when that share is near 5%, each 95th percentile lands on either side of it
from run to run, and the slow shares compare the tails better than the p95 ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

import fastadagrad
from fastadagrad.bench import fmt_time as fmt
from fastadagrad.bench_workloads import DenseWorkload, SparseWorkload

DEFAULT_SIZES = (1_000, 100_000, 1_000_000, 16_000_000, 64_000_000)
#: A CPU-bound loop that exits when its parent is gone (so nothing outlives a killed benchmark).
COMPETITOR = ("import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n"
              "    x = 0\n    for i in range(200000):\n        x += i * i\n")


class Competitors:
    """`count` CPU-bound processes for the duration of a with-block (always stopped)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Competitors:
        try:
            for _ in range(self.count):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", COMPETITOR, str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
            if self.count:
                time.sleep(0.3)   # let them start spinning
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def time_pair(fn: Callable[[], Any], threads: int, *, seconds: float) -> dict[str, list[float]]:
    """Per-call seconds of `fn` with 1 thread and with `threads`, interleaved sample by sample."""
    old = fastadagrad.set_num_threads(1)
    try:
        fn()
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        number = max(1, int(2e-4 / max(once, 1e-9)))
        samples = max(20, min(400, int(seconds / 2 / max(once * number, 1e-9))))
        out: dict[str, list[float]] = {"1 thread": [], "default": []}
        for _ in range(samples):
            for key, n in (("1 thread", 1), ("default", threads)):
                fastadagrad.set_num_threads(n)
                t0 = time.perf_counter()
                for _ in range(number):
                    fn()
                out[key].append((time.perf_counter() - t0) / number)
        return out
    finally:
        fastadagrad.set_num_threads(old)


def cases(sizes: Sequence[int], sparse: bool) -> list[tuple[str, Callable[[], Any]]]:
    rng = np.random.default_rng(12)
    out: list[tuple[str, Callable[[], Any]]] = []
    for n in sizes:
        work = DenseWorkload(n, np.float32, rng)
        out.append((f"dense {n:.0e} float32", work.fast))
    if sparse:
        sw = SparseWorkload(1_000_000, 64, 4096, np.float32, rng)
        out.append(("sparse 1e6x64 batch 4096", sw.fast))
    return out


def run(competitors: Sequence[int], sizes: Sequence[int], sparse: bool = True,
        seconds: float = 2.0, echo: Callable[[str], None] = print) -> dict[str, Any]:
    threads = fastadagrad.get_num_threads()
    result: dict[str, Any] = {"threads": threads, "cpus": len(os.sched_getaffinity(0))
                              if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                              "rows": []}
    echo(f"busy scenario: default = {threads} threads, against 1 thread; ratio = default / 1 thread "
         "(medians, 95th percentiles)")
    echo(f"{'competitors':>11}  {'case':<26} {'1 thread':>10} {'default':>10} {'ratio':>6}"
         f" {'p95 1 thr':>10} {'p95 dflt':>10} {'ratio':>6} {'slow 1 thr':>10} {'slow dflt':>9}")
    with fastadagrad.backend("cython"):
        work = cases(sizes, sparse)
        for count in competitors:
            with Competitors(count):
                for name, fn in work:
                    t = time_pair(fn, threads, seconds=seconds)
                    one, dflt = (statistics.median(t[k]) for k in ("1 thread", "default"))
                    p1, pd = (percentile(t[k], 95) for k in ("1 thread", "default"))
                    s1, sd = (float(np.mean(np.asarray(t[k]) > 2 * one))
                              for k in ("1 thread", "default"))
                    row = {"competitors": count, "case": name, "median_1": one, "median_default": dflt,
                           "p95_1": p1, "p95_default": pd, "ratio": dflt / one, "p95_ratio": pd / p1,
                           "slow_1": s1, "slow_default": sd, "samples": len(t["default"])}
                    result["rows"].append(row)
                    echo(f"{count:>11}  {name:<26} {fmt(one):>10} {fmt(dflt):>10} "
                         f"{dflt / one:>5.2f}x {fmt(p1):>10} {fmt(pd):>10} {pd / p1:>5.2f}x "
                         f"{s1:>10.1%} {sd:>9.1%}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastadagrad bench --busy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--competitors", default="0,1,2",
                    help="comma-separated counts of CPU-bound competitor processes (default 0,1,2)")
    ap.add_argument("--sizes", default=",".join(f"{n:.0e}" for n in DEFAULT_SIZES),
                    help="dense float32 sizes (default 1e3,1e5,1e6,1.6e7,6.4e7)")
    ap.add_argument("--no-sparse", action="store_true", help="skip the sparse step")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per case and count (default 2)")
    ap.add_argument("--quick", action="store_true", help="0.5 s per case, no 6.4e7")
    ap.add_argument("--json", metavar="FILE", help="write the rows to FILE")
    args = ap.parse_args(argv)
    competitors = [int(c) for c in args.competitors.split(",") if c.strip()]
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        sizes = [n for n in sizes if n < 64_000_000]
    result = run(competitors, sizes, sparse=not args.no_sparse,
                 seconds=0.5 if args.quick else args.seconds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
