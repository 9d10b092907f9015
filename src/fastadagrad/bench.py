"""`python -m fastadagrad bench`: equivalence first, then speed against NumPy, torch and memory.

Speed is NumPy-backend time divided by fastadagrad time, both medians of interleaved samples
taken in this run. "% of probe" compares fastadagrad's bytes/s with a 3-read/2-write loop
compiled into the extension (no sqrt/div) over arrays of the same size, run in the same run:
out of cache that probe is what the memory can do, so 100% means at the memory limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, Callable, Sequence

import numpy as np

import fastadagrad
from fastadagrad._backend import IMPORT_ERROR, _kernels
from fastadagrad.bench_cases import BENCH_CASES, BenchCase
from fastadagrad.bench_timing import interleaved, summary

DTYPE_NAMES = ("float32", "float64")


# ----------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_module() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def header(threads: int) -> dict[str, Any]:
    torch = torch_module()
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
        "backend": fastadagrad.get_backend(),
        "isa": fastadagrad.get_isa(), "thread_pool": fastadagrad.show_config()["thread_pool"],
        "python": platform.python_version(), "numpy": np.__version__,
        "fastadagrad": fastadagrad.__version__,
        "torch": torch.__version__ if torch is not None else None,
    }


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


NOISY_SPREAD = 1.5   # max/min of a timing's samples above this: marked noisy ("*")


def fmt_ratio(ratio: float) -> str:
    """How many times faster (ratio = their time / our time); below 1 it says "slower"."""
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def fmt_timing(s: dict[str, float]) -> str:
    """A median, starred when the samples' spread (max/min) exceeds NOISY_SPREAD."""
    return fmt_time(s["median"]) + (" *" if is_noisy(s) else "")


def is_noisy(s: dict[str, float]) -> bool:
    return s["min"] > 0 and s["max"] / s["min"] > NOISY_SPREAD


