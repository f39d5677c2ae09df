"""Hardware probes: how fast a checkpoint comes off the disk and crosses to the device.

Each probe returns a `Bandwidth` (samples and their median) so that the report can show
the spread, and the profile takes the median: a single best run flatters the link and a
mean is dragged by one slow outlier. A cold disk read first drops the files' pages from
the page cache (POSIX_FADV_DONTNEED on each file: clean pages, no root, nobody else's
cache touched), then reads them buffered, with the kernel's readahead, as the loader
does. (A synchronous O_DIRECT read measured 0.37 GB/s where the loader reached 0.64 on
the same virtual disk: it under-reports what a loader gets, so it is only the fallback.)
"""

from __future__ import annotations

import mmap
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from validate.device import repeat_timed

CHUNK = 64 * 1024 * 1024


@dataclass(frozen=True)
class Bandwidth:
    """A bandwidth measurement: bytes moved per sample, seconds per sample, and how."""

    name: str
    nbytes: int
    seconds: tuple[float, ...]
    method: str = ""

    @property
    def samples_gbps(self) -> tuple[float, ...]:
        return tuple(gbps(self.nbytes, s) for s in self.seconds)

    @property
    def gbps(self) -> float:
        """Median GB/s (1 GB = 1e9 bytes, as link datasheets count)."""
        return statistics.median(self.samples_gbps)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "nbytes": self.nbytes,
            "seconds": list(self.seconds),
            "gbps": self.gbps,
            "method": self.method,
        }


def gbps(nbytes: int, seconds: float) -> float:
    """Bytes per second in GB/s; a zero-time sample is an error, not infinity."""
    if seconds <= 0:
        raise ValueError(f"a transfer of {nbytes} bytes cannot take {seconds} s")
    return nbytes / seconds / 1e9


def _read_buffered(paths: Sequence[Path]) -> int:
    total = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total


def _read_direct(paths: Sequence[Path]) -> int:
    """Read with O_DIRECT into a page-aligned buffer; raises OSError where unsupported."""
    total = 0
    buf = mmap.mmap(-1, CHUNK)
    try:
        for p in paths:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
            try:
                while n := os.readv(fd, [buf]):
                    total += n
                    if n < CHUNK:
                        break
            finally:
                os.close(fd)
    finally:
        buf.close()
    return total


def drop_file_cache(paths: Sequence[Path]) -> None:
    """Ask the kernel to forget the cached pages of these files (clean pages only)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_read(paths: Sequence[Path], repeats: int = 3) -> tuple[Bandwidth, Bandwidth]:
    """(cold, warm) read bandwidth of the files that make up a checkpoint."""
    paths = [Path(p) for p in paths]
    nbytes = sum(p.stat().st_size for p in paths)
    cold: list[float] = []
    method = "posix_fadvise(DONTNEED) per file, then a buffered read (what a loader sees)"
    for _ in range(repeats):
        try:
            drop_file_cache(paths)
        except OSError:  # a file system without fadvise: bypass the cache instead
            method = "O_DIRECT read (page cache bypassed)"
            t0 = time.perf_counter()
            _read_direct(paths)
            cold.append(time.perf_counter() - t0)
            continue
        t0 = time.perf_counter()
        _read_buffered(paths)
        cold.append(time.perf_counter() - t0)
    _read_buffered(paths)  # bring the files into the page cache
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _read_buffered(paths)
        warm.append(time.perf_counter() - t0)
    return (
        Bandwidth("disk_cold", nbytes, tuple(cold), method),
        Bandwidth("disk_warm", nbytes, tuple(warm), "buffered read from the page cache"),
    )


def copy_bandwidths(device: str, nbytes: int, repeats: int = 5) -> dict[str, Bandwidth]:
    """Host-to-device and device-to-host GB/s, pinned and pageable.

    On the CPU there is no link to cross: the same copies are host-memory copies, which
    is what a CPU run's "device" costs, and the method says so.
    """
    import torch

    n = nbytes // 4
    if device == "cpu":
        src = torch.ones(n, dtype=torch.float32)
        dst = torch.empty_like(src)
        secs = repeat_timed(lambda: dst.copy_(src), device, repeats)
        how = "host memory copy (CPU run: no PCIe link)"
        out = {k: Bandwidth(k, n * 4, tuple(secs), how) for k in ("h2d_pinned", "h2d_pageable")}
        back = repeat_timed(lambda: src.copy_(dst), device, repeats)
        out["d2h_pinned"] = Bandwidth("d2h_pinned", n * 4, tuple(back), how)
        return out
    gpu = torch.empty(n, dtype=torch.float32, device=device)
    pinned = torch.ones(n, dtype=torch.float32).pin_memory()
    pageable = torch.ones(n, dtype=torch.float32)
    results = {}
    for name, fn in (
        ("h2d_pinned", lambda: gpu.copy_(pinned, non_blocking=True)),
        ("h2d_pageable", lambda: gpu.copy_(pageable)),
        ("d2h_pinned", lambda: pinned.copy_(gpu, non_blocking=True)),
        ("d2h_pageable", lambda: pageable.copy_(gpu)),
    ):
        secs = repeat_timed(fn, device, repeats)
        results[name] = Bandwidth(name, n * 4, tuple(secs), f"torch copy_ of {n * 4 / 2**20:.0f} MiB")
    return results
