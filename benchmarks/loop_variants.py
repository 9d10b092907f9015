"""Time every option combination of the dense loop on every ISA path (1 thread, in cache), to
catch a combination the compiler left scalar (it shows as ~4-8x slower than its neighbours):

    python benchmarks/loop_variants.py [--n 100000]

gcc's loop unswitching once left some float64 combinations scalar; _loops.pxi is written so that
no loop has a branch, and this script is how to check that after touching it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import timeit

import numpy as np

import fastadagrad
from fastadagrad import kernels
from fastadagrad._validation import DenseOptions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    n = ap.parse_args().n
    fastadagrad.set_num_threads(1)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        p, g, a = (rng.random(n).astype(dtype) for _ in range(3))
        for isa in kernels.isa_available():
            kernels.set_isa(isa)
            times = {}
            for m, wd, ins, dwd, zero in itertools.product((False, True), repeat=5):
                o = DenseOptions(0.01, 1e-8, 0.1 if wd else 0.0, m, ins, 0.01 if dwd else 0.0, zero)
                t = min(timeit.repeat(lambda: kernels.update_validated(p, g, a, o), number=50,
                                      repeat=3)) / 50
                times[(m, wd, ins, dwd, zero)] = t * 1e6
            med = statistics.median(times.values())
            slow = {k: v for k, v in times.items() if v > 2 * med}
            print(f"{np.dtype(dtype).name:8} {isa:8} median {med:7.1f} us  "
                  f"min {min(times.values()):7.1f}  max {max(times.values()):7.1f}"
                  + (f"  SLOW (maximize, wd, inside, decoupled, zero_mask): {sorted(slow)}" if slow else ""))


if __name__ == "__main__":
    main()
