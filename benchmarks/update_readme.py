"""Regenerate README.md's "Performance" section (between the performance:start/end markers)
and docs/performance.png from one run of the benchmark:

    python benchmarks/update_readme.py            # the full run (a few minutes)
    python benchmarks/update_readme.py --quick    # quicker, noisier

It runs exactly what `python -m fastadagrad bench --plot docs/performance.png` runs, then what
`python -m fastadagrad bench --peers` runs (the installed peers as columns; `--no-peers` skips
it) and what `python -m fastadagrad bench --busy` runs (`--no-busy` skips it), and pastes the
tables they print (as Markdown) with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    from fastadagrad import bench
except ImportError:  # not installed: an in-place build (python setup.py build_ext --inplace)
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from fastadagrad import bench
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def peers_section(res: dict | None, quick: bool) -> list[str]:
    """The "Against the peers" part: `bench --peers` as Markdown, or nothing."""
    if res is None:
        return []
    from fastadagrad import bench_peers
    command = "python -m fastadagrad bench --peers" + (" --quick" if quick else "")
    return [
        "", "### Against the peers", "",
        f"`{command}`, run right after the tables above: the AdaGrad a user would pick instead, "
        "each installed peer a column, measured side by side in one run (run it on your machine "
        "to check these ratios; a peer that is not installed is a note, not a column).", "",
        bench_peers.report(res, markdown=True), ""]


def busy_section(res: dict | None, quick: bool) -> list[str]:
    """The "On a busy machine" part: `bench --busy` as a Markdown table, or nothing."""
    if res is None:
        return []
    command = "python -m fastadagrad bench --busy" + (" --quick" if quick else "")
    counts = sorted({r["competitors"] for r in res["rows"]})
    cases = list(dict.fromkeys(r["case"] for r in res["rows"]))
    cell = {(r["case"], r["competitors"]): f"{r['ratio']:.2f} ({r['p95_ratio']:.2f}; "
            f"{r['slow_1']:.1%} / {r['slow_default']:.1%})" for r in res["rows"]}
    table = ["| case | " + " | ".join(f"{c} competitor{'s' if c != 1 else ''}" for c in counts)
             + " |", "|---|" + "---:|" * len(counts)]
    table += ["| " + c + " | " + " | ".join(cell.get((c, k), "-") for k in counts) + " |"
              for c in cases]
    return [
        "", "### On a busy machine", "",
        f"`{command}`, run right after: the default thread count ({res['threads']}) against one "
        "thread while 0, 1 and 2 CPU-bound processes that the benchmark starts itself compete for "
        "the cores; cell = default time / 1-thread time, medians (95th percentiles in brackets): "
        "below 1 the second thread helps, above 1 it hurts; then the share of samples slower than "
        "twice the 1-thread median, 1 thread / default (with competitors on every core this "
        "process is descheduled in a few percent of its samples whatever its thread count; near "
        "5% each 95th percentile falls on either side of that from run to run, and the shares "
        "compare the tails better). How the pool decides: *Threads and ISA paths* above.", "",
        *table, ""]


def section(result: dict, plot_path: str, quick: bool, peers: dict | None = None,
            busy: dict | None = None) -> str:
    h = result["header"]
    command = "python -m fastadagrad bench" + (" --quick" if quick else "")
    return "\n".join([
        START,
        "## Performance",
        "",
        f"Measured {datetime.date.today().isoformat()} with `{command}` on the project's machine "
        f"kind: {bench.header_line(h)}. A shared 2-core VM: memory-bound rows move by ±25% from "
        "run to run, so compare the columns of one row (measured side by side, interleaved), "
        "not numbers across days. Regenerate this section with "
        "`python benchmarks/update_readme.py`.",
        "",
        bench.report(result, markdown=True),
        "",
        "- *numpy*: the NumPy backend (the same API, validation included); *fastadagrad*: the "
        "compiled backend; *torch*: `torch.optim.Adagrad(fused=True)` for dense rows, the sparse "
        "`nn.Embedding` + `Adagrad` step for the sparse row, over the same data and threads.",
        "- *% of probe*: fastadagrad's bytes/s over a 3-read/2-write loop with no sqrt/div over "
        "the same arrays (`kernels.bandwidth_probe`): out of cache (1.6e7 and up) that is the "
        "memory limit; in cache the AdaGrad loop is compute-bound (sqrt and division), so it "
        "stays below the probe.",
        "- Sparse rows count the elements of the batch (4,096 x 64); each step draws a fresh "
        "random batch with 25% duplicate indices.",
        "",
        f"![G elements/s against array size]({plot_path})",
        *peers_section(peers, quick),
        *busy_section(busy, quick),
        END,
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-peers", action="store_true", help="without the `bench --peers` table")
    ap.add_argument("--no-busy", action="store_true", help="without the `bench --busy` table")
    args = ap.parse_args(argv)
    plot_rel = "docs/performance.png"
    result = bench.run(quick=args.quick, echo=lambda line: print(line, file=sys.stderr))
    if not result["equivalent"]:
        print("equivalence failed; README not updated", file=sys.stderr)
        return 1
    peers = None
    if not args.no_peers:
        from fastadagrad import bench_peers
        peers = bench_peers.collect(quick=args.quick)
    busy = None
    if not args.no_busy:
        from fastadagrad import bench_busy
        sizes = [n for n in bench_busy.DEFAULT_SIZES if not args.quick or n < 64_000_000]
        busy = bench_busy.run([0, 1, 2], sizes, seconds=0.5 if args.quick else 2.0,
                              echo=lambda line: print(line, file=sys.stderr))
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    bench.plot(result, os.path.join(ROOT, plot_rel))
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        text = f.read()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w") as f:
        f.write(head + section(result, plot_rel, args.quick, peers, busy) + tail)
    print(f"updated {readme} and {plot_rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
