"""Azure LMM (multimodal) inference trace 2025 (ModServe, SoCC'25): one row per request.

`AzureLMMInferenceTrace_multimodal.csv[.gz]`, header `TIMESTAMP,NumImages,ContextTokens,
GeneratedTokens`; TIMESTAMP is ISO-8601 UTC with milliseconds (`2024-10-15T12:00:00.269Z`).
The trace names no model (one multimodal inference cluster): the file is one deployment,
`<model>-multimodal`. ContextTokens is the prompt as the trace counts it; NumImages is
checked but not used: the simulator has no separate image cost.
Written from the published schema; the full file has not been read by this reader yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from traces.base import Trace
from traces.errors import Issues, TraceError
from traces.llm import MAX_TOKENS, parse_timestamp
from traces.rowtrace import RowOptions, bounded, row_trace
from traces.textio import iter_rows

COLUMNS = ["TIMESTAMP", "NumImages", "ContextTokens", "GeneratedTokens"]
MAX_IMAGES = 10_000


def _whole(path: str, line: int, name: str, text: str, limit: int, issues: Issues) -> int | None:
    try:
        if "_" in text:
            raise ValueError
        v = int(text)
    except ValueError:
        issues.row(path, line, name, f"{text!r} is not a whole number", "non_numeric")
        return None
    if not 0 <= v <= limit:
        issues.row(path, line, name, f"{v} is outside [0, {limit:,}]", "out_of_range")
        return None
    return v


def read_azure_lmm(path: Path, kind: str, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
    """`(epoch seconds, line, (kind, prompt, output, "", ()))` for every row, checked field by field."""
    p = str(path)
    rows = iter_rows(path)
    first = next(rows, None)
    if first is None:
        raise TraceError(f"{p}:1: empty file (no header line)", path=p, line=1)
    header = [h.strip() for h in first[1]]
    if header != COLUMNS:
        raise TraceError(f"{p}:1: header {header}, expected {COLUMNS}", path=p, line=1)
    for line, f in rows:
        if len(f) != len(COLUMNS):
            name = COLUMNS[len(f)] if len(f) < len(COLUMNS) else f"#{len(COLUMNS) + 1}"
            issues.row(p, line, name, f"{len(f)} fields, expected {len(COLUMNS)}", "bad_width")
            continue
        try:
            t = parse_timestamp(f[0])
        except ValueError:
            issues.row(p, line, "TIMESTAMP", f"{f[0]!r} is not an ISO-8601 time such as 2024-10-15T12:00:00.269Z",
                       "bad_time")
            continue
        images = _whole(p, line, "NumImages", f[1], MAX_IMAGES, issues)
        prompt = _whole(p, line, "ContextTokens", f[2], MAX_TOKENS, issues) if images is not None else None
        output = _whole(p, line, "GeneratedTokens", f[3], MAX_TOKENS, issues) if prompt is not None else None
        if output is not None:
            yield t, line, (kind, prompt, output, "", ())


def azure_lmm_trace(files: list[tuple[Path, str]], opts: RowOptions, *, where: str,
                    duration_s: float | None) -> Trace:
    details = {"models": ",".join(sorted({opts.name_for(k) for _, k in files})), "tokens": "from the trace",
               "note": "written from the published schema; not yet run on the full file"}
    return row_trace("azure_lmm_2025", files, bounded(read_azure_lmm, opts, "TIMESTAMP"), opts, where=where,
                     duration_s=duration_s, details=details)
