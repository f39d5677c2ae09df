"""Cold-start phases that are not weight bytes: process start, CUDA context, and the loader's records.

A process start and a CUDA context can only be measured in a fresh process (this one
already has both), so each is timed in a child interpreter: the wall time of
`python -c "import progressive_serve.engine"` is what a serverless worker pays before
its engine exists, and the child's own stopwatch around the first CUDA call is the
context. The median of a few children discounts one slow outlier.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CUDA_CONTEXT_SNIPPET = (
    "import time, torch\n"
    "t = time.perf_counter()\n"
    "torch.cuda.init(); torch.empty(1, device='cuda'); torch.cuda.synchronize()\n"
    "s = time.perf_counter() - t\n"
    "free, total = torch.cuda.mem_get_info()\n"
    "print(s, total - free)\n"
)


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


def cuda_context(repeats: int = 3) -> tuple[float, float]:
    """(median seconds of a fresh process's first CUDA call, GB of device memory the context holds)."""
    secs, held = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", CUDA_CONTEXT_SNIPPET],
            check=True, env=_child_env(), cwd=PROJECT_ROOT, capture_output=True, text=True,
        )  # fmt: skip
        seconds, used = out.stdout.strip().splitlines()[-1].split()
        secs.append(float(seconds))
        held.append(float(used) / 1e9)
    return statistics.median(secs), statistics.median(held)


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
