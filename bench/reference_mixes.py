"""Reference mixes: does a change to the simulator keep every result to the last bit?

A speed change (a compiled path, a memo, a trimmed call chain) must not move any number. The
unit, differential and property tests check rules; this checks *outcomes* over a wide spread of
inputs: about thirty mixes of staging, keep-alive, prewarm, placement, routing and admission
policies, both fidelities, both batch loops, both router walks, shared bases, remote storage,
compute sharing, overload, several profiles, the platform day's own workload (a catalogue over
many functions on 64 GPUs) and, where `../shared/traces` holds them, real traces. Each mix is one
`sim.run(records=True, ...)` call, as a user would make it; its digest is a SHA-256 per column of
the per-request records, of the summary and of the per-model table (floats written with `repr`,
so one bit differs, the digest differs), and the summary's rows themselves, so that a difference
can be named. Some mixes are *twins* of another: the same run by another code path (the batch
loops and the router's walk in Python rather than compiled), whose results must be the same; every
call checks them, with no file to compare against.

    python bench/reference_mixes.py                           # every mix once: do the twins agree?
    python bench/reference_mixes.py --out ref.json            # before the change
    python bench/reference_mixes.py --against ref.json        # after it: exit 1 naming what moved
    python bench/reference_mixes.py --only day_walk_python --against ref.json
    python bench/reference_mixes.py --list

Compare digests made on the same machine and package versions: numpy or a libm may round a
transcendental function differently elsewhere. A mix whose trace files are absent is recorded as
skipped and compared only when both sides ran it. The last line is key=value pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_TRACES = ROOT.parent / "shared" / "traces"


@dataclass(frozen=True)
class Mix:
    """One `sim.run` call: its keyword options, and the conditions it runs under."""

    name: str
    options: dict[str, Any]
    walk: str = "compiled"  # "python": the default router's walk stays in Python for this mix
    needs: str = ""  # a folder under ../shared/traces that must exist, else the mix is skipped
    twin_of: str = ""  # a mix that must give the same results (the same run by another code path)
    notes: str = ""


# The generator at rates where instances fill, queue and evict (the default trace at its own
# rate is mostly idle); `functions` small so that each mix runs in a few seconds.
BUSY = {"trace": "synthetic", "trace_option": {"functions": 12, "rate_scale": 40}, "duration": 1200}
BUSY_CATALOG = {"trace": "synthetic", "duration": 900,
                "trace_option": {"functions": 200, "draw": "sample", "rate_scale": 1.5, "catalog_size": 12,
                                 "catalog": "llama-3.1-8b"},
                "profile": "h100-llama3.1-8b-published"}
# The platform day's workload (bench/bench_day.py), scaled to a 64-GPU cluster and 4 minutes.
DAY = {"trace": "synthetic", "duration": 240,
       "trace_option": {"functions": 3000, "draw": "sample", "rate_scale": 0.5, "catalog_size": 20,
                        "catalog": "llama-3.1-8b"},
       "profile": "h100-llama3.1-8b-published", "nodes": 8, "gpus_per_node": 8,
       "staging": "full,progressive", "keepalive": "fixed,hybrid_histogram"}
ALL_STAGING = "full,pipelined,progressive"


def packed_profile() -> str:
    """A profile whose GPUs hold more instances than compute slots (every shipped profile's KV cache
    fills its GPU, so without this no mix would step co-located instances): the A6000 LLaMA-2-7B
    profile with a KV cache of 4,096 tokens, 15.6 GB an instance, three to a 49.5 GB GPU. Written to
    the temporary folder, the same bytes every time; a mix names it through this function."""
    import tempfile

    data = json.loads((ROOT / "profiles" / "a6000-llama2-7b-published.json").read_text())
    data["name"] = "a6000-llama2-7b-packed"
    data["models"][0]["max_tokens_in_flight"] = 4096
    path = Path(tempfile.gettempdir()) / "progressive-serve-reference" / "a6000-llama2-7b-packed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        write_atomically(str(path), text)
    return str(path)


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if key == "trace_option":
            out[key] = {**base.get(key, {}), **value}
        else:
            out[key] = value
    return out


def mixes() -> list[Mix]:
    """Every mix, in the order they run (names are stable: digests are keyed by them)."""
    m = [
        Mix("default_trace", {"trace": "synthetic", "duration": 1800},
            notes="the generator azure_functions falls back to, named so that no trace files on the machine change it"),
        Mix("busy_staging_keepalive", _with(BUSY, staging=ALL_STAGING, keepalive="none,fixed[ttl=60]")),
        Mix("busy_iteration", _with(BUSY, staging=ALL_STAGING, keepalive="none,fixed[ttl=60]",
                                    fidelity="iteration", duration=600)),
        Mix("busy_python_batches", _with(BUSY, staging=ALL_STAGING, keepalive="none,fixed[ttl=60]",
                                         batches="python"), twin_of="busy_staging_keepalive"),
        Mix("planned_overlap_smollm", _with(BUSY, profile="nvidia-h200-smollm2-135m-measured",
                                            trace_option={"catalog": "smollm2-135m"}, staging="planned,planned[target=stages,stages=3],"
                                                 "progressive[overlap=True]", keepalive="fixed[ttl=120]"),
            notes="planned staging needs a measured layer importance, which the SmolLM2 profile carries"),
        Mix("keepalive_library", _with(BUSY, staging="full,progressive",
                                       keepalive="greedy_dual,hybrid_histogram,tiered,two_tier")),
        Mix("keepalive_library_iteration", _with(BUSY, staging="progressive", fidelity="iteration",
                                                 keepalive="hybrid_histogram,tiered", duration=600)),
        Mix("prewarm_library", _with(BUSY, staging="full", keepalive="fixed[ttl=60]",
                                     prewarm="none,forecast,histogram,popular")),
        Mix("placement_library", _with(BUSY, staging="full", keepalive="fixed[ttl=60]",
                                       placement="first_fit,best_fit,spread,locality,greedy_dual")),
        Mix("router_library", _with(BUSY, staging="full,progressive", keepalive="fixed[ttl=60]",
                                    router="expected_wait,least_loaded,prefer_full")),
        Mix("admission_overload", _with(BUSY, trace_option={"rate_scale": 200}, duration=600, staging="full",
                                        keepalive="fixed",
                                        admission="always,deadline,degrade,goodput,max_queue[depth=8]")),
        Mix("admission_overload_iteration", _with(BUSY, trace_option={"rate_scale": 200}, duration=300,
                                                  staging="progressive", keepalive="fixed", fidelity="iteration",
                                                  admission="degrade,goodput")),
        Mix("remote_storage", _with(BUSY, staging=ALL_STAGING, keepalive="fixed[ttl=60]", storage="remote")),
        Mix("packed_time_slice", _with(BUSY, profile=packed_profile, staging="full,progressive",
                                       keepalive="fixed[ttl=60]"),
            notes="three instances fit a GPU of one compute slot: co-located instances share its compute"),
        Mix("packed_no_sharing", _with(BUSY, profile=packed_profile, staging="full,progressive",
                                       keepalive="fixed[ttl=60]", compute_sharing="none")),
        Mix("small_cluster_slo", _with(BUSY, staging=ALL_STAGING, keepalive="fixed[ttl=60]", nodes=1,
                                       gpus_per_node=2, slo_ttft=2.0)),
        Mix("catalog_h100", _with(BUSY_CATALOG, staging=ALL_STAGING, keepalive="none,fixed")),
        Mix("catalog_shared_base", _with(BUSY_CATALOG, staging="full,progressive", keepalive="fixed",
                                         shared_base="0.8")),
        Mix("catalog_shared_storage", _with(BUSY_CATALOG, staging="full,progressive", keepalive="fixed",
                                            shared_base="0.8,storage")),
        Mix("catalog_shared_base_iteration", _with(BUSY_CATALOG, staging="progressive", keepalive="fixed",
                                                   shared_base="0.8", fidelity="iteration", duration=300)),
        Mix("qwen_32b", _with(BUSY_CATALOG, profile="h100-qwen3-32b-published", trace_option={"catalog": "qwen3-32b"},
                              staging="full,progressive", keepalive="fixed[ttl=60]")),
        Mix("h200_measured_7b", _with(BUSY, profile="nvidia-h200-llama-2-7b-measured", staging=ALL_STAGING,
                                      keepalive="fixed[ttl=60]")),
        Mix("h200_measured_smollm", _with(BUSY, profile="nvidia-h200-smollm2-135m-measured",
                                          trace_option={"catalog": "smollm2-135m"}, staging="full,progressive",
                                          keepalive="none")),
        Mix("published_preset", _with(BUSY, duration=600, preset="published")),
        Mix("seed_7", _with(BUSY, seed=7, staging="full,progressive", keepalive="fixed[ttl=60]")),
        Mix("day_workload", dict(DAY)),
        Mix("day_walk_python", dict(DAY), walk="python", twin_of="day_workload",
            notes="the router's walk in Python"),
        Mix("day_python_batches", _with(DAY, batches="python"), twin_of="day_workload",
            notes="Python batch loops"),
        Mix("azure_llm_2023", {"trace": "azure_llm_2023", "trace_dir": str(SHARED_TRACES / "azure_llm_2023"),
                               "duration": 600, "staging": ALL_STAGING, "keepalive": "none,fixed"},
            needs="azure_llm_2023"),
        Mix("burstgpt", {"trace": "burstgpt", "trace_dir": str(SHARED_TRACES / "burstgpt"), "duration": 40000,
                         "staging": "full,progressive", "keepalive": "fixed[ttl=60]"}, needs="burstgpt"),
        Mix("azure_functions_2019", {"trace": "azure_functions_2019",
                                     "trace_dir": str(SHARED_TRACES / "azure_functions_2019"),
                                     "trace_option": {"functions": 8, "rate_scale": 20}, "duration": 3600,
                                     "staging": "full,progressive", "keepalive": "none,fixed,hybrid_histogram"},
            needs="azure_functions_2019"),
        Mix("mooncake", {"trace": "mooncake", "trace_dir": str(SHARED_TRACES / "mooncake"), "duration": 600,
                         "staging": "full,progressive", "keepalive": "none,fixed[ttl=60]"}, needs="mooncake"),
    ]
    names = [x.name for x in m]
    assert len(names) == len(set(names)), "mix names must be unique"
    assert all(x.twin_of in names[:i] for i, x in enumerate(m) if x.twin_of), "a twin follows its mix"
    return m


# ---------------------------------------------------------------------------------------------
# digests


def _sha(lines: Iterator[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:20]


def _cell(value: Any) -> str:
    """A value as text that tells apart every float bit (repr round-trips) and NaN from None."""
    return repr(value.item() if hasattr(value, "item") else value)


def frame_digest(frame) -> dict[str, str]:
    """A digest per column of a DataFrame, in row order (its shape is in the keys and values)."""
    return {str(col): _sha(_cell(v) for v in frame[col].tolist()) for col in frame.columns}


def plain(value: Any) -> Any:
    """A summary cell as JSON keeps it (NaN as a string, so that it compares equal to itself)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value != value:
        return "nan"
    return value


