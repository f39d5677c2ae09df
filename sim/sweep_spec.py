"""The spec of `python -m sim sweep SPEC`: a grid of simulation runs, read from TOML (or YAML
when PyYAML is installed), checked whole before anything runs.

    seeds = 5                      # or a list: [0, 1, 2, 3, 4]
    duration = 1800                # simulated seconds per run (default: each trace's own)
    out = "runs/sweep"             # where results go (the command line's --out wins)

    [policies]                     # a spec or a list of specs per kind; every combination runs
    staging = ["full", "pipelined", "progressive"]
    keepalive = ["none", "fixed[ttl=600]", { name = "two_tier", gpu = [60, 120] }]

    [cluster]                      # each a value or a list; every combination runs
    sizes = ["1x4", "2x4", "4x4"]  # nodes x GPUs per node (or nodes = [...], gpus_per_node = [...])
    profile = "a6000-llama2-7b-published"

    [[traces]]                     # or traces = ["azure_functions", "burstgpt"]
    name = "azure_functions"
    options = { top_n = 20 }

A kind left out of [policies] takes `python -m sim`'s default list. A policy given as a table
(`{ name = "fixed", ttl = [60, 600] }`) stands for one spec per combination of its listed
parameters. Relative paths (policy files, profiles, trace files, trace_dir) are relative to
the spec file's folder. Each grid point (a configuration) runs once per seed; its inputs'
fingerprint (the point, the profile's SHA-256, the trace files', policy files', simulator
code and package versions) names its result file, so a sweep started again skips what it
has. Every error is a `SpecError` with one line naming the file and the key.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.profile import Profile

TOP_KEYS = ("seeds", "duration", "out", "policies", "cluster", "traces")
CLUSTER_KEYS = ("sizes", "nodes", "gpus_per_node", "profile", "storage", "slo_ttft", "fidelity", "compute_sharing",
                "unknown_models", "hook_timeout")
TRACE_KEYS = ("name", "options", "duration", "trace_dir")
FINGERPRINT_KIND = "progressive-serve sweep run"
FINGERPRINT_VERSION = 1
MAX_RUNS = 1_000_000  # a grid larger than this is surely a mistake (and would not fit in memory)


class SpecError(ValueError):
    """A sweep spec that cannot be run; the message is one line naming the file and key."""


# --- what a spec expands to -------------------------------------------------------------------------

@dataclass(frozen=True)
class TraceEntry:
    spec: str  # a trace name, or a file/folder path (absolute once resolved)
    label: str  # what the table shows: the name or the file's name, with options
    options: tuple[tuple[str, str], ...]
    duration_s: float | None
    trace_dir: str | None


@dataclass(frozen=True)
class Config:
    """One grid point without its seed: a row of the combined table."""

    index: int
    policies: tuple[tuple[str, str], ...]  # (kind, spec as given to load_policy)
    labels: tuple[tuple[str, str], ...]  # (kind, the policy's label)
    policy: str  # the combination's label, as `python -m sim` prints it
    trace: TraceEntry
    profile: str  # key into Sweep.profiles
    profile_name: str
    nodes: int
    gpus_per_node: int
    storage: str
    fidelity: str
    compute_sharing: str
    slo_ttft_s: float
    unknown_models: str = "default"  # the same for every configuration (not a column)
    hook_timeout_s: float | None = 60.0

    def columns(self) -> dict[str, Any]:
        """What identifies the configuration in the combined table."""
        return {
            "config": self.index + 1,
            "policy": self.policy,
            **dict(self.labels),
            "trace": self.trace.label,
            "duration_s": math.nan if self.trace.duration_s is None else self.trace.duration_s,
            "profile": self.profile_name,
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "gpus": self.nodes * self.gpus_per_node,
            "storage": self.storage,
            "fidelity": self.fidelity,
            "compute_sharing": self.compute_sharing,
            "slo_ttft_s": self.slo_ttft_s,
        }


@dataclass(frozen=True)
class Point:
    """One run: a configuration with one seed, and the fingerprint of everything it depends on."""

    index: int
    config: int
    seed: int
    fingerprint: str


@dataclass
class Sweep:
    path: Path
    configs: list[Config]
    seeds: list[int]
    points: list[Point]
    profiles: dict[str, Profile]
    out: Path | None
    identity: dict[str, Any] = field(default_factory=dict)  # code and versions, for the manifest

    @property
    def n_runs(self) -> int:
        return len(self.points)


# --- reading the file -------------------------------------------------------------------------------

def read_spec_file(path: Path) -> dict[str, Any]:
    """The spec's data: TOML by default, YAML for .yaml/.yml (needs PyYAML)."""
    if not path.exists():
        raise SpecError(f"{path}: no such file")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, expected a sweep spec (.toml, .yaml)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: byte {e.start}: not UTF-8 text") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SpecError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the spec "
                            "in TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            raise SpecError(f"{path}: {where}not valid YAML ({_one_line(problem)})") from None
        if data is None:
            data = {}
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{path}: not valid TOML ({_one_line(e)})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a table of keys ({', '.join(TOP_KEYS)}) at the top, "
                        f"got {type(data).__name__}")
    return data


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Reader:
    """Checks values and names the file and key in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.resolve().parent

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {_one_line(message)}")

    def known(self, table: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
        for key in table:
            if key not in keys:
                near = difflib.get_close_matches(str(key), keys, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise self.fail(f"{where}{key}", f"unknown key{hint}; keys here: {', '.join(keys)}")

    def table(self, data: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(where + key, f"expected a table, got {_show(value)}")
        return value

    def as_list(self, value: Any, key: str) -> list[tuple[str, Any]]:
        """A value or a list of values, each with its key (`key[i]` for list items)."""
        if isinstance(value, list):
            if not value:
                raise self.fail(key, "an empty list: give at least one value")
            return [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        return [(key, value)]

    def number(self, value: Any, key: str, *, integer: bool = False, positive: bool = True) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {_show(value)}")
        if integer and not (isinstance(value, int) or float(value).is_integer()):
            raise self.fail(key, f"expected an integer, got {_show(value)}")
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(key, f"expected a finite number{' above 0' if positive else ''}, got {_show(value)}")
        return int(value) if integer else float(value)

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {_show(value)}")
        return value.strip()

    def path_of(self, text: str) -> Path:
        """A path as written in the spec: relative to the spec file's folder."""
        p = Path(text).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else self.base / p))


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- policies ---------------------------------------------------------------------------------------

