"""The replay check end to end: segment, engine replay per policy, simulator per policy, error table.

The simulator gets a *replay profile*: the measured profile adjusted to what this in-process
server does, each adjustment from the same measuring run:
- the two phases it never pays set to zero (process start, CUDA context: one process hosts
  every engine here);
- the engine's batch (1 unless `--replay-batch`) with the engine's KV size;
- the decode step the engine serves with: its own step (`served_decode`, CUDA graphs on a
  GPU) at batch 1, its continuous batching's steps (`batching`) above, rather than the model
  forward of the latency tables (on the first H200: 8.2 ms a token served, 21 ms the table);
- the host-to-device link at the rate the engine's loader reached from the page cache
  (`load_gbps_warm`, over the loader efficiency), where that is below the link: every engine
  loads through this one process, so its loads share that rate (on the H200, four 13.5 GB
  loads at once took about four times one load's 3.7 s), as loads share a link in the
  simulator.
Everything else (disk, allocation, prefill tables, stage quality) is the measured profile's,
so the error measures the simulator's model, not a mismatch of inputs.
"""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from contracts.plan import StagePlan, full_plan, pipelined_plan, progressive_plan
from sim.profile import profile_from_dict
from validate.coldstart import EngineSpec
from validate.config import PROGRESSIVE_FRACTIONS, RunConfig
from validate.errors import ValidateError
from validate.profile_writer import write_profile
from validate.replay.capacity import ReplayCapacity, activation_bytes, measured_free_bytes, size_replay
from validate.replay.compare import PolicyError, compare_policy, format_table, markdown_table
from validate.replay.plots import plot_replay_ttft
from validate.replay.runner import ReplayServer, ServerSpec
from validate.replay.segment import SegmentSpec, build_segment, write_requests_csv
from validate.replay.simulate import run_sim, sim_cli_available, sim_command, sim_refills


@dataclass
class ReplayOutcome:
    errors: list[PolicyError]
    table: str
    markdown: str
    segment: pd.DataFrame
    details: dict


def footprint_bytes(profile: dict) -> int:
    """GPU bytes one instance of the profile's model holds, as the simulator counts them."""
    return profile_from_dict(profile, "replay profile").models[0].footprint_bytes


def replay_profile(
    profile: dict, engine_max_tokens: int, max_instances: int | None = None, batch: int = 1
) -> dict:
    """The measured profile adjusted to what the in-process replay server does (see module doc).

    `max_instances` caps the device's memory at that many instances: on the CPU, where
    every instance computes on the same few cores, unbounded scale-out would measure core
    contention (which the simulator models only as `hardware.compute_slots` engines at full
    speed, not the memory bandwidth they share) rather than loading and keep-alive.
    """
    d = copy.deepcopy(profile)
    d["name"] = f"{profile['name']}-replay"
    d["engine"]["process_start_s"] = 0.0
    d["engine"]["cuda_context_s"] = 0.0
    for m in d["models"]:
        m["max_batch"] = batch
        m["max_tokens_in_flight"] = engine_max_tokens * batch  # one KV slot of max_tokens per sequence
        # Every trace model of the segment is served from this one checkpoint: the node's page
        # cache holds it once for all of them (each engine still holds its own copy on the GPU).
        weights = m["num_layers"] * m["layer_bytes"] + m["embedding_bytes"] + m["head_bytes"]
        m["shared_base"] = {"name": f"{m['name']}-checkpoint", "bytes": weights, "share_gpu_memory": False}
    note = (
        "for replay only: process start and CUDA context 0 (one process hosts every engine), "
        f"batch {batch} and {engine_max_tokens * batch} KV tokens (the engine's own), one checkpoint "
        "read by every trace model (shared_base in storage only)"
    )
    measured = profile.get("provenance", {}).get("measured", {})
    served = served_decode_table(measured, batch)
    if served is not None:
        for m in d["models"]:
            m["decode"] = served
        note += f"; decode the engine's served step at batch {batch} ({served['source']})"
        del served["source"]
    warm = measured.get("engine_phases", {}).get("load_gbps_warm")
    hw, eff = d["hardware"], float(d["engine"]["loader_efficiency"])
    if warm and warm < hw["h2d_gbps"] * eff:
        # one loader rate for every tier, at a link every load of the process shares
        d["engine"]["loader_efficiency_dram"] = eff
        hw["h2d_gbps"] = warm / eff
        note += (f"; host-to-device {warm / eff:.3g} GB/s: the loader's {warm:.3g} GB/s from the page cache "
                 "over its efficiency, shared by every load of this one process")
    if max_instances:
        hw["gpu_memory_gb"] = (
            hw.get("gpu_reserved_gb", 0.0) + max_instances * footprint_bytes(d) * 1.0001 / 1e9
        )
        note += f"; device memory for {max_instances} instances"
    d["provenance"].setdefault("notes", {})["replay"] = note
    return d


