"""`python -m validate`: measure this machine into a profile; with --replay, check the simulator.

Errors end the run with one line on stderr and a non-zero status, never a traceback
(set VALIDATE_DEBUG=1 to see one): exit 2 when the machine cannot do what was asked
(`--gpu` without CUDA), 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from validate.config import RunConfig, default_cache_dir, default_trace_dir
from validate.errors import ValidateError

ALL_POLICIES = "full/none,full/fixed,progressive/none,progressive/fixed"
# Replay presets: where the segment comes from, how compressed, how many requests, which policies.
SMALL_REPLAY = {"start": 255, "end": 285, "compress": 120.0, "per_minute": 1, "max_requests": 0,
                "policies": ALL_POLICIES}  # CPU --small: about a minute  # fmt: skip
FULL_REPLAY = {"start": 240, "end": 300, "compress": 60.0, "per_minute": 0, "max_requests": 0,
               "policies": ALL_POLICIES}  # fmt: skip
# GPU short: 30 requests over ~27 s of wall time, every one a cold start (no keep-alive), the
# two stagings the question is about; about 2 minutes for a 7B model (docs/validate.md)
GPU_SHORT_REPLAY = {"start": 240, "end": 300, "compress": 120.0, "per_minute": 1, "max_requests": 30,
                    "policies": "full/none,progressive/none"}  # fmt: skip


def replay_preset(name: str | None, small: bool, gpu: bool) -> dict:
    """`--replay-preset`: short (default with --small) or full; short means the CPU's or the GPU's."""
    name = name or ("short" if small else "full")
    if name == "full":
        return FULL_REPLAY
    return GPU_SHORT_REPLAY if gpu else SMALL_REPLAY


def parse_policies(text: str) -> tuple[tuple[str, str], ...]:
    """'full/none,progressive/fixed' -> (('full', 'none'), ('progressive', 'fixed'))."""
    out = []
    for item in text.split(","):
        staging, _, keepalive = item.strip().partition("/")
        if staging not in ("full", "pipelined", "progressive") or keepalive not in ("none", "fixed"):
            raise ValidateError(
                f"--policies entry {item!r} is not STAGING/KEEPALIVE with STAGING in full, pipelined, "
                "progressive and KEEPALIVE in none, fixed."
            )
        out.append((staging, keepalive))
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m validate",
        description="Measure this machine into a simulator profile (JSON, Markdown report, plots); "
        "with --replay, replay a real trace segment on the engine and on the simulator and print the error.",
    )
    p.add_argument("--gpu", action="store_true", help="measure on the CUDA GPU (exit 2 if there is none)")
    p.add_argument(
        "--small",
        action="store_true",
        help="the real small model (SmolLM2-135M) instead of LLaMA-2-7B shapes",
    )
    p.add_argument(
        "--replay", action="store_true", help="also replay a trace segment and compare with the simulator"
    )
    p.add_argument(
        "--model", type=Path, help="a Hugging Face-layout checkpoint folder (safetensors + config.json)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/validate"), help="folder for profile, report and plots"
    )
    p.add_argument(
        "--quality-from",
        type=Path,
        help="reuse the quality.json of an earlier run (where the small model is missing)",
    )
    p.add_argument(
        "--profile", type=Path, help="with --replay: reuse this measured profile instead of measuring"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=default_cache_dir(), help="where generated checkpoints are kept"
    )
    p.add_argument("--trace-dir", type=Path, default=default_trace_dir(), help="folder of the trace samples")
    p.add_argument("--policies", default=None,
                   help=f"replayed STAGING/KEEPALIVE pairs, comma-separated (default {ALL_POLICIES}; "
                   "the GPU's short preset: full/none,progressive/none)")  # fmt: skip
    p.add_argument("--replay-preset", choices=("short", "full"), default=None,
                   help="short (default with --small): CPU 30 trace minutes at 120x; GPU 30 requests, two "
                   "policies, ~2 min; full: minutes 240-300 at 60x, four policies")  # fmt: skip
    p.add_argument("--replay-window", help="trace minutes START:END (default 240:300; --small 255:285)")
    p.add_argument("--replay-compress", type=float, help="time compression (default 60; --small 120)")
    p.add_argument("--replay-models", type=int, default=3, help="busiest functions mapped to models")
    p.add_argument("--replay-max-per-minute", type=int, help="cap per function and trace minute (--small: 2)")
    p.add_argument(
        "--replay-max-requests", type=int, default=0, help="cap on the segment's requests (0: none)"
    )
    p.add_argument(
        "--replay-batch", type=int, default=1,
        help="requests an engine serves at once in the replay (>1: the engine's continuous batching, eager decode)",
    )  # fmt: skip
    p.add_argument(
        "--replay-max-instances", type=int, default=4,
        help="GPU: most engines held at once; fewer if measured free memory says so (default 4)",
    )  # fmt: skip
    p.add_argument(
        "--ttl", type=float, help="fixed keep-alive seconds (default: 10 trace minutes, compressed)"
    )
    p.add_argument(
        "--network-gbps", type=float, default=1.25, help="remote-storage GB/s (not measurable here)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for a CPU run (default 1: robust on shared machines)",
    )
    p.add_argument(
        "--quality-tokens", type=int, help="tokens of text for perplexity (default CPU 256, GPU 1024)"
    )
    p.add_argument(
        "--resimulate", type=Path, metavar="DIR",
        help="the simulator's side of a saved replay (DIR: its replay/ folder) again against the engine's saved "
        "rows, with today's simulator; with --profile, the replay profile made again from that measured profile "
        "(no GPU, no torch needed)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=None,
                   help="the segment's and the simulator's seed (default 0; with --resimulate, the saved replay's)")  # fmt: skip
    return p


def config_from_args(args: argparse.Namespace, argv: list[str]) -> RunConfig:
    preset = replay_preset(args.replay_preset, args.small, args.gpu)
    if args.replay_batch < 1:
        raise ValidateError(f"--replay-batch must be at least 1, got {args.replay_batch}.")
    start, end = preset["start"], preset["end"]
    if args.replay_window:
        try:
            start, end = (int(v) for v in args.replay_window.split(":"))
        except ValueError:
            raise ValidateError(
                f"--replay-window wants START:END in trace minutes, got {args.replay_window!r}."
            ) from None
    return RunConfig(
        gpu=args.gpu,
        small=args.small,
        replay=args.replay,
        model=args.model,
        quality_from=args.quality_from,
        threads=args.threads,
        quality_tokens=args.quality_tokens,
        out=args.out,
        cache_dir=args.cache_dir,
        trace_dir=args.trace_dir,
        network_gbps=args.network_gbps,
        seed=0 if args.seed is None else args.seed,
        command=" ".join(["python -m validate", *(shlex.quote(a) for a in argv)]),
        policies=parse_policies(args.policies or str(preset["policies"])),
        replay_start_min=start,
        replay_end_min=end,
        replay_compress=args.replay_compress or preset["compress"],
        replay_models=args.replay_models,
        replay_max_per_minute=preset["per_minute"]
        if args.replay_max_per_minute is None
        else args.replay_max_per_minute,
        replay_max_requests=args.replay_max_requests or int(preset["max_requests"]),
        replay_max_instances=args.replay_max_instances,
        replay_batch=args.replay_batch,
        keepalive_ttl_s=args.ttl,
    )


def resimulate_saved(saved: Path, out: Path, profile_path: Path | None, seed: int | None) -> int:
    """`--resimulate DIR`: the simulator's side of a saved replay again; prints the error table."""
    from validate.replay.pipeline import resimulate

    profile = None
    if profile_path is not None:
        try:
            profile = json.loads(profile_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValidateError(f"cannot read --profile {profile_path}: {e}.") from None
    outcome = resimulate(saved, out, profile, seed)
    print(outcome.table)
    print(f"results in {out}")
    return 0


def run(cfg: RunConfig, profile_path: Path | None = None) -> int:
    """The whole run; returns the exit status. Heavy imports happen here, after argument parsing."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    if profile_path is not None and not cfg.replay:
        raise ValidateError("--profile is only used with --replay.")
    from validate.device import select_device

    select_device(cfg.gpu)  # fail fast, before anything is built or written
    if not cfg.gpu:
        # One intra-op thread by default: OpenMP threads busy-wait, and on a 2-core machine
        # shared with anything else a second thread made every op about 10x slower
        # (prefill of 128 tokens: 11.7 s with 2 threads, 1.7 s with 1, load average 7).
        import torch

        torch.set_num_threads(max(1, cfg.threads))
    from validate.models import checkpoint_summary, choose_model
    from validate.pipeline import measure_and_write

    cfg.out.mkdir(parents=True, exist_ok=True)
    if profile_path is not None:
        try:
            profile = json.loads(profile_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValidateError(f"cannot read --profile {profile_path}: {e}.") from None
        measured = None
    else:
        measured, profile = measure_and_write(cfg)
    if cfg.replay:
        from validate.replay.pipeline import run_replay

        choice = choose_model(cfg, need_quality=False)
        summary = checkpoint_summary(choice.ckpt_dir, 4)
        if summary["num_layers"] != profile["models"][0]["num_layers"]:
            raise ValidateError(
                f"the profile is for a {profile['models'][0]['num_layers']}-layer model, the replayed checkpoint "
                f"{choice.ckpt_dir} has {summary['num_layers']} layers (use the same --small/--model as when measuring)."
            )
        files = [Path(f) for f in summary["files"]]
        outcome = run_replay(cfg, profile, choice.ckpt_dir, files, cfg.out / "replay")
        print(outcome.table)
        if measured is not None:
            from validate.pipeline import write_report_and_plots

            write_report_and_plots(cfg, measured, outcome.markdown)
    print(f"results in {cfg.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.resimulate is not None:
            return resimulate_saved(args.resimulate, args.out, args.profile, args.seed)
        cfg = config_from_args(args, argv)
        return run(cfg, args.profile)
    except ValidateError as e:
        print(f"validate: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("validate: interrupted.", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback only on request
        if os.environ.get("VALIDATE_DEBUG"):
            raise
        print(
            f"validate: unexpected {type(e).__name__}: {e} (VALIDATE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
