"""The profile: every number the simulator needs about hardware, engine and model.

One JSON file, schema-versioned, validated on load with errors that name the file and the
field. `validate` writes profiles with `Profile.to_dict()`; the simulator reads them with
`load_profile()`. This module is the one place the schema lives.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sim.table import Table

SCHEMA_VERSION = 1
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
DEFAULT_PROFILE = "a6000-llama2-7b-published"


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class StageProfile:
    """One loading stage of the profile's staging plan as measured (or published).

    `quality` is `perplexity_full / perplexity_stage` (1.0 is full quality), or None where no
    one has measured it: the simulator then reports no quality for tokens of this stage rather
    than invent one. `latency_scale` multiplies the full model's prefill and decode times while
    serving at this stage (1.0 when inactive layers still compute, as in the seed; below 1 when
    they are skipped).
    """

    name: str
    num_layers: int
    quality: float | None
    latency_scale: float = 1.0
    perplexity: float | None = None
    token_agreement: float | None = None
    source: str = ""


@dataclass(frozen=True)
class SharedBase:
    """Part of a model's weights that other models share (a frozen base they were tuned on).

    Models that name the same base (and deployments of them, `<model>-<suffix>`) keep one
    copy of its `bytes` per tier: a node that read the base for one of them reads it from
    host DRAM for the next. With `share_gpu_memory` (task models over a frozen shared module,
    as in PrefillShare or ICaRus) one copy on a GPU also serves every instance there that
    shares it: a cold start where it is resident loads and holds only its own task part.
    Without it (separate engine processes reading one checkpoint) only the storage tiers
    share it. The base's bytes are spread over the layers in proportion to theirs.
    """

    name: str
    bytes: int
    share_gpu_memory: bool = True


@dataclass(frozen=True)
class ModelProfile:
    name: str
    num_layers: int
    layer_bytes: int
    embedding_bytes: int
    head_bytes: int
    kv_bytes_per_token: int
    max_batch: int
    max_tokens_in_flight: int
    prefill: Table  # seconds vs prompt tokens (one request)
    decode: Table  # seconds per decode step vs batch size
    stages: tuple[StageProfile, ...] = ()
    layer_importance: tuple[float, ...] | None = None
    shared_base: SharedBase | None = None

    @property
    def weight_bytes(self) -> int:
        return self.num_layers * self.layer_bytes + self.embedding_bytes + self.head_bytes

    @property
    def footprint_bytes(self) -> int:
        """GPU bytes one instance holds: vLLM-style engines preallocate the whole KV cache
        with the weights, so both count from the start."""
        return self.weight_bytes + self.kv_bytes_per_token * self.max_tokens_in_flight

    def stage_for_layers(self, bound_layers: int) -> StageProfile | None:
        """The measured stage whose layer count matches, or None (then quality is interpolated)."""
        for s in self.stages:
            if s.num_layers == bound_layers:
                return s
        return None

    def quality_at(self, bound_layers: int) -> float:
        """Quality with `bound_layers` of the decoder bound, from the measured stages.

        NaN where nothing was measured: a stage listed with quality null, or a model with no
        measured partial stage at all. A NaN makes the run's quality mean NaN (shown as '-')
        instead of a number nobody measured.
        """
        if bound_layers >= self.num_layers:
            return 1.0
        listed = self.stage_for_layers(bound_layers)
        if listed is not None and listed.quality is None:
            return math.nan
        measured = {(s.num_layers, s.quality) for s in self.stages if s.quality is not None}
        if not measured:
            return math.nan
        points = sorted(measured | {(self.num_layers, 1.0)})
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        if bound_layers < xs[0]:
            return 0.0
        return float(np.interp(bound_layers, xs, ys))

    @property
    def unknown_quality_stages(self) -> tuple[str, ...]:
        """Names of the partial stages whose quality nobody has measured."""
        if not any(s.quality is not None for s in self.stages if s.num_layers < self.num_layers):
            return tuple(s.name for s in self.stages if s.num_layers < self.num_layers) or ("every partial stage",)
        return tuple(s.name for s in self.stages if s.quality is None and s.num_layers < self.num_layers)

    def latency_scale_at(self, bound_layers: int) -> float:
        s = self.stage_for_layers(bound_layers)
        return s.latency_scale if s is not None else 1.0


@dataclass(frozen=True)
class HardwareProfile:
    gpu_name: str
    gpu_memory_gb: float
    h2d_gbps: float  # pinned host-to-device, measured
    h2d_pageable_gbps: float
    d2h_gbps: float
    pcie_limit_gbps: float  # the link's physical limit
    ssd_read_gbps: float  # cold, page cache bypassed
    ssd_warm_gbps: float
    network_gbps: float  # remote storage to this node
    host_dram_gb: float
    ssd_gb: float
    gpu_reserved_gb: float = 0.0  # CUDA context, activations: never available for weights or KV
    # Batch steps of co-located instances the device runs side by side at full speed: 1 for a
    # GPU that time-slices processes (no MPS); on a CPU, its cores over each engine's threads.
    compute_slots: float = 1.0

    @property
    def usable_gpu_bytes(self) -> int:
        """Bytes of one GPU that weights and KV caches may take (its memory less the reserve)."""
        return int((self.gpu_memory_gb - self.gpu_reserved_gb) * 1e9)


@dataclass(frozen=True)
class EngineProfile:
    """Cold-start phases that are not weight bytes, and the loader's efficiency.

    `loader_efficiency` is the fraction of the slowest link's share that the weight loader
    actually reaches; measured loaders reach about 0.7-0.9, the seed's vLLM 0.7.4 far less.
    `loader_efficiency_dram` is the same fraction when the bytes come from host DRAM (the page
    cache), where the link is PCIe: a loader whose host-side reads and pageable copies are
    slower than the link reaches far less there than from a disk (this project's engine on an
    H200: 0.99 of the disk, 0.066 of pinned PCIe). None: `loader_efficiency` for every tier.
    """

    process_start_s: float
    cuda_context_s: float
    kv_cache_alloc_s: float
    graph_capture_s: float
    bind_s_per_layer: float
    loader_efficiency: float
    wake_from_sleep_s: float = 0.5  # warm process, weights re-bound from host DRAM
    init_overlaps_load: bool = False  # KV allocation and graph capture run while weights load
    # Loads read through the page cache: a load of bytes another load on the node is reading
    # from storage right now waits for that read and copies them from host DRAM, instead of
    # reading them again (buffered reads; a loader with O_DIRECT reads them again).
    shares_reads: bool = True
    loader_efficiency_dram: float | None = None

    def loader_efficiency_from(self, tier: str) -> float:
        """The loader's fraction of its path's slowest link for bytes coming from `tier`."""
        if tier == "dram" and self.loader_efficiency_dram is not None:
            return self.loader_efficiency_dram
        return self.loader_efficiency


@dataclass(frozen=True)
class Profile:
    name: str
    schema_version: int
    provenance: dict
    hardware: HardwareProfile
    engine: EngineProfile
    models: tuple[ModelProfile, ...]
    source_path: str = ""

    @property
    def default_model(self) -> ModelProfile:
        return self.models[0]

    def quality_note(self) -> str:
        """A line saying which models' partial stages have no measured quality, or ''."""
        unknown = [f"{m.name} ({', '.join(m.unknown_quality_stages)})" for m in self.models
                   if m.unknown_quality_stages]
        if not unknown:
            return ""
        return (f"note: profile {self.name} has no measured quality for stages of {'; '.join(unknown)}: "
                "tokens served there have unknown quality, so quality_mean is left empty where a run served "
                "them (full staging is unaffected)")

    def model(self, name: str) -> ModelProfile:
        """The shape a deployment called `name` has (see `resolve`)."""
        return self.resolve(name)[0]

    def resolve(self, name: str) -> tuple[ModelProfile, str]:
        """The shape of deployment `name` and the rule that chose it.

        `exact`: a catalog entry of that name. `prefix`: a deployment of a catalog model,
        named `<model>-<suffix>` (as trace mapping names them, e.g. `llama-2-7b-fn3`); the
        longest matching model wins. `default`: neither; the default (first) model's shape,
        which a run reports and `--unknown-models error` refuses.
        """
        best = None
        for m in self.models:
            if m.name == name:
                return m, "exact"
            if name.startswith(m.name + "-") and (best is None or len(m.name) > len(best.name)):
                best = m
        if best is not None:
            return best, "prefix"
        return self.models[0], "default"

    def to_dict(self) -> dict:
        """The JSON form (`profile_from_dict(p.to_dict())` gives the same profile)."""
        d = asdict(self)
        d.pop("source_path")
        return json.loads(json.dumps(d))  # tuples become lists, as in a file


