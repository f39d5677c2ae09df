"""`open_trace`: from a name or a path to a `Trace`, with every choice reported.

Names are looked up in the search folders (see `traces.locate`); `azure_functions`
falls back to the calibrated synthetic generator when no real files are found and says
so in the trace's name. Paths are recognised by their header line (JSON lines and
ServeGen's header-less folders by their content, see `sniff`).
"""

from __future__ import annotations

import dataclasses
import json
import lzma
import zlib
from pathlib import Path
from typing import Any

from traces.azure_lmm2025 import COLUMNS as LMM_COLUMNS
from traces.azure_lmm2025 import azure_lmm_trace
from traces.base import Trace
from traces.catalog import CatalogOptions, catalog_trace
from traces.errors import TraceError
from traces.functions2019 import Azure2019Options, azure2019_trace
from traces.functions2021 import Azure2021Options, azure2021_trace
from traces.ghcp2026 import find_ghcp, ghcp_trace, shards_under
from traces.locate import PATTERNS, detect, detect_dir, find, find_in, search_dirs
from traces.mooncake import kind_of as mooncake_kind
from traces.mooncake import mooncake_trace
from traces.options import parse_options
from traces.requests_trace import RequestsOptions, requests_trace
from traces.rowtrace import RowOptions
from traces.servegen import ServeGenOptions, find_servegen, model_folders, servegen_trace
from traces.synthetic import CALIBRATION, SyntheticOptions, load_calibration, synthetic_trace
from traces.textio import open_text, read_header
from traces.tokens import TokenSource, calibrated_tokens, empirical_tokens, fixed_tokens

# name -> (format, [(located kind, sub-kind label)])
NAMES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "azure_functions": ("azure_functions_2019", [("azure_functions_2019", "")]),
    "azure_functions_2019": ("azure_functions_2019", [("azure_functions_2019", "")]),
    "azure_functions_2021": ("azure_functions_2021", [("azure_functions_2021", "")]),
    "azure_llm_2023": ("azure_llm_2023", [("azure_llm_2023_code", "code"), ("azure_llm_2023_conv", "conv")]),
    "azure_llm_code": ("azure_llm_2023", [("azure_llm_2023_code", "code")]),
    "azure_llm_conv": ("azure_llm_2023", [("azure_llm_2023_conv", "conv")]),
    "azure_llm_2024": ("azure_llm_2024", [("azure_llm_2024_code", "code"), ("azure_llm_2024_conv", "conv")]),
    "azure_llm_2024_code": ("azure_llm_2024", [("azure_llm_2024_code", "code")]),
    "azure_llm_2024_conv": ("azure_llm_2024", [("azure_llm_2024_conv", "conv")]),
    "burstgpt": ("burstgpt", [("burstgpt", "")]),
    "synthetic": ("synthetic", []),
    "servegen": ("servegen", []),
    "mooncake": ("mooncake", [("mooncake_conversation", "conversation"), ("mooncake_toolagent", "toolagent")]),
    "mooncake_conversation": ("mooncake", [("mooncake_conversation", "conversation")]),
    "mooncake_toolagent": ("mooncake", [("mooncake_toolagent", "toolagent")]),
    "mooncake_synthetic": ("mooncake", [("mooncake_synthetic", "synthetic")]),
    "azure_lmm_2025": ("azure_lmm_2025", [("azure_lmm_2025", "multimodal")]),
    "ghcp_coding_agent_2026": ("ghcp_coding_agent_2026", []),
}
# formats whose files are found by their own rules (folders of many files), not `traces.locate`
OWN_FINDERS = {"servegen": find_servegen, "ghcp_coding_agent_2026": find_ghcp}
DEFAULT = "azure_functions"


def _kind_of(path: Path) -> str:
    name = path.name
    return "code" if "_code" in name else "conv" if "_conv" in name else path.stem


def token_source(spec: str, trace_dir: str | None, calibration: dict, source: str = str(CALIBRATION)) -> TokenSource:
    """Resolve the `tokens` option (see `traces.tokens`); `calibration` was read from `source`."""
    if spec == "calibrated" or spec.startswith("calibrated:"):
        return calibrated_tokens(calibration, spec.partition(":")[2] or "conv", source)
    if spec.startswith("fixed:"):
        return fixed_tokens(spec)
    trace = open_trace(spec, trace_dir=trace_dir)
    if trace.synthetic or trace.details.get("trace", "").startswith("azure_functions"):
        raise TraceError(f"option tokens: {spec!r} is not a request-level LLM trace with token counts")
    return empirical_tokens(trace, trace.name)