def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _policy_specs(r: _Reader, kind: str, value: Any, key: str) -> list[tuple[str, str]]:
    """(key, spec) per policy: strings as they are, tables expanded over their listed parameters."""
    from policies.registry import split_specs

    out: list[tuple[str, str]] = []
    for item_key, item in r.as_list(value, key):
        if isinstance(item, str):
            specs = split_specs(item)
            if not specs:
                raise r.fail(item_key, f"an empty {kind} policy spec")
            out += [(item_key, s) for s in specs]
        elif isinstance(item, dict):
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                raise r.fail(item_key, "a policy table needs name = \"...\" (and its parameters)")
            params = [(k, r.as_list(v, f"{item_key}.{k}")) for k, v in item.items() if k != "name"]
            for _, values in params:
                for vkey, v in values:
                    if isinstance(v, dict | list) or v is None:
                        raise r.fail(vkey, f"a parameter value must be a number, string or boolean, got {_show(v)}")
                    if re.search(r"[\[\],=]", _param_text(v)):
                        raise r.fail(vkey, f"a parameter value cannot hold [ ] , or =, got {_show(v)}")
            names = [k for k, _ in params]
            for combo in itertools.product(*[vals for _, vals in params]):
                args = ",".join(f"{k}={_param_text(v)}" for k, (_, v) in zip(names, combo, strict=True))
                out.append((item_key, f"{name.strip()}[{args}]" if args else name.strip()))
        else:
            raise r.fail(item_key, f"expected a policy spec (\"fixed[ttl=300]\") or a table "
                                   f"({{ name = \"fixed\", ttl = [60, 600] }}), got {_show(item)}")
    return out


