"""A full day of a serverless LLM platform: wall time and peak memory per policy combination.

The workload is the calibrated Azure Functions generator at full volume (the whole
population of `--functions` functions, uniformly drawn over the full rate spread: about
6.6e8 invocations a day), mapped by application onto a catalogue of `--catalog` models
(`traces/catalog.py`), on a cluster of `--nodes` x `--gpus-per-node` GPUs (default 128 x 8 =
1,024 H100s). A Llama-3.1-8B instance takes one GPU (72 GB with its KV cache) and every one
of the 300 entries is busy all day, so 128 GPUs cannot hold the catalogue. 512 cannot serve
it either: 0.1 h at full volume on 512 met the 5 s TTFT SLO for 32 % of requests (TTFT p50
25 s, about 230k requests queued from the second minute on: each entry's first instance sits
out its keep-alive while the hot entries queue); on 1,024, 65 % (p50 0.36 s; the misses are
the start-up's cold starts, 28 s each).
Target (issue 16): <= 10 minutes per combination for 24 h at full volume on one core,
<= 2 GB peak memory.

A full-volume day is hundreds of millions of requests, so the bench replays what it is
asked to: `--hours` of the day at `--volume` (a fraction of full volume: every function's
rate multiplied by it). Each leg and combination runs in its own process (so its peak RSS
is its own, records off, the trace streamed). Every leg prints its measured rate and the
wall time a full-volume day would take at that rate (the generator's expected request
count for the day divided by the rate per CPU second of the leg's process, since the target is
one core's time and a shared machine's wall clock is not): an extrapolation, labelled as one. The last line
is machine-readable key=value pairs. A full-volume day runs for many hours: `--log DIR` leaves
each leg's progress in DIR (one synced JSON line every ~1M requests), and `--report DIR` prints
where those legs stand, finished, running or killed; a leg whose log says it finished is not
run again. `--cells N` runs the platform as N independent cells (the functions, catalogue
entries and nodes divided among them, each cell drawing its own functions), a few at a time
if asked (`--cell`), on several cores or over several sittings, and prints the platform's
totals once every cell has run: a cell-partitioned platform, not the one cluster above (its
router and placement see one cell). Run, e.g.:
    python bench/bench_day.py --hours 0.05,24 --volume 1,0.002
    python bench/bench_day.py --combos full+fixed --log runs/day; python bench/bench_day.py --report runs/day
    python bench/bench_day.py --combos full+fixed --cells 8 --cell 0,1 --log runs/cells
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from figures import print_figures
from rss import current_rss_mb, peak_rss_mb

# a cell's log: <combination>_<leg>_c<k>of<N>[_python][_pyloops]
CELL_LOG = re.compile(r"(.+)_c(\d+)of(\d+)((?:_python)?(?:_pyloops)?)")
TARGET_S = 600.0
TARGET_MB = 2048.0
DAY_S = 86400.0
POLICY_KINDS = ("staging", "keepalive", "prewarm", "placement", "router", "admission")
DEFAULT_COMBOS = "full+fixed,progressive+hybrid_histogram"


@dataclass(frozen=True)
class Leg:
    """One replay: `hours` of the day at `volume` of full volume, under one policy combination."""

    hours: float
    volume: float
    combo: str
    functions: int
    catalog: int
    nodes: int
    gpus_per_node: int
    profile: str
    seed: int
    log: str = ""  # a JSON-lines file the leg appends its progress to ("": none)
    walk: str = "compiled"  # the default router's walk: "compiled" where numba is, or "python"
    batches: str = "compiled"  # request fidelity's batch loops (SimConfig.batches): "compiled" or "python"
    cell: int = 0  # cell `cell` of a platform run as `cells` cells (`cell_legs`); 1 cell: the whole platform
    cells: int = 1

    def _tag(self, part: str = "") -> str:
        tag = f"h{self.hours:g}_v{self.volume:g}".replace(".", "p") + part
        tag = tag if self.walk == "compiled" else f"{tag}_{self.walk}"
        return tag if self.batches == "compiled" else f"{tag}_pyloops"

    @property
    def tag(self) -> str:
        return self._tag(f"_c{self.cell}of{self.cells}" if self.cells > 1 else "")

    @property
    def platform_tag(self) -> str:
        """The tag of the platform this cell belongs to (all its cells share it)."""
        return self._tag(f"_cells{self.cells}")

    def same_run(self, logged: dict) -> bool:
        """Whether a log's leg (its header's `leg`) replays what this leg replays (where it logs,
        and how it is labelled, aside)."""
        mine = {k: v for k, v in asdict(self).items() if k not in ("log", "cell", "cells")}
        return all(logged.get(k, LOGGED_BEFORE.get(k, Leg.__dataclass_fields__[k].default)) == v
                   for k, v in mine.items())


# What a log written before a field existed ran with: batch loops were Python processes then.
LOGGED_BEFORE = {"batches": "python"}


def share(total: int, parts: int, k: int) -> int:
    """Part k of `total` divided into `parts` as evenly as integers allow (the first
    `total % parts` parts one more): the parts add up to `total`."""
    return total // parts + (k < total % parts)


def cell_legs(leg: Leg, cells: int) -> list[Leg]:
    """`leg`'s platform run as `cells` independent cells: cell k has its
    share of the functions, catalogue entries and nodes, and its own seed (`seed * cells + k`,
    for its draw of functions and for the run), so that cells are alike but not copies."""
    if cells == 1:
        return [leg]
    return [replace(leg, functions=share(leg.functions, cells, k), catalog=share(leg.catalog, cells, k),
                    nodes=share(leg.nodes, cells, k), seed=leg.seed * cells + k, cell=k, cells=cells)
            for k in range(cells)]


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets (policy parameters hold commas: `fixed[ttl=60]`)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def combo_specs(combo: str) -> dict[str, str]:
    """`staging+keepalive[+prewarm+placement+router+admission]` -> PolicySet.from_specs keywords."""
    parts = split_top(combo, "+")
    if not 1 <= len(parts) <= len(POLICY_KINDS):
        raise SystemExit(f"bench_day: combo {combo!r}: expected staging+keepalive[+prewarm+placement+router+admission]")
    return dict(zip(POLICY_KINDS, parts, strict=False))


def slug(combo: str) -> str:
    return "_".join(p.split("[")[0] for p in split_top(combo, "+"))


def open_day(leg: Leg, duration_s: float, volume: float):
    """The catalogue-mapped generator trace for `duration_s` of the day at `volume`."""
    from sim.profile import load_profile
    from traces.registry import open_trace

    base = load_profile(leg.profile).default_model.name
    return open_trace("azure_functions", duration_s=duration_s, seed=leg.seed, functions=leg.functions,
                      draw="sample", rate_scale=volume, catalog_size=leg.catalog, catalog=base)


def run_leg(leg: Leg) -> dict:
    """Replay one leg in this process; the measurements as a dict."""
    from policies.ttft import TtftEstimator
    from sim.config import SimConfig
    from sim.metrics import RunMetrics
    from sim.policyset import PolicySet
    from sim.profile import load_profile
    from sim.simulator import Simulator

    if leg.walk == "python":  # this process is the leg's own: never compile a walk in it
        TtftEstimator.compiled_min_candidates = TtftEstimator.compiled_min_gpus = sys.maxsize
    rss_start = current_rss_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    duration = leg.hours * 3600.0
    trace = open_day(leg, duration, leg.volume)
    if leg.log:
        append_line(leg.log, {"leg": asdict(leg), "expected_requests": trace.details["expected_requests"],
                              **code_stamp()})
    policies = PolicySet.from_specs(**combo_specs(leg.combo))
    metrics = RunMetrics(policies.label, 5.0)  # no writer: records off
    sim = Simulator(load_profile(leg.profile), policies,
                    SimConfig(nodes=leg.nodes, gpus_per_node=leg.gpus_per_node, seed=leg.seed,
                              batches=leg.batches), metrics)
    rss_samples: list[float] = []

    def progress(n: int) -> None:
        if not n % (1 << 20):  # every ~1M requests: is memory flat?
            rss_samples.append(round(current_rss_mb(), 1))
            if leg.log:
                log_progress(leg.log, sim, metrics, n, time.perf_counter() - t0, time.process_time() - c0)

    row = sim.run(iter(trace), on_progress=progress, horizon_s=duration)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if leg.log:
        log_progress(leg.log, sim, metrics, row["requests"], wall, cpu, done=True)
    rate = row["requests"] / wall if wall > 0 else float("nan")
    cpu_rate = row["requests"] / cpu if cpu > 0 else float("nan")
    return {
        **asdict(leg), "requests": row["requests"], "expected_requests": trace.details["expected_requests"],
        "wall_s": wall, "cpu_s": cpu, "req_per_s": rate, "cpu_req_per_s": cpu_rate, "peak_rss_mb": peak_rss_mb(), "rss_start_mb": rss_start,
        "rss_every_1m_requests_mb": rss_samples, "cold_start_pct": row["cold_start_pct"],
        "ttft_p99_s": row["ttft_p99_s"], "slo_pct": row["slo_attainment_pct"],
        "served": metrics.served, "slo_met": metrics.slo_met, "cold": metrics.cold,
        "deployments": len(sim.deployments), "label": policies.label,
    }


def log_progress(path: str, sim, metrics, requests: int, wall_s: float, cpu_s: float, done: bool = False) -> None:
    """Append one JSON line of where a long leg stands, synced to disk.

    Why: a full-volume day takes longer than a working session; if its process is killed,
    the log still says how far it got, how fast, and what it had measured so far. The
    last line of a leg that ended has `done` true.
    """
    ttft = metrics.ttft_sketch
    line = {
        "requests": requests, "sim_s": round(sim.env.now, 3), "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1),
        "cpu_req_per_s": round(requests / cpu_s) if cpu_s > 0 else None, "rss_mb": round(current_rss_mb(), 1),
        "finished": metrics.requests, "served": metrics.served, "rejected": metrics.rejected, "cold": metrics.cold,
        "slo_met": metrics.slo_met, "ttft_p50_s": ttft.quantile(0.5) if ttft.count else None,
        "ttft_p99_s": ttft.quantile(0.99) if ttft.count else None, "instances": len(sim.instances), "done": done,
    }
    append_line(path, line)


def code_stamp() -> dict[str, str]:
    """Which code and machine a leg ran on, for its log's header: logs kept for months (or in
    the repository) are read next to others from other code, and a figure is only worth what
    the code that measured it says. `code` is the commit, with `+changes` when tracked files
    differ from it, or `unknown` outside a git checkout; `versions` are the run manifest's
    (`sim.runstore.versions`: Python and the simulator's packages)."""
    from sim.runstore import versions

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=30)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        code = "unknown"
    else:
        code = commit.stdout.strip() if commit.returncode == 0 and commit.stdout.strip() else "unknown"
        if code != "unknown" and changed.returncode == 0 and changed.stdout.strip():
            code += "+changes"
    return {"code": code, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "versions": versions()}