def _split(options: dict[str, Any], cls: type) -> Any:
    return parse_options(cls, options, cls.__name__.replace("Options", " trace"))


def _synthetic(options: dict, duration_s: float | None, seed: int, trace_dir: str | None, name: str) -> Trace:
    opts = parse_options(CatalogOptions, options, "Synthetic trace")  # the generator's options + catalog_size
    tokens = token_source(opts.tokens, trace_dir, load_calibration(opts.calibration), opts.calibration)
    build = catalog_trace if opts.catalog_size else synthetic_trace
    return build(opts, duration_s=duration_s, seed=seed, tokens=tokens, name=name)


def _build(fmt: str, files: list[tuple[Path, str]], where: str, options: dict, duration_s: float | None,
           seed: int, trace_dir: str | None) -> Trace:
    if fmt == "azure_functions_2019":
        opts = _split(options, Azure2019Options)
        tokens = token_source(opts.tokens, trace_dir, load_calibration())
        return azure2019_trace([p for p, _ in files], opts, where=where, duration_s=duration_s, seed=seed,
                               tokens=tokens)
    if fmt == "azure_functions_2021":
        opts = _split(options, Azure2021Options)
        tokens = token_source(opts.tokens, trace_dir, load_calibration())
        return azure2021_trace(files[0][0], opts, duration_s=duration_s, seed=seed, tokens=tokens)
    if fmt in ("azure_llm_2023", "azure_llm_2024", "burstgpt", "requests_csv"):
        return requests_trace(fmt, files, _split(options, RequestsOptions), where=where, duration_s=duration_s)
    if fmt == "servegen":
        opts = parse_options(ServeGenOptions, options, "servegen trace")
        folders = sorted({p.parent for p, _ in files})
        return servegen_trace(folders, opts, where=where, duration_s=duration_s, seed=seed)
    if fmt in ("mooncake", "azure_lmm_2025", "ghcp_coding_agent_2026"):
        row_opts = parse_options(RowOptions, options, f"{fmt} trace")
        if fmt == "mooncake":
            return mooncake_trace(files, row_opts, where=where, duration_s=duration_s)
        if fmt == "azure_lmm_2025":
            return azure_lmm_trace(files, row_opts, where=where, duration_s=duration_s)
        return ghcp_trace([p for p, _ in files], row_opts, where=where, duration_s=duration_s)
    raise TraceError(f"{files[0][0]}: a {fmt} file holds no arrivals; pass the invocations file or its folder")


def _servegen_files(folders: list[Path]) -> list[tuple[Path, str]]:
    """Every file a ServeGen replay reads (for fingerprints), paired with its model folder's name."""
    return [(f, d.name) for d in folders for f in sorted(d.iterdir())
            if f.is_file() and f.name.startswith("chunk-") and ("-trace.csv" in f.name or "-dataset.json" in f.name)]


def _first_json(path: Path) -> dict:
    try:
        with open_text(path) as f:
            for text in f:
                if text.strip():
                    row = json.loads(text)
                    return row if isinstance(row, dict) else {}
    except (ValueError, OSError, EOFError, zlib.error, lzma.LZMAError):  # damaged: the reader names the line
        return {}
    return {}


def sniff(path: Path) -> tuple[str, list[tuple[Path, str]]] | None:
    """The formats `traces.locate.detect` cannot tell by a CSV header: Mooncake and Copilot JSON
    lines, ServeGen folders (header-less CSVs), Azure LMM 2025; None for every other file."""
    if path.is_dir():
        folders = model_folders(path)
        if folders:
            return "servegen", _servegen_files(folders)
        shards = shards_under(path)
        if shards:
            return "ghcp_coding_agent_2026", [(s, "") for s in shards]
        jsonl = sorted(p for p in path.glob("*_trace.jsonl*") if p.is_file())
        return ("mooncake", [(p, mooncake_kind(p)) for p in jsonl]) if jsonl else None
    if ".jsonl" in path.name:
        row = _first_json(path)
        if "turns" in row:
            return "ghcp_coding_agent_2026", [(path, "")]
        return "mooncake", [(path, mooncake_kind(path))]
    if path.name.startswith("chunk-") and "-trace.csv" in path.name:
        return "servegen", _servegen_files([path.parent])
    try:
        if read_header(path) == LMM_COLUMNS:
            return "azure_lmm_2025", [(path, "multimodal")]
    except TraceError:
        return None
    return None


