"""`python -m fastadagrad`: configuration, a self-check and one timing line.
`python -m fastadagrad bench [...]`: the full benchmark (see fastadagrad/bench.py)."""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

import fastadagrad


def info() -> int:
    cfg = fastadagrad.show_config()
    from fastadagrad.bench import cpu_model
    print(f"fastadagrad {cfg['version']}")
    print(f"CPU:          {cpu_model()}")
    print(f"backend:      {cfg['backend']} (compiled extension "
          f"{'available' if cfg['compiled_available'] else 'NOT available'})")
    print(f"ISA path:     {cfg['isa']} (available: {', '.join(cfg['isa_available']) or 'none'}; "
          f"compiled: {', '.join(cfg['isa_compiled']) or 'none'})")
    print(f"threads:      {cfg['threads']} ({'worker pool' if cfg['thread_pool'] else 'serial build'}; "
          f"parallel from {cfg['parallel_min_elements']} elements when faster)")
    if not cfg["compiled_available"]:
        print("self-check:   skipped (no compiled backend to compare with the NumPy one)")
        return 1
    with fastadagrad.backend("cython"):   # compare compiled with NumPy, whatever is selected
        return self_check_and_timing()


def self_check_and_timing() -> int:
    from fastadagrad import bench
    from fastadagrad.bench_timing import interleaved, summary
    from fastadagrad.bench_workloads import DenseWorkload

    rng = np.random.default_rng(0)
    same = True
    for dtype in (np.float32, np.float64):
        for n in (1, 17, 1000, 100_003):
            for options in ({}, dict(maximize=True, weight_decay=0.1, eps_placement="inside",
                                     lr_decay=0.01, step=9)):
                work = DenseWorkload(n, dtype, rng, options)
                work.fast()
                work.numpy()
                same &= work.identical()
    print(f"self-check:   compiled and NumPy backends bit-identical on random data: "
          f"{'yes' if same else 'NO'}")
    work = DenseWorkload(1_000_000, np.float32, rng)
    t = interleaved({"numpy": work.numpy, "fast": work.fast}, min_time=0.02, samples=5)
    sn, sf = (summary(t[k]) for k in ("numpy", "fast"))
    print(f"timing:       1e6 float32 elements: fastadagrad {bench.fmt_timing(sf)}, NumPy "
          f"{bench.fmt_timing(sn)}: {bench.fmt_ratio(sn['median'] / sf['median'])} (medians"
          f"{'; * = noisy, samples spread > %.1fx' % bench.NOISY_SPREAD if bench.is_noisy(sf) or bench.is_noisy(sn) else ''})")
    return 0 if same else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from fastadagrad import bench
        return bench.main(argv[1:])
    if argv:
        print("usage: python -m fastadagrad [bench [--help]]", file=sys.stderr)
        return 2
    return info()


if __name__ == "__main__":
    sys.exit(main())
