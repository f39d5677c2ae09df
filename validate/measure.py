"""The measuring run: every probe in order, with progress shown, into one `Measurements`.

Order matters: quality first (it decides the progressive plan's layer order), then the
hardware probes, then a cold start per plan (each with the checkpoint dropped from the
page cache), then one warm load whose model serves the latency tables, the gate
overhead and, on CUDA, the graph check.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

from tqdm import tqdm

from policies.plan import full_plan, pipelined_plan, progressive_plan
from validate import engine_phases
from validate.coldstart import EngineSpec, make_engine, measure_cold_start, release
from validate.config import PROGRESSIVE_FRACTIONS, RunConfig
from validate.device import select_device
from validate.graphs import check_graph_invariance
from validate.latency import gate_overhead, lerp_seconds_per_step, stage_tables
from validate.limits import block_device_limit, gpu_pcie_limit
from validate.models import checkpoint_summary, choose_model
from validate.probes import copy_bandwidths, disk_read
from validate.results import Measurements
from validate.stage_quality import measure_quality, prose_text, stage_names

STEPS = ("model", "quality", "disk", "copies", "process", "cold starts", "latency", "graph check")
KV_UTILIZATION = 0.9  # share of memory left after weights that the KV cache may take (vLLM's default)


def kv_budget_tokens(memory_gb: float, reserved_gb: float, weight_bytes: int, kv_per_token: int) -> int:
    """Tokens of KV cache that fit next to the weights, as vLLM sizes its cache."""
    free = (memory_gb - reserved_gb) * 1e9 - weight_bytes
    return max(1, int(KV_UTILIZATION * free / kv_per_token)) if free > 0 else 1


def _files_for_probe(files: list[str], limit: int) -> list[str]:
    """The checkpoint's first files adding up to at least `limit` bytes (a 13.5 GB read thrice is slow)."""
    from pathlib import Path

    out, total = [], 0
    for f in files:
        out.append(f)
        total += Path(f).stat().st_size
        if total >= limit:
            break
    return out


