"""A bench process's own memory: now, and at its peak (Linux)."""

from __future__ import annotations

import os
import resource


def current_rss_mb() -> float:
    """Resident memory of this process now, MB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """The most resident memory this process has held, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