@contextmanager
def walk_in_python(on: bool) -> Iterator[None]:
    """The default router's walk kept in Python for one mix (as `bench_day --walk python` does for a
    whole process), put back after it."""
    if not on:
        yield
        return
    from policies.ttft import TtftEstimator

    saved = TtftEstimator.compiled_min_candidates, TtftEstimator.compiled_min_gpus
    TtftEstimator.compiled_min_candidates = TtftEstimator.compiled_min_gpus = sys.maxsize
    try:
        yield
    finally:
        TtftEstimator.compiled_min_candidates, TtftEstimator.compiled_min_gpus = saved


def compiled_paths_unready() -> str:
    """Why the compiled batch loops or the compiled walk cannot run here ("" when both can). The
    simulator falls back to Python quietly where numba is missing or cannot compile (a warning
    that `sim.run` keeps to itself on success), so a twin would then match its mix trivially."""
    try:
        from policies.ttft_kernel import ready as walk_ready
        from sim.compiled_batch import ready as batches_ready

        batches_ready()
        walk_ready()
    except Exception as exc:  # numba missing, or unable to compile or cache here
        return f"{type(exc).__name__}: {exc}"
    return ""


def run_mix(mix: Mix) -> dict[str, Any]:
    """The mix's digest: per-column hashes of records, summary and models, and the summary's rows."""
    from sim import run
    from sim.api import SimulationError

    if mix.needs and not (SHARED_TRACES / mix.needs).is_dir():
        return {"skipped": f"{SHARED_TRACES / mix.needs} is absent"}
    options = {k: v() if callable(v) else v for k, v in mix.options.items()}  # a profile written on demand
    t0 = time.process_time()
    with walk_in_python(mix.walk == "python"):
        try:
            res = run(records=True, **options)
        except SimulationError as exc:  # recorded and compared like a result; the command exits 1
            return {"error": str(exc)}
    records = res.records
    summary = res.summary
    return {
        "records": len(records), "cpu_s": round(time.process_time() - t0, 2),
        "records_digest": frame_digest(records), "summary_digest": frame_digest(summary),
        "models_digest": frame_digest(res.models),
        "summary": [{str(k): plain(v) for k, v in row.items()} for row in summary.to_dict("records")],
    }


