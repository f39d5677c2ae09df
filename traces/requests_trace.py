"""Request-level traces (Azure LLM 2023/2024, BurstGPT, a plain requests CSV) as a `Trace`.

These already name a time and token counts per request; what is chosen here is the model
name each request goes to, whether failed requests (0 output tokens) are kept, and an
optional time compression (`rate_scale` > 1 makes the same requests arrive faster).
Several files (e.g. Azure's `code` and `conv`) are merged in arrival order, one
deployment each. Azure's wall-clock times are made relative to the earliest arrival
(never clamped: every row is at or after it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from traces.base import Trace
from traces.errors import Issues
from traces.llm import read_azure_llm, read_burstgpt, read_plain
from traces.ordering import numbered
from traces.rowtrace import COUNT_AT_OPEN_BYTES, RowOptions, bounded, first_time, merged_pass


@dataclass(frozen=True)
class RequestsOptions(RowOptions):
    """Options for request-level traces: the per-request readers' options (model names,
    failures, time compression, reordering, leniency) plus BurstGPT's log type."""

    log_type: str = field(default="", metadata={"help": "BurstGPT: keep only this Log Type (e.g. 'Conversation log')"})


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

    ordered = bounded(reader, opts, time_field)

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
        return merged_pass(files, lambda p, k, issues, counts: stream(p, k, issues, t0, counts), opts.lenient,
                           details, ("rows_read", "failures_dropped", "log_type_dropped"))

    # Time 0 is the earliest arrival: each file's first row in arrival order (a row before its
    # file's first line is restored to its place or reported, as `reorder_window_s` says).
    issues = Issues(opts.lenient)
    firsts = [f for f in (first_time(ordered(p, k, issues)) for p, k in files) if f is not None]
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
