"""Roofline check: fastadagrad's loops against a plain C loop of the same formula and against the
3-read/2-write bandwidth probe, on every ISA path this CPU runs, one thread, float32 and float64.

The plain loop is what a user would write (gcc -O3 -fno-math-errno -ffp-contract=off plus the
ISA's -m flags, the same flags as our per-ISA units); it is compiled here at run time, so the
comparison holds for this machine's compiler and CPU. Run it before and after touching the loops
(src/fastadagrad/_csrc/):

    python benchmarks/roofline.py [--sizes 1e3,1e5,1e6,1.6e7] [--repeats 15]

Columns: medians of interleaved samples; "vs plain" = plain-loop time / fastadagrad time (1.0 =
level with the plain loop); "% of probe" = probe time / fastadagrad time (out of cache ~100% is the
memory limit). Below ~1e5 elements the plain loop's time includes ctypes' call overhead (~5 us),
so compare there only from 1e5 up. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np

import fastadagrad
from fastadagrad import bench
from fastadagrad.bench_timing import interleaved, summary

PLAIN_C = r"""
#include <math.h>
#include <stddef.h>
void plain_f32(ptrdiff_t n, float *p, const float *g, float *a, float lr, float eps) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float acc = a[i] + g[i] * g[i];
        a[i] = acc;
        p[i] = p[i] - (lr * g[i]) / (sqrtf(acc) + eps);
    }
}
void plain_f64(ptrdiff_t n, double *p, const double *g, double *a, double lr, double eps) {
    for (ptrdiff_t i = 0; i < n; i++) {
        double acc = a[i] + g[i] * g[i];
        a[i] = acc;
        p[i] = p[i] - (lr * g[i]) / (sqrt(acc) + eps);
    }
}
"""
ISA_FLAGS = {"generic": [], "avx2": ["-mavx2"],
             "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq",
                        "-mprefer-vector-width=512"]}


def build_plain(isa: str, tmp: str) -> ctypes.CDLL:
    src = os.path.join(tmp, "plain.c")
    with open(src, "w") as f:
        f.write(PLAIN_C)
    lib = os.path.join(tmp, f"plain_{isa}.so")
    subprocess.run([os.environ.get("CC", "gcc"), "-O3", "-fno-math-errno", "-ffp-contract=off",
                    "-shared", "-fPIC", *ISA_FLAGS[isa], src, "-o", lib, "-lm"], check=True)
    return ctypes.CDLL(lib)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=bench.parse_sizes, default=[1000, 100_000, 1_000_000,
                                                                 16_000_000])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    kernels = fastadagrad._backend._kernels
    if kernels is None:
        print("roofline: the compiled extension is not available", file=sys.stderr)
        return 2
    previous_isa, previous_threads = kernels.get_isa(), fastadagrad.get_num_threads()
    fastadagrad.set_num_threads(1)
    print(f"{bench.cpu_model()}, 1 thread, NumPy {np.__version__}; ISA paths: "
          f"{', '.join(kernels.isa_available())}")
    print(f"{'isa':8} {'dtype':8} {'elements':>11} {'fastadagrad':>12} {'plain C':>12} "
          f"{'probe':>12} {'vs plain':>9} {'% of probe':>10}")
    rng = np.random.default_rng(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for isa in kernels.isa_available():
                plain = build_plain(isa, tmp)
                kernels.set_isa(isa)
                for dtype, ctype, fn in ((np.float32, ctypes.c_float, plain.plain_f32),
                                         (np.float64, ctypes.c_double, plain.plain_f64)):
                    ptr = ctypes.POINTER(ctype)
                    fn.argtypes = [ctypes.c_ssize_t, ptr, ptr, ptr, ctype, ctype]
                    for n in args.sizes:
                        p = rng.random(n).astype(dtype)
                        g = rng.random(n).astype(dtype)
                        a = np.full(n, 0.1, dtype)
                        pp, gp, ap_ = (x.ctypes.data_as(ptr) for x in (p, g, a))
                        x, y, z = p.copy(), g.copy(), a.copy()

                        def ours() -> None:
                            fastadagrad.adagrad_update(p, g, a, lr=0.01, eps=1e-10)

                        def c_loop() -> None:
                            fn(n, pp, gp, ap_, 0.01, 1e-10)

                        def probe() -> None:
                            kernels.bandwidth_probe(x, y, z)

                        t = interleaved({"ours": ours, "plain": c_loop, "probe": probe},
                                              min_time=0.02, samples=args.repeats)
                        m = {k: summary(v)["median"] for k, v in t.items()}
                        print(f"{isa:8} {np.dtype(dtype).name:8} {n:>11,} "
                              f"{bench.fmt_timing(summary(t['ours'])):>12} "
                              f"{bench.fmt_timing(summary(t['plain'])):>12} "
                              f"{bench.fmt_timing(summary(t['probe'])):>12} "
                              f"{m['plain'] / m['ours']:>8.2f}x {100 * m['probe'] / m['ours']:>9.0f}%")
    finally:
        kernels.set_isa(previous_isa)
        fastadagrad.set_num_threads(previous_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