# ---------------------------------------------------------------------------------------------
# comparing


@dataclass
class Comparison:
    same: list[str] = field(default_factory=list)
    differ: dict[str, list[str]] = field(default_factory=dict)  # mix -> what moved, in words
    unmatched: list[str] = field(default_factory=list)  # skipped on one side, or absent from the file


def _moved(part: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    cols = sorted(set(old) | set(new))
    return [f"{part}.{c}" if c in old and c in new else f"{part}.{c} ({'added' if c in new else 'removed'})"
            for c in cols if old.get(c) != new.get(c)]


def _summary_moves(old: list[dict], new: list[dict], limit: int = 3) -> list[str]:
    if len(old) != len(new):
        return [f"summary rows {len(old)} -> {len(new)}"]
    out = []
    for o, n in zip(old, new, strict=True):
        for key in sorted(set(o) | set(n)):
            if o.get(key) != n.get(key):
                out.append(f"{o.get('policy', o.get('id', '?'))}: {key} {o.get(key)!r} -> {n.get(key)!r}")
    return out[:limit] + ([f"... {len(out) - limit} more summary cells"] if len(out) > limit else [])


def twins_apart(chosen: list[Mix], digests: dict[str, dict]) -> dict[str, list[str]]:
    """Mixes whose results differ from their twin's (the same run by another code path: the
    Python batch loops, the Python walk), both having run in this call: what moved."""
    out = {}
    for m in chosen:
        if m.twin_of and m.twin_of in digests and m.name in digests:
            c = compare({m.name: digests[m.twin_of]}, {m.name: digests[m.name]})
            if m.name in c.differ:
                out[m.name] = c.differ[m.name]
    return out


def compare(old: dict[str, dict], new: dict[str, dict]) -> Comparison:
    """Which mixes give the same digests in `old` and `new`, and what moved in the others."""
    c = Comparison()
    for name, n in new.items():
        o = old.get(name)
        if o is None or "skipped" in o or "skipped" in n:
            c.unmatched.append(name)
            continue
        if "error" in o or "error" in n:
            if o.get("error") != n.get("error"):
                c.differ[name] = [f"error {o.get('error')!r} -> {n.get('error')!r}"]
            else:
                c.same.append(name)
            continue
        moved = [f"records {o['records']} -> {n['records']}"] if o["records"] != n["records"] else []
        for part in ("records_digest", "summary_digest", "models_digest"):
            moved += _moved(part.split("_")[0], o[part], n[part])
        if moved:
            c.differ[name] = moved + _summary_moves(o["summary"], n["summary"])
        else:
            c.same.append(name)
    return c


# ---------------------------------------------------------------------------------------------
# the command


def select(names: str) -> list[Mix]:
    known = {m.name: m for m in mixes()}
    if not names:
        return list(known.values())
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in wanted if n not in known]
    if bad:
        raise SystemExit(f"reference_mixes: --only: unknown mix {bad[0]!r}; known: {', '.join(known)}")
    return [known[n] for n in wanted]


