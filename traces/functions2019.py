"""The Azure Functions 2019 trace as a stream of LLM requests.

Two passes over the day files, never holding a whole file: the first totals each
function's invocations (to choose functions), the second, run afresh on every
iteration, turns the chosen functions' per-minute counts into arrival times an hour of
minutes at a time. Within a minute the `k` arrivals are either `k` independent uniform
times (`poisson`: exactly a Poisson process conditioned on its count) or evenly spaced
(`uniform`). Either way every count in the file becomes exactly that many requests
(at `rate_scale` 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from traces.azure2019 import MAX_PER_MINUTE, day_number, read_invocations
from traces.base import Trace
from traces.errors import Issues, TraceError
from traces.mapping import (
    FunctionStat,
    MappingOptions,
    choose_functions,
    deployments,
    mapping_details,
    scale_counts,
)
from traces.ordering import numbered
from traces.tokens import TokenSource

WITHIN_MINUTE = ("poisson", "uniform")
BLOCK_MINUTES = 60
BLOCK_ARRIVALS = 2_000_000  # a busier hour is drawn a few minutes at a time (memory stays ~100 MB)
CACHE_CELLS = 2_000_000  # busy (function, minute) cells of one day kept in memory between replays


@dataclass(frozen=True)
class Azure2019Options(MappingOptions):
    """Options of the Azure Functions 2019 reader (plus the mapping options)."""

    days: str = field(default="auto", metadata={
        "help": "auto (as many days as duration_s needs, else the first) | first | all | a list like 1-3,7"})
    within_minute: str = field(default="poisson", metadata={
        "help": "poisson: uniform random times in the minute; uniform: evenly spaced"})

    def check(self) -> None:
        super().check()
        if self.within_minute not in WITHIN_MINUTE:
            raise TraceError(f"option within_minute: {self.within_minute!r} is not one of {', '.join(WITHIN_MINUTE)}")


def pick_days(files: list[Path], spec: str, duration_s: float | None = None) -> list[tuple[int, Path]]:
    """`(day number, file)` for the days asked for, in day order."""
    numbered_files = sorted((day_number(f) or 0, f) for f in files)
    if spec == "all":
        return numbered_files
    if spec == "auto":
        needed = 1 if duration_s is None else max(1, int(np.ceil(duration_s / 86400.0)))
        return [(d, f) for d, f in numbered_files if d < numbered_files[0][0] + needed] or numbered_files[:1]
    if spec == "first":
        return numbered_files[:1]
    wanted: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise TraceError(f"option days: {spec!r} is not auto, first, all or a list like 1-3,7") from None
    chosen = [(d, f) for d, f in numbered_files if d in wanted]
    if not chosen:
        have = ",".join(f"d{d:02d}" for d, _ in numbered_files)
        raise TraceError(f"option days: none of days {spec} found (have {have})")
    return chosen


def function_stats(days: list[tuple[int, Path]], issues: Issues) -> tuple[list[FunctionStat], dict[tuple, tuple]]:
    """Pass 1: total invocations per function over the chosen days, and each function's
    busiest minute as `(count, file, line)`."""
    totals: dict[tuple, list] = {}
    for _, path in days:
        for row in read_invocations(path, issues):
            entry = totals.setdefault(row.key, [row.trigger, 0, (0, path, row.line)])
            entry[1] += row.total
            peak = int(row.counts.max())
            if peak > entry[2][0]:
                entry[2] = (peak, path, row.line)
    return [FunctionStat(k, trig, tot) for k, (trig, tot, _) in totals.items()], \
        {k: peak for k, (_, _, peak) in totals.items()}


def _check_scaled_peak(chosen: list[FunctionStat], peaks: dict[tuple, tuple], rate_scale: float) -> None:
    """`rate_scale` may not lift any kept function's minute above `MAX_PER_MINUTE`."""
    if rate_scale <= 1 or not chosen:
        return
    count, path, line = max(peaks[s.key] for s in chosen)
    if count * rate_scale > MAX_PER_MINUTE:
        raise TraceError(f"option rate_scale: {rate_scale:g} times the busiest minute of a kept function "
                         f"({count} invocations, {path}:{line}) is more than the {MAX_PER_MINUTE:,} a minute "
                         "this reader generates", path=str(path), line=line, field_name="rate_scale")


