"""Cold-start phase timings of one engine, in the shape the profile's engine section needs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from progressive_serve.loader import LayerLoadRecord


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0.0 where unavailable).

    This is what "process start + imports" costs by the time the engine is constructed.
    """
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 overall: starttime, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class EngineTimings:
    """Phases of a cold start. `layers` is the loader's per-unit record list (read/copy/bind)."""

    process_s: float = 0.0  # process start to engine construction (interpreter, imports)
    context_s: float = 0.0  # CUDA context creation; 0 on CPU
    alloc_s: float = 0.0  # allocating (zeroing) the model's parameter buffers
    kv_alloc_s: float = 0.0
    capture_s: float = 0.0  # CUDA graph capture of the decode step; 0 when not used
    init_overlapped: bool = False  # KV allocation and capture ran beside the load (after start())
    init_done_s: float | None = None  # start() to KV cache and graph ready, when overlapped
    stage_ready_s: list[float] = field(default_factory=list)  # start() to stage j bound
    serve_ready_s: float | None = None  # start() to the serve_from stage bound and, if overlapped, init done
    layers: list[LayerLoadRecord] = field(default_factory=list)

    def load_bytes(self) -> int:
        return sum(r.nbytes for r in self.layers)

    def load_gbps(self) -> float:
        """Bytes loaded over wall time from the first unit's start to the last unit's end."""
        if not self.layers:
            return 0.0
        span = max(r.end_s for r in self.layers) - min(r.start_s for r in self.layers)
        return self.load_bytes() / span / 1e9 if span > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "process_s": self.process_s,
            "context_s": self.context_s,
            "alloc_s": self.alloc_s,
            "kv_alloc_s": self.kv_alloc_s,
            "capture_s": self.capture_s,
            "init_overlapped": self.init_overlapped,
            "init_done_s": self.init_done_s,
            "stage_ready_s": list(self.stage_ready_s),
            "serve_ready_s": self.serve_ready_s,
            "load_bytes": self.load_bytes(),
            "load_gbps": self.load_gbps(),
            "layers": [r.to_dict() for r in self.layers],
        }


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.s` — seconds, for one phase."""

    def __enter__(self) -> Stopwatch:
        self._t = time.perf_counter()
        self.s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self._t
