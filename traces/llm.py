"""Readers for request-level LLM traces: Azure LLM inference 2023/2024, BurstGPT, plain CSV.

Each reader streams `(time_s, line, (model, prompt, output))` rows in file order with every
field checked; `traces.ordering` puts them in arrival order. Times are seconds: absolute
(epoch) for Azure's wall-clock TIMESTAMP, relative for BurstGPT and plain files; the
trace makes them relative to the first arrival.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from traces.errors import Issues, TraceError
from traces.textio import iter_rows

AZURE_LLM_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
BURSTGPT_COLUMNS = ["Timestamp", "Model", "Request tokens", "Response tokens"]
PLAIN_REQUIRED = ["arrival_s", "model", "prompt_tokens", "output_tokens"]
PLAIN_OPTIONAL = ["function", "adapter"]

_EPOCH = dt.date(1970, 1, 1)
# The most tokens one request may carry in a trace: far beyond any model's context window
# (2024: 1-2 M), low enough that every count fits the simulator's 64-bit arithmetic.
MAX_TOKENS = 10_000_000


def parse_timestamp(text: str, _days: dict[str, int] = {}) -> float:  # noqa: B006 (a deliberate cache)
    """Seconds since the epoch for `YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM|Z]`.

    Hand-parsed because the files carry 7 fractional digits (which `fromisoformat`
    rejects before Python 3.11) and because this runs once per row.
    """
    text = text.strip()
    date, _, clock = text.replace("T", " ").partition(" ")
    day = _days.get(date)
    if day is None:
        day = (dt.date.fromisoformat(date) - _EPOCH).days
        _days[date] = day
    offset = 0.0
    if clock.endswith("Z"):
        clock = clock[:-1]
    elif len(clock) > 6 and clock[-6] in "+-" and clock[-3] == ":":
        sign = 1.0 if clock[-6] == "+" else -1.0
        offset = sign * (int(clock[-5:-3]) * 3600 + int(clock[-2:]) * 60)
        clock = clock[:-6]
    h, m, s = clock.split(":")
    hours, minutes, seconds = int(h), int(m), float(s)
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 61):
        raise ValueError(f"time {clock!r} out of range")
    return day * 86400.0 + hours * 3600 + minutes * 60 + seconds - offset


def _count(path: str, line: int, name: str, text: str, issues: Issues) -> int | None:
    try:
        if "_" in text:  # int() accepts "1_000"; a trace must not
            raise ValueError
        v = int(text)
    except ValueError:
        issues.row(path, line, name, f"{text!r} is not a whole number", "non_numeric")
        return None
    if v < 0:
        issues.row(path, line, name, f"negative value {v}", "negative")
        return None
    if v > MAX_TOKENS:
        issues.row(path, line, name, f"{v} tokens is more than the {MAX_TOKENS:,} a request may have",
                   "too_large")
        return None
    return v


def _header(path: str, rows: Iterator[tuple[int, list[str]]]) -> list[str]:
    first = next(rows, None)
    if first is None:
        raise TraceError(f"{path}:1: empty file (no header line)", path=path, line=1)
    return [h.strip() for h in first[1]]


def _width_ok(path: str, line: int, fields: list[str], width: int, header: list[str], issues: Issues) -> bool:
    if len(fields) == width:
        return True
    if len(fields) < width:
        issues.row(path, line, header[len(fields)], f"truncated line: {len(fields)} fields, expected {width}",
                   "truncated_line")
    else:
        issues.row(path, line, f"#{width + 1}", f"extra fields: {len(fields)} fields, expected {width}",
                   "extra_fields")
    return False


def read_azure_llm(path: str | Path, model: str, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
    """Rows of `AzureLLMInferenceTrace_*.csv` (2023 or 2024): epoch time, model, tokens."""
    path = str(path)
    rows = iter_rows(path)
    header = _header(path, rows)
    if header != AZURE_LLM_COLUMNS:
        raise TraceError(f"{path}:1: header {header}, expected {AZURE_LLM_COLUMNS}", path=path, line=1)
    for line, f in rows:
        if not _width_ok(path, line, f, 3, header, issues):
            continue
        try:
            t = parse_timestamp(f[0])
        except ValueError:
            issues.row(path, line, "TIMESTAMP", f"{f[0]!r} is not a 'YYYY-MM-DD HH:MM:SS.f' time", "bad_time")
            continue
        prompt = _count(path, line, "ContextTokens", f[1], issues)
        output = _count(path, line, "GeneratedTokens", f[2], issues)
        if prompt is not None and output is not None:
            yield t, line, (model, prompt, output, "")


def read_burstgpt(path: str | Path, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
    """Rows of `BurstGPT_*.csv`: relative seconds, model, tokens, log type (failures kept)."""
    path = str(path)
    rows = iter_rows(path)
    header = _header(path, rows)
    if header[:4] != BURSTGPT_COLUMNS:
        raise TraceError(f"{path}:1: header starts {header[:4]}, expected {BURSTGPT_COLUMNS}", path=path, line=1)
    log_col = header.index("Log Type") if "Log Type" in header else None
    for line, f in rows:
        if not _width_ok(path, line, f, len(header), header, issues):
            continue
        try:
            t = float(f[0])
        except ValueError:
            t = float("nan")
        if not 0 <= t < float("inf"):
            issues.row(path, line, "Timestamp", f"{f[0]!r} is not a non-negative number of seconds", "bad_time")
            continue
        if not f[1].strip():
            issues.row(path, line, "Model", "empty model name", "empty_model")
            continue
        prompt = _count(path, line, "Request tokens", f[2], issues)
        output = _count(path, line, "Response tokens", f[3], issues)
        if prompt is not None and output is not None:
            log = f[log_col].strip() if log_col is not None else ""
            yield t, line, (f[1].strip(), prompt, output, log)


def read_plain(path: str | Path, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
    """Rows of a user's requests CSV: `arrival_s,model,prompt_tokens,output_tokens[,function,adapter]`."""
    path = str(path)
    rows = iter_rows(path)
    header = _header(path, rows)
    missing = [c for c in PLAIN_REQUIRED if c not in header]
    unknown = [c for c in header if c not in PLAIN_REQUIRED + PLAIN_OPTIONAL]
    if missing or unknown or len(set(header)) != len(header):
        raise TraceError(f"{path}:1: requests CSV header {header}: missing {missing}, unknown {unknown}; "
                         f"expected {','.join(PLAIN_REQUIRED)} (optional: {','.join(PLAIN_OPTIONAL)})",
                         path=path, line=1)
    col = {c: header.index(c) for c in header}
    for line, f in rows:
        if not _width_ok(path, line, f, len(header), header, issues):
            continue
        try:
            t = float(f[col["arrival_s"]])
        except ValueError:
            t = float("nan")
        if not (t >= 0 and t != float("inf")):
            issues.row(path, line, "arrival_s", f"{f[col['arrival_s']]!r} is not a non-negative number", "bad_time")
            continue
        model = f[col["model"]].strip()
        if not model:
            issues.row(path, line, "model", "empty model name", "empty_model")
            continue
        prompt = _count(path, line, "prompt_tokens", f[col["prompt_tokens"]], issues)
        output = _count(path, line, "output_tokens", f[col["output_tokens"]], issues)
        if prompt is None or output is None:
            continue
        extra = tuple(f[col[c]].strip() if c in col else "" for c in PLAIN_OPTIONAL)
        yield t, line, (model, prompt, output, *extra)