def _day_cells(path: Path, index: dict, lenient: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2 for one day: `(minute, function index, count)` of the chosen functions' busy minutes."""
    minutes, funcs, counts = [], [], []
    for row in read_invocations(path, Issues(lenient)):
        i = index.get(row.key)
        if i is None:
            continue
        busy = np.flatnonzero(row.counts)
        minutes.append(busy)
        funcs.append(np.full(len(busy), i, np.int64))
        counts.append(row.counts[busy])
    if not minutes:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    m, f, c = np.concatenate(minutes), np.concatenate(funcs), np.concatenate(counts)
    order = np.argsort(m, kind="stable")
    return m[order], f[order], c[order]


def _arrivals(m: np.ndarray, c: np.ndarray, offset_s: float, how: str, rng: np.random.Generator) -> np.ndarray:
    """Arrival times for cells with `c[k]` invocations in minute `m[k]`."""
    start = np.repeat(offset_s + m * 60.0, c)
    if how == "poisson":
        return start + rng.random(len(start)) * 60.0
    first = np.repeat(np.cumsum(c) - c, c)
    rank = np.arange(len(start)) - first
    return start + (rank + 0.5) / np.repeat(c, c) * 60.0


class _CellCache:
    """Each day's busy cells of the chosen functions, kept after the first pass when small.

    The simulator replays a trace once per policy combination; for a handful of functions
    a day is a few thousand cells, so re-reading a 100+ MB day file each time is waste.
    """

    def __init__(self, index: dict, lenient: bool, limit: int = CACHE_CELLS):
        self.index, self.lenient, self.limit = index, lenient, limit
        self.days: dict[Path, tuple] = {}

    def get(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cells = self.days.get(path)
        if cells is None:
            cells = _day_cells(path, self.index, self.lenient)
            if len(cells[0]) <= self.limit:
                self.days[path] = cells
        return cells


def _blocks(m: np.ndarray, c: np.ndarray, limit: int = BLOCK_ARRIVALS) -> Iterator[tuple[int, int]]:
    """Minute ranges `[lo, hi)` to draw at once: each hour, cut into runs of whole minutes
    holding at most `limit` arrivals (or a single minute) when it has more."""
    per_minute = np.bincount(m, weights=c, minlength=1440)
    for lo in range(0, 1440, BLOCK_MINUTES):
        hi = lo + BLOCK_MINUTES
        if per_minute[lo:hi].sum() <= limit:
            yield lo, hi
            continue
        start, total = lo, 0.0
        for minute in range(lo, hi):
            if total and total + per_minute[minute] > limit:
                yield start, minute
                start, total = minute, 0.0
            total += per_minute[minute]
        yield start, hi


def _records(days, cache: _CellCache, labels, deps, opts: Azure2019Options, arr_ss, tok_ss, tokens: TokenSource):
    rng = np.random.default_rng(arr_ss)
    tok_rng = np.random.default_rng(tok_ss)
    first_day = days[0][0]
    for day, path in days:
        m, f, c = cache.get(path)
        c = scale_counts(c, opts.rate_scale, rng)
        offset = (day - first_day) * 86400.0
        for lo, hi in _blocks(m, c):
            sel = (m >= lo) & (m < hi)
            if not sel.any():
                continue
            times = _arrivals(m[sel], c[sel], offset, opts.within_minute, rng)
            fidx = np.repeat(f[sel], c[sel])
            order = np.argsort(times, kind="stable")
            times, fidx = times[order], fidx[order]
            prompt, output = tokens.draw(tok_rng, len(times))
            for t, i, p, o in zip(times.tolist(), fidx.tolist(), prompt.tolist(), output.tolist(), strict=True):
                model, adapter = deps[i]
                yield t, model, p, o, labels[i], adapter


def azure2019_trace(files: list[Path], opts: Azure2019Options, *, where: str, duration_s: float | None,
                    seed: int, tokens: TokenSource) -> Trace:
    """Build the lazily replayable `Trace` over the chosen day files."""
    days = pick_days(files, opts.days, duration_s)
    issues = Issues(opts.lenient)
    stats, peaks = function_stats(days, issues)
    sel_ss, arr_ss, tok_ss = np.random.SeedSequence(seed).spawn(3)
    sel_rng = np.random.default_rng(sel_ss if opts.sample_seed is None else opts.sample_seed)
    chosen, how = choose_functions(stats, opts, sel_rng, where)
    _check_scaled_peak(chosen, peaks, opts.rate_scale)
    deps = deployments(len(chosen), opts.catalog, opts.mode)
    index = {s.key: i for i, s in enumerate(chosen)}
    labels = [s.label for s in chosen]
    day_names = ",".join(f"d{d:02d}" for d, _ in days)
    cache = _CellCache(index, opts.lenient)

    def make_iter() -> Iterator:
        return numbered(_records(days, cache, labels, deps, opts, arr_ss, tok_ss, tokens), duration_s)

    details = {
        "trace": "azure_functions_2019",
        "source": "real",
        "files": ";".join(str(p) for _, p in days),
        "days": day_names,
        "functions.in_files": len(stats),
        "invocations.in_files": sum(s.total for s in stats),
        "invocations.kept_functions": sum(s.total for s in chosen),
        "within_minute": opts.within_minute,
        "tokens": tokens.describe(),
        "seed": seed,
        "duration_s": "whole days" if duration_s is None else duration_s,
        **mapping_details(chosen, deps, opts, how),
        **issues.details(),
    }
    return Trace(f"azure_functions_2019 (real: {where}, days {day_names})", make_iter, False, details)