def run_measurements(cfg: RunConfig) -> Measurements:
    """Measure everything `cfg` asks for; progress goes to stderr."""
    import torch

    bar = tqdm(total=len(STEPS), desc="validate", unit="step", leave=True)

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    dev = select_device(cfg.gpu)
    device = dev.torch_device
    sizes = cfg.sizes
    step("model")
    choice = choose_model(cfg)
    dtype_bytes = torch.empty(0, dtype=getattr(torch, cfg.dtype)).element_size()
    ck = checkpoint_summary(choice.ckpt_dir, dtype_bytes)
    ck["source"] = choice.source
    files = ck.pop("files")
    n = ck["num_layers"]
    bar.update()
    step("quality")
    text, text_source = prose_text()
    stages, importance, _ = measure_quality(
        choice.quality_dir, text, sizes.quality_tokens, n, choice.quality_is_stand_in
    )
    plan_importance = None if choice.quality_is_stand_in else importance
    plans = [full_plan(n), pipelined_plan(n), progressive_plan(n, PROGRESSIVE_FRACTIONS, plan_importance)]
    bar.update()
    step("disk")
    probe_files = _files_for_probe(files, sizes.disk_probe_bytes)
    disk_cold, disk_warm = disk_read(probe_files, repeats=sizes.repeats)
    bar.update()
    step("copies")
    bw = {b.name: b for b in (disk_cold, disk_warm)}
    bw.update(copy_bandwidths(device, sizes.copy_bytes, repeats=sizes.repeats))
    bar.update()
    step("process")
    process_s = engine_phases.process_start_s()
    context_s, reserved_gb = engine_phases.cuda_context() if dev.kind == "cuda" else (0.0, 0.0)
    bar.update()
    step("cold starts")
    spec = EngineSpec(choice.ckpt_dir, device, cfg.dtype, dev.kind == "cuda", sizes.engine_max_tokens)
    gen = torch.Generator().manual_seed(cfg.seed)
    vocab = int(__import__("json").loads((choice.ckpt_dir / "config.json").read_text())["vocab_size"])
    prompt = torch.randint(0, vocab, (sizes.ttft_prompt_tokens,), generator=gen).tolist()
    cold_starts, full_timings = [], None
    for plan in plans:
        cs, timings = measure_cold_start(
            spec, plan, prompt, [__import__("pathlib").Path(f) for f in files], process_s, context_s
        )
        cold_starts.append(cs)
        full_timings = full_timings or timings
    bar.update()
    step("latency")
    engine = make_engine(spec, full_plan(n))
    engine.start()
    engine.wait_until_loaded()
    warm_timings = engine.timings.to_dict()
    prog = plans[2]
    prefill, decode = stage_tables(engine.model, prog, stage_names(prog), device, sizes)
    lerp_s = lerp_seconds_per_step(engine.shape.hidden_size, n, cfg.dtype, device, sizes.repeats)
    overhead = gate_overhead(engine, prompt, sizes.overhead_steps, lerp_s)
    overhead["lerp_s_per_step"] = lerp_s
    release(engine)
    bar.update()
    step("graph check")
    graph = check_graph_invariance(spec, prog)
    bar.update()
    bar.close()

    h2d = bw["h2d_pinned"].gbps
    cold_load = engine_phases.load_span_gbps(full_timings["layers"])
    warm_load = engine_phases.load_span_gbps(warm_timings["layers"])
    eff, slowest = engine_phases.loader_efficiency(cold_load, [disk_cold.gbps, h2d])
    eff_warm, _ = engine_phases.loader_efficiency(warm_load, [h2d])
    from validate.probes import Bandwidth

    loader_bw = Bandwidth(
        "weight_loader",
        int(ck["total_bytes"]),
        (ck["total_bytes"] / 1e9 / cold_load,) if cold_load else (1.0,),
        "staged loader, cold, full plan",
    )
    bandwidth = {k: b.to_dict() for k, b in bw.items()}
    bandwidth["weight_loader"] = loader_bw.to_dict()
    engine = {
        "process_start_s": process_s,
        "cuda_context_s": context_s,
        "reserved_gb": reserved_gb,
        "weight_alloc_s": full_timings["alloc_s"],
        "kv_cache_alloc_s": full_timings["kv_alloc_s"],
        "graph_capture_s": full_timings["capture_s"],
        **engine_phases.summarize_layers(full_timings["layers"]),
        "load_gbps_cold": cold_load,
        "load_gbps_warm": warm_load,
        "loader_efficiency": eff,
        "loader_efficiency_warm": eff_warm,
        "loader_link_gbps": slowest,
        "loader_link": "slowest of disk (cold) and host-to-device (pinned)",
    }
    limits = {
        "pcie": _limit(gpu_pcie_limit(dev.pci_bus_id)),
        "disk": _limit(block_device_limit(choice.ckpt_dir)),
    }
    device_d = {
        "kind": dev.kind,
        "name": dev.name,
        "memory_gb": dev.memory_gb,
        "host_dram_gb": engine_phases_host_dram(),
        "disk_gb": shutil.disk_usage(choice.ckpt_dir).total / 1e9,
        "versions": dev.versions,
    }
    max_batch = max(sizes.decode_batches)
    notes = {
        "quality": f"perplexity on {sizes.quality_tokens} tokens of {text_source}",
        "engine.loader_efficiency": (
            f"cold full-plan load {cold_load:.3g} GB/s over the slowest link {slowest:.3g} GB/s; "
            f"from the page cache the loader reached {eff_warm:.2f} of pinned H2D"
        ),
        "models[0].max_tokens_in_flight": f"{KV_UTILIZATION:.0%} of the memory left after weights and reserve",
        "models[0].decode": "model forward with a batch KV cache (the engine itself serves batch 1)",
    }
    if dev.kind == "cpu":
        notes["device"] = "CPU run: 'GPU' memory is host DRAM and 'PCIe' is a host memory copy"
    return Measurements(
        command=cfg.command,
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        device=device_d,
        model_name=choice.name,
        checkpoint=ck,
        bandwidth=bandwidth,
        limits=limits,
        engine=engine,
        per_layer=full_timings["layers"],
        prefill=prefill,
        decode=decode,
        cold_starts=cold_starts,
        stages=stages,
        gate_overhead=overhead,
        graph_check=graph,
        layer_importance=None if choice.quality_is_stand_in else importance,
        max_batch=max_batch,
        max_tokens_in_flight=kv_budget_tokens(
            dev.memory_gb, reserved_gb, int(ck["total_bytes"]), int(ck["kv_bytes_per_token"])
        ),
        notes=notes,
    )


def _limit(lim) -> dict | None:
    return None if lim is None else {"gbps": lim.gbps, "description": lim.description}


def engine_phases_host_dram() -> float:
    from validate.device import host_memory_gb

    return host_memory_gb()


_ = time  # kept for callers timing the whole run