def read_digests(path: str) -> dict[str, dict]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"reference_mixes: {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"reference_mixes: {path}: line {exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("mixes"), dict):
        raise SystemExit(f"reference_mixes: {path}: not a digest file (no 'mixes' object)")
    return data["mixes"]


def write_atomically(path: str, text: str) -> None:
    """Write through a temporary file and a rename, so that a killed run leaves the old file or the
    new one, never half of one."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)


def main(argv: list[str] | None = None, on_mix: Callable[[str], None] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python bench/reference_mixes.py",
        description="Run the reference mixes, check that twins (one run by two code paths) agree, and "
                    "write the digests (--out) or compare them with digests written before (--against): "
                    "exit 1 naming every mix whose results moved.")
    ap.add_argument("--out", help="write the digests here (JSON)")
    ap.add_argument("--against", metavar="FILE", help="compare with digests written before by --out")
    ap.add_argument("--only", default="", metavar="NAME,...", help="run only these mixes")
    ap.add_argument("--list", action="store_true", help="list the mixes and their options, and stop")
    args = ap.parse_args(argv)
    chosen = select(args.only)
    if args.list:
        for m in chosen:
            extra = (f" walk={m.walk}" if m.walk != "compiled" else "") + (f" twin_of={m.twin_of}" if m.twin_of else "")
            print(f"{m.name:32s} {json.dumps(m.options, default=lambda f: f.__name__ + '()')}{extra}" + (f"  # {m.notes}" if m.notes else ""))
        return 0
    old = read_digests(args.against) if args.against else {}
    unready = compiled_paths_unready() if any(m.twin_of for m in chosen) else ""
    if unready:  # both twins would run the Python path and agree, proving nothing
        print(f"reference_mixes: twins cannot be checked here: {unready}", file=sys.stderr)
        return 1
    from tqdm import tqdm

    new: dict[str, dict] = {}
    t0 = time.process_time()
    for m in tqdm(chosen, desc="reference mixes", unit="mix", disable=None):
        new[m.name] = run_mix(m)
        if on_mix:
            on_mix(m.name)
    cpu = time.process_time() - t0
    if args.out:
        write_atomically(args.out, json.dumps({"mixes": new}, indent=1, sort_keys=True) + "\n")
    skipped = sum("skipped" in d for d in new.values())
    failed = [name for name, d in new.items() if "error" in d]
    for name in failed:
        print(f"FAILED {name}: {new[name]['error']}")
    records = sum(d.get("records", 0) for d in new.values())
    print(f"{len(new)} mixes ({skipped} skipped: trace files absent), {records:,} records, {cpu:.1f} s of CPU")
    apart = twins_apart(chosen, new)
    for name, moved in apart.items():
        print(f"TWINS DIFFER {name} (against {next(m.twin_of for m in chosen if m.name == name)}): " + "; ".join(moved))
    differ = 0
    if args.against:
        c = compare(old, new)
        differ = len(c.differ)
        for name, moved in c.differ.items():
            print(f"DIFFERS {name}: " + "; ".join(moved))
        if c.unmatched:
            print(f"not compared (skipped on one side, or not in {args.against}): {', '.join(c.unmatched)}")
        gone = [] if args.only else sorted(set(old) - set(new))
        if gone:
            print(f"in {args.against} but no longer a mix (renamed or removed): {', '.join(gone)}")
        print(f"{len(c.same)} of {len(new)} mixes give the same results to the last bit")
    print(f"mixes={len(new)} skipped={skipped} failed={len(failed)} records={records} cpu_s={cpu:.1f} "
          f"twins_apart={len(apart)} differ={differ}")
    return 1 if differ or failed or apart else 0


if __name__ == "__main__":
    sys.exit(main())
