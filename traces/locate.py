"""Where trace files are looked for, and what format a file or folder holds.

Named traces are searched in `--trace-dir`, then `$PROGRESSIVE_SERVE_TRACES`, then the
user cache dir (`$XDG_CACHE_HOME/progressive-serve/traces`, by default
`~/.cache/progressive-serve/traces`; the platform's cache folder on macOS and Windows),
each folder and its sub-folders two levels down. The first folder with a match wins.
A path's format is told by its header line, not its name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traces.errors import TraceError
from traces.textio import read_header

ENV_VAR = "PROGRESSIVE_SERVE_TRACES"

# kind -> file-name patterns (compressed variants allowed)
PATTERNS: dict[str, list[str]] = {
    "azure_functions_2019": ["invocations_per_function_md.anon.d[0-9][0-9].csv"],
    "azure_functions_2019_durations": ["function_durations_percentiles.anon.d[0-9][0-9].csv"],
    "azure_functions_2019_memory": ["app_memory_percentiles.anon.d[0-9][0-9].csv"],
    "azure_functions_2021": ["AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt",
                             "AzureFunctionsInvocationTraceForTwoWeeksJan2021.csv"],
    "azure_llm_2023_code": ["AzureLLMInferenceTrace_code.csv"],
    "azure_llm_2023_conv": ["AzureLLMInferenceTrace_conv.csv"],
    "azure_llm_2024_code": ["AzureLLMInferenceTrace_code_1week.csv"],
    "azure_llm_2024_conv": ["AzureLLMInferenceTrace_conv_1week.csv"],
    "burstgpt": ["BurstGPT_1.csv", "BurstGPT_without_fails_1.csv", "BurstGPT_*.csv"],
    "mooncake_conversation": ["conversation_trace.jsonl"],
    "mooncake_toolagent": ["toolagent_trace.jsonl"],
    "mooncake_synthetic": ["synthetic_trace.jsonl"],
    "azure_lmm_2025": ["AzureLMMInferenceTrace_multimodal.csv"],
}
_SUFFIXES = ["", ".gz", ".xz", ".bz2"]


def cache_dir() -> Path:
    """The user cache folder for traces (computed like platformdirs' user_cache_dir)."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "progressive-serve" / "traces"


def search_dirs(trace_dir: str | Path | None = None) -> list[Path]:
    """The folders to search, in order (missing ones included, so messages can list them)."""
    dirs = []
    if trace_dir:
        dirs.append(Path(trace_dir))
    if os.environ.get(ENV_VAR):
        dirs.extend(Path(p) for p in os.environ[ENV_VAR].split(os.pathsep) if p)
    dirs.append(cache_dir())
    return dirs


def find_in(folder: Path, kind: str) -> list[Path]:
    """Files of `kind` in `folder` or up to two levels below it, sorted."""
    if not folder.is_dir():
        return []
    for depth in ("", "*/", "*/*/"):
        for pattern in PATTERNS[kind]:
            hits = sorted({p for s in _SUFFIXES for p in folder.glob(depth + pattern + s) if p.is_file()})
            if hits:
                return hits if kind == "azure_functions_2019" else hits[:1]
    return []


def find(kind: str, trace_dir: str | Path | None = None) -> tuple[list[Path], Path | None]:
    """Files of `kind` from the first search folder that has any, and that folder."""
    for folder in search_dirs(trace_dir):
        hits = find_in(folder, kind)
        if hits:
            return hits, folder
    return [], None


def detect(path: Path) -> str:
    """The format of a file, from its header line."""
    header = read_header(path)
    line = ",".join(header)
    if line.startswith("HashOwner,HashApp,HashFunction,Trigger"):
        return "azure_functions_2019"
    if line.startswith("HashOwner,HashApp,HashFunction,Average"):
        return "azure_functions_2019_durations"
    if line.startswith("HashOwner,HashApp,SampleCount"):
        return "azure_functions_2019_memory"
    if header == ["app", "func", "end_timestamp", "duration"]:
        return "azure_functions_2021"
    if header == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
        return "azure_llm_2024" if "1week" in path.name else "azure_llm_2023"
    if header[:4] == ["Timestamp", "Model", "Request tokens", "Response tokens"]:
        return "burstgpt"
    if {"arrival_s", "model", "prompt_tokens", "output_tokens"} <= set(header):
        return "requests_csv"
    raise TraceError(f"{path}:1: unknown trace format (header starts {line[:80]!r}); expected an Azure Functions "
                     "2019/2021, Azure LLM, BurstGPT or requests CSV (arrival_s,model,prompt_tokens,output_tokens) "
                     "header", path=str(path), line=1)


def detect_dir(folder: Path) -> tuple[str, list[Path]]:
    """The first known trace kind found in a folder, with its files."""
    for kind in ("azure_functions_2019", "azure_functions_2021", "azure_llm_2023_conv", "azure_llm_2023_code",
                 "azure_llm_2024_conv", "azure_llm_2024_code", "burstgpt"):
        hits = find_in(folder, kind)
        if hits:
            return kind, hits
    plain = sorted(folder.glob("*.csv"))
    if len(plain) == 1:
        return detect(plain[0]), plain
    raise TraceError(f"{folder}: no known trace files in this folder (looked for {', '.join(PATTERNS)})",
                     path=str(folder))