def _policy_file(spec: str) -> str | None:
    """The file part of a file-based spec (path/to/file.py:Class[...]), else None."""
    target = spec.split("[", 1)[0].strip()
    module_part = target.rpartition(":")[0].strip()
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        return module_part
    return None


def _resolve_policy(r: _Reader, spec: str) -> tuple[str, str, str | None]:
    """(spec to load, spec as fingerprinted, the file's SHA-256): a relative policy file is
    found beside the spec file; the fingerprint holds its name and content, not where it lies."""
    from sim.runstore import sha256_file

    file_part = _policy_file(spec)
    if file_part is None:
        return spec, spec, None
    path = r.path_of(file_part)
    if not path.is_file():
        return spec, spec, None  # load_policy names the missing file
    loadable = spec.replace(file_part, str(path), 1)
    return loadable, spec.replace(file_part, path.name, 1), sha256_file(path)


# --- the spec ---------------------------------------------------------------------------------------

def _seeds(r: _Reader, data: Mapping[str, Any]) -> list[int]:
    value = data.get("seeds", [0])
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 10_000:
            raise r.fail("seeds", f"a count of seeds must be between 1 and 10000, got {value}")
        return list(range(value))
    seeds = []
    for key, v in r.as_list(value, "seeds"):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise r.fail(key, f"expected a seed (an integer >= 0), got {_show(v)}")
        if v in seeds:
            raise r.fail(key, f"seed {v} is listed twice")
        seeds.append(v)
    return seeds


def _duration(r: _Reader, value: Any, key: str) -> float | None:
    from sim.cli import MAX_DURATION_S

    if value is None:
        return None
    d = r.number(value, key)
    if d > MAX_DURATION_S:
        raise r.fail(key, f"at most {MAX_DURATION_S:.0f} simulated seconds (366 days), got {d:g}")
    return d


