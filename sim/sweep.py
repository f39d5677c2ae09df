"""`python -m sim sweep SPEC`: run a grid of simulations in parallel, resumably.

Each grid point (one policy combination on one trace, profile, cluster and seed) is one
`Simulator` run, exactly as `python -m sim` would run it. Runs go to a local process pool
(`--jobs`) or to Ray (`--executor ray`, `--ray-address`); the driver writes each result as it
comes back, atomically, to `OUT/runs/<fingerprint>.json`, where the fingerprint covers every
input of the run (see `sim.sweep_spec`). A sweep started again, after Ctrl-C, SIGKILL or a
crash, finds those files and runs only the rest; a run that fails is recorded with its
error and the others go on. When every run has a result the combined table (`sweep.csv`,
`sweep.md`), `runs.csv` and the trade-off plots are written (`sim.sweep_report`).

Layout of OUT:

    sweep.json          the manifest: spec, command, code and versions, the runs' fingerprints
                        in grid order, and the status (running, interrupted, complete)
    runs/<fp>.json      one run's result: its point, status (done or failed), summary row or
                        one-line error
    sweep.csv, sweep.md per configuration: the mean over seeds and 95 % intervals
    runs.csv            every run, in grid order
    pareto_*.png        trade-off plots with the Pareto front
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.atomic import lock_folder
from sim.console import say
from sim.interrupt import Interrupted, SignalGuard

if TYPE_CHECKING:
    from sim.profile import Profile
    from sim.sweep_spec import Config, Point, Sweep

MANIFEST = "sweep.json"
RUNS = "runs"
MANIFEST_KIND = "progressive-serve sweep"
MANIFEST_VERSION = 1
RESULT_KIND = "progressive-serve sweep run result"
TABLE_FILES = ("sweep.csv", "sweep.md", "runs.csv")

EPILOG = """\
The spec (TOML; YAML with PyYAML installed) lists what to cross: policies per kind (specs as
`python -m sim` takes them, e.g. fixed[ttl=300], or tables { name = "fixed", ttl = [60, 600] }),
cluster sizes, profiles, storage, fidelity, SLO, traces (with reader options and duration)
and seeds. See examples/sweep.toml and README.md (Sweeps).

Each run's result is written to OUT/runs/ as soon as it is known, named by a fingerprint of
its inputs (the spec entry, the profile's and trace files' hashes, the simulator's code and
package versions); the same command started again (after Ctrl-C, SIGKILL, a crash or an edit
that adds grid points) runs only what has no result yet. A run that fails is recorded with
its error and the others go on (--retry-failed runs failed ones again).

exit status: 0 every run done; 1 some runs failed (the table still holds the others); 2 a bad
spec or option (one line naming the file and key); 130/143 stopped by SIGINT/SIGTERM (the
finished runs are kept; start the same command again to finish).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see python -m sim sweep --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sim sweep",
                description="Run a grid of simulations (policies x cluster sizes x profiles x traces x seeds) in "
                            "parallel, resumably, and write one table with confidence intervals across seeds "
                            "and trade-off plots with the Pareto front.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, help="the sweep spec (.toml, or .yaml/.yml with PyYAML)")
    p.add_argument("--out", type=Path, help="output folder (default: the spec's `out`, else runs/<spec name>)")
    p.add_argument("--duration", type=float, help="simulated seconds per run, for every trace (overrides the spec)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine; ray: Ray tasks (pip install -e \".[sweep]\") "
                        "(default local)")
    p.add_argument("--jobs", type=int, help="local: worker processes; ray without --ray-address: CPUs of the "
                                            "local Ray instance (default: this machine's cores)")
    p.add_argument("--ray-address", help="an existing Ray cluster (e.g. auto, ray://head:10001); default: start "
                                         "a local Ray instance")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--dry-run", action="store_true", help="check the spec, say how many runs it holds, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --- one run, in a worker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """What a worker needs to run one point: everything is in it (the profile as an object),
    so that a worker on another machine reads nothing but the trace."""

    point: Point
    config: Config
    profile: Profile


