"""Sparse AdaGrad with small rows (issue 12 §4): fastadagrad against a numba prange loop over
np.unique's output, element-wise and row-wise, at row widths D = 8 ... 128:

    python benchmarks/sparse_small_d.py [--dims 8,16,32,64,128] [--rows 1e6] [--batch 4096]
                                        [--threads 1] [--dtype float32] [--samples 9]
                                        [--align OFFSET] [--baseline KERNELS.so]

Each step takes a fresh batch (16 pre-drawn batches of `--batch` indices, 25% of them repeats
of others in the batch, cycled) over an (n, D) table much larger than the caches, as in the
bench's sparse case. The numba peer (fastadagrad/_peer_numba.py) is np.unique, then one njit
loop: duplicates summed in order of appearance, then a prange over the unique rows; its
element-wise bytes equal fastadagrad's (checked, "same bytes"). Both run on `--threads` threads.
FBGEMM's CPU kernel is not timed here (fbgemm-gpu-cpu 1.9.0 from PyPI does not load with torch
2.13, and its AdaGrad is reached through its TBE module); README ("Against FBGEMM's CPU kernel")
gives this workload timed against FBGEMM's JIT kernel built from source, side by side.

Columns: medians of interleaved samples (fastadagrad, numba, fastadagrad row-wise, numba
row-wise, one after the other within each round) and "numba/fa" = numba time / fastadagrad time
(> 1: fastadagrad is faster). Timings on a shared machine are noisy: quote the load with them.
Nothing here asserts a speed.

Where a row starts within a 64-byte cache line changes how many lines a step touches (32-byte
rows on a 32-byte boundary never straddle two lines; 16 bytes past one, half of them do), and
NumPy places arrays at any multiple of 16 bytes past a line. So contenders with arrays of
different placement are not compared on equal terms: `--align OFFSET` (0, 16, 32 or 48) puts
every timed table and accumulator at that offset.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

import numpy as np

try:
    import fastadagrad
except ImportError:   # an in-place build (python setup.py build_ext --inplace)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "src"))
    import fastadagrad
from fastadagrad import bench, bench_timing
from fastadagrad._registry import sparse_batches


def stepper(fn: Callable[..., None], table: np.ndarray, accum: np.ndarray,
            batches: list[np.ndarray], grads: list[np.ndarray]) -> Callable[[], None]:
    """A no-argument step on the next batch (cycling), for bench.interleaved."""
    calls = [0]

    def run() -> None:
        i = calls[0]
        calls[0] = i + 1
        fn(table, accum, batches[i % len(batches)], grads[i % len(grads)], lr=0.01, eps=1e-10)
    return run


def fbgemm_note() -> str:
    """Why FBGEMM's CPU kernel has no column (not timed here: its CPU sparse AdaGrad is reached
    through fbgemm_gpu's table-batched-embedding module, which this script does not drive)."""
    try:
        import fbgemm_gpu  # noqa: F401
    except ImportError:
        return "fbgemm: fbgemm_gpu is not installed (not timed)"
    except Exception as exc:   # e.g. OSError: built against another torch release
        return f"fbgemm: fbgemm_gpu does not load here ({type(exc).__name__}; not timed)"
    return "fbgemm: fbgemm_gpu loads, but its AdaGrad runs inside its TBE module (not timed)"


