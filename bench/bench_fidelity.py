"""Request fidelity against iteration fidelity on whole workloads: whether the fast path is exact.

`request` fidelity computes continuous batching with few events (a lone request in closed
form, a step and the run of identical decode steps after it as one event); `iteration`
fidelity runs it step by step and is the reference. This bench runs both on the same input and prints, per workload, the
summary figures side by side with the relative difference (request - iteration) /
iteration:

  (i)   the default trace (`azure_functions`; the calibrated synthetic one when no trace
        files are found), on the CLI's default cluster (2 nodes x 4 GPUs, default profile);
  (ii)  the real Azure LLM inference trace 2023 (code + conversation, one hour, two
        deployments): pass its folder with --llm-trace-dir (or put it where
        `python -m traces` looks); skipped with a message when absent;
  (iii) a saturated multi-instance workload: one model with `max_batch` 16 warm on every
        GPU (a warm-up burst makes the only cold starts), then Poisson arrivals at
        --utilisation (default 0.9) of what the GPUs can serve (GPU time per request: its
        prefill plus its share of full-batch decode steps).

Targets: every summary figure (TTFT p50 and p99, cold-start %, SLO attainment, GPU memory
and idle GB-hours) within 2 % of iteration fidelity, and cold-start counts within 0.5 %.
Rows outside are flagged OUTSIDE; `--strict` exits 1 if any is. Run (a few seconds to a
minute):

    python bench/bench_fidelity.py
    python bench/bench_fidelity.py --llm-trace-dir /path/to/azure_llm_2023 --staging full,progressive
    python bench/bench_fidelity.py --only saturated --utilisation 0.7 --saturated-duration 300

Not a pytest test: tests/test_sim_fidelity_diff.py holds what is checked on every run.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from figures import print_figures, slug

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.config import SimConfig  # noqa: E402
from sim.metrics import RunMetrics  # noqa: E402
from sim.policyset import PolicySet  # noqa: E402
from sim.profile import DEFAULT_PROFILE, Profile, load_profile, profile_from_dict  # noqa: E402
from sim.simulator import Simulator  # noqa: E402
from traces import TraceError, open_trace  # noqa: E402
from traces.request import Request  # noqa: E402

SUMMARY_TARGET = 0.02  # relative, every summary figure
COLD_COUNT_TARGET = 0.005  # relative, cold-start counts
WORKLOADS = ("default", "llm", "saturated")


@dataclass
class Run:
    row: dict
    cold: int
    seconds: float


def run_once(profile: Profile, policies: PolicySet, config: SimConfig, requests: list[Request]) -> Run:
    """One run as `python -m sim` makes it (RunMetrics, Simulator, the trace in order)."""
    metrics = RunMetrics(policies.label, config.slo_ttft_s)
    sim = Simulator(profile, policies, config, metrics)
    t0 = time.perf_counter()
    row = sim.run(iter(requests))
    seconds = time.perf_counter() - t0
    return Run(row, sum(u.cold for u in sim.usage.models.values()), seconds)


# figure, row key (or "cold" for the count), decimals, target
FIGURES = (
    ("TTFT p50 (s)", "ttft_p50_s", 3, SUMMARY_TARGET),
    ("TTFT p99 (s)", "ttft_p99_s", 3, SUMMARY_TARGET),
    ("cold starts (count)", "cold", 0, COLD_COUNT_TARGET),
    ("cold starts (%)", "cold_start_pct", 3, SUMMARY_TARGET),
    ("SLO attainment (%)", "slo_attainment_pct", 2, SUMMARY_TARGET),
    ("GPU mem (GB-hours)", "gpu_mem_gb_hours", 2, SUMMARY_TARGET),
    ("GPU idle (GB-hours)", "gpu_idle_gb_hours", 2, SUMMARY_TARGET),
)


def relative(x: float, ref: float) -> float:
    if x == ref:
        return 0.0
    if ref == 0 or math.isnan(x) or math.isnan(ref):
        return math.inf
    return (x - ref) / abs(ref)


def compare(title: str, profile: Profile, policies: PolicySet, config: SimConfig, requests: list[Request],
            figures: dict[str, object], tag: str) -> int:
    """Run both fidelities, print the table, return how many rows are outside their target; each
    figure's relative difference goes into `figures` as `<tag>_<figure>_rel_diff_pct`."""
    runs = {}
    for fidelity in ("request", "iteration"):
        runs[fidelity] = run_once(profile, policies, SimConfig(**{**config.__dict__, "fidelity": fidelity}),
                                  requests)
    req, it = runs["request"], runs["iteration"]
    print(f"\n== {title}")
    print(f"   {len(requests)} requests; {policies.label}; {config.nodes} x {config.gpus_per_node} "
          f"{profile.hardware.gpu_name}; TTFT SLO {config.slo_ttft_s:g} s; served {req.row['served']} / "
          f"{it.row['served']}")
    if req.row.get("fidelity", "request") != "request":
        print("   note: GPUs here can be shared, so the request run served at iteration fidelity")
    print(f"   {'figure':22s} {'request':>11s} {'iteration':>11s} {'rel.diff':>9s} {'target':>7s}")
    outside = 0
    for name, key, decimals, target in FIGURES:
        x = float(req.cold if key == "cold" else req.row[key])
        ref = float(it.cold if key == "cold" else it.row[key])
        d = relative(x, ref)
        bad = not abs(d) <= target
        outside += bad
        diff = f"{d * 100:+8.1f}%" if math.isfinite(d) else f"{'inf':>9s}"
        figures[f"{tag}_{key}_rel_diff_pct"] = round(d * 100, 4) if math.isfinite(d) else "inf"
        print(f"   {name:22s} {x:11.{decimals}f} {ref:11.{decimals}f} {diff} {target * 100:6.1f}%"
              f"  {'OUTSIDE' if bad else 'ok'}")
    print(f"   {'wall time (s)':22s} {req.seconds:11.2f} {it.seconds:11.2f}")
    figures[f"{tag}_requests"] = len(requests)
    figures[f"{tag}_outside"] = outside
    return outside


