"""How many CPU cores this process may really use: its affinity mask and its cgroup's CPU quota.

``os.cpu_count()`` counts the machine's cores, also those a container quota or ``taskset`` keeps
from us; sizing threads and loader workers from it oversubscribes a shared machine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cap_torch_threads", "cgroup_cpu_quota", "usable_cpus"]


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (``cpu.max`` of cgroup v2, or v1's
    ``cpu.cfs_quota_us / cpu.cfs_period_us``); None when there is none or it can't be read."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """Cores this process may run on: the affinity mask, capped by the cgroup quota (rounded up); >= 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cap_torch_threads() -> int:
    """Lowers torch's intra-op threads to :func:`usable_cpus` (OpenMP counts the affinity mask, not a cgroup
    quota); a number the user set with ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` below it is kept.
    Returns the number in use."""
    import torch

    n = usable_cpus()
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