def baseline(path: str) -> Any:
    """Another build's fastadagrad.kernels (e.g. the commit before a change), loaded next to
    this one; its Python-side validation is this checkout's (so only the compiled part differs)."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.ExtensionFileLoader("fastadagrad.kernels", path)
    spec = importlib.util.spec_from_file_location("fastadagrad.kernels", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.set_num_threads(1)
    return module


def placed(x: np.ndarray, offset: int | None) -> np.ndarray:
    """x itself (offset None), or a copy of x whose data starts `offset` bytes past a 64-byte
    line (every page written now)."""
    if offset is None:
        return x
    buf = np.empty(x.nbytes + 64, np.uint8)
    k = (offset - buf.ctypes.data) % 64
    y = buf[k:k + x.nbytes].view(x.dtype).reshape(x.shape)
    y[...] = x
    return y


def measure(d: int, args: argparse.Namespace, peer: Any) -> dict[str, Any]:
    rng = np.random.default_rng(d)
    dtype = np.dtype(args.dtype)
    n, b = int(args.rows), int(args.batch)
    batches = sparse_batches(rng, n, b, 16)
    grads = [rng.uniform(-1, 1, (b, d)).astype(dtype) for _ in range(4)]
    start = rng.uniform(-1, 1, (n, d)).astype(dtype)
    fns: dict[str, Callable[[], None]] = {}
    arrays = {}
    for name, fn, rowwise in (("fa", fastadagrad.sparse_adagrad_update, False),
                              ("numba", peer.sparse_step, False),
                              ("fa rw", fastadagrad.sparse_adagrad_update, True),
                              ("numba rw", peer.sparse_step, True)):
        # np.full touches every page now (no first-touch faults inside the timed steps)
        arrays[name] = (placed(start.copy(), args.align),
                        placed(np.full((n,) if rowwise else (n, d), 0.1, dtype), args.align))
        fns[name] = stepper(fn, *arrays[name], batches, grads)
    if args.baseline:   # the same step through another build's compiled module
        arrays["before"] = (placed(start.copy(), args.align),
                            placed(np.full((n, d), 0.1, dtype), args.align))
        fns["before"] = stepper(baseline(args.baseline).sparse_adagrad_update,
                                *arrays["before"], batches, grads)
    fns["fa"]()
    fns["numba"]()
    same = all(x.tobytes() == y.tobytes() for x, y in zip(arrays["fa"], arrays["numba"]))
    clock = time.process_time if args.cpu_time else time.perf_counter
    t = bench_timing.interleaved(fns, min_time=args.min_time, samples=args.samples, clock=clock)
    return {"d": d, "same": same, **{k: bench.summary(v)["median"] for k, v in t.items()}}


def add_workload_args(ap: argparse.ArgumentParser) -> None:
    """The options of this workload and its timing, shared with fbgemm/compare.py."""
    ap.add_argument("--dims", default="8,16,32,64,128")
    ap.add_argument("--rows", type=float, default=1e6)
    ap.add_argument("--batch", type=float, default=4096)
    ap.add_argument("--samples", type=int, default=9)
    ap.add_argument("--min-time", type=float, default=0.02)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time (1 thread only; a loaded machine's "
                         "descheduling then does not count)")
    ap.add_argument("--baseline", metavar="KERNELS.so",
                    help="also time another build's compiled module (column 'before')")
    ap.add_argument("--align", type=int, choices=(0, 16, 32, 48), default=None,
                    metavar="OFFSET", help="every timed table and accumulator starts OFFSET "
                    "bytes past a 64-byte line (default: wherever NumPy puts it)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_args(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args()
    try:
        import numba

        from fastadagrad import _peer_numba as peer
    except ImportError:
        print("numba is not installed: nothing to compare with", file=sys.stderr)
        return 2
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time needs --threads 1")
    fastadagrad.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    h = bench.header(args.threads)
    print(f"{bench.header_line(h)}, numba {numba.__version__}, load {os.getloadavg()[0]:.2f}")
    print(f"sparse AdaGrad, {int(args.rows):,} rows x D, batch {int(args.batch):,} "
          f"(25% repeats), {args.dtype}, {args.threads} thread(s); medians of "
          f"{'CPU' if args.cpu_time else 'wall'} time; arrays "
          + ("where NumPy put them" if args.align is None
             else f"{args.align} bytes past a 64-byte line"))
    cols = ("D", "fastadagrad", "numba", "numba/fa", "same bytes", "fa row-wise",
            "numba row-wise", "numba/fa rw") + (("before", "before/fa")
                                                           if args.baseline else ())
    print("  ".join(f"{c:>14}" for c in cols))
    for d in (int(x) for x in args.dims.split(",")):
        r = measure(d, args, peer)
        cells: tuple[str, ...] = (str(d), bench.fmt_time(r["fa"]), bench.fmt_time(r["numba"]),
                                 f"{r['numba'] / r['fa']:.2f}", "yes" if r["same"] else "NO",
                                 bench.fmt_time(r["fa rw"]), bench.fmt_time(r["numba rw"]),
                                 f"{r['numba rw'] / r['fa rw']:.2f}")
        if args.baseline:
            cells += (bench.fmt_time(r["before"]), f"{r['before'] / r['fa']:.2f}")
        print("  ".join(f"{c:>14}" for c in cells), flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(fbgemm_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