# ---------------------------------------------------------------------------------------
# Loading and validation


MAX_INTEGER = 2**53  # byte and token counts beyond this lose exactness in the simulator's floats


def _as_float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # an integer beyond the float range
        return math.inf


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Pulls typed fields out of nested dicts, naming the file and dotted path on error."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, msg: str) -> ProfileError:
        return ProfileError(f"{self.source}: field '{path}': {msg}")

    def section(self, d: dict, key: str, path: str) -> dict:
        v = d.get(key)
        if not isinstance(v, dict):
            raise self.fail(f"{path}{key}", "missing or not an object")
        return v

    def number(self, d: dict, key: str, path: str, *, minimum: float = 0.0, default=None, strict=False) -> float:
        if key not in d:
            if default is not None:
                return float(default)
            raise self.fail(f"{path}{key}", "missing")
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(_as_float(v)):
            raise self.fail(f"{path}{key}", f"expected a finite number, got {_short(v)}")
        if v < minimum or (strict and v == minimum):
            raise self.fail(f"{path}{key}", f"must be {'>' if strict else '>='} {minimum}, got {v}")
        return float(v)

    def boolean(self, d: dict, key: str, path: str, *, default: bool) -> bool:
        v = d.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(f"{path}{key}", f"expected true or false, got {v!r}")
        return v

    def integer(self, d: dict, key: str, path: str, *, minimum: int = 0) -> int:
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{path}{key}", f"expected an integer, got {_short(v)}")
        if v < minimum:
            raise self.fail(f"{path}{key}", f"must be >= {minimum}, got {v}")
        if v > MAX_INTEGER:
            raise self.fail(f"{path}{key}", f"must be at most 2^53 (exact in floating point), got {_short(v)}")
        return v

    def table(self, d: dict, key: str, path: str) -> Table:
        t = self.section(d, key, path)
        xs, ys = t.get("x"), t.get("seconds")
        p = f"{path}{key}"
        if not isinstance(xs, list) or not isinstance(ys, list) or not xs or len(xs) != len(ys):
            raise self.fail(p, "needs lists 'x' and 'seconds' of equal, non-zero length")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in xs + ys):
            raise self.fail(p, "entries of 'x' and 'seconds' must be numbers")
        try:
            xa, ya = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        except OverflowError:
            raise self.fail(p, "an entry is too large for a floating-point number") from None
        if not np.all(np.isfinite(xa)) or not np.all(np.isfinite(ya)) or np.any(ya < 0) or np.any(xa <= 0):
            raise self.fail(p, "entries must be finite, x > 0 and seconds >= 0")
        if np.any(np.diff(xa) <= 0):
            raise self.fail(f"{p}.x", "must be strictly increasing")
        return Table(tuple(float(v) for v in xa), tuple(float(v) for v in ya))


