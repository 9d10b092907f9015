"""Timing for the benchmarks: calls per sample calibrated to a minimum duration, and several
functions sampled side by side (interleaved), summarised by median, min and max."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def calibrate(fn: Callable[[], Any], min_time: float,
              clock: Callable[[], float] = time.perf_counter) -> int:
    """Calls per sample so that a sample lasts at least `min_time` (after one warm-up call)."""
    fn()
    number = 1
    while True:
        t0 = clock()
        for _ in range(number):
            fn()
        dt = clock() - t0
        if dt >= min_time or number >= 1 << 24:
            return number
        number = max(number * 2, int(number * min_time / max(dt, 1e-9) * 1.2))


def sample(fn: Callable[[], Any], number: int,
           clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call over `number` calls."""
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / number


# Before each sample: a pause, then untimed calls of the function to be sampled. torch's and
# numba's OpenMP threads (GNU libgomp) keep a core busy spinning for ~10 ms after each parallel
# region (measured: 9.5-10.2 ms of CPU during a 50 ms sleep after torch's fused step, 7.6-8.2 ms
# after a numba prange loop, 2 threads). Sampled right after such a function, the float32 step
# at 1.6e7 ran at 73-85% of the bandwidth probe (96-101% with this settling, same hour), and
# fastadagrad's pool, seeing its parallel calls stall, chose serial calls (1e5, 1e6). The pause
# lets the spinning stop; the calls after it wake this function's own threads (a wake-up costs
# 1-2 ms on a virtual machine: with a pause alone, the float16 step at 1.6e7, one call per
# sample, fell to 76-93% of the probe) and let its pool choose on a quiet machine.
SETTLE_PAUSE = 0.012
SETTLE = 0.012


def settle(fn: Callable[[], Any], seconds: float) -> None:
    """Sleep SETTLE_PAUSE seconds, then call fn untimed for at least `seconds`; seconds=0: no
    pause, one untimed call."""
    if seconds > 0:
        time.sleep(SETTLE_PAUSE)
    until = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < until:
        fn()


def interleaved(fns: dict[str, Callable[[], Any]], *, min_time: float, samples: int,
                clock: Callable[[], float] = time.perf_counter,
                settle_time: float = SETTLE) -> dict[str, list[float]]:
    """Time several functions side by side: each is warmed up and calibrated once, then
    sample 1 of each, sample 2 of each, ... (so drifts of a shared machine hit all alike).
    Each sample follows a pause (SETTLE_PAUSE) and `settle_time` seconds of untimed calls of
    its own function (SETTLE): threads the previous function left spinning have stopped, its
    own are warm. settle_time=0 leaves out both (one untimed call remains).
    clock=time.process_time counts this process's CPU time only (one thread: what a loaded
    machine's descheduling does not inflate)."""
    numbers = {k: calibrate(fn, min_time, clock) for k, fn in fns.items()}
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(samples):
        for k, fn in fns.items():
            settle(fn, settle_time)
            out[k].append(sample(fn, numbers[k], clock))
    return out


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}