def saturated_workload(profile: Profile, model: str, gpus: int, utilisation: float, duration_s: float,
                       seed: int, warmup_s: float = 120.0) -> tuple[list[Request], str]:
    """Every GPU warm, then Poisson arrivals to one model at `utilisation` of their GPU time.

    At 0 s, `gpus x max_batch` one-token requests fill every slot, so the router starts an
    instance on every GPU (the only cold starts; a fixed keep-alive keeps them); the stream
    starts at `warmup_s`. A request's GPU time is its prefill plus its share of full-batch
    decode steps (output x decode(max_batch) / max_batch): what continuous batching spends
    on it. Prompt and output lengths are lognormal around 256 and 128 tokens.
    """
    shape = profile.model(model)
    b = shape.max_batch
    rng = np.random.default_rng(seed)
    n_draw = 200_000
    prompts = rng.lognormal(np.log(256), 0.6, n_draw).astype(int).clip(8, 2048)
    outputs = rng.lognormal(np.log(128), 0.6, n_draw).astype(int).clip(2, 1024)
    prefill_s = float(np.mean([shape.prefill(p) for p in prompts[:5000]]))
    gpu_s = prefill_s + outputs[:5000].mean() * shape.decode(b) / b
    rate = utilisation * gpus / gpu_s
    times = warmup_s + np.cumsum(rng.exponential(1.0 / rate, n_draw))
    n = int(np.searchsorted(times, warmup_s + duration_s))
    if n >= n_draw:
        raise ValueError("saturated workload: too many requests; shorten --saturated-duration")
    warm = [Request(0.0, model, 1, 1, i) for i in range(gpus * b)]
    reqs = warm + [Request(float(times[i]), model, int(prompts[i]), int(outputs[i]), len(warm) + i)
                   for i in range(n)]
    slot_s = prefill_s + (outputs[:5000].mean() - 1) * shape.decode(b)
    note = (f"{len(warm)} warm-up requests at 0 s, then {rate:.2f} req/s from {warmup_s:g} s; GPU time "
            f"{gpu_s:.3f} s per request at batch {b}: utilisation {utilisation:g} (of the closed form's "
            f"slots: {rate * slot_s / (gpus * b):.2f})")
    return reqs, note