def append_line(path: str, record: dict) -> None:
    """Append one JSON line to `path` and sync it: a line is either whole on disk or absent."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_log(path: Path) -> tuple[dict | None, list[dict]]:
    """(the leg's header or None, its progress lines) from a `--log` file. A torn last line (a
    process killed mid-write) is skipped; any other bad line is an error naming file and line."""
    header, lines = None, []
    text = path.read_text().splitlines()
    for number, raw in enumerate(text, 1):
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            if number == len(text):
                break
            raise SystemExit(f"bench_day: {path}, line {number}: not a JSON line") from None
        if "leg" in rec:
            header, lines = rec, []  # the leg started afresh in this file: its own lines from here
        else:
            lines.append(rec)
    return header, lines


def _or_nan(value) -> float:
    return float("nan") if value is None else float(value)


def logged_result(leg: Leg) -> dict | None:
    """What `run_leg` measured for `leg`, read from its log if the log says the same leg ran to
    its end (None otherwise: no log, another leg's, or one that did not finish)."""
    path = Path(leg.log)
    if not leg.log or not path.exists():
        return None
    header, lines = read_log(path)
    if header is None or not lines or not lines[-1].get("done") or not leg.same_run(header["leg"]):
        return None
    last = lines[-1]
    requests = last["requests"]
    return {
        "requests": requests, "expected_requests": header["expected_requests"], "wall_s": last["wall_s"],
        "cpu_s": last["cpu_s"], "req_per_s": requests / last["wall_s"] if last["wall_s"] else float("nan"),
        "cpu_req_per_s": requests / last["cpu_s"] if last["cpu_s"] else float("nan"),
        "peak_rss_mb": max(line["rss_mb"] for line in lines), "rss_every_1m_requests_mb": [],
        "cold_start_pct": 100.0 * last["cold"] / requests if requests else float("nan"),
        "ttft_p99_s": _or_nan(last["ttft_p99_s"]), "served": last["served"], "slo_met": last["slo_met"],
        "cold": last["cold"], "logged": True,
    }


@dataclass
class PlatformTotal:
    """A platform run as cells, added up from its cells' results (`run_leg`'s or a log's)."""

    cells: int
    done: int = 0
    requests: int = 0
    served: int = 0
    slo_met: int = 0
    cold: int = 0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    longest_cell_cpu_s: float = 0.0  # the platform day's time with one core per cell

    def add(self, r: dict) -> None:
        self.done += 1
        self.requests += r["requests"]
        self.served += r["served"]
        self.slo_met += r["slo_met"]
        self.cold += r["cold"]
        cpu_s = round(r["cpu_s"], 1)  # as a cell's log holds it, so a run and --report add up the same
        self.cpu_s += cpu_s
        self.longest_cell_cpu_s = max(self.longest_cell_cpu_s, cpu_s)
        self.peak_rss_mb = max(self.peak_rss_mb, r["peak_rss_mb"])

    def _pct(self, count: int) -> float:
        return 100.0 * count / self.requests if self.requests else float("nan")

    def figures(self, key: str) -> dict[str, object]:
        if self.done < self.cells:  # partial sums would read as the platform's
            return {f"{key}_cells_done": self.done}
        return {f"{key}_cells_done": self.done, f"{key}_requests": self.requests, f"{key}_cpu_s": round(self.cpu_s, 1),
                f"{key}_peak_mem_mb": round(self.peak_rss_mb), f"{key}_slo_pct": round(self._pct(self.slo_met), 3),
                f"{key}_cold_start_pct": round(self._pct(self.cold), 3),
                f"{key}_ratio_to_10min": round(self.cpu_s / TARGET_S, 2),
                f"{key}_longest_cell_cpu_s": round(self.longest_cell_cpu_s, 1)}

    def line(self, name: str) -> str:
        if self.done < self.cells:
            return f"{name}: {self.done} of {self.cells} cells done; the platform's totals once all have run"
        return (f"{name}: {self.cells} cells, {self.requests} requests in {self.cpu_s:.0f} s of CPU "
                f"({self.cpu_s / 3600:.2f} h, {self.cpu_s / TARGET_S:.1f}x the 10 min target; the longest cell "
                f"{self.longest_cell_cpu_s:.0f} s, the day with one core per cell), peak "
                f"{self.peak_rss_mb:.0f} MB a cell, SLO met {self._pct(self.slo_met):.2f} %, cold starts "
                f"{self._pct(self.cold):.2f} %")


def report(folder: str) -> None:
    """Print where each leg logged in `folder` stands: done or unfinished (a log cannot tell a
    leg still running from one that was killed), its rate, and for an unfinished leg the CPU
    time the whole leg would take at the rate it has kept so far."""
    paths = sorted(Path(folder).glob("*.jsonl"))
    if not paths:
        raise SystemExit(f"bench_day: --report {folder}: no .jsonl logs there")
    width = max(28, *(len(path.stem) for path in paths))  # a cell's log name is long
    print(f"{'log':{width}s} {'state':>10s} {'requests':>11s} {'sim h':>6s} {'cpu h':>6s} {'cpu r/s':>8s} {'peak MB':>8s} "
          f"{'SLO %':>6s} {'p50 s':>7s} {'p99 s':>7s} {'leg cpu h':>10s}  code")
    figures: dict[str, object] = {}
    platforms: dict[str, PlatformTotal] = {}
    for path in paths:
        header, lines = read_log(path)
        key = path.stem
        if not lines:
            print(f"{key:{width}s} {'started':>10s}")
            continue
        last = lines[-1]
        done = bool(last.get("done"))
        expected = header["expected_requests"] if header else None
        projected = None
        if done:
            projected = last["cpu_s"]
        elif expected and last["requests"]:
            projected = last["cpu_s"] * expected / last["requests"]
        slo = 100.0 * last["slo_met"] / last["served"] if last["served"] else float("nan")
        peak = max(line["rss_mb"] for line in lines)
        leg_h = "?" if projected is None else f"{projected / 3600:.1f}" + ("" if done else "*")
        print(f"{key:{width}s} {'done' if done else 'unfinished':>10s} {last['requests']:11d} {last['sim_s'] / 3600:6.2f} "
              f"{last['cpu_s'] / 3600:6.2f} {_or_nan(last['cpu_req_per_s']):8.0f} {peak:8.0f} {slo:6.1f} "
              f"{_or_nan(last['ttft_p50_s']):7.3f} {_or_nan(last['ttft_p99_s']):7.1f} {leg_h:>10s}  "
              f"{(header or {}).get('code', '?')}")
        figures.update({f"{key}_done": int(done), f"{key}_requests": last["requests"], f"{key}_sim_s": last["sim_s"],
                        f"{key}_cpu_s": last["cpu_s"], f"{key}_peak_mem_mb": round(peak)})
        if projected is not None:
            figures[f"{key}_leg_cpu_s"] = round(projected)
        cell = CELL_LOG.fullmatch(key)
        if cell:  # one cell of a platform run as cells: add it up with the others
            prefix, k, n, walk = cell.groups()
            total = platforms.setdefault(f"{prefix}_cells{n}{walk or ''}", PlatformTotal(int(n)))
            if done and int(k) < int(n):
                total.add({**last, "peak_rss_mb": peak})
    print("leg cpu h: the leg's CPU time; * projected, the leg's expected requests over the rate kept so far; "
          "? where the log does not give the leg's size. code: the commit the leg ran (+changes: with "
          "uncommitted changes; ? in logs from before the header named it)")
    for key, total in platforms.items():
        print(total.line(key))
        figures.update(total.figures(key))
    print_figures(figures)


def run_in_child(leg: Leg) -> dict:
    """`run_leg` in a fresh interpreter, so peak RSS and imports are the leg's own."""
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(asdict(leg))], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        raise SystemExit(f"bench_day: leg {leg.tag} {leg.combo} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"bench_day: --{name} {text!r}: expected comma-separated numbers") from None
    if not vals or not all(v > 0 for v in vals):
        raise SystemExit(f"bench_day: --{name} {text!r}: expected positive numbers")
    return vals


def leg_figures(leg: Leg, r: dict, full_day: float, walks: list[str], figures: dict) -> dict[str, object]:
    """Print the table row of one leg's result `r` (run now or read from its log) and return its
    figures (`figures`: those so far, where a compiled leg's rate is found for the speed-up)."""
    day = full_day / r["cpu_req_per_s"]  # the target is one core's time: CPU, not a shared wall
    name = leg.combo + (f" cell {leg.cell}/{leg.cells}" if leg.cells > 1 else "")
    name += " (python walk)" if leg.walk == "python" else ""
    if r.get("logged"):
        name += " (logged)"
    print(f"{name:34s} {leg.hours:6g} {leg.volume:7g} {r['requests']:10d} {r['wall_s']:8.1f} {r['req_per_s']:8.0f} "
          f"{r['cpu_req_per_s']:8.0f} {r['peak_rss_mb']:8.0f} {r['cold_start_pct']:7.2f} {day / 60:9.0f} min = "
          f"{day / TARGET_S:5.1f}x target", flush=True)
    if r["rss_every_1m_requests_mb"]:
        print(f"{'':34s} RSS every 1M requests (MB): {r['rss_every_1m_requests_mb']}")
    key = f"{slug(leg.combo)}_{leg.tag}"
    out: dict[str, object] = {
        f"{key}_requests": r["requests"], f"{key}_wall_s": round(r["wall_s"], 1), f"{key}_cpu_s": round(r["cpu_s"], 1),
        f"{key}_req_per_s": round(r["req_per_s"]), f"{key}_cpu_req_per_s": round(r["cpu_req_per_s"]),
        f"{key}_peak_mem_mb": round(r["peak_rss_mb"]), f"{key}_cold_start_pct": round(r["cold_start_pct"], 3),
        f"{key}_day_extrapolated_s": round(day), f"{key}_ratio_to_10min": round(day / TARGET_S, 2),
        f"{key}_ratio_to_2gb": round(r["peak_rss_mb"] / TARGET_MB, 3),
    }
    compiled = f"{slug(leg.combo)}_{replace(leg, walk='compiled').tag}"
    if leg.walk == "python" and "compiled" in walks and f"{compiled}_cpu_req_per_s" in figures:  # it ran before
        speedup = figures[f"{compiled}_cpu_req_per_s"] / out[f"{key}_cpu_req_per_s"]
        out[f"{compiled}_walk_speedup"] = round(speedup, 3)
        print(f"{'':34s} compiled walk: {speedup:.2f}x the python walk's requests per CPU second")
    return out


def cells_to_run(cells: int, cell: str, most: int) -> list[int]:
    """The cell indices `--cell` names (all of `--cells` by default), checked (`most`: the fewest
    of nodes, catalogue entries and functions, of which each cell needs one)."""
    if cells < 1 or cells > most:
        raise SystemExit(f"bench_day: --cells {cells}: expected 1 to {most} (each cell needs a node, a catalogue "
                         f"entry and a function)")
    if not cell.strip():
        return list(range(cells))
    try:
        which = [int(k) for k in cell.split(",") if k.strip()]
    except ValueError:
        raise SystemExit(f"bench_day: --cell {cell!r}: expected comma-separated cell indices") from None
    bad = [k for k in which if not 0 <= k < cells]
    if cells == 1 or bad or not which:
        raise SystemExit(f"bench_day: --cell {cell!r}: expected indices from 0 to {cells - 1} of --cells {cells}")
    return sorted(set(which))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", default="24", help="simulated hours per leg, comma list (default 24: the target)")
    ap.add_argument("--volume", default="1",
                    help="fraction of full volume per leg, comma list paired with --hours (default 1)")
    ap.add_argument("--combos", default=DEFAULT_COMBOS,
                    help=f"policy combinations staging+keepalive[+prewarm+placement+router+admission], comma list "
                         f"(default {DEFAULT_COMBOS})")
    ap.add_argument("--functions", type=int, default=46_000, help="functions in the workload (default 46,000)")
    ap.add_argument("--catalog", type=int, default=300, help="catalogue entries (models) (default 300)")
    ap.add_argument("--nodes", type=int, default=128, help="nodes of --gpus-per-node GPUs (default 128)")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--profile", default="h100-llama3.1-8b-published")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default="", metavar="DIR",
                    help="append each leg's progress (every ~1M requests: simulated time, CPU time, memory, SLO and "
                         "TTFT so far) to DIR/<combination>_<leg>.jsonl, synced, so a killed day still says how far "
                         "it got")
    ap.add_argument("--walk", default="compiled",
                    help="the default router's walk over a model's instances: compiled (numba), python, or "
                         "compiled,python to run each leg both ways and print the speed-up (the results are "
                         "the same; default compiled)")
    ap.add_argument("--batches", choices=("compiled", "python"), default="compiled",
                    help="request fidelity's batch loops: compiled (numba, no event per step) or python (a SimPy "
                         "process per busy instance); the same results (default compiled)")
    ap.add_argument("--cells", type=int, default=1, metavar="N",
                    help="run the platform as N independent cells: cell k gets its share of --functions, "
                         "--catalog and --nodes (the first cells one more where they do not divide) and its "
                         "own seed (seed*N+k); the platform's totals are printed once every cell has run, in "
                         "this call or, with --log, before it (default 1: one cluster)")
    ap.add_argument("--cell", default="", metavar="K,...",
                    help="with --cells: which cells to run in this call (default all), so that a platform "
                         "day can run a few cells at a time, on several cores or over several sittings")
    ap.add_argument("--report", metavar="DIR",
                    help="print where the legs logged in DIR (by --log) stand, finished or not (and the "
                         "totals of platforms run as cells), and stop")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.report:
        report(args.report)
        return
    if args.worker:
        print(json.dumps(run_leg(Leg(**json.loads(args.worker)))))
        return
    hours, volumes = floats(args.hours, "hours"), floats(args.volume, "volume")
    if len(volumes) == 1:
        volumes *= len(hours)
    if len(hours) == 1:
        hours *= len(volumes)
    if len(hours) != len(volumes):
        raise SystemExit(f"bench_day: --hours has {len(hours)} values, --volume {len(volumes)}: pair them")
    combos = split_top(args.combos)
    for c in combos:
        combo_specs(c)
    walks = [w.strip() for w in args.walk.split(",") if w.strip()]
    if not walks or not set(walks) <= {"compiled", "python"}:
        raise SystemExit(f"bench_day: --walk {args.walk!r}: expected compiled, python or compiled,python")
    which = cells_to_run(args.cells, args.cell, min(args.nodes, args.catalog, args.functions))
    probe = Leg(24.0, 1.0, combos[0], args.functions, args.catalog, args.nodes, args.gpus_per_node, args.profile,
                args.seed)
    full_day = float(open_day(probe, DAY_S, 1.0).details["expected_requests"])  # the generator's expectation
    cells = f", run as {args.cells} cells" if args.cells > 1 else ""
    print(f"workload: {args.functions} functions -> catalogue of {args.catalog} ({args.profile}), "
          f"{args.nodes}x{args.gpus_per_node} = {args.nodes * args.gpus_per_node} GPUs{cells}, request fidelity "
          f"({args.batches} batch loops), "
          f"records off")
    print(f"{'combination':34s} {'hours':>6s} {'volume':>7s} {'requests':>10s} {'wall s':>8s} {'req/s':>8s} {'cpu r/s':>8s} "
          f"{'peak MB':>8s} {'cold %':>7s} {'day@full (extrapolated)':>24s}")
    figures: dict[str, object] = {"full_day_requests": round(full_day)}
    if args.log:
        Path(args.log).mkdir(parents=True, exist_ok=True)
    for combo in combos:
        for (h, v), walk in ((hv, w) for hv in zip(hours, volumes, strict=True) for w in walks):
            whole = Leg(h, v, combo, args.functions, args.catalog, args.nodes, args.gpus_per_node, args.profile,
                        args.seed, walk=walk, batches=args.batches)
            platform = PlatformTotal(args.cells) if args.cells > 1 else None
            legs = cell_legs(whole, args.cells)
            for leg in legs:
                if args.log:
                    leg = replace(leg, log=str(Path(args.log) / f"{slug(combo)}_{leg.tag}.jsonl"))
                r = logged_result(leg)  # it ran to its end before: not again
                if r is None:
                    if leg.cell not in which:
                        continue
                    r = run_in_child(leg)
                if platform is not None:
                    platform.add(r)
                figures.update(leg_figures(leg, r, full_day, walks, figures))
            if platform is not None:
                key = f"{slug(combo)}_{legs[0].platform_tag}"
                print(f"{'':34s} {platform.line('platform')}", flush=True)
                figures.update(platform.figures(key))
    print(f"target: a full-volume day (~{figures['full_day_requests']:.3g} requests) in <= {TARGET_S / 60:g} min "
          f"and <= {TARGET_MB:g} MB per combination; 'day@full' divides that count by the leg's rate per CPU second")
    print_figures(figures)


if __name__ == "__main__":
    main()
