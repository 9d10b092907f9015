"""`python -m fastadagrad bench --peers`: fastadagrad next to the AdaGrad a user would pick
instead, each installed peer a column, all measured side by side in this run.

Peers (each optional; a missing one is a note, not an error): torch.optim.Adagrad with
fused=True and with foreach=True, torch's private fused op torch._fused_adagrad_ called
directly (no optimizer around it), a hand-written numba loop (fastadagrad/_peer_numba.py: a
prange loop; for the sparse step np.unique then a prange over the unique rows), and optax's
adagrad under jax.jit. Cases: dense float32 steps of several sizes, and element-wise sparse
steps on a (rows, D) table at D = 16 and 64 with fresh batches of 4,096 indices (25% repeats;
torch: sparse Embedding + torch.optim.Adagrad). Every library runs on the same thread count.

A cell is the peer's median time and, in brackets, peer time / fastadagrad time (above 1:
fastadagrad is faster), medians of interleaved samples.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

import fastadagrad
from fastadagrad import bench, bench_timing
from fastadagrad._registry import sparse_batches

LR, EPS = 0.01, 1e-10
DENSE_SIZES = (1_000, 100_000, 1_000_000, 16_000_000)
SPARSE_DIMS = (16, 64)
Step = Callable[[], Any]


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def missing_peers() -> dict[str, str]:
    """Peer column -> why it is skipped, for the peers that cannot run here."""
    out = {}
    if not _installed("torch"):
        out["torch"] = "torch not installed"
    if not _installed("numba"):
        out["numba"] = "numba not installed"
    if not _installed("jax"):
        out["jax/optax"] = "jax not installed"
    elif not _installed("optax"):
        out["jax/optax"] = "optax not installed"
    return out


# ----------------------------------------------------------------------------- dense peers
def _torch_dense(p0: np.ndarray, g0: np.ndarray, mode: str) -> Step | None:
    import torch
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    p.grad = torch.from_numpy(g0.copy())
    if mode == "op":
        op = getattr(torch, "_fused_adagrad_", None)
        if op is None:
            return None
        s, t = torch.zeros_like(p), torch.zeros((), dtype=torch.float32)
        data = p.detach()
        return lambda: op([data], [p.grad], [s], [t], lr=LR, lr_decay=0.0, weight_decay=0.0,
                          eps=EPS, maximize=False)
    opt = torch.optim.Adagrad([p], lr=LR, eps=EPS, **{mode: True})
    return opt.step


def _jax_dense(p0: np.ndarray, g0: np.ndarray) -> Step:
    jax = importlib.import_module("jax")
    optax = importlib.import_module("optax")
    opt = optax.adagrad(LR, initial_accumulator_value=0.0, eps=EPS)

    def update(p: Any, s: Any, g: Any) -> Any:
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s
    step = jax.jit(update)

    state = [jax.device_put(p0), None, jax.device_put(g0)]
    state[1] = opt.init(state[0])

    def run() -> None:
        state[0], state[1] = step(*state)
        state[0].block_until_ready()
    return run


def dense_steps(n: int, rng: np.random.Generator, skip: dict[str, str]) -> dict[str, Step]:
    """fastadagrad and every available peer on float32 copies of one random problem."""
    p0 = rng.uniform(-1, 1, n).astype(np.float32)
    g0 = rng.uniform(-1, 1, n).astype(np.float32)
    fa = (p0.copy(), g0.copy(), np.zeros(n, np.float32))
    steps: dict[str, Step] = {"fastadagrad": lambda: fastadagrad.adagrad_update(
        *fa, lr=LR, eps=EPS)}
    if "torch" not in skip:
        for col, mode in (("torch fused", "fused"), ("torch foreach", "foreach"),
                          ("torch _fused_adagrad_", "op")):
            step = _torch_dense(p0, g0, mode)
            if step is not None:
                steps[col] = step
    if "numba" not in skip:
        from fastadagrad import _peer_numba
        nb = (p0.copy(), g0.copy(), np.zeros(n, np.float32))
        steps["numba"] = lambda: _peer_numba.dense_step(*nb, lr=LR, eps=EPS)
    if "jax/optax" not in skip:
        steps["jax/optax"] = _jax_dense(p0, g0)
    return steps


# ----------------------------------------------------------------------------- sparse peers
def _cycling(fn: Callable[[np.ndarray, np.ndarray], None], batches: list[np.ndarray],
             grads: list[np.ndarray]) -> Step:
    calls = [0]

    def run() -> None:
        i = calls[0]
        calls[0] = i + 1
        fn(batches[i % len(batches)], grads[i % len(grads)])
    return run


def _torch_sparse(t0: np.ndarray, batches: list[np.ndarray], grads: list[np.ndarray]) -> Step:
    import torch
    emb = torch.nn.Embedding(t0.shape[0], t0.shape[1], sparse=True,
                             _weight=torch.from_numpy(t0.copy()))
    opt = torch.optim.Adagrad(emb.parameters(), lr=LR, eps=EPS)

    def step(idx: np.ndarray, g: np.ndarray) -> None:
        emb.weight.grad = torch.sparse_coo_tensor(torch.from_numpy(idx)[None, :],
                                                  torch.from_numpy(g), emb.weight.shape,
                                                  check_invariants=False)
        opt.step()
    return _cycling(step, batches, grads)


def sparse_steps(rows: int, d: int, batch: int, rng: np.random.Generator,
                 skip: dict[str, str]) -> dict[str, Step]:
    """Element-wise sparse steps (fresh batch per call) for fastadagrad and the peers that
    have one (torch's sparse Embedding + Adagrad, numba); others get no cell."""
    t0 = rng.uniform(-1, 1, (rows, d)).astype(np.float32)
    batches = sparse_batches(rng, rows, batch, 16)
    grads = [rng.uniform(-1, 1, (batch, d)).astype(np.float32) for _ in range(4)]
    fa = (t0.copy(), np.full((rows, d), 0.0, np.float32))   # full: pages touched now
    steps = {"fastadagrad": _cycling(lambda i, g: fastadagrad.sparse_adagrad_update(
        *fa, i, g, lr=LR, eps=EPS), batches, grads)}
    if "torch" not in skip:
        steps["torch sparse"] = _torch_sparse(t0, batches, grads)
    if "numba" not in skip:
        from fastadagrad import _peer_numba
        nb = (t0.copy(), np.full((rows, d), 0.0, np.float32))
        steps["numba"] = _cycling(lambda i, g: _peer_numba.sparse_step(*nb, i, g, lr=LR,
                                                                       eps=EPS), batches, grads)
    return steps


# ----------------------------------------------------------------------------- the run
COLUMNS = ("torch fused", "torch foreach", "torch _fused_adagrad_", "torch sparse", "numba",
           "jax/optax")


def set_threads(threads: int, skip: dict[str, str]) -> None:
    fastadagrad.set_num_threads(threads)
    if "torch" not in skip:
        import torch
        torch.set_num_threads(threads)
    if "numba" not in skip:
        import numba
        numba.set_num_threads(min(threads, getattr(numba.config, "NUMBA_NUM_THREADS", 1)))


def run(cases: list[tuple[str, Callable[[], dict[str, Step]]]], quick: bool
        ) -> list[dict[str, Any]]:
    min_time, samples = (0.005, 3) if quick else (0.05, 7)
    out = []
    for name, make in cases:
        bench.progress(f"peers: {name}")
        steps = make()
        t = bench_timing.interleaved(steps, min_time=min_time, samples=samples)
        out.append({"case": name, **{k: bench_timing.summary(v)["median"] for k, v in t.items()}})
        del steps
    bench.progress("")
    return out


def table(results: list[dict[str, Any]], columns: Sequence[str], markdown: bool = False) -> str:
    head = ["case", "fastadagrad", *columns]
    rows = [head]
    for r in results:
        cells = [r["case"], bench.fmt_time(r["fastadagrad"])]
        for c in columns:
            cells.append(f"{bench.fmt_time(r[c])} ({r[c] / r['fastadagrad']:.2f})" if c in r
                         else "-")
        rows.append(cells)
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines[:1] + ["|" + "---|" * len(head)] + lines[1:])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))) for row in rows)


