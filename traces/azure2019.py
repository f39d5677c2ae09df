"""Readers for the Azure Functions 2019 trace files (Shahrad et al., ATC'20; CC-BY 4.0).

Three kinds of daily file, all CSV with one row per function (or app):
`invocations_per_function_md.anon.dNN.csv` (1440 per-minute counts),
`function_durations_percentiles.anon.dNN.csv` (ms) and `app_memory_percentiles.anon.dNN.csv`
(MB). Rows are streamed one at a time; every value is checked, and a bad one is reported
with file, line and the column's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.errors import Issues, TraceError
from traces.textio import iter_lines, iter_rows

MINUTES = 1440
INVOCATION_KEYS = ["HashOwner", "HashApp", "HashFunction", "Trigger"]
DURATION_COLUMNS = ["HashOwner", "HashApp", "HashFunction", "Average", "Count", "Minimum", "Maximum",
                    "percentile_Average_0", "percentile_Average_1", "percentile_Average_25",
                    "percentile_Average_50", "percentile_Average_75", "percentile_Average_99",
                    "percentile_Average_100"]
MEMORY_COLUMNS = ["HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb", "AverageAllocatedMb_pct1",
                  "AverageAllocatedMb_pct5", "AverageAllocatedMb_pct25", "AverageAllocatedMb_pct50",
                  "AverageAllocatedMb_pct75", "AverageAllocatedMb_pct95", "AverageAllocatedMb_pct99",
                  "AverageAllocatedMb_pct100"]
# The most invocations one function may have in one minute (16,667 a second). The busiest
# function of the real trace averages about 7,000 a minute (10 M a day); a larger count is
# taken for a corrupt file rather than turned into that many arrival times.
MAX_PER_MINUTE = 1_000_000
_NOT_COUNT = str.maketrans("", "", "0123456789,")
DAY_FILE = re.compile(r"invocations_per_function_md\.anon\.d(\d+)\.csv(\.gz|\.xz|\.bz2)?$")


@dataclass(frozen=True, slots=True)
class FunctionDay:
    """One function's invocation counts for one day (`counts[m]` = invocations in minute m)."""

    owner: str
    app: str
    function: str
    trigger: str
    counts: np.ndarray
    line: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.owner, self.app, self.function)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def day_number(path: str | Path) -> int | None:
    """Day index from an invocation file name (`...d03.csv` -> 3), or None."""
    m = DAY_FILE.search(Path(path).name)
    return int(m.group(1)) if m else None


def check_invocation_header(path: str | Path, header: list[str]) -> None:
    """Fail unless the header is `HashOwner,HashApp,HashFunction,Trigger,1..1440`."""
    if [h.strip() for h in header[:4]] != INVOCATION_KEYS:
        raise TraceError(f"{path}:1: header starts {header[:4]}, expected {INVOCATION_KEYS}", path=str(path), line=1)
    minutes = header[4:]
    if len(minutes) != MINUTES:
        raise TraceError(f"{path}:1: wrong day width: {len(minutes)} minute columns, expected {MINUTES}",
                         path=str(path), line=1, field_name="header")
    for i, name in enumerate(minutes, start=1):
        if name.strip() != str(i):
            raise TraceError(f"{path}:1: field '{name}': minute column {i + 4} should be named '{i}'",
                             path=str(path), line=1, field_name=name)


def _counts(path: str, line: int, fields: list[str], issues: Issues) -> np.ndarray | None:
    """Parse the 1440 minute counts; report the first bad one by its minute column."""
    values = np.empty(MINUTES, dtype=np.int64)
    for i, text in enumerate(fields, start=1):
        try:
            if "_" in text:  # int() accepts "1_000"; a trace must not
                raise ValueError
            v = int(text)
        except ValueError:
            issues.row(path, line, str(i), f"count {text!r} is not a whole number", "non_numeric")
            return None
        if v < 0:
            issues.row(path, line, str(i), f"negative count {v}", "negative")
            return None
        if v > MAX_PER_MINUTE:
            issues.row(path, line, str(i), f"count {text.strip()[:30]} is more than the {MAX_PER_MINUTE:,} "
                       "invocations a minute this reader accepts", "too_large")
            return None
        values[i - 1] = v
    return values