def served_decode_table(measured: dict, batch: int) -> dict | None:
    """The decode steps the replay's engines serve with, from the measuring run; None if not measured.

    Batch 1: the engine's own step at each measured position (`served_decode`), its median at
    every batch (the simulator's table is by batch; one request at a time never batches).
    Above: the engine's continuous batching, seconds per step by batch (`batching`)."""
    if batch == 1:
        sd = measured.get("served_decode") or {}
        secs = [float(x) for x in sd.get("seconds", ())]
        if not secs:
            return None
        mid = statistics.median(secs)
        mode = "CUDA graph" if sd.get("cuda_graph") else "eager"
        return {"x": [1.0], "seconds": [mid], "source": f"served_decode, {mode}, median of {len(secs)} positions"}
    rows = sorted((int(r["batch"]), float(r["decode_s_per_step"])) for r in measured.get("batching") or ())
    if not rows:
        return None
    return {"x": [float(b) for b, _ in rows], "seconds": [t for _, t in rows], "source": "batching, eager"}


def gpu_capacity(cfg: RunConfig, profile: dict, ckpt_dir: Path, max_prompt_tokens: int) -> ReplayCapacity:
    """Instances the replay may hold on the GPU, from free memory measured now (see `capacity`)."""
    conf = json.loads((ckpt_dir / "config.json").read_text())
    footprint = footprint_bytes(replay_profile(profile, cfg.sizes.engine_max_tokens, batch=cfg.replay_batch))
    extra = activation_bytes(
        hidden=int(conf["hidden_size"]),
        intermediate=int(conf["intermediate_size"]),
        heads=int(conf["num_attention_heads"]),
        prompt_tokens=max_prompt_tokens,
        kv_tokens=cfg.sizes.engine_max_tokens,
        element_size=2 if cfg.dtype in ("float16", "bfloat16") else 4,
    )
    return size_replay(
        measured_free_bytes("cuda:0"),
        footprint,
        extra,
        max_instances=cfg.replay_max_instances,
        where="cuda:0",
    )


def plan_for(staging: str, num_layers: int, importance: list[float] | None) -> StagePlan:
    """The plan the simulator's built-in staging policy makes for the same profile."""
    if staging == "full":
        return full_plan(num_layers)
    if staging == "pipelined":
        return pipelined_plan(num_layers)
    if staging == "progressive":
        return progressive_plan(num_layers, PROGRESSIVE_FRACTIONS, importance)
    raise ValidateError(f"unknown staging {staging!r} (full, pipelined, progressive).")


def keepalive_arg(keepalive: str, ttl_s: float) -> str:
    """The simulator's keep-alive spec: a policy's name with its parameters parses back into it."""
    return f"fixed[ttl={ttl_s:g}]" if keepalive == "fixed" else keepalive


def segment_spec(cfg: RunConfig) -> SegmentSpec:
    small_cpu = not cfg.gpu
    return SegmentSpec(
        trace_dir=cfg.trace_dir,
        start_min=cfg.replay_start_min,
        end_min=cfg.replay_end_min,
        compress=cfg.replay_compress,
        num_models=cfg.replay_models,
        max_per_minute=cfg.replay_max_per_minute,
        max_requests=cfg.replay_max_requests,
        max_prompt_tokens=64 if small_cpu else 2048,
        max_output_tokens=4 if small_cpu else 64,
        token_scale=1 / 16 if small_cpu else 1.0,
        seed=cfg.seed,
    )


