"""The Azure Functions 2021 invocation trace (Zhang et al., SOSP'21; CC-BY 4.0) as LLM requests.

`AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt` has one row per invocation:
`app,func,end_timestamp,duration` (seconds). An invocation arrived at
`end_timestamp - duration`; the file is ordered by end time, so arrivals are restored
to order by a bounded heap (`reorder_window_s`). Functions are chosen and mapped to
models exactly as for the 2019 trace; `rate_scale` below 1 thins invocations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from traces.base import Trace
from traces.errors import Issues, TraceError
from traces.mapping import FunctionStat, MappingOptions, choose_functions, deployments, mapping_details
from traces.ordering import in_arrival_order, numbered
from traces.textio import iter_rows
from traces.tokens import TokenSource

COLUMNS = ["app", "func", "end_timestamp", "duration"]


@dataclass(frozen=True)
class Azure2021Options(MappingOptions):
    """Options of the Azure Functions 2021 reader (plus the mapping options)."""

    reorder_window_s: float = field(default=3600.0, metadata={
        "help": "how far (s) start times may run out of order in the end-time-sorted file"})

    def check(self) -> None:
        super().check()
        if not self.reorder_window_s >= 0:
            raise TraceError(f"option reorder_window_s: must be >= 0 (inf: sort the whole file in memory), "
                             f"got {self.reorder_window_s}")
        if self.rate_scale > 1:
            raise TraceError(f"option rate_scale: the 2021 trace can only be thinned (<= 1), got {self.rate_scale}")


def read_invocations_2021(path: str | Path, issues: Issues) -> Iterator[tuple[int, str, str, float, float]]:
    """Rows `(line, app, func, start_s, duration_s)` of the 2021 trace, every field checked."""
    path = str(path)
    rows = iter_rows(path)
    first = next(rows, None)
    if first is None:
        raise TraceError(f"{path}:1: empty file (no header line)", path=path, line=1)
    header = [h.strip() for h in first[1]]
    if header != COLUMNS:
        raise TraceError(f"{path}:1: header {header}, expected {COLUMNS}", path=path, line=1)
    for line, f in rows:
        if len(f) != 4:
            col = COLUMNS[len(f)] if len(f) < 4 else "#5"
            kind = "truncated_line" if len(f) < 4 else "extra_fields"
            issues.row(path, line, col, f"{kind.replace('_', ' ')}: {len(f)} fields, expected 4", kind)
            continue
        if not f[0].strip() or not f[1].strip():
            issues.row(path, line, "app" if not f[0].strip() else "func", "empty value", "empty_key")
            continue
        values = []
        for name, text in (("end_timestamp", f[2]), ("duration", f[3])):
            try:
                v = float(text)
            except ValueError:
                v = float("nan")
            if not (v >= 0 and v != float("inf")):
                issues.row(path, line, name, f"{text!r} is not a non-negative number", "bad_value")
                break
            values.append(v)
        else:
            end, duration = values
            yield line, f[0].strip(), f[1].strip(), max(end - duration, 0.0), duration


def azure2021_trace(path: Path, opts: Azure2021Options, *, duration_s: float | None, seed: int,
                    tokens: TokenSource) -> Trace:
    """Build the replayable `Trace` over the 2021 invocation file."""
    issues = Issues(opts.lenient)
    totals: dict[tuple, int] = {}
    for _, app, func, _, _ in read_invocations_2021(path, issues):
        totals[(app, func)] = totals.get((app, func), 0) + 1
    stats = [FunctionStat(k, "unknown", n) for k, n in totals.items()]
    sel_ss, arr_ss, tok_ss = np.random.SeedSequence(seed).spawn(3)
    sel_rng = np.random.default_rng(sel_ss if opts.sample_seed is None else opts.sample_seed)
    chosen, how = choose_functions(stats, opts, sel_rng, str(path))
    deps = deployments(len(chosen), opts.catalog, opts.mode)
    index = {s.key: i for i, s in enumerate(chosen)}
    labels = [s.label for s in chosen]

    def records():
        rng, tok_rng = np.random.default_rng(arr_ss), np.random.default_rng(tok_ss)
        rows = ((start, line, index[(app, func)]) for line, app, func, start, _ in
                read_invocations_2021(path, Issues(opts.lenient)) if (app, func) in index)
        buffer: list = []
        for t, i in in_arrival_order(rows, opts.reorder_window_s, str(path), Issues(opts.lenient),
                                     "end_timestamp"):
            if opts.rate_scale < 1 and rng.random() >= opts.rate_scale:
                continue
            if not buffer:
                buffer = list(zip(*(a.tolist() for a in tokens.draw(tok_rng, 4096)), strict=True))
            p, o = buffer.pop()
            yield t, deps[i][0], p, o, labels[i], deps[i][1]

    details = {
        "trace": "azure_functions_2021", "source": "real", "files": str(path),
        "functions.in_files": len(stats), "invocations.in_files": sum(totals.values()),
        "invocations.kept_functions": sum(s.total for s in chosen), "tokens": tokens.describe(), "seed": seed,
        "reorder_window_s": opts.reorder_window_s,
        "duration_s": "whole trace" if duration_s is None else duration_s,
        **mapping_details(chosen, deps, opts, how), **issues.details(),
    }
    return Trace(f"azure_functions_2021 (real: {path})", lambda: numbered(records(), duration_s), False, details)