def with_max_batch(profile: Profile, max_batch: int) -> tuple[Profile, str]:
    d = profile.to_dict()
    for m in d["models"]:
        m["max_batch"] = max_batch
    return profile_from_dict(d, f"{profile.name} (max_batch {max_batch})"), d["models"][0]["name"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=WORKLOADS, action="append",
                    help="run only this workload (repeatable; default: all three)")
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile (default {DEFAULT_PROFILE})")
    ap.add_argument("--nodes", type=int, default=2, help="GPU nodes (default 2, as python -m sim)")
    ap.add_argument("--gpus-per-node", type=int, default=4, help="GPUs per node (default 4)")
    ap.add_argument("--staging", default="full", help="staging policies, comma-separated (default full)")
    ap.add_argument("--keepalive", default="fixed", help="keep-alive policies, comma-separated (default fixed)")
    ap.add_argument("--compute-sharing", choices=("time_slice", "none"), default="time_slice",
                    help="as python -m sim (default time_slice; where GPUs can be shared, both runs are "
                         "iteration fidelity)")
    ap.add_argument("--slo-ttft", type=float, default=5.0, help="TTFT SLO in seconds (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the traces' random draws (default 0)")
    ap.add_argument("--duration", type=float, help="seconds of the default trace (default: its own, one hour)")
    ap.add_argument("--trace-dir", help="folder with Azure Functions files for the default trace")
    ap.add_argument("--llm-trace-dir", help="folder with AzureLLMInferenceTrace_{code,conv}.csv")
    ap.add_argument("--llm-duration", type=float, help="seconds of the Azure LLM trace (default: all, one hour)")
    ap.add_argument("--utilisation", type=float, default=0.9, help="saturated workload's load (default 0.9)")
    ap.add_argument("--saturated-max-batch", type=int, default=16, help="its max batch (default 16)")
    ap.add_argument("--saturated-duration", type=float, default=900.0,
                    help="its seconds after the warm-up (default 900)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any row is outside its target")
    args = ap.parse_args(argv)

    chosen = args.only or list(WORKLOADS)
    profile = load_profile(args.profile)
    config = SimConfig(nodes=args.nodes, gpus_per_node=args.gpus_per_node, slo_ttft_s=args.slo_ttft,
                       seed=args.seed, compute_sharing=args.compute_sharing)
    combos = [(slug(f"{s}_{k}"), PolicySet.from_specs(staging=s, keepalive=k))
              for s, k in itertools.product(args.staging.split(","), args.keepalive.split(","))]
    figures: dict[str, object] = {}
    print(f"targets: every summary figure within {SUMMARY_TARGET:.0%} of iteration fidelity, cold-start counts "
          f"within {COLD_COUNT_TARGET:.1%}; rel.diff = (request - iteration) / iteration")
    outside = 0
    started = time.perf_counter()
    if "default" in chosen:
        trace = open_trace("azure_functions", trace_dir=args.trace_dir, duration_s=args.duration, seed=args.seed)
        reqs = list(trace)
        for name, policies in combos:
            outside += compare(f"(i) default trace: {trace.name}", profile, policies, config, reqs, figures,
                               f"default_{name}")
    if "llm" in chosen:
        try:
            trace = open_trace("azure_llm_2023", trace_dir=args.llm_trace_dir, duration_s=args.llm_duration)
        except TraceError as e:
            print(f"\n== (ii) Azure LLM 2023: skipped ({e}; here the folder is --llm-trace-dir)")
        else:
            reqs = list(trace)
            for name, policies in combos:
                outside += compare(f"(ii) {trace.name}", profile, policies, config, reqs, figures, f"llm_{name}")
    if "saturated" in chosen:
        sat, model = with_max_batch(profile, args.saturated_max_batch)
        gpus = config.nodes * config.gpus_per_node
        reqs, note = saturated_workload(sat, model, gpus, args.utilisation, args.saturated_duration, args.seed)
        for name, policies in combos:
            outside += compare(f"(iii) saturated: {model} on {gpus} GPUs, {note}", sat, policies, config, reqs,
                               figures, f"saturated_{name}")
    wall = time.perf_counter() - started
    print(f"\n{outside} row(s) outside their target ({wall:.0f} s)")
    figures.update(rows_outside=outside, wall_s=round(wall, 1))
    print_figures(figures)
    return 1 if args.strict and outside else 0


if __name__ == "__main__":
    sys.exit(main())