def collect(quick: bool = False, sizes: Sequence[int] | None = None, sparse_rows: int = 1_000_000,
            batch: int = 4096, threads: int | None = None) -> dict[str, Any]:
    """Time every case (dense sizes, then sparse D = 16, 64 unless sparse_rows is 0) for
    fastadagrad and the installed peers; a JSON-ready dict."""
    skip = missing_peers()
    threads = threads or fastadagrad.get_num_threads()
    set_threads(threads, skip)
    rng = np.random.default_rng(20261127)
    sizes = sizes or [n for n in DENSE_SIZES if not (quick and n > 1_000_000)]
    cases: list[tuple[str, Callable[[], dict[str, Step]]]] = [
        (f"dense {n:.0e}".replace("e+0", "e"), functools.partial(dense_steps, n, rng, skip))
        for n in sizes]
    if sparse_rows > 0:
        cases += [(f"sparse {sparse_rows:.0e}x{d}".replace("e+0", "e"),
                   functools.partial(sparse_steps, sparse_rows, d, batch, rng, skip))
                  for d in SPARSE_DIMS]
    load = os.getloadavg()[0]
    with fastadagrad.backend("cython"):
        results = run(cases, quick)
    return {"header": bench.header(threads), "load": [load, os.getloadavg()[0]],
            "batch": batch, "results": results, "missing": skip,
            "columns": [c for c in COLUMNS if any(c in r for r in results)]}


def report(res: dict[str, Any], markdown: bool = False) -> str:
    load = "load average {:.1f} before, {:.1f} after".format(*res["load"])
    lines = [f"{bench.header_line(res['header'])}; {load}",
             "float32; cell = median time (peer time / fastadagrad time: above 1, fastadagrad "
             f"is faster); sparse: element-wise, a fresh batch of {res['batch']} indices per "
             "step, 25% repeats", "", table(res["results"], res["columns"], markdown)]
    notes = [f"{peer}: {why} (column skipped)" for peer, why in res["missing"].items()]
    return "\n".join(lines + ([""] if notes and markdown else []) + notes)


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastadagrad bench --peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", action="store_true", help="(selects this benchmark)")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples; no 1.6e7 case")
    ap.add_argument("--sizes", type=bench.parse_sizes,
                    help="dense sizes (default 1e3,1e5,1e6,1.6e7)")
    ap.add_argument("--sparse-rows", type=float, default=1e6,
                    help="sparse table rows (default 1e6; 0: no sparse cases)")
    ap.add_argument("--batch", type=int, default=4096, help="sparse batch size (default 4096)")
    ap.add_argument("--threads", type=int,
                    help="threads for every library (default: fastadagrad's)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    res = collect(args.quick, args.sizes, int(args.sparse_rows), args.batch, args.threads)
    print(report(res, args.markdown))
    return 0


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main(sys.argv[1:]))
