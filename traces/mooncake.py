"""Mooncake (FAST'25) request traces: arrivals, lengths and prefix-block ids, one JSON per line.

Each line is `{"timestamp": ms, "input_length": tokens, "output_length": tokens,
"hash_ids": [ids]}`: `timestamp` in milliseconds from the start of the trace, `hash_ids`
one id per 512-token block of the prompt, equal ids meaning a reusable prefix KV cache.
The ids are kept on each `Request` (`hash_ids`) so prefix-cache reuse can be modelled.
The files name no model: each file (`conversation`, `toolagent`, `synthetic`) is one
deployment, `<model>-<kind>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from traces.base import Trace
from traces.errors import Issues
from traces.llm import MAX_TOKENS
from traces.rowtrace import RowOptions, bounded, row_trace
from traces.textio import iter_lines

BLOCK_TOKENS = 512
MAX_MS = 1e15  # 31,000 years: a corrupt value, not a time
FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
KINDS = ("conversation", "toolagent", "synthetic", "mooncake")


def kind_of(path: Path) -> str:
    """`conversation` for `conversation_trace.jsonl`, and so on (the arXiv trace: `mooncake`)."""
    stem = path.name.split(".")[0]
    return stem[: -len("_trace")] if stem.endswith("_trace") else stem


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_mooncake(path: Path, kind: str, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
    """`(seconds, line, (kind, prompt, output, "", hash_ids))` for every line, checked field by field."""
    p = str(path)
    for line, text in iter_lines(path):
        try:
            row = json.loads(text)
        except ValueError as exc:
            issues.row(p, line, "", f"not a JSON object: {exc}", "bad_json")
            continue
        if not isinstance(row, dict):
            issues.row(p, line, "", f"expected a JSON object, got {type(row).__name__}", "bad_json")
            continue
        missing = [f for f in FIELDS if f not in row]
        if missing:
            issues.row(p, line, missing[0], f"field missing (a Mooncake line has {', '.join(FIELDS)})", "missing")
            continue
        t = row["timestamp"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not (0 <= t <= MAX_MS):
            issues.row(p, line, "timestamp", f"{t!r} is not a number of milliseconds in [0, {MAX_MS:g}]", "bad_time")
            continue
        counts = []
        for name in ("input_length", "output_length"):
            v = row[name]
            if not _whole(v) or v < 0:
                issues.row(p, line, name, f"{v!r} is not a non-negative whole number", "non_numeric")
                break
            if v > MAX_TOKENS:
                issues.row(p, line, name, f"{v} tokens is more than the {MAX_TOKENS:,} a request may have",
                           "too_large")
                break
            counts.append(v)
        if len(counts) < 2:
            continue
        ids = row["hash_ids"]
        if not isinstance(ids, list) or not all(_whole(i) and i >= 0 for i in ids):
            issues.row(p, line, "hash_ids", "not a list of non-negative whole numbers", "bad_hash_ids")
            continue
        blocks = -(-counts[0] // BLOCK_TOKENS)
        if len(ids) != blocks:
            issues.row(p, line, "hash_ids", f"{len(ids)} blocks, but input_length {counts[0]} fills {blocks} blocks "
                       f"of {BLOCK_TOKENS} tokens", "bad_hash_ids")
            continue
        yield t / 1000.0, line, (kind, counts[0], counts[1], "", tuple(ids))


def mooncake_trace(files: list[tuple[Path, str]], opts: RowOptions, *, where: str,
                   duration_s: float | None) -> Trace:
    """A `Trace` merging Mooncake files, one deployment per file kind."""
    details = {"models": ",".join(sorted({opts.name_for(k) for _, k in files})), "tokens": "from the trace",
               "hash_ids": f"kept on each request ({BLOCK_TOKENS}-token prefix blocks)"}
    return row_trace("mooncake", files, bounded(read_mooncake, opts, "timestamp"), opts, where=where,
                     duration_s=duration_s, details=details)