def profile_from_dict(d: dict, source: str = "<profile>") -> Profile:
    r = _Reader(source)
    if not isinstance(d, dict):
        raise ProfileError(f"{source}: top level must be a JSON object")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"this simulator reads version {SCHEMA_VERSION}, got {version!r}")
    prov = r.section(d, "provenance", "")
    if prov.get("kind") not in ("published", "measured"):
        raise r.fail("provenance.kind", f"must be 'published' or 'measured', got {prov.get('kind')!r}")
    h = r.section(d, "hardware", "")
    hp = "hardware."
    hardware = HardwareProfile(
        gpu_name=str(h.get("gpu_name", "unknown")),
        gpu_memory_gb=r.number(h, "gpu_memory_gb", hp, strict=True),
        h2d_gbps=r.number(h, "h2d_gbps", hp, strict=True),
        h2d_pageable_gbps=r.number(h, "h2d_pageable_gbps", hp, strict=True),
        d2h_gbps=r.number(h, "d2h_gbps", hp, strict=True),
        pcie_limit_gbps=r.number(h, "pcie_limit_gbps", hp, strict=True),
        ssd_read_gbps=r.number(h, "ssd_read_gbps", hp, strict=True),
        ssd_warm_gbps=r.number(h, "ssd_warm_gbps", hp, strict=True),
        network_gbps=r.number(h, "network_gbps", hp, strict=True),
        host_dram_gb=r.number(h, "host_dram_gb", hp),
        ssd_gb=r.number(h, "ssd_gb", hp),
        gpu_reserved_gb=r.number(h, "gpu_reserved_gb", hp, default=0.0),
        compute_slots=r.number(h, "compute_slots", hp, minimum=1.0, default=1.0),
    )
    e = r.section(d, "engine", "")
    ep = "engine."
    engine = EngineProfile(
        process_start_s=r.number(e, "process_start_s", ep),
        cuda_context_s=r.number(e, "cuda_context_s", ep),
        kv_cache_alloc_s=r.number(e, "kv_cache_alloc_s", ep),
        graph_capture_s=r.number(e, "graph_capture_s", ep),
        bind_s_per_layer=r.number(e, "bind_s_per_layer", ep),
        loader_efficiency=r.number(e, "loader_efficiency", ep, strict=True),
        wake_from_sleep_s=r.number(e, "wake_from_sleep_s", ep, default=0.5),
        init_overlaps_load=r.boolean(e, "init_overlaps_load", ep, default=False),
        shares_reads=r.boolean(e, "shares_reads", ep, default=True),
        loader_efficiency_dram=(
            r.number(e, "loader_efficiency_dram", ep, strict=True) if e.get("loader_efficiency_dram") is not None else None
        ),
    )
    for key in ("loader_efficiency", "loader_efficiency_dram"):
        v = getattr(engine, key)
        if v is not None and v > 1.0:
            raise r.fail(f"engine.{key}", f"must be <= 1, got {v}")
    models_raw = d.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise r.fail("models", "must be a non-empty list")
    models = tuple(_model_from_dict(r, m, f"models[{i}].") for i, m in enumerate(models_raw))
    bases: dict[str, tuple[int, SharedBase]] = {}
    for i, m in enumerate(models):
        if m.weight_bytes > hardware.usable_gpu_bytes:
            raise r.fail(f"models[{i}]", f"weights ({m.weight_bytes / 1e9:.1f} GB) do not fit the GPU")
        b = m.shared_base
        if b is None:
            continue
        first = bases.setdefault(b.name, (i, b))
        if first[1] != b:
            raise r.fail(f"models[{i}].shared_base", f"base {b.name!r} is declared differently by models[{first[0]}] "
                                                     f"({first[1].bytes} bytes, share_gpu_memory "
                                                     f"{str(first[1].share_gpu_memory).lower()})")
    return Profile(
        name=str(d.get("name", Path(source).stem)),
        schema_version=version,
        provenance=prov,
        hardware=hardware,
        engine=engine,
        models=models,
        source_path=source,
    )