def _sizes(r: _Reader, cluster: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    if "sizes" in cluster:
        for other in ("nodes", "gpus_per_node"):
            if other in cluster:
                raise r.fail(f"cluster.{other}", "give either cluster.sizes or cluster.nodes and "
                                                 "cluster.gpus_per_node, not both")
        out = []
        for key, v in r.as_list(cluster["sizes"], "cluster.sizes"):
            if isinstance(v, str):
                m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", v)
                if not m:
                    raise r.fail(key, f"expected NODESxGPUS such as \"2x4\", got {_show(v)}")
                n, g = int(m.group(1)), int(m.group(2))
            elif isinstance(v, list) and len(v) == 2:
                n, g = (r.number(x, key, integer=True) for x in v)
            elif isinstance(v, dict):
                r.known(v, ("nodes", "gpus_per_node"), f"{key}.")
                if "nodes" not in v or "gpus_per_node" not in v:
                    raise r.fail(key, "a size table needs nodes and gpus_per_node")
                n = r.number(v["nodes"], f"{key}.nodes", integer=True)
                g = r.number(v["gpus_per_node"], f"{key}.gpus_per_node", integer=True)
            else:
                raise r.fail(key, f"expected \"NODESxGPUS\", [nodes, gpus_per_node] or a table, got {_show(v)}")
            out.append((key, n, g))
        return out
    nodes = [(k, r.number(v, k, integer=True)) for k, v in r.as_list(cluster.get("nodes", 2), "cluster.nodes")]
    gpus = [(k, r.number(v, k, integer=True))
            for k, v in r.as_list(cluster.get("gpus_per_node", 4), "cluster.gpus_per_node")]
    return [(f"{kn} x {kg}", n, g) for (kn, n), (kg, g) in itertools.product(nodes, gpus)]


def _choices(r: _Reader, cluster: Mapping[str, Any], key: str, default: str, allowed: Sequence[str]) -> list[str]:
    out = []
    for k, v in r.as_list(cluster.get(key, default), f"cluster.{key}"):
        if v not in allowed:
            raise r.fail(k, f"expected one of {', '.join(allowed)}, got {_show(v)}")
        out.append(v)
    return out


def _trace_entries(r: _Reader, data: Mapping[str, Any], duration: float | None,
                   duration_override: float | None) -> list[tuple[str, TraceEntry]]:
    from traces.registry import NAMES

    out = []
    for key, item in r.as_list(data.get("traces", "azure_functions"), "traces"):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise r.fail(key, f"expected a trace name, a path or a table (name, options, duration, trace_dir), "
                              f"got {_show(item)}")
        r.known(item, TRACE_KEYS, f"{key}.")
        if "name" not in item:
            raise r.fail(key, "a trace table needs name = \"...\" (a trace name or a file)")
        name = r.string(item["name"], f"{key}.name")
        options = item.get("options", {})
        if not isinstance(options, dict):
            raise r.fail(f"{key}.options", f"expected a table of reader options, got {_show(options)}")
        opts = []
        for k, v in options.items():
            if isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
                text = ",".join(_param_text(x) for x in v)
            elif isinstance(v, str | int | float):
                text = _param_text(v)
            else:
                raise r.fail(f"{key}.options.{k}", f"expected a string, number or boolean, got {_show(v)}")
            if k == "tokens" or k == "calibration":  # may name a file: relative to the spec
                candidate = r.path_of(text)
                if ("/" in text or text.endswith((".csv", ".json"))) and candidate.exists():
                    text = str(candidate)
            opts.append((str(k), text))
        trace_dir = item.get("trace_dir")
        if trace_dir is not None:
            trace_dir = str(r.path_of(r.string(trace_dir, f"{key}.trace_dir")))
        d = _duration(r, item.get("duration", duration), f"{key}.duration" if "duration" in item else "duration")
        if duration_override is not None:
            d = duration_override
        spec = name
        shown = name
        if name not in NAMES and ("/" in name or "\\" in name or Path(name).suffix or r.path_of(name).exists()):
            path = r.path_of(name)
            spec, shown = str(path), path.name
        if opts:
            shown += "[" + ",".join(f"{k}={v}" for k, v in opts) + "]"
        out.append((key, TraceEntry(spec, shown, tuple(opts), d, trace_dir)))
    return out


def _trace_identity(entry: TraceEntry) -> dict[str, Any]:
    """What of a trace decides its requests: its name (or file name), format, options and
    duration, and its files' fingerprints (not where they lie)."""
    from sim.runstore import file_fingerprint, trace_option_files
    from traces.registry import NAMES
    from traces.registry import resolve as resolve_trace

    fmt, files, _ = resolve_trace(entry.spec, entry.trace_dir)
    options = dict(entry.options)
    option_files = trace_option_files(options, entry.trace_dir)
    return {
        "spec": entry.spec if entry.spec in NAMES else Path(entry.spec).name,
        "format": fmt,
        "options": {k: Path(v).name if isinstance(option_files.get(k), dict) else v for k, v in options.items()},
        "files": [file_fingerprint(p) for p, _ in files],
        "option_files": option_files,
        "duration_s": entry.duration_s,
    }


def fingerprint(identity: Mapping[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_sweep(path: str | Path, *, duration: float | None = None) -> Sweep:
    """Read and check the spec at `path` and expand it into configurations and runs.

    `duration` (the command line's --duration) replaces every trace's duration. Policies,
    profiles, cluster shapes and traces are all loaded once here, so that a bad spec fails
    before anything runs. Raises SpecError."""
    from policies.registry import KINDS, PolicySpecError, load_policy, split_specs
    from sim.cli import DEFAULT_POLICIES
    from sim.config import COMPUTE_SHARING, FIDELITIES, STORAGE, UNKNOWN_MODELS, SimConfig
    from sim.policyset import PolicySet
    from sim.profile import DEFAULT_PROFILE, PROFILES_DIR, ProfileError, load_profile
    from sim.runstore import code_fingerprint, sha256_file, versions
    from traces import TraceError, open_trace

    path = Path(path)
    r = _Reader(path)
    data = read_spec_file(path)
    r.known(data, TOP_KEYS, "")
    seeds = _seeds(r, data)
    top_duration = _duration(r, data.get("duration"), "duration")
    out = None
    if "out" in data:
        out = r.path_of(r.string(data["out"], "out"))

    # policies: every spec loaded once (unknown names, bad parameters and broken files fail here)
    pol = r.table(data, "policies")
    r.known(pol, tuple(KINDS), "policies.")
    per_kind: dict[str, list[tuple[str, str, str, str | None]]] = {}  # kind -> (load, fingerprint, label, sha)
    for kind in KINDS:
        value = pol[kind] if kind in pol else split_specs(DEFAULT_POLICIES[kind])
        entries = []
        for key, spec in _policy_specs(r, kind, value, f"policies.{kind}"):
            loadable, shown, sha = _resolve_policy(r, spec)
            try:
                policy = load_policy(kind, loadable)
            except PolicySpecError as e:
                raise r.fail(key, str(e)) from None
            entries.append((loadable, shown, policy, sha))
        per_kind[kind] = entries

    # cluster and serving
    cluster = r.table(data, "cluster")
    r.known(cluster, CLUSTER_KEYS, "cluster.")
    sizes = _sizes(r, cluster)
    storages = _choices(r, cluster, "storage", "ssd", STORAGE)
    fidelities = _choices(r, cluster, "fidelity", "request", FIDELITIES)
    sharings = _choices(r, cluster, "compute_sharing", "time_slice", COMPUTE_SHARING)
    slos = [r.number(v, k) for k, v in r.as_list(cluster.get("slo_ttft", 5.0), "cluster.slo_ttft")]
    # As `python -m sim` takes them (--unknown-models, --hook-timeout): one value for the sweep.
    unknown_models = cluster.get("unknown_models", "default")
    if unknown_models not in UNKNOWN_MODELS:
        raise r.fail("cluster.unknown_models", f"expected one of {', '.join(UNKNOWN_MODELS)}, got {_show(unknown_models)}")
    hook_timeout = r.number(cluster.get("hook_timeout", 60.0), "cluster.hook_timeout", positive=False)
    if hook_timeout < 0:
        raise r.fail("cluster.hook_timeout", f"expected seconds >= 0 (0: no limit), got {hook_timeout:g}")
    hook_timeout_s = hook_timeout or None
    for key, n, g in sizes:
        try:
            SimConfig(nodes=n, gpus_per_node=g)
        except ValueError as e:
            raise r.fail(key, str(e)) from None
        if n * g > 100_000:
            raise r.fail(key, f"{n} x {g} GPUs is more than this simulator is meant for (100,000)")

    profiles: dict[str, Profile] = {}
    profile_ids: list[tuple[str, str, dict[str, Any]]] = []  # (key into profiles, name, identity)
    for key, v in r.as_list(cluster.get("profile", DEFAULT_PROFILE), "cluster.profile"):
        spec = r.string(v, key)
        if spec.endswith(".json") or "/" in spec or "\\" in spec:
            spec = str(r.path_of(spec))
        try:
            profile = load_profile(spec)
        except ProfileError as e:
            raise r.fail(key, str(e)) from None
        file = Path(spec)
        if not file.suffix and not file.exists():  # a shipped profile, as load_profile finds it
            file = PROFILES_DIR / f"{spec}.json"
        try:
            sha = sha256_file(file)
        except OSError as e:
            raise r.fail(key, f"cannot read the profile ({e.strerror or e})") from None
        pkey = f"{len(profiles)}"
        profiles[pkey] = profile
        profile_ids.append((pkey, profile.name, {"name": profile.name, "sha256": sha}))

    traces = []
    for key, entry in _trace_entries(r, data, top_duration, duration):
        try:
            identity = _trace_identity(entry)
            trace = open_trace(entry.spec, trace_dir=entry.trace_dir, duration_s=entry.duration_s, seed=seeds[0],
                               **dict(entry.options))
            del trace
        except TraceError as e:
            raise r.fail(key, str(e)) from None
        except OSError as e:
            raise r.fail(key, f"cannot read the trace ({e.strerror or e})") from None
        traces.append((entry, identity))

    n_configs = (len(traces) * len(profile_ids) * len(sizes) * len(storages) * len(fidelities) * len(sharings)
                 * len(slos) * math.prod(len(v) for v in per_kind.values()))
    if n_configs * len(seeds) > MAX_RUNS:
        raise SpecError(f"{path}: the grid has {n_configs} configurations x {len(seeds)} seeds = "
                        f"{n_configs * len(seeds):,} runs, more than {MAX_RUNS:,}; narrow it")

    labels = {id(e[2]): e[2].label for entries in per_kind.values() for e in entries}
    code = {"code": code_fingerprint(), "versions": versions()}
    configs: list[Config] = []
    points: list[Point] = []
    seen: dict[str, int] = {}  # a configuration's first fingerprint -> its index
    kinds = list(KINDS)
    grid = itertools.product(traces, profile_ids, sizes, storages, fidelities, sharings, slos,
                             *[per_kind[k] for k in kinds])
    for (entry, trace_id), (pkey, pname, profile_id), (_, n, g), storage, fidelity, sharing, slo, *chosen in grid:
        # The combination's label as `python -m sim` prints it, from labels computed once per policy.
        label = PolicySet(**{k: SimpleNamespace(label=labels[id(c[2])]) for k, c in zip(kinds, chosen, strict=True)}).label
        config = Config(
            index=len(configs),
            policies=tuple((k, c[0]) for k, c in zip(kinds, chosen, strict=True)),
            labels=tuple((k, labels[id(c[2])]) for k, c in zip(kinds, chosen, strict=True)),
            policy=label, trace=entry, profile=pkey, profile_name=pname, nodes=n, gpus_per_node=g,
            storage=storage, fidelity=fidelity, compute_sharing=sharing, slo_ttft_s=slo,
            unknown_models=unknown_models, hook_timeout_s=hook_timeout_s)
        configs.append(config)
        base = {
            "kind": FINGERPRINT_KIND,
            "version": FINGERPRINT_VERSION,
            "policies": {k: c[1] for k, c in zip(kinds, chosen, strict=True)},
            "policy_files": {k: c[3] for k, c in zip(kinds, chosen, strict=True) if c[3] is not None},
            "cluster": {"nodes": n, "gpus_per_node": g, "storage": storage, "fidelity": fidelity,
                        "compute_sharing": sharing, "slo_ttft_s": slo, "unknown_models": unknown_models,
                        "hook_timeout_s": hook_timeout_s},
            "profile": profile_id,
            "trace": trace_id,
            **code,
        }
        first = fingerprint({**base, "seed": seeds[0]})
        if first in seen:
            other = configs[seen[first]]
            raise SpecError(f"{path}: configurations {other.index + 1} and {config.index + 1} are the same runs "
                            f"({label}, {n}x{g}, {entry.label}): a value is listed twice")
        seen[first] = config.index
        for seed in seeds:
            points.append(Point(len(points), config.index, seed, fingerprint({**base, "seed": seed})))
    return Sweep(path=path, configs=configs, seeds=seeds, points=points, profiles=profiles, out=out, identity=code)
