"""`python -m sim`: replay a trace against every combination of the chosen policies."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only the standard library and the signal guard at import time: everything else is imported
# once the guard is installed, so that Ctrl-C while the program starts ends in one line too.
from sim.console import say
from sim.interrupt import Interrupted, SignalGuard

if TYPE_CHECKING:
    from sim.config import SimConfig
    from sim.policyset import PolicySet
    from sim.profile import Profile
    from sim.records import RecordWriter
    from sim.runstore import ComboResult, RunStore
    from traces import Trace

DEFAULT_POLICIES = {
    "staging": "full,pipelined,progressive",
    "keepalive": "none,fixed",
    "prewarm": "none",
    "placement": "first_fit",
    "router": "expected_wait",
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
  python -m sim --trace azure_functions --out runs/a --resume   # finish a run that was stopped
  python -m sim sweep examples/sweep.toml --out runs/sweep     # a grid of runs (README "Sweeps")

exit status: 0 done; 2 bad input or an unusable --out (one line; --out is checked before
simulating); 1 a policy failed, or a result could not be written; 130/143 stopped by
SIGINT/SIGTERM (the summary of the finished combinations is written, run.json says which;
--resume finishes the run).
"""

# Longer than any public trace (14 days) by far; beyond it a typo (1e12) would allocate the
# synthetic trace's per-minute tables for millennia.
MAX_DURATION_S = 366 * 86400.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """One line, exit 2, like every other bad input (argparse would print the usage too)."""
        self.exit(2, f"error: {message} (see python -m sim --help)\n")


def replay_horizon(duration: float | None, details: dict) -> tuple[float | None, str]:
    """The horizon memory is charged to, and where it came from (the summary's header says).

    `--duration` when given; else the trace's own length where it declares one (the
    synthetic trace's hour); else None: the last arrival.
    """
    if duration is not None:
        return float(duration), f"{duration:g} s (--duration)"
    own = details.get("duration_s")
    if isinstance(own, (int, float)) and not isinstance(own, bool) and own > 0:
        return float(own), f"{own:g} s (the trace's length)"
    return None, "the last arrival"


