"""Per-request files of the newer formats (Mooncake, Azure LMM 2025, Copilot) as a `Trace`.

What these readers share: several files merged in arrival order, each a deployment (or a
model column mapped to deployment names), times made relative to the earliest arrival,
an optional time compression, failed requests (0 output tokens) dropped or kept, and
bad rows stopping the read or counted (`lenient`). Rows carry a tenant and prefix-block
ids where the format has them. The readers differ only in how they parse a file, so each
one hands a `RowReader` to `row_trace`.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from traces.base import Trace
from traces.errors import Issues, TraceError
from traces.ordering import in_arrival_order
from traces.request import Request

COUNT_AT_OPEN_BYTES = 64 << 20  # files up to this size are read once at open, to report counts and fail early

# (path, kind, issues) -> (time_s, line, (model, prompt, output, tenant, hash_ids)) in file order
RowReader = Callable[[Path, str, Issues], Iterator[tuple[float, int, tuple]]]
# (path, kind, issues) -> (time_s, payload) in arrival order
OrderedRows = Callable[[Path, str, Issues], Iterator[tuple[float, tuple]]]


@dataclass(frozen=True)
class RowOptions:
    """Options for the per-request readers of Mooncake, Azure LMM 2025 and the Copilot trace;
    the request-level traces (`traces.requests_trace.RequestsOptions`) add to them."""

    model: str = field(default="llama-2-7b", metadata={
        "help": "base model name: a file's kind or the trace's model label becomes '<model>-<kind>'"})
    model_map: tuple[str, ...] = field(default=(), metadata={
        "help": "explicit names per kind or model label, e.g. code=mistral-7b or 'Model A=qwen3-32b'"})
    failures: str = field(default="drop", metadata={"help": "drop | keep requests with 0 output tokens"})
    rate_scale: float = field(default=1.0, metadata={"help": "divide every arrival time by this (time compression)"})
    reorder_window_s: float = field(default=60.0, metadata={"help": "how far (s) rows may be out of order"})
    lenient: bool = field(default=False, metadata={"help": "skip bad rows with counted warnings"})

    def check(self) -> None:
        if self.failures not in ("drop", "keep"):
            raise TraceError(f"option failures: {self.failures!r} is not drop or keep")
        if not 0 < self.rate_scale < float("inf"):
            raise TraceError(f"option rate_scale: must be a positive number, got {self.rate_scale}")
        if not self.reorder_window_s >= 0:
            raise TraceError(f"option reorder_window_s: must be >= 0 (inf: sort the whole file in memory), "
                             f"got {self.reorder_window_s}")
        for item in self.model_map:
            if "=" not in item:
                raise TraceError(f"option model_map: {item!r} is not NAME=MODEL")

    def name_for(self, kind: str) -> str:
        mapping = dict(item.split("=", 1) for item in self.model_map)
        if kind in mapping:
            return mapping[kind]
        return f"{self.model}-{re.sub(r'[^a-z0-9]+', '-', kind.lower()).strip('-')}"


def first_time(rows: Iterator[tuple[float, tuple]]) -> float | None:
    """The time of the first of `rows` (None when there is none): each file's earliest arrival."""
    for t, _ in rows:
        return t
    return None


def merged_pass(files: list[tuple[Path, str]], stream: Callable[[Path, str, Issues, Counter], Iterator[tuple]],
                lenient: bool, details: dict, counters: tuple[str, ...]) -> Iterator[tuple]:
    """One pass over `files`, each `stream`ed, merged by time (a row's first item); a pass that
    reaches the end writes its `counters` and the skipped-row counts into `details`."""
    counts: Counter = Counter(dict.fromkeys(counters, 0))
    issues = Issues(lenient)
    yield from heapq.merge(*(stream(p, k, issues, counts) for p, k in files), key=lambda r: r[0])
    details.update(counts)
    details.update(issues.details())


def bounded(reader: RowReader, opts: RowOptions, time_field: str) -> OrderedRows:
    """Rows of `reader` put in arrival order by the bounded heap of `traces.ordering`."""
    def ordered(path: Path, kind: str, issues: Issues) -> Iterator[tuple[float, tuple]]:
        return in_arrival_order(reader(path, kind, issues), opts.reorder_window_s, str(path), issues, time_field)
    return ordered


def row_trace(fmt: str, files: list[tuple[Path, str]], in_order: OrderedRows, opts: RowOptions, *, where: str,
              duration_s: float | None, details: dict | None = None, size_bytes: int | None = None) -> Trace:
    """A `Trace` over `files`, each read in arrival order by `in_order` (see `bounded`);
    `size_bytes` (default: the files' sizes) decides whether to count the rows at open."""

    def stream(path: Path, kind: str, issues: Issues, t0: float, counts: Counter) -> Iterator[tuple]:
        for t, (model, prompt, output, tenant, hash_ids) in in_order(path, kind, issues):
            counts["rows_read"] += 1
            if opts.failures == "drop" and output == 0:
                counts["failures_dropped"] += 1
                continue
            yield (t - t0) / opts.rate_scale, opts.name_for(model), prompt, output, tenant, hash_ids

    def full_pass(t0: float) -> Iterator[tuple]:
        return merged_pass(files, lambda p, k, issues, counts: stream(p, k, issues, t0, counts), opts.lenient, info,
                           ("rows_read", "failures_dropped"))

    issues = Issues(opts.lenient)
    firsts = [f for f in (first_time(in_order(p, k, issues)) for p, k in files) if f is not None]
    t0 = min(firsts) if firsts else 0.0
    info: dict = {"trace": fmt, "source": "real", "files": ";".join(str(p) for p, _ in files),
                  "failures": opts.failures, "rate_scale": opts.rate_scale,
                  "duration_s": "whole trace" if duration_s is None else duration_s,
                  "rows_read": "counted after the first full pass", **(details or {})}
    if size_bytes is None:
        size_bytes = sum(p.stat().st_size for p, _ in files)
    if size_bytes <= COUNT_AT_OPEN_BYTES:
        for _ in full_pass(t0):  # small files: count (and fail on bad rows) before any run
            pass
    limit = float("inf") if duration_s is None else duration_s

    def make_iter() -> Iterator[Request]:
        for i, (t, model, prompt, output, tenant, hash_ids) in enumerate(full_pass(t0)):
            if t >= limit:
                return
            yield Request(float(t), model, prompt, output, i, tenant=tenant, hash_ids=hash_ids)

    return Trace(f"{fmt} (real: {where})", make_iter, False, info)