def resolve(spec: str, trace_dir: str | None = None) -> tuple[str, list[tuple[Path, str]], str]:
    """`(format, [(file, kind)], where)` for a name or path; format "synthetic" with no files
    when the name is `synthetic`, or `azure_functions` and no real files were found (then
    `where` lists the folders searched)."""
    path = Path(spec).expanduser()
    if spec not in NAMES and (path.exists() or "/" in spec or spec.endswith(".csv")):
        if not path.exists():
            raise TraceError(f"{path}: no such file or folder")
        sniffed = sniff(path)
        if sniffed:
            return sniffed[0], sniffed[1], str(path)
        if not path.is_dir():
            return detect(path), [(path, _kind_of(path))], str(path)
        kind, hits = detect_dir(path)
        fmt = kind if kind.startswith("azure_functions") else detect(hits[0])
        if fmt.startswith("azure_llm"):
            hits = [h for k in ("code", "conv") for h in find_in(path, f"{fmt}_{k}")] or hits
        return fmt, [(h, _kind_of(h)) for h in hits], str(path)
    if spec not in NAMES:
        raise TraceError(f"unknown trace {spec!r}; names: {', '.join(NAMES)}; or give a path to a trace file/folder")
    fmt, kinds = NAMES[spec]
    if fmt == "synthetic":
        return fmt, [], "traces/calibration/azure_functions_2019.json"
    if fmt in OWN_FINDERS:
        hits, found, looked_in = OWN_FINDERS[fmt](trace_dir)
        if hits:
            files = _servegen_files(hits) if fmt == "servegen" else [(h, "") for h in hits]
            return fmt, files, str(found)
        what = "model folders of chunk-<id>-trace.csv files" if fmt == "servegen" else \
            "date=YYYY-MM-DD/shard-NNNN.jsonl.gz files"
        raise TraceError(f"trace {spec}: no {what} found in {', '.join(map(str, looked_in))}; "
                         f"fetch it with `python -m traces download {spec}` or pass --trace-dir")
    files: list[tuple[Path, str]] = []
    where: Path | None = None
    for kind, label in kinds:
        hits, folder = find(kind, trace_dir)
        files += [(h, label or _kind_of(h)) for h in hits]
        where = where or folder
    if files:
        return fmt, files, str(where)
    looked = ", ".join(str(d) for d in search_dirs(trace_dir))
    if spec == DEFAULT:
        return "synthetic", [], looked
    wanted = " or ".join(p for k, _ in kinds for p in PATTERNS[k])
    hint = " (the download is a RAR archive: unpack it with unrar x or 7z x)" if fmt == "azure_functions_2021" else ""
    raise TraceError(f"trace {spec}: no {wanted} found in {looked}; "
                     f"fetch it with `python -m traces download {spec}`{hint} or pass --trace-dir")


def open_trace(spec: str | None = None, *, trace_dir: str | None = None, duration_s: float | None = None,
               seed: int = 0, **options: Any) -> Trace:
    """Open a trace by name (see `NAMES`) or by path; see the package docstring."""
    spec = spec or DEFAULT
    if duration_s is not None and not duration_s > 0:
        raise TraceError(f"duration_s must be positive, got {duration_s}")
    if trace_dir and not Path(trace_dir).expanduser().is_dir():
        raise TraceError(f"{trace_dir}: trace dir does not exist or is not a folder", path=str(trace_dir))
    fmt, files, where = resolve(spec, trace_dir)
    if fmt != "synthetic":
        return _build(fmt, files, where, options, duration_s, seed, trace_dir)
    if spec == "synthetic":
        calibration = options.get("calibration") or where
        return _synthetic(options, duration_s, seed, trace_dir, f"synthetic (calibrated: {calibration})")
    # The fallback accepts the real trace's options too, so one command line works either way.
    real_only = {f.name for f in dataclasses.fields(Azure2019Options)} - \
        {f.name for f in dataclasses.fields(SyntheticOptions)}
    ignored = sorted(k for k in options if k in real_only)
    trace = _synthetic({k: v for k, v in options.items() if k not in real_only}, duration_s, seed, trace_dir,
                       f"azure_functions (calibrated synthetic; no trace files found in {where})")
    if ignored:
        trace.details["options.ignored"] = ", ".join(f"{k}={options[k]}" for k in ignored) + \
            " (apply to real trace files only)"
    return trace