def _model_from_dict(r: _Reader, m: dict, p: str) -> ModelProfile:
    if not isinstance(m, dict):
        raise r.fail(p.rstrip("."), "must be an object")
    n = r.integer(m, "num_layers", p, minimum=1)
    stages = []
    if not isinstance(m.get("stages", []), list):
        raise r.fail(f"{p}stages", "must be a list")
    for j, s in enumerate(m.get("stages", [])):
        sp = f"{p}stages[{j}]."
        if not isinstance(s, dict):
            raise r.fail(sp.rstrip("."), "must be an object")
        layers = r.integer(s, "num_layers", sp, minimum=1)
        if layers > n:
            raise r.fail(f"{sp}num_layers", f"{layers} exceeds the model's {n} layers")
        if "quality" not in s:
            raise r.fail(f"{sp}quality", "missing (null says it was never measured)")
        q = None if s["quality"] is None else r.number(s, "quality", sp)
        if q is not None and q > 1.0:
            raise r.fail(f"{sp}quality", f"must be in [0, 1] or null, got {q}")
        if q is None and layers == n:
            q = 1.0  # the full model is the reference: its quality is 1 by definition
        stages.append(
            StageProfile(
                name=str(s.get("name", f"stage{j + 1}")),
                num_layers=layers,
                quality=q,
                latency_scale=r.number(s, "latency_scale", sp, default=1.0),
                perplexity=s.get("perplexity"),
                token_agreement=s.get("token_agreement"),
                source=str(s.get("source", "")),
            )
        )
    base = _shared_base(r, m, p)
    importance = m.get("layer_importance")
    if importance is not None and (not isinstance(importance, list) or len(importance) != n or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(_as_float(v))
            for v in importance)):
        raise r.fail(f"{p}layer_importance", f"must be a list of {n} finite numbers")
    return ModelProfile(
        name=str(m.get("name", "model")),
        num_layers=n,
        layer_bytes=r.integer(m, "layer_bytes", p, minimum=1),
        embedding_bytes=r.integer(m, "embedding_bytes", p),
        head_bytes=r.integer(m, "head_bytes", p),
        kv_bytes_per_token=r.integer(m, "kv_bytes_per_token", p, minimum=1),
        max_batch=r.integer(m, "max_batch", p, minimum=1),
        max_tokens_in_flight=r.integer(m, "max_tokens_in_flight", p, minimum=1),
        prefill=r.table(m, "prefill", p),
        decode=r.table(m, "decode", p),
        stages=tuple(stages),
        layer_importance=tuple(float(v) for v in importance) if importance else None,
        shared_base=base,
    )


