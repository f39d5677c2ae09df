"""The run's configuration: what to measure, how much, and where results go. Frozen.

Sizes differ by device on purpose: a CPU run (what CI does) must finish in about a
minute with the small model, a GPU run should measure at the sizes the simulator will
extrapolate to (prompts up to 4k tokens, batches up to 256).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROGRESSIVE_FRACTIONS = (0.75, 0.875, 1.0)  # the seed's 24/28/32 of 32 layers; policies' default


def default_trace_dir() -> Path:
    """$PROGRESSIVE_SERVE_TRACES (the traces package's own variable), else the shared samples."""
    return Path(os.environ.get("PROGRESSIVE_SERVE_TRACES") or "/work/shared/traces")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "progressive-serve"


@dataclass(frozen=True)
class Sizes:
    """How much to measure: table points, repeats, probe sizes."""

    prefill_tokens: tuple[int, ...]
    decode_batches: tuple[int, ...]
    decode_context: int
    repeats: int
    copy_bytes: int
    disk_probe_bytes: int
    quality_tokens: int
    ttft_prompt_tokens: int
    overhead_steps: int
    engine_max_tokens: int
    probe_repeats: int  # disk reads and fresh processes: each costs seconds
    engine_batches: tuple[int, ...] = (1, 4)  # the engine's own continuous batching (validate/batching.py)
    engine_batch_tokens: int = 8
    served_contexts: tuple[int, ...] = (16, 128, 448)  # positions of the engine's own decode step
    # engines serving side by side (validate/sharing.py): how many at once, and each one's request
    sharing_engines: tuple[int, ...] = (1, 2, 3)  # the CPU replay's most engines: one per model
    sharing_prompt_tokens: int = 32
    sharing_tokens: int = 8


CPU_SIZES = Sizes(
    prefill_tokens=(16, 64),
    decode_batches=(1, 4),
    decode_context=64,
    repeats=2,
    copy_bytes=64 * 2**20,
    disk_probe_bytes=1 * 2**30,
    quality_tokens=256,
    ttft_prompt_tokens=32,
    overhead_steps=16,
    engine_max_tokens=512,
    probe_repeats=1,
)
GPU_SIZES = Sizes(
    prefill_tokens=(1, 128, 512, 1024, 2048, 4096),
    decode_batches=(1, 8, 32, 64, 128, 256),
    decode_context=128,
    repeats=5,
    copy_bytes=512 * 2**20,
    # 3 cold reads of it: at 1-3 GB/s each lasts 0.3-1 s, thousands of times a disk's latency
    # (2 GiB until the init-overlap pair needed its share of the GPU call's budget)
    disk_probe_bytes=1 * 2**30,
    quality_tokens=1024,
    ttft_prompt_tokens=128,
    overhead_steps=128,
    engine_max_tokens=4096,
    probe_repeats=3,
    engine_batches=(1, 8, 32),
    engine_batch_tokens=32,
    served_contexts=(128, 1024, 4000),
    # the replay's largest number of engines (RunConfig.replay_max_instances) and its typical
    # request: Azure LLM 2023 prompts of about a thousand tokens, a few dozen tokens out
    sharing_engines=(1, 2, 4),
    sharing_prompt_tokens=1024,
    sharing_tokens=32,
)


@dataclass(frozen=True)
class RunConfig:
    """Everything the command line decided."""

    gpu: bool = False
    small: bool = False
    replay: bool = False
    model: Path | None = None
    quality_from: Path | None = None
    threads: int = 1  # torch intra-op threads on the CPU; see cli.py for why 1
    quality_tokens: int | None = None  # None: the device's default (Sizes.quality_tokens)
    out: Path = Path("runs/validate")
    cache_dir: Path = field(default_factory=default_cache_dir)
    trace_dir: Path = field(default_factory=default_trace_dir)
    network_gbps: float = 1.25
    seed: int = 0
    command: str = "python -m validate"
    policies: tuple[tuple[str, str], ...] = (
        ("full", "none"),
        ("full", "fixed"),
        ("progressive", "none"),
        ("progressive", "fixed"),
    )
    replay_start_min: int = 240
    replay_end_min: int = 300
    replay_compress: float = 60.0
    replay_models: int = 3
    replay_max_per_minute: int = 0
    replay_max_requests: int = 0
    replay_batch: int = 1  # requests an engine serves at once in the replay (continuous batching if > 1)
    replay_max_instances: int = 4  # GPU: at most this many engines at once (validate/replay/capacity.py)
    keepalive_ttl_s: float | None = None  # None: 10 trace minutes, compressed

    @property
    def sizes(self) -> Sizes:
        return GPU_SIZES if self.gpu else CPU_SIZES

    @property
    def dtype(self) -> str:
        """fp16 on the GPU (what serving uses); fp32 on the CPU (fp16 matmuls are slow there)."""
        return "float16" if self.gpu else "float32"

    @property
    def ttl_s(self) -> float:
        return self.keepalive_ttl_s if self.keepalive_ttl_s is not None else 600.0 / self.replay_compress
