"""The mixed-precision loops timed from C, without Python (issue 15 §3): the AVX2 unit's float32
step, bfloat16 and float16 steps (param and grad in the half type, float32 accumulator) and the
bandwidth probe, compiled here from src/fastadagrad/_csrc with the package's flags, interleaved
in one run, on 1 or 2 threads (pthreads, two halves). Separates the loops' own speed from the
Python-level call (benchmarks/mixed_precision.py) and shows whether a step is compute-bound:
run it at 2048 elements (in L1: compute only) and at 1.6e7 (memory).

    python benchmarks/mixed_loops_c.py [--sizes 2048,1.6e7] [--repeats 21] [--threads 1]

"vs f32" and "% of probe" (bytes-adjusted: probe time x bytes / 20 / step time) are medians of
per-round ratios. Needs gcc and an AVX2 CPU. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CSRC = os.path.join(os.path.dirname(__file__), "..", "src", "fastadagrad", "_csrc")
DRIVER = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <pthread.h>
#define FA_ISA avx2
#include "loops.h"
typedef struct { int kind; fa_ssize_t n; float *f[6]; uint16_t *h[2]; float *ha; } Job;
static DenseOpts O;
static const MixedTypes TB = {FA_DT_BF16, FA_DT_BF16, FA_DT_F32}, TH = {FA_DT_F16, FA_DT_F16, FA_DT_F32};
static const char *NAMES[] = {"float32 step", "probe (float32)", "bfloat16 step", "float16 step"};
static const int BYTES[] = {20, 20, 14, 14};
static void run(Job *j) {
    switch (j->kind) {
    case 0: fa_avx2_dense_f32(j->n, j->f[0], j->f[1], j->f[2], &O); break;
    case 1: fa_avx2_probe_f32(j->n, j->f[3], j->f[4], j->f[5]); break;
    default: fa_avx2_dense_mixed(j->n, j->h[0], j->h[1], j->ha, NULL, j->kind == 2 ? &TB : &TH, &O);
    }
}
static void *thread_main(void *j) { run(j); return NULL; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double median(double *v, int k) { qsort(v, k, sizeof *v, cmp); return v[k / 2]; }
int main(int argc, char **argv) {
    fa_ssize_t n = (fa_ssize_t)atof(argv[1]), h = (n / 2) & ~(fa_ssize_t)15;
    int reps = atoi(argv[2]), nth = atoi(argv[3]), inner = n < 1000000 ? (int)(2e7 / n) : 1;
    Job J = {0}; J.n = n;
    for (int k = 0; k < 6; k++) J.f[k] = aligned_alloc(64, n * 4 + 64);
    J.h[0] = aligned_alloc(64, n * 2 + 64); J.h[1] = aligned_alloc(64, n * 2 + 64); J.ha = aligned_alloc(64, n * 4 + 64);
    srand(1);
    for (fa_ssize_t i = 0; i < n; i++) {
        float p = rand() / (float)RAND_MAX * 2 - 1, g = rand() / (float)RAND_MAX * 2 - 1, a = 0.1f + rand() / (float)RAND_MAX;
        J.f[0][i] = J.f[3][i] = p; J.f[1][i] = J.f[4][i] = g; J.f[2][i] = J.f[5][i] = J.ha[i] = a;
        J.h[0][i] = (uint16_t)(*(uint32_t *)&p >> 16); J.h[1][i] = (uint16_t)(*(uint32_t *)&g >> 16);
    }
    O.lr = 1e-6; O.eps = 1e-10; O.grad_scale = 1;
    double *t = calloc(4 * reps, sizeof *t), *r = calloc(reps, sizeof *r);
    for (int r0 = -2; r0 < reps; r0++)          /* two warm-up rounds */
        for (int k = 0; k < 4; k++) {
            double t0 = now();
            for (int q = 0; q < inner; q++) {
                Job a = J, b = J; a.kind = b.kind = k;
                if (nth == 1) { run(&a); continue; }
                pthread_t th; a.n = h; b.n = n - h;
                for (int m = 0; m < 6; m++) b.f[m] += h;
                b.h[0] += h; b.h[1] += h; b.ha += h;
                pthread_create(&th, NULL, thread_main, &b); run(&a); pthread_join(th, NULL);
            }
            if (r0 >= 0) t[k * reps + r0] = (now() - t0) / inner;
        }
    printf("%-16s %12s %7s %10s\n", "step", "median", "vs f32", "% of probe");
    for (int k = 0; k < 4; k++) {
        double vs, pct;
        for (int q = 0; q < reps; q++) r[q] = t[q] / t[k * reps + q];
        vs = median(r, reps);
        for (int q = 0; q < reps; q++) r[q] = 100 * t[reps + q] * BYTES[k] / 20 / t[k * reps + q];
        pct = median(r, reps);
        for (int q = 0; q < reps; q++) r[q] = t[k * reps + q];
        printf("%-16s %9.3f us %7.2f %9.0f%%\n", NAMES[k], median(r, reps) * 1e6, vs, pct);
    }
    return 0;
}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2048,1.6e7")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=1, choices=(1, 2))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "driver.c"), os.path.join(tmp, "driver")
        with open(src, "w") as f:
            f.write(DRIVER)
        subprocess.run([os.environ.get("CC", "gcc"), "-O3", "-fno-math-errno", "-ffp-contract=off",
                        "-mavx2", "-mf16c", "-w", "-I", CSRC, src, "-o", exe, "-lpthread", "-lm"],
                       check=True)
        for size in args.sizes.split(","):
            load = os.getloadavg()
            print(f"\n{int(float(size)):,} elements, {args.threads} thread(s), {args.repeats} rounds, "
                  f"load average {load[0]:.2f}", flush=True)
            subprocess.run([exe, str(int(float(size))), str(args.repeats), str(args.threads)],
                           check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
