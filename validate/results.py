"""Everything one run measured, as plain data that round-trips through JSON.

Measuring is slow and needs the device; building the profile, the report and the plots
is quick and does not. Keeping the measurements as their own record (written next to
the profile as `measurements.json`) lets those steps be tested with hand-made numbers
and re-run without re-measuring.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class LatencyTable:
    """Seconds against x (prompt tokens for prefill, batch size for decode), one stage's worth."""

    x: list[float]
    seconds: list[float]


@dataclass
class ColdStart:
    """Time to first token from cold for one staging plan, and the parts it is made of.

    `parts` are disjoint and in order (engine init, weight read/copy/bind until the
    serving stage, prefill of the first token, ...) so that they sum to about `ttft_s`;
    what is left is reported as "other".
    """

    plan: str
    ttft_s: float
    stage_at_first_token: int
    layers_at_first_token: int
    full_load_s: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class StageQuality:
    """One stage of the progressive plan: how many layers it binds and what that costs in quality."""

    name: str
    num_layers: int
    quality: float
    perplexity: float | None = None
    token_agreement: float | None = None
    latency_scale: float = 1.0
    source: str = ""


@dataclass
class Measurements:
    """One run of `python -m validate`; see the module docstring for why it is kept apart."""

    command: str
    date: str
    device: dict
    model_name: str
    checkpoint: (
        dict  # num_layers, layer_bytes (mean), embedding_bytes, head_bytes, total_bytes, kv_bytes_per_token
    )
    bandwidth: dict[str, dict]  # name -> Bandwidth.to_dict()
    limits: dict[str, dict | None]  # "pcie", "disk" -> {"gbps", "description"} or None
    engine: dict[str, float]  # process_start_s, cuda_context_s, weight_alloc_s, kv_cache_alloc_s, ...
    per_layer: list[dict]  # per decoder layer: read_s, copy_s, bind_s
    prefill: dict[str, LatencyTable]  # "full" and each stage name
    decode: dict[str, LatencyTable]
    cold_starts: list[ColdStart]
    stages: list[StageQuality]
    gate_overhead: dict
    graph_check: dict
    layer_importance: list[float] | None = None
    max_batch: int = 1
    max_tokens_in_flight: int = 1
    notes: dict[str, str] = field(default_factory=dict)
    run_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step of this run
    # the engine's continuous batching (validate/batching.py)
    batching: list[dict] = field(default_factory=list)
    # the engine's own decode step vs context (validate/latency.py)
    served_decode: dict = field(default_factory=dict)
    # cold start with and without init overlapped, and the simulator's saving (validate/init_overlap.py)
    init_overlap: dict = field(default_factory=dict)
    # k engines serving side by side, and the compute_slots that implies (validate/sharing.py)
    sharing: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Measurements:
        d = dict(d)
        d["prefill"] = {k: LatencyTable(**v) for k, v in d["prefill"].items()}
        d["decode"] = {k: LatencyTable(**v) for k, v in d["decode"].items()}
        d["cold_starts"] = [ColdStart(**c) for c in d["cold_starts"]]
        d["stages"] = [StageQuality(**s) for s in d["stages"]]
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Measurements:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def bandwidth_gbps(self, name: str) -> float | None:
        b = self.bandwidth.get(name)
        return None if b is None else float(b["gbps"])