def build_parser() -> argparse.ArgumentParser:
    from policies.registry import KINDS, described
    from sim.config import BATCHES, COMPUTE_SHARING, FIDELITIES, STORAGE, UNKNOWN_MODELS, SimConfig
    from sim.profile import DEFAULT_PROFILE, shipped_profiles

    p = _Parser(
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
                        "burstgpt, servegen, mooncake, azure_lmm_2025, ghcp_coding_agent_2026, synthetic; "
                        "`python -m traces names` lists every name) or a file path; a plain CSV with "
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
                         help=f"built-ins (with their parameters' defaults): {', '.join(described(kind))} "
                              f"(default: {DEFAULT_POLICIES[kind]})")
    pol.add_argument("--preset", choices=["published"],
                     help="run a named list of combinations instead of the lists above: published = each "
                          "policy from the literature beside the baselines, one kind changed at a time "
                          "(policies/presets.py)")
    c = p.add_argument_group("cluster and serving")
    c.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"a shipped profile ({', '.join(shipped_profiles())}; README: which to pick) "
                        f"or a JSON path (default: {DEFAULT_PROFILE})")
    c.add_argument("--shared-base", metavar="FRACTION[,storage]",
                   help="declare that each profile model's deployments (<model>-<suffix>, as trace mapping names "
                        "them) are task models over one frozen base of FRACTION of its weights: a GPU holds one "
                        "copy for all of them and a start where it is resident loads only the task part; with "
                        "',storage' they share only the storage tiers (page cache, SSD). Default: as the profile "
                        "declares (its models' shared_base)")
    c.add_argument("--nodes", type=int, help="GPU nodes (default 2, or the cluster the trace suggests: servegen 1)")
    c.add_argument("--gpus-per-node", type=int, help="GPUs per node (default 4, or the trace's: servegen 8)")
    c.add_argument("--storage", choices=STORAGE, default="ssd",
                   help="where checkpoints start: ssd (on every node's local SSD) or remote "
                        "(fetched over the network, then cached) (default ssd)")
    c.add_argument("--slo-ttft", type=float, default=5.0, help="TTFT SLO in seconds (default 5)")
    c.add_argument("--fidelity", choices=FIDELITIES, default="request",
                   help="request: the continuous-batching model computed exactly with few events (fast, "
                        "day-long traces); iteration: the same model, one event per batch step (default request)")
    c.add_argument("--batches", choices=BATCHES, default=SimConfig.batches,
                   help="request fidelity's batch loops: compiled (arrays advanced by a numba kernel, no "
                        "event per step) or python (a SimPy process per busy instance); both give the same "
                        f"records (default {SimConfig.batches})")
    c.add_argument("--compute-sharing", choices=COMPUTE_SHARING, default="time_slice",
                   help="time_slice: instances packed on one GPU share its compute, as CUDA time-slices "
                        "processes (a run whose GPUs can hold more instances than compute slots then "
                        "serves on events even at request fidelity, exactly); none: each instance at full "
                        "speed, as with MIG partitions (default time_slice)")
    c.add_argument("--unknown-models", choices=UNKNOWN_MODELS, default="default",
                   help="a model name that is not in the profile nor named <model>-<suffix> after one: "
                        "default gives it the profile's first model's shape (the run lists such names at "
                        "the end); error refuses the trace (default: default)")
    c.add_argument("--hook-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="end the run (exit 1, naming policy and hook) when one policy hook call runs longer "
                        "than this; 0 for no limit (default 60)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, help="write requests.parquet, summary.csv/.md, models.csv (per model: "
                                            "requests, cold starts, loads, wakes, evictions, refills, GB loaded, GPU memory-hours), "
                                            "plots, report.html (one page: verdict, ranking, plots, inputs) and "
                                            "run.json (the run's manifest) here; a folder holding another run's "
                                            "results is refused unless --resume or --overwrite")
    again = o.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="with --out, finish the run stopped there: skip the policy combinations its run.json "
                            "marks done (refused if the inputs differ)")
    again.add_argument("--overwrite", action="store_true",
                       help="with --out, replace the results of the run held there")
    o.add_argument("--no-records", action="store_true", help="with --out, skip the per-request Parquet file")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _trace_options(items: list[str]) -> dict[str, str]:
    from traces import TraceError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TraceError(f"--trace-option wants KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _policy_sets(args: argparse.Namespace) -> list[PolicySet]:
    from policies.registry import KINDS, PolicySpecError, split_specs
    from sim.policyset import PolicySet

    if getattr(args, "preset", None):
        from policies.presets import preset_specs
        return [PolicySet.from_specs(**specs) for specs in preset_specs(args.preset, args.slo_ttft)]
    lists = {}
    for kind in KINDS:
        specs = split_specs(getattr(args, kind))
        if not specs:
            raise PolicySpecError(f"--{kind} needs at least one policy")
        if kind == "router":  # the router that predicts TTFT judges it against the run's SLO
            specs = [f"expected_wait[slo={args.slo_ttft:g}]" if sp == "expected_wait" else sp for sp in specs]
        lists[kind] = specs
    combos = []
    for values in itertools.product(*lists.values()):
        combos.append(PolicySet.from_specs(**dict(zip(lists, values, strict=True))))
    return combos



def _profile_path(spec: str) -> Path:
    """The file `load_profile(spec)` reads."""
    from sim.profile import profile_path

    return profile_path(spec)


def _policy_files(args: argparse.Namespace) -> list[Path]:
    """The .py files named by file-based policy specs (path/to/file.py:Class[...])."""
    from policies.registry import KINDS, split_specs

    files: dict[Path, None] = {}
    for kind in KINDS:
        for spec in split_specs(getattr(args, kind)):
            target = spec.split("[", 1)[0].strip()
            module_part = target.rpartition(":")[0].strip()
            if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
                path = Path(module_part).expanduser()
                if path.is_file():
                    files.setdefault(path.resolve(), None)
    return list(files)


def _run_inputs(args: argparse.Namespace, config: SimConfig, profile: Profile, trace: Trace,
                combos: list[PolicySet]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What decides the results, as fingerprints (compared by --resume), and where the
    inputs were found (recorded only)."""
    from sim.runstore import file_fingerprint, sha256_file, trace_option_files, versions
    from traces.registry import NAMES as TRACE_NAMES
    from traces.registry import resolve as resolve_trace

    fmt, files, _ = resolve_trace(args.trace, args.trace_dir)
    options = _trace_options(args.trace_option)
    option_files = trace_option_files(options, args.trace_dir)
    profile_path = _profile_path(args.profile)
    policy_files = _policy_files(args)
    inputs = {
        "seed": args.seed,
        "duration_s": args.duration,
        "trace": {
            "spec": args.trace if args.trace in TRACE_NAMES else Path(args.trace).name,
            "format": fmt,
            "options": options,
            "files": [file_fingerprint(p) for p, _ in files],
            "option_files": option_files,
        },
        "profile": {"name": profile.name, "sha256": sha256_file(profile_path),
                    **({"shared_base": args.shared_base} if args.shared_base else {})},
        "cluster": {"nodes": config.nodes, "gpus_per_node": config.gpus_per_node, "storage": config.storage,
                    "slo_ttft_s": config.slo_ttft_s, "fidelity": config.fidelity,
                    "compute_sharing": config.compute_sharing},
        "combinations": [c.label for c in combos],
        "policy_files": [{"name": p.name, "sha256": sha256_file(p)} for p in policy_files],
        "records": not args.no_records,
        "versions": versions(),
    }
    sources = {
        "trace": trace.name,
        "trace_dir": args.trace_dir,
        "trace_files": [str(p.resolve()) for p, _ in files],
        "profile": str(profile_path.resolve()),
        "policy_files": [str(p) for p in policy_files],
        "cwd": os.getcwd(),
    }
    return inputs, sources


def _restored_row(summary: dict) -> dict:
    """A summary row as run.json holds it (NaN written as null)."""
    return {k: math.nan if v is None else v for k, v in summary.items()}


class _Run:
    """One invocation: its state is what an interruption's last line reports."""

    def __init__(self, args: argparse.Namespace, argv: list[str], guard: SignalGuard,
                 record_sink: Any = None) -> None:
        self.args = args
        self.record_sink = record_sink  # without --out: where records go (sim.api), else nowhere
        self.argv = argv
        self.guard = guard
        self.store: RunStore | None = None
        self.combos: list[PolicySet] = []
        self.results: dict[int, ComboResult] = {}
        self.current: int | None = None
        self.writer: RecordWriter | None = None
        self.started = False
        self.noted_defaults = False
        self.model_note = ""  # printed under the table: which names took the default shape

    # -- the run -------------------------------------------------------------------------------
    def main(self) -> int:
        from policies.registry import PolicySpecError
        from sim.config import SimConfig
        from sim.errors import BadRequestError
        from sim.metrics import RunMetrics
        from sim.policyset import PolicyError
        from sim.profile import ProfileError, load_profile, with_shared_bases
        from sim.progress import RunProgress
        from sim.report import CAPACITY_KEY, PlotSeries, format_summary
        from sim.runstore import ComboResult, OutError, RunStore, code_fingerprint
        from sim.simulator import Simulator
        from traces import TraceError, open_trace

        args = self.args
        try:
            if args.duration is not None and not (math.isfinite(args.duration) and
                                                  0 < args.duration <= MAX_DURATION_S):
                raise ValueError(f"--duration wants simulated seconds above 0 and at most {MAX_DURATION_S:.0f} "
                                 f"(366 days), got {args.duration:g}")
            if (args.resume or args.overwrite) and args.out is None:
                raise ValueError(f"--{'resume' if args.resume else 'overwrite'} needs --out")
            config = SimConfig(nodes=2 if args.nodes is None else args.nodes,
                               gpus_per_node=4 if args.gpus_per_node is None else args.gpus_per_node,
                               fidelity=args.fidelity, batches=args.batches,
                               slo_ttft_s=args.slo_ttft, storage=args.storage, seed=args.seed,
                               compute_sharing=args.compute_sharing, unknown_models=args.unknown_models,
                               hook_timeout_s=args.hook_timeout or None)
            profile = load_profile(args.profile)
            if args.shared_base:
                profile = with_shared_bases(profile, args.shared_base)
            self.combos = combos = _policy_sets(args)
            trace = open_trace(args.trace, trace_dir=args.trace_dir, duration_s=args.duration, seed=args.seed,
                               **_trace_options(args.trace_option))
            if args.nodes is None and args.gpus_per_node is None and "cluster.nodes" in trace.details:
                config = dataclasses.replace(config, nodes=int(trace.details["cluster.nodes"]),
                                             gpus_per_node=int(trace.details["cluster.gpus_per_node"]))
            if args.out is not None:
                inputs, sources = _run_inputs(args, config, profile, trace, combos)
                self.store = RunStore.open(
                    args.out, inputs=inputs, labels=[c.label for c in combos], sources=sources, code=code_fingerprint(),
                    command=["python", "-m", "sim", *self.argv], records=not args.no_records,
                    resume=args.resume, overwrite=args.overwrite, guard=self.guard)
        except (ProfileError, PolicySpecError, TraceError, ValueError, OutError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # a trace or profile file that cannot be read for its fingerprint
            print(f"error: {e}", file=sys.stderr)
            return 2
        store = self.store
        say(f"trace: {trace.name}")
        say(f"profile: {profile.name} ({profile.provenance.get('kind')}); cluster: {config.nodes} x "
             f"{config.gpus_per_node} {profile.hardware.gpu_name}; fidelity: {config.fidelity}"
             f"{f' ({config.batches} batch loops)' if config.fidelity == 'request' else ''}; "
             f"TTFT SLO {config.slo_ttft_s:g} s; {len(combos)} policy combinations")
        if store is not None and store.complete:
            say(f"resume: every combination of the run in {store.out} is done; nothing to simulate")
            say(format_summary([_restored_row(c["summary"]) for c in store.manifest["combinations"]]))
            return 0
        if store is not None and store.done:
            left = len(combos) - len(store.done)
            say(f"resume: {len(store.done)} of {len(combos)} combinations done in {store.out}; "
                 + (f"simulating the other {left}" if left else "writing the results"))
            if store.other_code:
                say(f"resume: note: {store.other_code} of them ran on other simulator code (sim, policies, "
                     "traces changed since; run.json records each combination's); --overwrite recomputes them")
        header = {
            "trace": trace.name,
            "profile": f"{profile.name} ({profile.provenance.get('kind')})",
            "cluster": f"{config.nodes} nodes x {config.gpus_per_node} {profile.hardware.gpu_name}",
            "fidelity": config.fidelity,
            "storage": config.storage,
            "TTFT SLO (s)": config.slo_ttft_s,
            CAPACITY_KEY: config.nodes * config.gpus_per_node * profile.hardware.usable_gpu_bytes / 1e9,
            "seed": config.seed,
        }
        horizon_s, horizon_from = replay_horizon(args.duration, trace.details)
        header["horizon"] = horizon_from
        header.update({f"trace.{k}": v for k, v in sorted(trace.details.items())})
        started = time.perf_counter()
        simulated = 0
        try:
            self.started = True
            for i, policies in enumerate(combos):
                if store is not None and i in store.done:
                    self.results[i] = store.done[i]
                    continue
                self.current = i
                self.writer = store.part_writer(i) if store is not None else self.record_sink
                metrics = RunMetrics(policies.label, config.slo_ttft_s, self.writer)
                sim = Simulator(profile, policies, config, metrics)
                bar = RunProgress(policies.label, horizon_s, lambda sim=sim: sim.env.now, disable=args.quiet)
                try:
                    row = sim.run(iter(trace), on_progress=bar, horizon_s=horizon_s)
                finally:
                    bar.close()
                if profile.quality_note() and row["quality_mean"] < 1.0:  # tokens at a stage nobody measured
                    row["quality_mean"] = math.nan
                result = ComboResult(row, sim.usage.rows(policies.label),
                                     PlotSeries.of(metrics) if store is not None else None, None)
                if store is not None:
                    store.finish_combo(i, result, self.writer)
                self.results[i] = result
                self.current, self.writer = None, None
                simulated += row["requests"]
                if sim.defaulted_models and not self.noted_defaults:
                    self.noted_defaults = True
                    names = sim.defaulted_models
                    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
                    self.model_note = (f"note: model names not in profile {profile.name} took the shape of "
                                       f"{profile.default_model.name}: {shown} (--unknown-models error "
                                       f"refuses them)")
                self.guard.check()  # a signal held back while the combination was committed
        except PolicyError as e:
            return self.stop(1, "failed", f"error: {e}", f"error: {e}")
        except (TraceError, BadRequestError) as e:  # bad input that shows only once it is read
            return self.stop(2, "failed", f"error: {e}", f"error: {e}")
        except Interrupted as e:
            if e.forced:
                raise
            return self.stop(e.exit_code, "interrupted", f"interrupted by {e.signal_name}", self.interrupted_line(e))
        except OSError as e:
            self.discard_writer()
            print(f"error: {e}", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - started
        rows = [self.results[i].row for i in range(len(combos))]
        say(format_summary(rows, [m for i in range(len(combos)) for m in self.results[i].models]))
        if self.model_note:
            say(self.model_note)
        if any(r["quality_mean"] != r["quality_mean"] for r in rows) and profile.quality_note():
            say(profile.quality_note())  # NaN: tokens of a stage whose quality nobody measured
        if simulated:
            print(f"simulated {simulated} requests in {elapsed:.1f} s "
                  f"({simulated / max(elapsed, 1e-9):,.0f} requests/s)", file=sys.stderr)
        if store is not None:
            try:
                # A signal now is held until the results are complete, then ignored: the run is done.
                with self.guard.critical(deliver=False):
                    written = store.write_final([self.results[i] for i in range(len(combos))], header)
            except OSError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            say("wrote " + ", ".join(str(p) for p in written))
        return 0

    # -- stopping early ------------------------------------------------------------------------
    def discard_writer(self) -> None:
        if self.writer is not None:
            self.writer.discard()
            self.writer = None

    def stop(self, code: int, status: str, message: str, line: str) -> int:
        """The run stopped early: write what is finished (marked partial), print the table of
        the finished combinations and one line on stderr."""
        from sim.report import format_summary

        written = []
        if self.store is not None:
            header = {"status": f"partial: {message}; {len(self.results)} of {len(self.combos)} policy "
                                "combinations finished (see run.json; --resume finishes the run)"}
            try:
                with self.guard.critical(deliver=False):
                    written = self.store.write_partial(self.results, self.current, self.writer, status=status,
                                                       message=message, header=header)
            except OSError as e:
                self.discard_writer()
                line = f"{line} (and writing the partial results failed: {e})"
            self.writer = None
        else:
            self.discard_writer()
        if code > 2:
            self.guard.ignore()
        rows = [self.results[i].row for i in sorted(self.results)]
        if rows:
            say(format_summary(rows, [m for i in sorted(self.results) for m in self.results[i].models]))
        if written:
            say("wrote " + ", ".join(str(p) for p in written))
        print(line, file=sys.stderr)
        return code

    def interrupted_line(self, e: Interrupted) -> str:
        from sim.runstore import PARTIAL_RECORDS

        n, k = len(self.combos), len(self.results)
        where = (f"during combination {self.current + 1} of {n} ({self.combos[self.current].label})"
                 if self.current is not None else f"after {k} of {n} combinations")
        if self.store is None:
            return f"interrupted by {e.signal_name} {where}" + (f"; the table shows the {k} finished" if k else "")
        wrote = ([f"the summary of the {k} finished"] if k else []) + \
            ([f"the records so far ({PARTIAL_RECORDS})"] if self.store.records else [])
        return (f"interrupted by {e.signal_name} {where}: wrote {' and '.join(wrote) or 'run.json'} to "
                f"{self.store.out}, marked partial in run.json; --resume finishes the run")

    def forced_line(self, e: Interrupted) -> str:
        if not self.started:
            return f"interrupted by {e.signal_name} before the simulation started"
        if self.store is None:
            return f"interrupted by {e.signal_name} again: stopped at once"
        return (f"interrupted by {e.signal_name} again: stopped at once; the {len(self.results)} finished "
                f"combinations are kept in {self.store.out} (--resume finishes the run)")


def main(argv: list[str] | None = None, *, record_sink: Any = None,
         on_run: Callable[[_Run], None] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit status.

    SIGINT and SIGTERM are handled for the duration of the call. Called as the program
    (`argv` None) it leaves them ignored on return, so that a signal while the interpreter
    exits cannot turn a finished run's status into a traceback; called with `argv` (tests,
    other programs) it restores the previous handlers. `record_sink` (sim.api) takes each
    request record of a run without --out; `on_run` is handed the run before it starts, to
    read its results after."""
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    guard = SignalGuard()
    guard.install()
    run = None
    try:
        run = _Run(build_parser().parse_args(argv), argv, guard, record_sink)
        if on_run is not None:
            on_run(run)
        return run.main()
    except Interrupted as e:
        # Before the run started, or a second signal: nothing half-written is left under a
        # final name (every file is renamed into place when complete).
        guard.ignore()
        if run is None:
            print(f"interrupted by {e.signal_name} before the simulation started", file=sys.stderr)
        else:
            run.discard_writer()
            print(run.forced_line(e), file=sys.stderr)
        return e.exit_code
    finally:
        if run is not None and run.store is not None:
            run.store.release()
        if as_program:
            guard.ignore()
        else:
            guard.restore()
