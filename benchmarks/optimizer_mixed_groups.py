"""AdaGrad on many small bfloat16 arrays (issue 15 §2): a group's step in one compiled call per
dtype combination (now) against the array-by-array loop it replaced, side by side in one run.

    python benchmarks/optimizer_mixed_groups.py [--arrays 200] [--size 1000] [--repeats 31]

Both optimizers hold the same arrays (bfloat16 params and grads, float32 accumulators; with
--master, float32 master weights too); "array by array" replaces the group's batches by one
item per array (the old path: one update_validated call each); "no C gate" validates the
grads in Python, as every float16/bfloat16 group did before kernels.MixedGroupGate. Whole
`opt.step(grads)` calls (validation included), and the writes alone (backend.apply_steps on
the validated grads, as the step calls it). Medians of interleaved samples; the machine load is printed. Nothing
here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from typing import Any, Callable

import numpy as np

import fastadagrad
from fastadagrad import _backend, bench


def per_array_items(group: Any) -> Any:
    """The old step_items: one item per dense array (update_validated each)."""
    def items(grads: list[Any], sparse: dict[int, Any]) -> list[tuple[Any, ...]]:
        assert not sparse
        return [(p, g, a, None, None, m)
                for p, g, a, m in zip(group.params, grads, group.accums, group.masters)]
    return items


def main() -> None:
    import ml_dtypes

    ap = argparse.ArgumentParser()
    ap.add_argument("--arrays", type=int, default=200)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--master", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    bf16 = ml_dtypes.bfloat16
    base = [rng.standard_normal(args.size).astype(bf16) for _ in range(args.arrays)]
    grads = [(rng.standard_normal(args.size) * 1e-3).astype(bf16) for _ in base]
    opts = {}
    for name in ("grouped (one call)", "array by array", "grouped, no C gate"):
        opt = fastadagrad.AdaGrad([p.copy() for p in base], lr=1e-6, master=args.master)
        if name == "array by array":
            opt.groups[0].step_items = per_array_items(opt.groups[0])  # type: ignore[method-assign]
        if name == "grouped, no C gate":   # the grads validated in Python (before the gate)
            opt.groups[0].gates.clear()
        opts[name] = opt
    steps: dict[str, Callable[[], Any]] = {f"opt.step, {k}": partial(o.step, grads)
                                           for k, o in opts.items()}
    # the writes alone (what the change is about; validation above is the same for both):
    # backend.apply_steps on already validated grads
    backend = _backend.current()
    for name, opt in list(opts.items())[:2]:   # (the gate does not take part in the writes)
        group = opt.groups[0]
        item_list = group.step_items(grads, {})
        step = (_Counter(), None, grads, group.opts_at(1), group.opts_at(1).clr, item_list)
        steps[f"writes only, {name}"] = partial(backend.apply_steps, [step])
    inner = 20
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        for _ in range(5):
            fn()
    for _ in range(args.repeats):
        for name, fn in steps.items():   # interleaved
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    a, b = (opts[k].groups[0].params for k in list(opts)[:2])   # stepped the same times
    same = all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    print(f"{args.arrays} x {args.size:,} bfloat16 arrays (float32 accumulators"
          f"{', float32 master weights' if args.master else ''}), one group; "
          f"{fastadagrad.get_num_threads()} threads, ISA {fastadagrad.get_isa()}, "
          f"{bench.cpu_model()}; load {os.getloadavg()[0]:.2f} (before: see uptime)")
    print(f"medians of {args.repeats} interleaved samples of {inner} calls; same bytes: {same}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        ref = med[f"{name.split(',')[0]}, array by array"]
        print(f"  {name:36s} {t * 1e6:9.1f} us   {ref / t:5.2f}x")


class _Counter:
    step = 0


if __name__ == "__main__":
    main()