def _error_line(e: BaseException) -> str:
    from sim.policyset import PolicyError
    from traces import TraceError

    text = " ".join(str(e).split())
    if not isinstance(e, PolicyError | TraceError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def run_task(task: Task) -> dict[str, Any]:
    """Run one point; never raises for the run's own failure (it comes back as status failed)."""
    started = time.perf_counter()
    try:
        row = _simulate(task)
    except Exception as e:  # the run failed: record it, the sweep goes on
        return {"status": "failed", "row": None, "error": _error_line(e), "wall_s": time.perf_counter() - started}
    return {"status": "done", "row": row, "error": None, "wall_s": time.perf_counter() - started}


def _simulate(task: Task) -> dict[str, Any]:
    from sim.cli import replay_horizon
    from sim.config import SimConfig
    from sim.metrics import RunMetrics
    from sim.policyset import PolicySet
    from sim.simulator import Simulator
    from traces import open_trace

    c, seed = task.config, task.point.seed
    config = SimConfig(nodes=c.nodes, gpus_per_node=c.gpus_per_node, fidelity=c.fidelity, slo_ttft_s=c.slo_ttft_s,
                       storage=c.storage, seed=seed, compute_sharing=c.compute_sharing,
                       unknown_models=c.unknown_models, hook_timeout_s=c.hook_timeout_s)
    policies = PolicySet.from_specs(**dict(c.policies))  # fresh per run: policies keep state
    trace = open_trace(c.trace.spec, trace_dir=c.trace.trace_dir, duration_s=c.trace.duration_s, seed=seed,
                       **dict(c.trace.options))
    metrics = RunMetrics(policies.label, config.slo_ttft_s, None)
    sim = Simulator(task.profile, policies, config, metrics)
    horizon_s, _ = replay_horizon(c.trace.duration_s, trace.details)
    return sim.run(iter(trace), horizon_s=horizon_s)


def _worker_init(parent: int) -> None:
    """A pool worker: Ctrl-C is the driver's to handle, and a worker whose driver died (even by
    SIGKILL) exits instead of running on as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="sweep-orphan-watch").start()


# --- executors --------------------------------------------------------------------------------------

class LocalExecutor:
    """A process pool (spawned processes: they inherit no file descriptor, lock or thread of the
    driver). A worker that dies takes the pool with it: the runs it held are run again, one at
    a time, and one that kills its worker alone is recorded as failed."""

    name = "local"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.pool = None
        self.window = 2 * jobs

    def describe(self) -> str:
        return f"local process pool, {self.jobs} process{'es' if self.jobs != 1 else ''}"

    def _pool(self):
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init, initargs=(os.getpid(),))
        return self.pool

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue = list(reversed(tasks))
        suspects: list[Task] = []  # in flight when a worker died: run alone
        inflight: dict[Any, Task] = {}
        while queue or suspects or inflight:
            solo = bool(suspects)
            while not inflight and suspects:
                t = suspects.pop()
                inflight[self._pool().submit(run_task, t)] = t
            while not solo and queue and len(inflight) < self.window:
                t = queue.pop()
                inflight[self._pool().submit(run_task, t)] = t
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken: list[Task] = []
            for fut in done:
                t = inflight.pop(fut)
                try:
                    yield t, fut.result()
                except BrokenProcessPool:
                    broken.append(t)
            if broken:
                broken += list(inflight.values())
                inflight.clear()
                self.close()
                if solo:  # it ran alone: it is the one that kills its worker
                    for t in broken:
                        yield t, {"status": "failed", "row": None, "wall_s": None,
                                  "error": "the worker process running it died (killed, out of memory or a crash)"}
                else:
                    suspects += broken

    def close(self) -> None:
        """Stop now: running simulations are abandoned (their workers terminated)."""
        if self.pool is None:
            return
        pool, self.pool = self.pool, None
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                proc.terminate()
            except Exception:  # already gone
                pass
        pool.shutdown(wait=True, cancel_futures=True)


def _reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """A HOST:PORT address must accept a connection: Ray itself would wait for it forever."""
    import re
    import socket

    m = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address or "")
    if m is None:  # None (a local instance), auto, ray://... : Ray's own checks
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {address} ({e.strerror or e})") from None


class RayExecutor:
    """Ray tasks, one per run, on a local Ray instance or the cluster at `address`."""

    name = "ray"

    def __init__(self, address: str | None, jobs: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise SystemExit(2) from None  # checked (with a message) before this is built
        self.ray = ray
        root = Path(__file__).resolve().parent.parent
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": "WARNING",
                                  "configure_logging": True}
        if address is None:
            kwargs["num_cpus"] = jobs or default_jobs()
        else:
            # The driver's own code travels with the tasks, so that each run is computed by the
            # code its fingerprint names; numpy, simpy, scipy, pyarrow must be on the cluster.
            kwargs["runtime_env"] = {"py_modules": [str(root / p) for p in ("contracts", "sim", "policies", "traces")]}
        _reachable(address)
        # "local" starts an instance of our own even where `ray start` left one running here.
        ray.init(address=address or "local", **kwargs)
        self.address = address
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.window = max(8, 2 * self.cpus)
        self.remote = ray.remote(num_cpus=1)(run_task)
        self.refs: dict[Any, Task] = {}

    def describe(self) -> str:
        where = f"Ray cluster at {self.address}" if self.address else "a local Ray instance"
        return f"{where}, {self.cpus} CPUs"

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
        ray = self.ray
        queue = list(reversed(tasks))
        while queue or self.refs:
            while queue and len(self.refs) < self.window:
                t = queue.pop()
                self.refs[self.remote.remote(t)] = t
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            for ref in ready:
                t = self.refs.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # the worker died, or Ray could not run the task
                    result = {"status": "failed", "row": None, "wall_s": None,
                              "error": "Ray: " + _error_line(e).split(" Traceback")[0]}
                yield t, result

    def close(self) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # finished meanwhile
                pass
        self.refs.clear()
        if self.ray.is_initialized():
            self.ray.shutdown()


# --- the output folder ------------------------------------------------------------------------------

class SweepError(Exception):
    """The output folder cannot be used (exit 2)."""


def prepare_out(out: Path) -> int | None:
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out}: exists and is not a folder")
    if (out / "run.json").exists():
        raise SweepError(f"--out {out}: holds a `python -m sim` run (run.json), not a sweep; choose another folder")
    try:
        (out / RUNS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out / RUNS, os.W_OK):
        raise SweepError(f"--out {out}: the folder is not writable")
    lock = lock_folder(out, SweepError(f"--out {out} is in use by another sweep that is still going"))
    from sim.atomic import discard, is_temp_name

    for folder in (out, out / RUNS):  # leftovers of a write cut short by a kill
        for p in folder.iterdir():
            if is_temp_name(p.name) and p.is_file():
                discard(p)
    return lock


def result_path(out: Path, point: Point) -> Path:
    return out / RUNS / f"{point.fingerprint}.json"


def read_result(out: Path, point: Point) -> dict[str, Any] | None:
    """The stored result of `point`, or None (absent, or not a readable result of this point:
    then it is run again)."""
    path = result_path(out, point)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("kind") != RESULT_KIND or data.get("fingerprint") != point.fingerprint
            or data.get("status") not in ("done", "failed")):
        return None
    if data["status"] == "done" and not isinstance(data.get("row"), dict):
        return None
    return data


def write_result(out: Path, point: Point, config: Config, result: dict[str, Any]) -> dict[str, Any]:
    from sim.atomic import write_text

    record = {
        "kind": RESULT_KIND,
        "fingerprint": point.fingerprint,
        "config": config.columns(),
        "seed": point.seed,
        "policies": dict(config.policies),
        "status": result["status"],
        "row": result["row"],
        "error": result["error"],
        "wall_s": result.get("wall_s"),
    }
    # Python's JSON (NaN allowed) round-trips every float exactly: a resumed sweep's table
    # is the same bytes as an uninterrupted one's.
    write_text(result_path(out, point), json.dumps(record, indent=1) + "\n")
    return record


def write_manifest(out: Path, sweep: Sweep, command: list[str], status: str, counts: dict[str, int]) -> None:
    from sim.atomic import write_text

    data = {
        "manifest": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "status": status,
        "spec": str(sweep.path),
        "command": command,
        **sweep.identity,
        "configurations": len(sweep.configs),
        "seeds": sweep.seeds,
        "counts": counts,
        "runs": [{"config": p.config + 1, "seed": p.seed, "result": f"{RUNS}/{p.fingerprint}.json"}
                 for p in sweep.points],
    }
    write_text(out / MANIFEST, json.dumps(data, indent=1) + "\n")


# --- the command ------------------------------------------------------------------------------------


def _runs_row(point: Point, config: Config, record: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"run": point.index + 1, **config.columns(), "seed": point.seed}
    if record is None:
        row.update(status="pending", error="")
        return row
    row.update(status=record["status"], error=record["error"] or "")
    for k, v in (record.get("row") or {}).items():
        if k != "policy":
            row[k if k != "fidelity" else "fidelity_served"] = math.nan if v is None else v
    row["fingerprint"] = point.fingerprint
    return row


def _header(sweep: Sweep, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "spec": sweep.path.name,
        "runs": f"{len(sweep.points)} ({len(sweep.configs)} configurations x {len(sweep.seeds)} seeds); "
                f"{counts['done']} done, {counts['failed']} failed",
        "seeds": ", ".join(map(str, sweep.seeds)),
        "unknown models": sweep.configs[0].unknown_models,
        "policy hook timeout": (f"{sweep.configs[0].hook_timeout_s:g} s" if sweep.configs[0].hook_timeout_s
                                else "none"),
    }


def run_sweep(args: argparse.Namespace, argv: list[str], guard: SignalGuard) -> int:
    from sim.sweep_spec import SpecError, load_sweep

    if args.duration is not None:
        from sim.cli import MAX_DURATION_S

        if not (math.isfinite(args.duration) and 0 < args.duration <= MAX_DURATION_S):
            print(f"error: --duration wants simulated seconds above 0 and at most {MAX_DURATION_S:.0f} (366 days), "
                  f"got {args.duration:g}", file=sys.stderr)
            return 2
    if args.jobs is not None and args.jobs < 1:
        print(f"error: --jobs wants at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    if args.ray_address is not None and args.executor != "ray":
        print("error: --ray-address needs --executor ray", file=sys.stderr)
        return 2
    if args.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            print("error: --executor ray needs Ray: pip install -e \".[sweep]\" (or pip install ray)", file=sys.stderr)
            return 2
    try:
        sweep = load_sweep(args.spec, duration=args.duration)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or sweep.out or Path("runs") / sweep.path.stem
    say(f"sweep: {sweep.path}: {sweep.n_runs} runs ({len(sweep.configs)} configurations x {len(sweep.seeds)} "
         f"seeds) into {out}")
    if args.dry_run:
        return 0
    try:
        lock = prepare_out(out)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run(sweep, out, args, argv, guard)
    finally:
        if lock is not None:
            os.close(lock)


def _run(sweep: Sweep, out: Path, args: argparse.Namespace, argv: list[str], guard: SignalGuard) -> int:
    from tqdm import tqdm

    from sim.sweep_report import combine, format_text, write_all

    command = ["python", "-m", "sim", "sweep", *argv]
    configs = sweep.configs
    records: dict[int, dict[str, Any]] = {}
    for p in sweep.points:
        rec = read_result(out, p)
        if rec is not None and not (args.retry_failed and rec["status"] == "failed"):
            records[p.index] = rec
    todo = [p for p in sweep.points if p.index not in records]
    counts = {"done": sum(r["status"] == "done" for r in records.values()),
              "failed": sum(r["status"] == "failed" for r in records.values()), "pending": len(todo)}
    if todo:
        # Tables of an earlier, finished state would now be stale: the table appears again,
        # whole, when every run has a result.
        from sim.sweep_report import FRONTS

        for name in (*TABLE_FILES, *(f.file for f in FRONTS)):
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass
    write_manifest(out, sweep, command, "running" if todo else "complete", counts)
    if records:
        say(f"sweep: {len(records)} of {sweep.n_runs} runs already have results in {out}"
             + (f"; running the other {len(todo)}" if todo else ""))
    failed_before = counts["failed"]
    executor = None
    started = time.perf_counter()
    simulated = 0
    if todo:
        tasks = [Task(p, configs[p.config], sweep.profiles[configs[p.config].profile]) for p in todo]
        jobs = min(args.jobs or default_jobs(), len(tasks))
        if args.executor == "ray":
            try:
                executor = RayExecutor(args.ray_address, args.jobs)
            except Exception as e:  # Ray could not start, or the cluster cannot be reached
                write_manifest(out, sweep, command, "interrupted", counts)
                where = f"connect to the Ray cluster at {args.ray_address}" if args.ray_address else "start Ray"
                print(f"error: cannot {where}: {_error_line(e)}", file=sys.stderr)
                return 2
        else:
            executor = LocalExecutor(jobs)
        try:
            say(f"sweep: executor: {executor.describe()}")
            bar = tqdm(total=sweep.n_runs, initial=len(records), desc="sweep", unit="run", disable=args.quiet,
                       file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
            try:
                for task, result in executor.run(tasks):
                    with guard.critical():
                        rec = write_result(out, task.point, configs[task.point.config], result)
                    records[task.point.index] = rec
                    counts["pending"] -= 1
                    counts[rec["status"]] += 1
                    if rec["status"] == "done":
                        simulated += int(rec["row"].get("requests", 0))
                    bar.update(1)
                    if counts["failed"]:
                        bar.set_postfix(failed=counts["failed"], refresh=False)
            finally:
                bar.close()
        except Interrupted as e:
            guard.ignore()
            if executor is not None:
                executor.close()
            try:
                write_manifest(out, sweep, command, "interrupted", counts)
            except OSError:
                pass
            print(f"interrupted by {e.signal_name}: {counts['done'] + counts['failed']} of {sweep.n_runs} runs have "
                  f"results in {out} (kept); run the same command again to finish", file=sys.stderr)
            return e.exit_code
        except OSError as e:
            if executor is not None:
                executor.close()
            print(f"error: writing a result into {out}: {e}", file=sys.stderr)
            return 1
        finally:
            if executor is not None:
                executor.close()
    elapsed = time.perf_counter() - started
    by_config: dict[int, list[dict[str, Any]]] = {}
    for p in sweep.points:
        by_config.setdefault(p.config, []).append(records[p.index])
    table = combine(configs, by_config)
    runs_table = [_runs_row(p, configs[p.config], records.get(p.index)) for p in sweep.points]
    try:
        with guard.critical(deliver=False):
            written = write_all(out, table, runs_table, _header(sweep, counts))
            write_manifest(out, sweep, command, "complete", counts)
    except OSError as e:
        print(f"error: writing the tables into {out}: {e}", file=sys.stderr)
        return 1
    say(format_text(table))
    if todo:
        print(f"sweep: ran {len(todo)} runs in {elapsed:.1f} s ({simulated:,} simulated requests)", file=sys.stderr)
    say("wrote " + ", ".join(str(p) for p in written))
    if counts["failed"]:
        first = next(r for r in records.values() if r["status"] == "failed")
        again = " (recorded earlier; --retry-failed runs them again)" if failed_before and not args.retry_failed else ""
        print(f"error: {counts['failed']} of {sweep.n_runs} runs failed{again}; first: config "
              f"{first['config']['config']} seed {first['seed']}: {first['error']} (all: runs.csv)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """`python -m sim sweep ARGS`; returns the exit status."""
    guard = SignalGuard()
    guard.install()
    try:
        args = build_parser().parse_args(argv)
        return run_sweep(args, argv, guard)
    except Interrupted as e:
        guard.ignore()
        print(f"interrupted by {e.signal_name}; the runs finished so far are kept", file=sys.stderr)
        return e.exit_code
    finally:
        guard.ignore()