def _shared_base(r: _Reader, m: dict, p: str) -> SharedBase | None:
    """The model's `shared_base` entry, checked: at most its own weight bytes."""
    if m.get("shared_base") is None:
        return None
    sp = f"{p}shared_base."
    b = r.section(m, "shared_base", p)
    name = b.get("name")
    if not isinstance(name, str) or not name:
        raise r.fail(f"{sp}name", f"expected a non-empty name, got {_short(name)}")
    nbytes = r.integer(b, "bytes", sp, minimum=1)
    weights = sum(r.integer(m, k, p, minimum=0) for k in ("embedding_bytes", "head_bytes")) + \
        r.integer(m, "num_layers", p, minimum=1) * r.integer(m, "layer_bytes", p, minimum=1)
    if nbytes > weights:
        raise r.fail(f"{sp}bytes", f"{nbytes} exceeds the model's {weights} weight bytes")
    return SharedBase(name, nbytes, r.boolean(b, "share_gpu_memory", sp, default=True))


def with_shared_bases(profile: Profile, spec: str) -> Profile:
    """The profile with every model declaring a shared base (the CLI's `--shared-base`).

    `spec` is `FRACTION` or `FRACTION,storage`: each model's deployments (`<model>-<suffix>`)
    become task models over a base of FRACTION of its weights, named `<model>-base`, shared
    in GPU memory, or with `storage` only in the storage tiers. A what-if for catalogues of
    fine-tunes over one base (PrefillShare, ICaRus) without editing the profile's file.
    """
    head, _, mode = spec.partition(",")
    try:
        fraction = float(head)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1 or mode not in ("", "gpu", "storage"):
        raise ProfileError(f"--shared-base wants FRACTION or FRACTION,storage with FRACTION in (0, 1], got {spec!r}")
    models = tuple(
        replace(m, shared_base=SharedBase(f"{m.name}-base", max(1, int(m.weight_bytes * fraction)), mode != "storage"))
        for m in profile.models)
    return replace(profile, models=models)


def shipped_profiles() -> list[str]:
    """Names of the profiles in profiles/, for `--profile`."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def profile_path(spec: str) -> Path:
    """The file a profile spec names: a shipped name (`h100-llama3.1-8b-published`; its dots are
    no suffix) or a path."""
    path = Path(spec)
    shipped = PROFILES_DIR / f"{spec}.json"
    if not path.exists() and "/" not in spec and shipped.exists():
        return shipped
    if not path.suffix and not path.exists():
        return shipped
    return path


def load_profile(name_or_path: str | Path | None = None) -> Profile:
    """Load a shipped profile by name (`profiles/NAME.json`) or any JSON file by path."""
    spec = str(name_or_path or DEFAULT_PROFILE)
    path = profile_path(spec)
    if not path.exists():
        raise ProfileError(f"profile {spec!r} not found (a path, or one of: {', '.join(shipped_profiles())})")
    if path.is_dir():
        raise ProfileError(f"{path}: is a directory, expected a profile JSON file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise ProfileError(f"{path}: cannot read the profile ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path}: byte {e.start}: not UTF-8 text, expected a profile JSON file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # a number of 4,300+ digits, nesting deeper than Python's stack
        raise ProfileError(f"{path}: not usable JSON ({' '.join(str(e).split()) or type(e).__name__})") from None
    return profile_from_dict(data, str(path))


def save_profile(profile: Profile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
