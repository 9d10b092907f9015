"""The default thread count: the CPUs this process may actually use, not the machine's cores.

OMP_NUM_THREADS (its first entry) wins when it is set to a positive integer; otherwise the
number of CPUs in the process's affinity mask (os.sched_getaffinity: taskset, cpusets), capped by
the cgroup CPU quota (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us, as set by
`docker --cpus` or Kubernetes CPU limits), rounded up.
"""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def omp_num_threads(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The first entry of OMP_NUM_THREADS ("4" or "4,2") when it is a positive integer."""
    value = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (the core count where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _quota(quota: float, period: float) -> float | None:
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs allowed by the cgroup quota of this process (the tightest one on its path), or None."""
    limits: list[float] = []
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":   # v2: cpu.max = "<quota|max> <period>" in each ancestor
            directory = os.path.join(root, path.lstrip("/"))
            while True:
                fields = (_read(os.path.join(directory, "cpu.max")) or "").split()
                if len(fields) == 2 and fields[0] != "max":
                    try:
                        limit = _quota(float(fields[0]), float(fields[1]))
                    except ValueError:
                        limit = None
                    if limit is not None:
                        limits.append(limit)
                if os.path.normpath(directory) == os.path.normpath(root):
                    break
                directory = os.path.dirname(directory)
        elif "cpu" in controllers.split(","):   # v1
            for base in (os.path.join(root, "cpu,cpuacct"), os.path.join(root, "cpu")):
                quota = _read(os.path.join(base, path.lstrip("/"), "cpu.cfs_quota_us"))
                period = _read(os.path.join(base, path.lstrip("/"), "cpu.cfs_period_us"))
                if quota is None or period is None:
                    quota = _read(os.path.join(base, "cpu.cfs_quota_us"))
                    period = _read(os.path.join(base, "cpu.cfs_period_us"))
                try:
                    limit = _quota(float(quota or 0), float(period or 0))
                except ValueError:
                    limit = None
                if limit is not None:
                    limits.append(limit)
                    break
    return min(limits) if limits else None


def default_threads() -> int:
    """OMP_NUM_THREADS if set, else the usable CPUs: affinity mask capped by the cgroup quota."""
    forced = omp_num_threads()
    if forced is not None:
        return forced
    n = affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return n
