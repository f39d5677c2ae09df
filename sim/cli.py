"""`python -m sim`: replay a trace against every combination of the chosen policies."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from tqdm import tqdm

from policies.registry import KINDS, PolicySpecError, names, split_specs
from sim.config import COMPUTE_SHARING, FIDELITIES, STORAGE, SimConfig
from sim.metrics import RunMetrics
from sim.policyset import PolicyError, PolicySet
from sim.profile import DEFAULT_PROFILE, ProfileError, load_profile
from sim.records import RecordWriter
from sim.report import format_table, write_csv, write_results
from sim.simulator import Simulator, TraceOrderError
from traces import TraceError, open_trace

DEFAULT_POLICIES = {
    "staging": "full,pipelined,progressive",
    "keepalive": "none,fixed",
    "prewarm": "none",
    "placement": "first_fit",
    "router": "least_loaded",
    "admission": "always",
}

EPILOG = """\
Each policy flag takes one or more comma-separated specs: a built-in name with optional
parameters (fixed[ttl=300]), an import path (mypkg.mod:MyPolicy) or a file
(path/to/file.py:MyPolicy[k=v]). The run compares every combination.

examples:
  python -m sim --trace azure_functions
  python -m sim --trace azure_functions --trace-dir ~/data/azurefunctions --duration 3600 --out runs/a
  python -m sim --trace my_requests.csv --staging progressive --keepalive fixed[ttl=60],two_tier
  python -m sim --trace burstgpt --fidelity iteration --nodes 1 --gpus-per-node 2
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim",
        description="Simulate serverless LLM cold starts on a GPU cluster and compare staging, "
        "keep-alive, prewarm, placement, routing and admission policies by TTFT, SLO attainment, "
        "quality and GPU memory cost.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = p.add_argument_group("workload")
    t.add_argument("--trace", default="azure_functions",
                   help="trace name (azure_functions, azure_functions_2021, azure_llm_2023, azure_llm_2024, "
                        "burstgpt, synthetic) or a file path; a plain CSV with "
                        "arrival_s,model,prompt_tokens,output_tokens works too (default: azure_functions, "
                        "which falls back to the calibrated synthetic trace when no files are found)")
    t.add_argument("--trace-dir", help="folder to look for trace files in (before $PROGRESSIVE_SERVE_TRACES "
                                       "and the user cache)")
    t.add_argument("--trace-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for the trace reader, e.g. top_n=20 or tokens=azure_llm_2023 "
                        "(repeatable; see `python -m traces --help`)")
    t.add_argument("--duration", type=float, help="simulated seconds of the trace to replay (default: the trace's own)")
    t.add_argument("--seed", type=int, default=0, help="seed for every random draw (default 0)")
    pol = p.add_argument_group("policies (comma-separated lists; every combination is run)")
    for kind in KINDS:
        pol.add_argument(f"--{kind}", default=DEFAULT_POLICIES[kind],
                         help=f"built-ins: {', '.join(names(kind))} (default: {DEFAULT_POLICIES[kind]})")
    c = p.add_argument_group("cluster and serving")
    c.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"profile name in profiles/ or a JSON path (default: {DEFAULT_PROFILE})")
    c.add_argument("--nodes", type=int, default=2, help="GPU nodes (default 2)")
    c.add_argument("--gpus-per-node", type=int, default=4, help="GPUs per node (default 4)")
    c.add_argument("--storage", choices=STORAGE, default="ssd",
                   help="where checkpoints start: ssd (on every node's local SSD) or remote "
                        "(fetched over the network, then cached) (default ssd)")
    c.add_argument("--slo-ttft", type=float, default=5.0, help="TTFT SLO in seconds (default 5)")
    c.add_argument("--fidelity", choices=FIDELITIES, default="request",
                   help="request: closed-form per request (fast, day-long traces); "
                        "iteration: continuous batching, one event per batch step (default request)")
    c.add_argument("--compute-sharing", choices=COMPUTE_SHARING, default="time_slice",
                   help="time_slice: instances packed on one GPU share its compute, as CUDA time-slices "
                        "processes (exact at iteration fidelity, approximate at request fidelity); "
                        "none: each instance at full speed, as with MIG partitions (default time_slice)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, help="write requests.parquet, summary.csv/.md, models.csv (per model: "
                                            "requests, cold starts, loads, wakes, evictions, refills, GB loaded, GPU memory-hours) and plots here")
    o.add_argument("--no-records", action="store_true", help="with --out, skip the per-request Parquet file")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _trace_options(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TraceError(f"--trace-option wants KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _policy_sets(args: argparse.Namespace) -> list[PolicySet]:
    lists = {}
    for kind in KINDS:
        specs = split_specs(getattr(args, kind))
        if not specs:
            raise PolicySpecError(f"--{kind} needs at least one policy")
        lists[kind] = specs
    combos = []
    for values in itertools.product(*lists.values()):
        combos.append(PolicySet.from_specs(**dict(zip(lists, values, strict=True))))
    return combos


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = SimConfig(nodes=args.nodes, gpus_per_node=args.gpus_per_node, fidelity=args.fidelity,
                           slo_ttft_s=args.slo_ttft, storage=args.storage, seed=args.seed,
                           compute_sharing=args.compute_sharing)
        profile = load_profile(args.profile)
        combos = _policy_sets(args)
        trace = open_trace(args.trace, trace_dir=args.trace_dir, duration_s=args.duration, seed=args.seed,
                           **_trace_options(args.trace_option))
    except (ProfileError, PolicySpecError, TraceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"trace: {trace.name}", flush=True)
    print(f"profile: {profile.name} ({profile.provenance.get('kind')}); cluster: {config.nodes} x "
          f"{config.gpus_per_node} {profile.hardware.gpu_name}; fidelity: {config.fidelity}; "
          f"TTFT SLO {config.slo_ttft_s:g} s; {len(combos)} policy combinations", flush=True)
    writer = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.no_records:
            writer = RecordWriter(args.out / "requests.parquet")
    rows, metrics_list, model_rows = [], [], []
    started = time.perf_counter()
    try:
        for policies in combos:
            metrics = RunMetrics(policies.label, config.slo_ttft_s, writer)
            sim = Simulator(profile, policies, config, metrics)
            bar = tqdm(desc=policies.label[:60], unit=" req", disable=args.quiet, leave=False,
                       mininterval=0.5, file=sys.stderr)
            done = [0]

            def progress(n: int, bar=bar, done=done) -> None:
                bar.update(n - done[0])
                done[0] = n

            try:
                rows.append(sim.run(iter(trace), on_progress=progress))
            finally:
                bar.close()
            metrics_list.append(metrics)
            model_rows.extend(sim.usage.rows(policies.label))
    except (PolicyError, TraceError, TraceOrderError) as e:
        print(f"error: {e}", file=sys.stderr)
        if rows:
            print(format_table(rows))
        return 1
    finally:
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - started
    print(format_table(rows))
    total = sum(r["requests"] for r in rows)
    print(f"simulated {total} requests in {elapsed:.1f} s ({total / max(elapsed, 1e-9):,.0f} requests/s)",
          file=sys.stderr)
    if args.out is not None:
        header = {
            "trace": trace.name,
            "profile": f"{profile.name} ({profile.provenance.get('kind')})",
            "cluster": f"{config.nodes} nodes x {config.gpus_per_node} {profile.hardware.gpu_name}",
            "fidelity": config.fidelity,
            "storage": config.storage,
            "TTFT SLO (s)": config.slo_ttft_s,
            "seed": config.seed,
        }
        header.update({f"trace.{k}": v for k, v in sorted(trace.details.items())})
        paths = write_results(args.out, rows, metrics_list, header)
        write_csv(args.out / "models.csv", model_rows)
        written = [str(p) for p in paths.values()] + [str(args.out / "models.csv")]
        if writer is not None:
            written.insert(0, str(args.out / "requests.parquet"))
        print("wrote " + ", ".join(written))
    return 0
