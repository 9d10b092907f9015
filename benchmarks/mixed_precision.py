"""Mixed precision speed (issue 15 §3), side by side in one run: fastadagrad's float32 step, its
bfloat16 and float16 steps (param and grad in the half dtype, float32 accumulator: 14 bytes per
element instead of 20), the bandwidth probe over the same arrays' bytes, and
torch.optim.Adagrad(fused=True) on bfloat16 (its state is bfloat16 too: 10 bytes per element),
at 1e3 and 1.6e7 elements. Medians of interleaved samples (`bench_timing.interleaved`: each
after a 12 ms pause and 12 ms of untimed calls of its own step, so torch's spinning OpenMP
threads do not run into the next step's sample); the machine load is printed with the result
(timings on a shared machine move by +-25%).

    python benchmarks/mixed_precision.py [--sizes 1e3,1.6e7] [--repeats 21] [--threads N]

"vs f32" = float32 step time / this step's time; "% of probe" = (probe time * bytes of this
step / bytes of the probe) / this step's time (the probe moves float32's 20 bytes per element);
"torch / this" = torch's fused bfloat16 step time / this step's time. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import fastadagrad
from fastadagrad import bench, bench_timing, kernels


def cases(n: int, rng: np.random.Generator) -> dict[str, tuple[object, int]]:
    """{name: (zero-argument step, bytes moved per element)}."""
    import ml_dtypes

    out: dict[str, tuple[object, int]] = {}
    base = [rng.uniform(-1, 1, n).astype(np.float32) for _ in range(2)]
    acc = rng.uniform(0.1, 1, n).astype(np.float32)
    f32 = [base[0].copy(), base[1].copy(), acc.copy()]
    out["float32 step"] = (lambda: fastadagrad.adagrad_update(*f32, lr=1e-6), 20)
    for name, dt in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        arrays = [base[0].astype(dt), base[1].astype(dt), acc.copy()]
        out[f"{name} step"] = (lambda a=arrays: fastadagrad.adagrad_update(*a, lr=1e-6), 14)
    probe = [x.copy() for x in (base[0], base[1], acc)]
    out["probe (float32)"] = (lambda: kernels.bandwidth_probe(*probe), 20)
    try:
        import torch
    except ImportError:
        print("torch is not installed: no torch column")
        return out
    p = torch.nn.Parameter(torch.from_numpy(base[0]).to(torch.bfloat16))
    p.grad = torch.from_numpy(base[1]).to(torch.bfloat16)
    opt = torch.optim.Adagrad([p], lr=1e-6, eps=1e-10, fused=True)
    out["torch fused bfloat16"] = (opt.step, 10)
    return out


def measure(n: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    steps = cases(n, rng)
    min_time = 0.002                        # a sample: one call at 1.6e7, ~100 calls at 1e3
    times = bench_timing.interleaved({k: fn for k, (fn, _b) in steps.items()},
                                     min_time=min_time, samples=repeats)
    med = {k: float(np.median(v)) for k, v in times.items()}
    probe = med["probe (float32)"]
    torch_t = med.get("torch fused bfloat16")
    print(f"\n{n:,} elements (samples of >= {min_time * 1e3:g} ms, {repeats} samples, each after "
          f"a {bench_timing.SETTLE_PAUSE * 1e3:g} ms pause and {bench_timing.SETTLE * 1e3:g} ms "
          "of untimed calls of the same step)")
    print(f"{'step':24s} {'median':>10s} {'vs f32':>7s} {'% of probe':>10s} {'torch / this':>12s}")
    for name, (fn, nbytes) in steps.items():
        t = med[name]
        unit = f"{t * 1e6:8.2f} us" if t < 1e-3 else f"{t * 1e3:8.2f} ms"
        pct = 100 * probe * nbytes / 20 / t
        vs_torch = f"{torch_t / t:12.2f}" if torch_t else f"{'-':>12s}"
        print(f"{name:24s} {unit:>10s} {med['float32 step'] / t:7.2f} {pct:9.0f}% {vs_torch}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e3,1.6e7")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        fastadagrad.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"{bench.cpu_model()}, ISA path {fastadagrad.get_isa()}, {fastadagrad.get_num_threads()} threads, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for size in args.sizes.split(","):
        measure(int(float(size)), args.repeats)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
