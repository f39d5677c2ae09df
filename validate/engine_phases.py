"""Cold-start phases that are not weight bytes: process start, CUDA context, and the loader's records.

A process start and a CUDA context can only be measured in a fresh process (this one
already has both), so each is timed in a child interpreter: the wall time of
`python -c "import progressive_serve.engine"` is what a serverless worker pays before
its engine exists, and the child's own stopwatch around the first CUDA call is the
context. The median of a few children discounts one slow outlier. The memory a context
holds is the child's view of used memory minus everyone else's, read in this process just
before the child (`probe_context`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CUDA_CONTEXT_SNIPPET = (
    "import time, torch\n"
    "t = time.perf_counter()\n"
    "torch.cuda.init(); torch.empty(1, device='cuda'); torch.cuda.synchronize()\n"
    "s = time.perf_counter() - t\n"
    "free, total = torch.cuda.mem_get_info()\n"
    "print(s, total - free)\n"
)


class DeviceMemory(Protocol):
    """The two device calls the context probe needs from the measuring (parent) process."""

    def quiesce(self) -> None:
        """Finish this process's work and hand its cached blocks back (sync, empty_cache)."""

    def used_bytes(self) -> int:
        """Device-wide bytes in use now (total - free), whoever holds them."""


class TorchDeviceMemory:
    """`DeviceMemory` on CUDA device 0, through the engine's one owner of device-wide calls."""

    def quiesce(self) -> None:
        import torch

        from progressive_serve import device_guard

        dev = torch.device("cuda:0")
        device_guard.synchronize(dev)
        device_guard.empty_cache(dev)

    def used_bytes(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info(0)
        return int(total - free)


@dataclass(frozen=True)
class ContextProbe:
    """Median seconds of a fresh process's first CUDA call and the bytes its context holds."""

    seconds: float
    own_bytes: int
    samples: tuple[tuple[float, int], ...]  # (seconds, own bytes) per child
    parent_drift_bytes: int  # largest change of everyone else's usage across one child: ~0 if clean

    @property
    def reserved_gb(self) -> float:
        return self.own_bytes / 1e9


def probe_context(
    memory: DeviceMemory, run_child: Callable[[], tuple[float, int]], repeats: int
) -> ContextProbe:
    """Only the child's own reservation: everyone else's usage is read just before each child
    (this process quiesced first, so its cached blocks are gone and nothing is in flight) and
    subtracted from what the child sees. The child's `total - free` alone counted this
    process's context and the copy probe's 512 MiB cache as well."""
    samples, drift = [], 0
    for _ in range(repeats):
        memory.quiesce()
        before = memory.used_bytes()
        seconds, child_used = run_child()
        after = memory.used_bytes()
        drift = max(drift, abs(after - before))
        samples.append((seconds, max(0, child_used - before)))
    return ContextProbe(
        statistics.median(s for s, _ in samples),
        int(statistics.median(b for _, b in samples)),
        tuple(samples),
        drift,
    )


def _context_child() -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", CUDA_CONTEXT_SNIPPET],
        check=True, env=_child_env(), cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    seconds, used = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(float(used))


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def process_start_s(repeats: int = 3) -> float:
    """Median wall seconds for a fresh interpreter to import the engine (interpreter + torch + engine)."""
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import progressive_serve.engine"],
            check=True, env=_child_env(), cwd=PROJECT_ROOT, capture_output=True,
        )  # fmt: skip
        secs.append(time.perf_counter() - t0)
    return statistics.median(secs)


def cuda_context(repeats: int = 3) -> ContextProbe:
    """A fresh process's first CUDA call, timed in children; the memory only their context holds."""
    return probe_context(TorchDeviceMemory(), _context_child, repeats)


def summarize_layers(records: list[dict]) -> dict[str, float]:
    """Per-layer means of read, copy and bind seconds over decoder layers (the embedding unit excluded)."""
    layers = [r for r in records if r.get("layer") is not None]
    if not layers:
        return {"read_s_per_layer": 0.0, "copy_s_per_layer": 0.0, "bind_s_per_layer": 0.0}
    return {
        "read_s_per_layer": statistics.fmean(r["read_s"] for r in layers),
        "copy_s_per_layer": statistics.fmean(r["copy_s"] for r in layers),
        "bind_s_per_layer": statistics.fmean(r["bind_s"] for r in layers),
    }


def load_span_gbps(records: list[dict]) -> float:
    """Bytes loaded over the wall time from the first unit's start to the last unit's end."""
    if not records:
        return 0.0
    span = max(r["end_s"] for r in records) - min(r["start_s"] for r in records)
    total = sum(r["nbytes"] for r in records)
    return total / span / 1e9 if span > 0 else 0.0


def loader_efficiency(load_gbps: float, link_gbps: list[float]) -> tuple[float, float]:
    """(efficiency, slowest link GB/s): the loader's rate as a fraction of the slowest link it crossed.

    Clamped to (0, 1]: a loader cannot beat its slowest link, and a measurement that
    says so means the link was under-measured (e.g. a page-cache hit on a "cold" read).
    """
    links = [g for g in link_gbps if g and g > 0]
    if not links or load_gbps <= 0:
        return 1.0, 0.0
    slowest = min(links)
    return min(1.0, max(1e-6, load_gbps / slowest)), slowest