def _fast_counts(text: str) -> np.ndarray | None:
    """Parse 1440 comma-separated whole numbers at C speed, or None if anything is unusual.

    The check (only digits and commas, no empty field, 1439 commas, no count above
    `MAX_PER_MINUTE`) guarantees that `np.fromstring` returns exactly what the slow, precise
    path would accept; anything else goes to that path, which names the bad field.
    """
    if text.translate(_NOT_COUNT) or text.count(",") != MINUTES - 1 or ",," in text or text[:1] == "," \
            or text[-1:] == ",":
        return None
    values = np.fromstring(text, dtype=np.int64, sep=",")  # a count beyond int64 saturates: caught below
    return None if values.max() > MAX_PER_MINUTE else values


def read_invocations(path: str | Path, issues: Issues | None = None) -> Iterator[FunctionDay]:
    """Stream the function rows of one `invocations_per_function_md` day file."""
    issues = issues or Issues()
    path = str(path)
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise TraceError(f"{path}:1: empty file (no header line)", path=path, line=1)
    check_invocation_header(path, first[1].split(","))
    width = len(INVOCATION_KEYS) + MINUTES
    for line, text in lines:
        parts = text.split(",", 4)
        counts = _fast_counts(parts[4]) if len(parts) == 5 else None
        if counts is None:
            fields = text.split(",")
            if len(fields) != width:
                what = "truncated line" if len(fields) < width else "extra fields"
                col = str(len(fields) - 3) if len(fields) < width else f"#{width + 1}"
                issues.row(path, line, col, f"{what}: {len(fields)} fields, expected {width}",
                           what.replace(" ", "_"))
                continue
            counts = _counts(path, line, fields[4:], issues)
            if counts is None:
                continue
        owner, app, function, trigger = (f.strip() for f in parts[:4])
        missing = next((name for name, v in zip(INVOCATION_KEYS, (owner, app, function, trigger), strict=True)
                        if not v), None)
        if missing:
            issues.row(path, line, missing, "empty value", "empty_key")
            continue
        yield FunctionDay(owner, app, function, trigger, counts, line)


def read_table(path: str | Path, columns: list[str], n_keys: int,
               issues: Issues | None = None) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Stream a durations or memory file: `(key fields, float values)` per row, all checked."""
    issues = issues or Issues()
    path = str(path)
    rows = iter_rows(path)
    first = next(rows, None)
    if first is None:
        raise TraceError(f"{path}:1: empty file (no header line)", path=path, line=1)
    header = [h.strip() for h in first[1]]
    if header != columns:
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        raise TraceError(f"{path}:1: unexpected header (missing {missing}, extra {extra})", path=path, line=1)
    for line, fields in rows:
        if len(fields) != len(columns):
            issues.row(path, line, "row", f"{len(fields)} fields, expected {len(columns)}", "field_count")
            continue
        values = np.empty(len(columns) - n_keys)
        for i, (name, text) in enumerate(zip(columns[n_keys:], fields[n_keys:], strict=True)):
            try:
                v = float(text)
            except ValueError:
                v = float("nan")
            if not v >= 0:
                issues.row(path, line, name, f"value {text!r} is not a non-negative number", "bad_value")
                break
            values[i] = v
        else:
            yield tuple(f.strip() for f in fields[:n_keys]), values


def read_durations(path: str | Path, issues: Issues | None = None):
    """Rows of `function_durations_percentiles`: key (owner, app, function), values in ms."""
    return read_table(path, DURATION_COLUMNS, 3, issues)


def read_memory(path: str | Path, issues: Issues | None = None):
    """Rows of `app_memory_percentiles`: key (owner, app), values (SampleCount, MB...)."""
    return read_table(path, MEMORY_COLUMNS, 2, issues)
