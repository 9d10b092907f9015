"""Two threads against one on a quiet machine: fastadagrad's pool next to a plain OpenMP loop.

Issue 12 asks the default thread count to keep a quiet machine's 2-thread gain (>= 1.8x one
thread in cache, >= 1.3x out of cache where bandwidth allows). This measures what the machine
allows: the same float32 formula as a plain C loop under `#pragma omp parallel for
schedule(static)` (gcc -O3 -fopenmp -fno-math-errno -ffp-contract=off -mavx2 when the CPU has it,
compiled here at run time), with 1 and 2 OpenMP threads, next to `adagrad_update` with 1 and 2
threads (the pool's serial/parallel choice on, as users run it, and off: always parallel).
Calls run back to back (a sample is >= --min-time of calls), samples interleaved; medians.

    python benchmarks/threads_scaling.py [--sizes 1e5,1e6,1.6e7,6.4e7] [--samples 9]

"speed-up" = 1-thread time / 2-thread time of the same implementation. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable

import numpy as np

import fastadagrad
from fastadagrad import bench
from fastadagrad.bench_timing import interleaved, summary

OMP_C = r"""
#include <math.h>
#include <stddef.h>
#include <omp.h>
void omp_threads(int n) { omp_set_num_threads(n); }
void omp_f32(ptrdiff_t n, float *p, const float *g, float *a, float lr, float eps) {
    #pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < n; i++) {
        float acc = a[i] + g[i] * g[i];
        a[i] = acc;
        p[i] = p[i] - (lr * g[i]) / (sqrtf(acc) + eps);
    }
}
"""


def build_omp(tmp: str) -> ctypes.CDLL:
    src = os.path.join(tmp, "omp.c")
    with open(src, "w") as f:
        f.write(OMP_C)
    lib = os.path.join(tmp, "omp.so")
    isa = ["-mavx2"] if "avx2" in fastadagrad.show_config()["isa_available"] else []
    subprocess.run([os.environ.get("CC", "gcc"), "-O3", "-fopenmp", "-fno-math-errno",
                    "-ffp-contract=off", *isa, "-shared", "-fPIC", src, "-o", lib], check=True)
    dll = ctypes.CDLL(lib)
    dll.omp_f32.argtypes = [ctypes.c_ssize_t] + [ctypes.c_void_p] * 3 + [ctypes.c_float] * 2
    dll.omp_f32.restype = None
    dll.omp_threads.argtypes = [ctypes.c_int]
    return dll


def with_threads(n: int, fn: Callable[[], Any], setter: Callable[[int], Any]) -> Callable[[], None]:
    def call() -> None:
        setter(n)
        fn()
    return call


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e5,1e6,1.6e7,6.4e7")
    ap.add_argument("--samples", type=int, default=9)
    ap.add_argument("--min-time", type=float, default=0.02)
    args = ap.parse_args(argv)
    from fastadagrad import kernels
    print(bench.header_line(bench.header(2)), "| load", os.getloadavg()[0])
    with tempfile.TemporaryDirectory() as tmp:
        omp = build_omp(tmp)
        old = kernels.get_num_threads()
        print(f"{'elements':>12} {'pool 1t':>10} {'pool 2t':>10} {'speed-up':>9} "
              f"{'all-par 2t':>14} {'speed-up':>9} {'OpenMP 1t':>10} {'OpenMP 2t':>10} "
              f"{'speed-up':>9}")
        try:
            for n in (int(float(s)) for s in args.sizes.split(",")):
                rng = np.random.default_rng(0)
                p, g = (rng.uniform(-1, 1, n).astype(np.float32) for _ in range(2))
                a = np.abs(rng.uniform(-1, 1, n)).astype(np.float32)
                ptrs = [x.ctypes.data for x in (p, g, a)]

                def fast() -> None:
                    kernels.adagrad_update(p, g, a, lr=1e-6, eps=1e-10)

                def plain() -> None:
                    omp.omp_f32(n, *ptrs, 1e-6, 1e-10)

                # Pass 1, as users run it (the pool's serial/parallel choice on); pass 2 with
                # the choice off (every call parallel). Switching the choice clears its
                # history, so it is switched between passes, never between calls.
                fns = {"p1": with_threads(1, fast, kernels.set_num_threads),
                       "p2": with_threads(2, fast, kernels.set_num_threads),
                       "o1": with_threads(1, plain, omp.omp_threads),
                       "o2": with_threads(2, plain, omp.omp_threads)}
                kernels._set_adaptive(True)
                med = {k: summary(v)["median"] for k, v in
                       interleaved(fns, min_time=args.min_time, samples=args.samples).items()}
                kernels._set_adaptive(False)
                fns = {"q1": with_threads(1, fast, kernels.set_num_threads),
                       "ap2": with_threads(2, fast, kernels.set_num_threads)}
                med.update({k: summary(v)["median"] for k, v in
                            interleaved(fns, min_time=args.min_time, samples=args.samples).items()})
                kernels._set_adaptive(True)
                us = {k: bench.fmt_time(v) for k, v in med.items()}
                print(f"{n:>12,} {us['p1']:>10} {us['p2']:>10} {med['p1'] / med['p2']:>8.2f}x "
                      f"{us['ap2']:>14} {med['q1'] / med['ap2']:>8.2f}x {us['o1']:>10} "
                      f"{us['o2']:>10} {med['o1'] / med['o2']:>8.2f}x", flush=True)
        finally:
            kernels._set_adaptive(True)
            kernels.set_num_threads(old)


if __name__ == "__main__":
    sys.exit(main())
