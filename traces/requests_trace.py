"""Request-level traces (Azure LLM 2023/2024, BurstGPT, a plain requests CSV) as a `Trace`.

These already name a time and token counts per request; what is chosen here is the model
name each request goes to, whether failed requests (0 output tokens) are kept, and an
optional time compression (`rate_scale` > 1 makes the same requests arrive faster).
Several files (e.g. Azure's `code` and `conv`) are merged in arrival order, one
deployment each. Azure's wall-clock times are made relative to the earliest arrival
(never clamped: every row is at or after it).
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from traces.base import Trace
from traces.errors import Issues, TraceError
from traces.llm import read_azure_llm, read_burstgpt, read_plain
from traces.ordering import in_arrival_order, numbered

COUNT_AT_OPEN_BYTES = 64 << 20  # files up to this size are read once at open, to report counts


@dataclass(frozen=True)
class RequestsOptions:
    """Options for request-level traces."""

    model: str = field(default="llama-2-7b", metadata={
        "help": "base model name; files/models of the trace become '<model>-<kind>' deployments"})
    model_map: tuple[str, ...] = field(default=(), metadata={
        "help": "explicit names, e.g. ChatGPT=llama-2-13b,code=mistral-7b"})
    failures: str = field(default="drop", metadata={"help": "drop | keep requests with 0 output tokens"})
    log_type: str = field(default="", metadata={"help": "BurstGPT: keep only this Log Type (e.g. 'Conversation log')"})
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



def _first_time(rows: Iterator) -> float | None:
    for t, _ in rows:
        return t
    return None


def requests_trace(fmt: str, files: list[tuple[Path, str]], opts: RequestsOptions, *, where: str,
                   duration_s: float | None) -> Trace:
    """A `Trace` over request-level files of format `fmt` (`azure_llm_2023`, `azure_llm_2024`,
    `burstgpt`, `requests_csv`); `files` pairs each path with its kind (`code`, `conv`, ...)."""
    def reader(path: Path, kind: str, issues: Issues) -> Iterator[tuple[float, int, tuple]]:
        if fmt.startswith("azure_llm"):
            return read_azure_llm(path, opts.name_for(kind), issues)
        if fmt == "burstgpt":
            return read_burstgpt(path, issues)
        return read_plain(path, issues)

    time_field = {"burstgpt": "Timestamp", "requests_csv": "arrival_s"}.get(fmt, "TIMESTAMP")

    def ordered(path: Path, kind: str, issues: Issues) -> Iterator[tuple[float, tuple]]:
        return in_arrival_order(reader(path, kind, issues), opts.reorder_window_s, str(path), issues, time_field)

    def stream(path: Path, kind: str, issues: Issues, t0: float, counts: Counter) -> Iterator[tuple]:
        for t, payload in ordered(path, kind, issues):
            model, prompt, output, *extra = payload
            counts["rows_read"] += 1
            if fmt == "burstgpt":
                if opts.log_type and extra[0] != opts.log_type:
                    counts["log_type_dropped"] += 1
                    continue
                model, extra = opts.name_for(model), ["", ""]
            if opts.failures == "drop" and output == 0:
                counts["failures_dropped"] += 1
                continue
            function, adapter = (extra + ["", ""])[:2] if fmt == "requests_csv" else ("", "")
            yield (t - t0) / opts.rate_scale, model, prompt, output, function, adapter

    def full_pass(t0: float) -> Iterator[tuple]:
        """Merge the files; a pass that reaches the end refreshes the counts in `details`."""
        counts: Counter = Counter({"rows_read": 0, "failures_dropped": 0, "log_type_dropped": 0})
        issues = Issues(opts.lenient)
        yield from heapq.merge(*(stream(p, k, issues, t0, counts) for p, k in files), key=lambda r: r[0])
        details.update(counts)
        details.update(issues.details())

    # Time 0 is the earliest arrival: each file's first row in arrival order (a row before its
    # file's first line is restored to its place or reported, as `reorder_window_s` says).
    issues = Issues(opts.lenient)
    firsts = [f for f in (_first_time(ordered(p, k, issues)) for p, k in files) if f is not None]
    t0 = 0.0 if fmt in ("burstgpt", "requests_csv") or not firsts else min(firsts)
    details: dict = {
        "trace": fmt, "source": "real", "files": ";".join(str(p) for p, _ in files),
        "models": ",".join(sorted({opts.name_for(k) for _, k in files})) if fmt.startswith("azure_llm")
        else "from the file's model column" + (f" (map {','.join(opts.model_map)})" if opts.model_map else
                                                f" -> {opts.model}-<name>" if fmt == "burstgpt" else ""),
        "tokens": "from the trace", "failures": opts.failures, "rate_scale": opts.rate_scale,
        "duration_s": "whole trace" if duration_s is None else duration_s,
        "rows_read": "counted after the first full pass",
    }
    if opts.log_type:
        details["log_type"] = opts.log_type
    if sum(p.stat().st_size for p, _ in files) <= COUNT_AT_OPEN_BYTES:
        for _ in full_pass(t0):  # small files: count (and fail on bad rows) before any run
            pass

    def make_iter() -> Iterator:
        return numbered(full_pass(t0), duration_s)

    return Trace(f"{fmt} (real: {where})", make_iter, False, details)
