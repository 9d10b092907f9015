"""Per-call cost of fastadagrad's kernels from numba @njit code, at a small size (default 1e3
float32 elements) where call overhead matters, next to the other ways to get there:

- njit -> fastadagrad.numba.adagrad_update   (argument checks + the C API's function pointers)
- njit -> C API pointers, no checks          (the floor: what a C/C++ caller pays too)
- Python loop -> fastadagrad.adagrad_update  (the Python API)
- njit -> objmode -> fastadagrad.adagrad_update (leaving nopython mode per call, the old way)
- njit hand-written loop of the formula      (no fastadagrad at all)

Each sample times `--calls` updates in one loop (inside njit where it applies) and divides;
the variants are interleaved, `--repeats` rounds, medians reported. The numba layer's overhead is
"checked" minus "no checks". Also says whether the hand-written loop gives the same bytes.

    python benchmarks/embedding_overhead.py [--n 1000] [--calls 2000] [--repeats 41]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

import numba
import numpy as np

import fastadagrad
from fastadagrad.numba import _dense_call, adagrad_update


@numba.njit
def _loop_checked(p: Any, g: Any, a: Any, calls: int) -> None:
    for _ in range(calls):
        adagrad_update(p, g, a, lr=1e-6)


@numba.njit
def _loop_unchecked(p: Any, g: Any, a: Any, calls: int) -> None:
    for _ in range(calls):
        _dense_call(p, g, a, 1e-6, 1e-10, False, 0.0, 0.0, np.int64(1), False)


@numba.njit
def _loop_objmode(p: Any, g: Any, a: Any, calls: int) -> None:
    for _ in range(calls):
        with numba.objmode():
            fastadagrad.adagrad_update(p, g, a, lr=1e-6)


@numba.njit
def _loop_handwritten(p: Any, g: Any, a: Any, calls: int) -> None:
    lr = p.dtype.type(1e-6)
    eps = p.dtype.type(1e-10)
    for _ in range(calls):
        for i in range(p.size):
            gi = g[i]
            acc = a[i] + gi * gi
            a[i] = acc
            p[i] = p[i] - (lr * gi) / (np.sqrt(acc) + eps)


def _loop_python(p: np.ndarray, g: np.ndarray, a: np.ndarray, calls: int) -> None:
    update = fastadagrad.adagrad_update
    for _ in range(calls):
        update(p, g, a, lr=1e-6)


VARIANTS: dict[str, Callable[..., None]] = {
    "njit -> fastadagrad.numba.adagrad_update": _loop_checked,
    "njit -> C API pointers, no checks": _loop_unchecked,
    "Python loop -> fastadagrad.adagrad_update": _loop_python,
    "njit -> objmode -> fastadagrad.adagrad_update": _loop_objmode,
    "njit hand-written loop": _loop_handwritten,
}


def same_bytes_as_handwritten(n: int, dtype: type) -> bool:
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    a = np.abs(rng.standard_normal(n)).astype(dtype)
    p2, a2 = p.copy(), a.copy()
    _loop_handwritten(p, g, a, 3)
    _loop_checked(p2, g, a2, 3)
    return p.tobytes() == p2.tobytes() and a.tobytes() == a2.tobytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(args.n).astype(args.dtype)
    g = rng.standard_normal(args.n).astype(args.dtype)
    a = np.abs(rng.standard_normal(args.n)).astype(args.dtype) + 1
    for f in VARIANTS.values():   # compile, warm up
        f(p, g, a, 10)
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, f in VARIANTS.items():
            calls = args.calls if "objmode" not in name and "Python" not in name else args.calls // 10
            t0 = time.perf_counter()
            f(p, g, a, calls)
            samples[name].append((time.perf_counter() - t0) / calls)
    load = os.getloadavg()
    print(f"{args.n} {args.dtype} elements, {args.repeats} interleaved rounds, medians (min); "
          f"ISA {fastadagrad.get_isa()}, {fastadagrad.get_num_threads()} threads, numba "
          f"{numba.__version__}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    med = {name: statistics.median(s) for name, s in samples.items()}
    for name, s in samples.items():
        print(f"  {name:48s} {med[name] * 1e9:9.1f} ns/call  (min {min(s) * 1e9:.1f})")
    base = med["njit -> C API pointers, no checks"]
    print(f"  fastadagrad.numba's checks over the bare C API call: "
          f"{(med['njit -> fastadagrad.numba.adagrad_update'] - base) * 1e9:+.1f} ns/call")
    print(f"  hand-written numba loop gives the same bytes: "
          f"{same_bytes_as_handwritten(args.n, np.dtype(args.dtype).type)}")


if __name__ == "__main__":
    main()