def run_replay(
    cfg: RunConfig, profile: dict, ckpt_dir: Path, files: list[Path], out_dir: Path
) -> ReplayOutcome:
    """Replay every policy of `cfg` on the engine and the simulator; write and return the comparison."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = segment_spec(cfg)
    segment = build_segment(spec)
    csv = write_requests_csv(segment, out_dir / "requests.csv")
    sizes = cfg.sizes
    capacity = None
    if cfg.gpu:
        capacity = gpu_capacity(cfg, profile, ckpt_dir, int(segment["prompt_tokens"].max()))
        print(f"replay capacity: {capacity.describe()}", flush=True)
    instances = capacity.instances if capacity is not None else cfg.replay_models
    rprof = replay_profile(profile, sizes.engine_max_tokens, instances, cfg.replay_batch)
    rprof_path = write_profile(rprof, out_dir / "replay_profile.json")
    model = rprof["models"][0]
    hw = rprof["hardware"]
    footprint = footprint_bytes(rprof)
    device = "cuda:0" if cfg.gpu else "cpu"
    vocab = int(json.loads((ckpt_dir / "config.json").read_text())["vocab_size"])
    engine = EngineSpec(ckpt_dir, device, cfg.dtype, cfg.gpu, sizes.engine_max_tokens, cfg.replay_batch)
    have_sim = sim_cli_available()
    errors, commands, counters, pairs = [], [], {}, {}
    bar = tqdm(total=len(segment) * len(cfg.policies), desc="replay", unit="req")
    for staging, keepalive in cfg.policies:
        label = f"{staging}/{keepalive}"
        bar.set_postfix_str(label)
        plan = plan_for(staging, model["num_layers"], model.get("layer_importance"))
        server = ReplayServer(
            ServerSpec(
                engine, tuple(files), keepalive, cfg.ttl_s, (hw["gpu_memory_gb"] - hw.get("gpu_reserved_gb", 0.0)) * 1e9,
                footprint, vocab, cfg.seed, cfg.replay_batch,
            ),
            plan,
        )  # fmt: skip
        try:
            real = server.run(segment, progress=bar)
        except RuntimeError as e:
            raise ValidateError(f"the engine replay of {label} failed: {e}") from None
        counters[label] = dict(server.counters)
        slug = label.replace("/", "-")
        real.to_csv(out_dir / f"real-{slug}.csv", index=False)
        if not have_sim:
            continue
        command, error, sim = simulate_policy(csv, rprof_path, staging, keepalive, cfg.ttl_s, real, out_dir, cfg.seed)
        commands.append(command)
        errors.append(error)
        pairs[label] = (real, sim)
    bar.close()
    if not have_sim:
        raise ValidateError(
            f"the engine replay is in {out_dir}, but the simulator's command line (python -m sim) is not in this checkout."
        )
    details = {
        "segment": spec.describe(),
        "requests": len(segment),
        "ttl_s": cfg.ttl_s,
        "batch": cfg.replay_batch,
        "engine_max_tokens": sizes.engine_max_tokens,
        "sim_commands": commands,
        # the real server's loads, evictions, requests that joined a busy instance for want of
        # memory, and requests that waited for memory (validate/replay/runner.py)
        "real_counters": counters,
        "capacity": capacity.to_dict()
        if capacity is not None
        else {"instances": instances, "rule": "CPU: one per model"},
    }
    write_comparison(out_dir, errors, details, pairs)
    md = markdown_table(errors) + "\n\n" + _segment_note(spec, len(segment), cfg.ttl_s)
    return ReplayOutcome(errors, format_table(errors), md, segment, details)


def write_comparison(out_dir: Path, errors: list[PolicyError], details: dict, pairs: dict) -> None:
    """A replay's comparison files, as a replay and `resimulate` both write them: the error table,
    the details and the TTFT CDFs (`pairs`: policy -> (engine rows, simulator rows))."""
    pd.DataFrame([e.to_dict() for e in errors]).to_csv(out_dir / "replay_errors.csv", index=False)
    (out_dir / "replay_details.json").write_text(json.dumps(details, indent=2) + "\n")
    plot_replay_ttft(pairs, out_dir / "replay_ttft.png")


def simulate_policy(
    csv: Path, rprof_path: Path, staging: str, keepalive: str, ttl_s: float, real: pd.DataFrame, out_dir: Path,
    seed: int,
) -> tuple[str, PolicyError, pd.DataFrame]:
    """The simulator's run of one policy beside the engine's rows: (its command, the error, its rows)."""
    label, slug = f"{staging}/{keepalive}", f"{staging}-{keepalive}"
    ka = keepalive_arg(keepalive, ttl_s)
    sim_dir = out_dir / f"sim-{slug}"
    command = " ".join(sim_command(csv, rprof_path, staging, ka, sim_dir, seed))
    sim = run_sim(csv, rprof_path, staging, ka, sim_dir, seed)
    return command, compare_policy(label, real, sim, sim_refills(sim_dir)), sim


def resimulate(saved: Path, out_dir: Path, profile: dict | None = None, seed: int | None = None) -> ReplayOutcome:
    """The simulator's side of a saved replay again, against the engine's saved rows.

    `saved` is a replay's folder (`requests.csv`, `real-*.csv`, `replay_details.json`,
    `replay_profile.json`). With `profile` (the measured profile), the replay profile is made
    again from it by today's rules; without, the saved replay profile is used as it was. The
    hardware's side is not run again: a GPU replay is checked against a changed simulator
    without a GPU. The seed is the saved segment's unless `seed` is given."""
    if out_dir.resolve() == saved.resolve():
        raise ValidateError(f"--out {out_dir} is the saved replay itself: give another folder, so that it stays as it ran.")
    try:
        details = json.loads((saved / "replay_details.json").read_text())
        segment = pd.read_csv(saved / "requests.csv")
        saved_profile = json.loads((saved / "replay_profile.json").read_text())
        ttl = float(details["ttl_s"])
        batch = int(details.get("batch", 1))
        instances = int(details["capacity"]["instances"])
        kv = int(details.get("engine_max_tokens") or saved_profile["models"][0]["max_tokens_in_flight"] // batch)
        seed = int(details.get("segment", {}).get("seed", 0)) if seed is None else seed
        reals = {p: pd.read_csv(p) for p in sorted(saved.glob("real-*.csv"))}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:  # JSON, CSV and missing fields alike
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise ValidateError(f"{saved} is not a saved replay: {what}.") from None
    if not reals:
        raise ValidateError(f"{saved} holds no real-*.csv: nothing to compare the simulator with.")
    for p, rows in reals.items():
        missing = {"ttft_s", "cold"} - set(rows.columns)
        if missing:
            raise ValidateError(f"{p}: no column {', '.join(sorted(missing))} (a replay's engine rows have ttft_s and cold).")
    if not sim_cli_available():
        raise ValidateError("the simulator's command line (python -m sim) is not installed in this checkout.")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = write_requests_csv(segment, out_dir / "requests.csv")
    rprof = saved_profile if profile is None else replay_profile(profile, kv, instances, batch)
    rprof_path = write_profile(rprof, out_dir / "replay_profile.json")
    errors, commands, pairs = [], [], {}
    for path, real in reals.items():
        staging, _, keepalive = path.stem.removeprefix("real-").partition("-")
        real.to_csv(out_dir / path.name, index=False)
        command, error, sim = simulate_policy(csv, rprof_path, staging, keepalive, ttl, real, out_dir, seed)
        commands.append(command)
        errors.append(error)
        pairs[error.policy] = (real, sim)
    details = {**details, "sim_commands": commands, "resimulated_from": str(saved)}
    write_comparison(out_dir, errors, details, pairs)
    return ReplayOutcome(errors, format_table(errors), markdown_table(errors), segment, details)


def _segment_note(spec: SegmentSpec, n: int, ttl_s: float) -> str:
    return (
        f"Segment: Azure Functions 2019 day 1, minutes {spec.start_min}-{spec.end_min}, compressed {spec.compress:g}x, "
        f"the {spec.num_models} busiest functions as models m0..m{spec.num_models - 1}, {n} requests "
        f"(at most {spec.max_per_minute or 'all'} per function and minute); prompt/output tokens from the Azure LLM "
        f"2023 conversation trace, scaled by {spec.token_scale:g} and clipped to {spec.max_prompt_tokens}/"
        f"{spec.max_output_tokens}; fixed keep-alive "
        f"TTL {ttl_s:g} s (10 trace minutes). Errors are (sim - real) / real for TTFT percentiles and sim - real "
        "for the cold-start count."
    )