def progress(msg: str) -> None:
    sys.stderr.write(f"\r\033[K{msg}" if sys.stderr.isatty() else f"{msg}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------- the run
def select_cases(quick: bool, sizes: Sequence[int] | None) -> list[BenchCase]:
    cases = [c for c in BENCH_CASES if c.quick or not quick]
    if sizes:
        cases = [c for c in cases if c.kind != "dense" or c.elements in sizes]
        known = {c.elements for c in BENCH_CASES if c.kind == "dense"}
        from fastadagrad.bench_cases import _dense_case
        cases[0:0] = [_dense_case(n) for n in sizes if n not in known]
    return cases


def measure(work: Any, case: BenchCase, dtype: np.dtype, *, quick: bool,
            torch: Any) -> dict[str, Any]:
    """Interleaved medians of the NumPy backend, fastadagrad, the probe and torch on `work`."""
    min_time, samples = (0.005, 3) if quick else (0.02, 7)
    row: dict[str, Any] = {}
    fns = {"numpy": work.numpy, "fast": work.fast}
    if work.probe is not None:
        fns["probe"] = work.probe
    torch_step = work.torch() if torch is not None else None
    if torch_step is not None:
        fns["torch"] = torch_step
    for key, vals in interleaved(fns, min_time=min_time, samples=samples).items():
        row[key] = summary(vals)
    fast = row["fast"]["median"]
    nbytes = case.bytes_per_element * dtype.itemsize * case.elements
    row["speedup"] = row["numpy"]["median"] / fast
    row["gelem_per_s"] = case.elements / fast / 1e9
    row["gb_per_s"] = nbytes / fast / 1e9
    if "probe" in row:
        row["probe_gb_per_s"] = nbytes / row["probe"]["median"] / 1e9
        row["pct_of_probe"] = 100.0 * row["probe"]["median"] / fast
    if "torch" in row:
        row["torch_speedup"] = row["torch"]["median"] / fast
    return row


def run(quick: bool = False, dtypes: Sequence[str] = DTYPE_NAMES, sizes: Sequence[int] | None = None,
        threads: int | None = None, use_torch: bool = True,
        echo: Callable[[str], None] = print) -> dict[str, Any]:
    """For every case and dtype: build the inputs once, run one step of each backend on copies
    and compare their bytes (echoed line by line, before any table is printed), then time that
    same workload. Once a case differs, nothing more is timed. Returns a JSON-ready dict.
    The compiled backend is selected for the run whatever FASTADAGRAD_BACKEND says (the
    workloads' NumPy side calls the NumPy backend explicitly)."""
    with fastadagrad.backend("cython"):
        return _run(quick, dtypes, sizes, threads, use_torch, echo)


def _run(quick: bool, dtypes: Sequence[str], sizes: Sequence[int] | None, threads: int | None,
         use_torch: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    if threads is not None:
        fastadagrad.set_num_threads(threads)
    threads = fastadagrad.get_num_threads()
    torch = torch_module() if use_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    cases = select_cases(quick, sizes)
    dtypes = list(dtypes)
    result: dict[str, Any] = {"header": header(threads), "quick": quick, "dtypes": dtypes,
                              "cases": [c.name for c in cases], "equivalence": [], "results": []}
    echo(header_line(result["header"]))
    echo("")
    echo("Equivalence (both backends, one step on the same inputs, identical bytes):")
    rng = np.random.default_rng(20261122)
    total = sum(1 for d in dtypes for c in cases if c.only_dtype in (None, d))
    done, equivalent = 0, True
    for dtype_name in dtypes:
        dtype = np.dtype(dtype_name)
        for case in cases:
            if case.only_dtype is not None and case.only_dtype != dtype_name:
                continue
            done += 1
            entry: dict[str, Any] = {"case": case.name, "dtype": dtype_name,
                                     "available": case.make is not None, "identical": None}
            row: dict[str, Any] = {"case": case.name, "kind": case.kind, "dtype": dtype_name,
                                   "elements": case.elements, "available": case.make is not None}
            work = None
            if case.make is not None:
                progress(f"[{done}/{total}] {case.name} {dtype_name}")
                work = case.make(dtype, rng)
                work.fast()
                work.numpy()
                entry["identical"] = bool(work.identical())
                equivalent = equivalent and entry["identical"]
            verdict = ("not available" if entry["identical"] is None
                       else "identical" if entry["identical"] else "DIFFERENT")
            echo(f"  {case.name:<36} {dtype_name:<8} {verdict}")
            result["equivalence"].append(entry)
            if work is not None and equivalent:
                row.update(measure(work, case, dtype, quick=quick, torch=torch))
            result["results"].append(row)
            del work
    progress("")
    result["equivalent"] = equivalent
    if not equivalent:
        result["results"] = []
    return result


# ----------------------------------------------------------------------------- output
COLUMNS = ("case", "elements", "numpy", "fastadagrad", "min-max", "vs numpy", "G el/s", "GB/s",
           "% of probe", "torch", "vs torch")


def table_rows(result: dict[str, Any], dtype: str) -> list[list[str]]:
    rows = []
    for r in result["results"]:
        if r["dtype"] != dtype:
            continue
        if not r["available"]:
            rows.append([r["case"], f"{r['elements']:,}", "not available"] + [""] * 8)
            continue
        f = r["fast"]
        rows.append([
            r["case"], f"{r['elements']:,}", fmt_timing(r["numpy"]), fmt_timing(f),
            f"{fmt_time(f['min'])}-{fmt_time(f['max'])}", fmt_ratio(r["speedup"]),
            f"{r['gelem_per_s']:.2f}", f"{r['gb_per_s']:.1f}",
            f"{r['pct_of_probe']:.0f}%" if "pct_of_probe" in r else "-",
            fmt_timing(r["torch"]) if "torch" in r else "-",
            fmt_ratio(r["torch_speedup"]) if "torch" in r else "-",
        ])
    return rows


def format_table(rows: list[list[str]], markdown: bool = False) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
    def line(cells: Sequence[str]) -> str:
        if markdown:
            return "| " + " | ".join(cells) + " |"
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(COLUMNS)]
    if markdown:
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    out += [line(r) for r in rows]
    return "\n".join(out)


def header_line(h: dict[str, Any]) -> str:
    return (f"{h['cpu']}, {h['cores']} cores, {h['threads']} threads, ISA {h['isa']}, "
            f"thread pool {'on' if h.get('thread_pool', h.get('openmp')) else 'off'} | Python {h['python']}, NumPy {h['numpy']}, "
            f"fastadagrad {h['fastadagrad']}, torch {h['torch'] or 'not installed'}")


def report(result: dict[str, Any], markdown: bool = False) -> str:
    """The speed tables, one per dtype."""
    lines = ["vs numpy / vs torch = their time / fastadagrad time (medians of interleaved samples); "
             "% of probe = fastadagrad bytes/s over a 3-read/2-write loop at the same size; "
             f"* = noisy (samples spread more than {NOISY_SPREAD}x, max/min: a busy "
             "machine)."]
    for dtype in result["dtypes"]:
        lines += ["", f"**{dtype}**" if markdown else f"{dtype}:", "",
                  format_table(table_rows(result, dtype), markdown)]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """log-log G elements/s vs elements for each backend, the probe's ceiling drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastadagrad[plot]'") from None
    fig, axes = plt.subplots(1, len(result["dtypes"]), figsize=(6 * len(result["dtypes"]), 4.5),
                             squeeze=False)
    for ax, dtype in zip(axes[0], result["dtypes"]):
        rows = [r for r in result["results"] if r["dtype"] == dtype and r["kind"] == "dense"
                and r["available"]]
        for key, label, style in (("fast", "fastadagrad", "o-"), ("numpy", "NumPy backend", "s-"),
                                  ("torch", "torch fused", "^-"), ("probe", "3R/2W probe (ceiling)", "k--")):
            pts = [(r["elements"], r["elements"] / r[key]["median"] / 1e9) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("elements")
        ax.set_ylabel("G elements / s")
        ax.set_title(f"AdaGrad step, {dtype}, {result['header']['threads']} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_sizes(text: str) -> list[int]:
    try:
        return [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes comma-separated numbers, got {text!r}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--busy" in argv:   # the busy-machine scenario has its own options (bench_busy.py)
        if _kernels is None:
            print(f"fastadagrad bench: the compiled extension is not available ({IMPORT_ERROR})",
                  file=sys.stderr)
            return 2
        from fastadagrad import bench_busy
        return bench_busy.main(argv)
    if "--peers" in argv:   # fastadagrad next to the installed peers (bench_peers.py)
        if _kernels is None:
            print(f"fastadagrad bench: the compiled extension is not available ({IMPORT_ERROR})",
                  file=sys.stderr)
            return 2
        from fastadagrad import bench_peers
        return bench_peers.main(argv)
    ap = argparse.ArgumentParser(prog="python -m fastadagrad bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples; no 6.4e7 case (<30 s)")
    ap.add_argument("--dtype", choices=DTYPE_NAMES, action="append",
                    help="only this dtype (repeatable; default: both)")
    ap.add_argument("--sizes", type=parse_sizes, help="dense sizes, e.g. 1e3,1e6 (default: the standard set)")
    ap.add_argument("--threads", type=int, help="threads for fastadagrad and torch (default: all)")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch column even if installed")
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    ap.add_argument("--plot", metavar="FILE.png", help="write a log-log plot (needs matplotlib)")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--busy", action="store_true",
                    help="instead: 1 thread vs the default with 0, 1, 2 CPU-bound competitor "
                         "processes (see `bench --busy --help`)")
    ap.add_argument("--peers", action="store_true",
                    help="instead: fastadagrad next to the installed peers (torch, numba, "
                         "jax/optax), a column each (see `bench --peers --help`)")
    args = ap.parse_args(argv)
    if _kernels is None:
        print(f"fastadagrad bench: the compiled extension is not available ({IMPORT_ERROR}); "
              "build it with `pip install .`", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.plot:  # fail before the long run, not after it
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            print("fastadagrad bench: --plot needs matplotlib: pip install 'fastadagrad[plot]'",
                  file=sys.stderr)
            return 2
    result = run(quick=args.quick, dtypes=args.dtype or DTYPE_NAMES, sizes=args.sizes,
                 threads=args.threads, use_torch=not args.no_torch)
    if result["equivalent"]:
        print()
        print(report(result, markdown=args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    print()
    print("machine:     " + header_line(result["header"]))
    print(verdict_line(result))
    return 0 if result["equivalent"] else 1


def verdict_line(result: dict[str, Any]) -> str:
    """The one closing verdict of a run."""
    checked = [e for e in result["equivalence"] if e["identical"] is not None]
    bad = [f"{e['case']} {e['dtype']}" for e in checked if not e["identical"]]
    if not bad:
        return f"equivalence: all {len(checked)} cases bit-identical"
    return (f"equivalence: FAILED, {len(bad)} of {len(checked)} cases differ ({', '.join(bad)}); "
            "no timings taken")
