"""Turn measurements into a simulator profile, checked by the simulator's own schema.

`sim/profile.py` is the one place the schema lives: the dict built here goes through
`profile_from_dict` before it is written, so a profile that `validate` writes is one the
simulator can load. Facts the schema has no field for (cold-start parts per plan, gate
overhead, CUDA-graph invariance, per-stage latency tables, link limits) go under
`provenance.measured`, and every number that was assumed rather than measured is named
in `provenance.notes`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from sim.profile import SCHEMA_VERSION, ProfileError, profile_from_dict
from validate.errors import ValidateError
from validate.results import LatencyTable, Measurements

DEFAULT_NETWORK_GBPS = 1.25  # 10 GbE; no remote storage is reachable to measure


def _table(t: LatencyTable) -> dict:
    return {"x": [float(v) for v in t.x], "seconds": [max(0.0, float(s)) for s in t.seconds]}


def latency_scale(stage: LatencyTable, full: LatencyTable) -> float:
    """How much faster (below 1) or slower a stage serves than the full model: the median ratio."""
    ratios = [
        s / f
        for x, s in zip(stage.x, stage.seconds, strict=False)
        for fx, f in zip(full.x, full.seconds, strict=False)
        if fx == x and f > 0
    ]
    return float(statistics.median(ratios)) if ratios else 1.0


def build_profile_dict(m: Measurements, name: str, network_gbps: float = DEFAULT_NETWORK_GBPS) -> dict:
    """The profile as a plain dict in the schema of `sim.profile` (not yet validated)."""
    notes = dict(m.notes)
    h2d = m.bandwidth_gbps("h2d_pinned")
    d2h = m.bandwidth_gbps("d2h_pinned")
    pcie = m.limits.get("pcie")
    if pcie is None:
        pcie_limit = max(h2d or 0.0, d2h or 0.0)
        notes["hardware.pcie_limit_gbps"] = (
            "no PCIe link limit was reported; set to the fastest measured copy"
        )
    else:
        pcie_limit = float(pcie["gbps"])
    notes.setdefault(
        "hardware.network_gbps", f"not measured (no remote storage reachable); assumed {network_gbps} GB/s"
    )
    ck = m.checkpoint
    eng = m.engine
    ssd_read = m.bandwidth_gbps("disk_cold")
    loader_cold = float(eng.get("load_gbps_cold", 0.0))
    if ssd_read is not None and loader_cold > ssd_read:
        # the loader read the same cold files faster than the probe: the probe under-measured the disk
        notes["hardware.ssd_read_gbps"] = (
            f"raised from the probe's {ssd_read:.3g} GB/s to the {loader_cold:.3g} GB/s the staged loader reached cold"
        )
        ssd_read = loader_cold
    bind_s = float(eng.get("bind_s_per_layer", 0.0))
    weights = int(ck["total_bytes"])
    wake = weights / 1e9 / h2d + bind_s * int(ck["num_layers"]) if h2d else 0.5
    notes.setdefault(
        "engine.wake_from_sleep_s", "derived: weight bytes / pinned H2D GB/s + per-layer bind x layers"
    )
    if eng.get("loader_efficiency_warm"):
        notes.setdefault(
            "engine.loader_efficiency_dram",
            f"the full plan's load from the page cache, {float(eng.get('load_gbps_warm', 0.0)):.3g} GB/s, "
            "over pinned host-to-device",
        )
    full_prefill, full_decode = m.prefill["full"], m.decode["full"]
    stages = []
    for s in m.stages:
        scale = s.latency_scale
        if s.name in m.decode:
            scale = latency_scale(m.decode[s.name], full_decode)
        stages.append(
            {
                "name": s.name,
                "num_layers": s.num_layers,
                "quality": min(1.0, max(0.0, s.quality)),
                "perplexity": s.perplexity,
                "token_agreement": s.token_agreement,
                "latency_scale": scale,
                "source": s.source,
            }
        )
    model = {
        "name": m.model_name,
        "num_layers": int(ck["num_layers"]),
        "layer_bytes": int(ck["layer_bytes"]),
        "embedding_bytes": int(ck["embedding_bytes"]),
        "head_bytes": int(ck["head_bytes"]),
        "kv_bytes_per_token": int(ck["kv_bytes_per_token"]),
        "max_batch": int(m.max_batch),
        "max_tokens_in_flight": int(m.max_tokens_in_flight),
        "prefill": _table(full_prefill),
        "decode": _table(full_decode),
        "stages": stages,
    }
    if m.layer_importance and len(m.layer_importance) == model["num_layers"]:
        model["layer_importance"] = [float(v) for v in m.layer_importance]
    measured_extra = {
        "limits": m.limits,
        "bandwidth": m.bandwidth,
        "engine_phases": eng,
        "cold_start": [c.__dict__ for c in m.cold_starts],
        "gate_overhead": m.gate_overhead,
        "cuda_graph": m.graph_check,
        "batching": m.batching,
        "served_decode": m.served_decode,
        "init_overlap": m.init_overlap,
        "stage_latency": {
            k: {"prefill": _table(m.prefill[k]), "decode": _table(m.decode[k])}
            for k in m.prefill
            if k != "full" and k in m.decode
        },
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "provenance": {
            "kind": "measured",
            "command": m.command,
            "date": m.date,
            "device": m.device.get("name", "unknown"),
            "versions": m.device.get("versions", {}),
            "notes": notes,
            "measured": measured_extra,
        },
        "hardware": {
            "gpu_name": m.device.get("name", "unknown"),
            "gpu_memory_gb": float(m.device.get("memory_gb", 0.0)),
            "gpu_reserved_gb": float(eng.get("reserved_gb", 0.0)),
            "compute_slots": float(m.device.get("compute_slots", 1.0)),
            "h2d_gbps": h2d,
            "h2d_pageable_gbps": m.bandwidth_gbps("h2d_pageable"),
            "d2h_gbps": d2h,
            "pcie_limit_gbps": pcie_limit,
            "ssd_read_gbps": ssd_read,
            "ssd_warm_gbps": m.bandwidth_gbps("disk_warm"),
            "network_gbps": network_gbps,
            "host_dram_gb": float(m.device.get("host_dram_gb", 0.0)),
            "ssd_gb": float(m.device.get("disk_gb", 0.0)),
        },
        "engine": {
            "process_start_s": float(eng.get("process_start_s", 0.0)),
            "cuda_context_s": float(eng.get("cuda_context_s", 0.0)),
            "kv_cache_alloc_s": float(eng.get("kv_cache_alloc_s", 0.0)),
            "graph_capture_s": float(eng.get("graph_capture_s", 0.0)),
            "bind_s_per_layer": bind_s,
            "loader_efficiency": min(1.0, max(1e-6, float(eng.get("loader_efficiency", 1.0)))),
            "wake_from_sleep_s": wake,
            **(
                {"loader_efficiency_dram": min(1.0, max(1e-6, float(eng["loader_efficiency_warm"])))}
                if eng.get("loader_efficiency_warm")
                else {}
            ),
        },
        "models": [model],
    }


def validate_profile_dict(d: dict, source: str = "<measured profile>") -> None:
    """Raise a one-line ValidateError if the simulator would refuse this profile."""
    try:
        profile_from_dict(json.loads(json.dumps(d)), source)
    except ProfileError as e:
        raise ValidateError(f"the measured profile does not pass sim.profile: {e}") from None


def write_profile(d: dict, path: str | Path) -> Path:
    """Validate through `sim.profile.profile_from_dict`, then write; nothing invalid reaches disk."""
    path = Path(path)
    validate_profile_dict(d, str(path))
    path.write_text(json.dumps(d, indent=2) + "\n")
    return path
