"""Bad input: one precise error, or counted warnings when the user asked for leniency.

Every reader reports problems through an `Issues` object instead of raising directly,
so one flag (`lenient`) decides between "stop at the first bad row with a message
naming file, line and field" and "skip bad rows, count them, report the counts in the
trace's details". Nothing is ever dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class TraceError(ValueError):
    """A trace cannot be read or understood; the message names file, line and field."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, field_name: str = ""):
        super().__init__(message)
        self.path = path
        self.line = line
        self.field_name = field_name


def where(path: str, line: int | None = None, field_name: str = "") -> str:
    """Format a location as `file:line: field 'x'` for messages."""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if field_name:
        loc += f": field '{field_name}'"
    return loc


@dataclass
class Issues:
    """Collects row-level problems: raise at once (strict) or skip and count (lenient).

    `skipped` counts skipped rows by kind of problem; `first` keeps the first message of
    each kind so the report can show an example.
    """

    lenient: bool = False
    skipped: Counter = field(default_factory=Counter)
    first: dict = field(default_factory=dict)

    def row(self, path: str, line: int | None, field_name: str, problem: str, kind: str = "") -> None:
        """Report a bad row; raises `TraceError` unless lenient (then the caller skips it)."""
        message = f"{where(path, line, field_name)}: {problem}"
        if not self.lenient:
            raise TraceError(message, path=str(path), line=line, field_name=field_name)
        key = kind or problem.split(":")[0]
        self.skipped[key] += 1
        self.first.setdefault(key, message)

    def fatal(self, path: str, line: int | None, field_name: str, problem: str) -> TraceError:
        """An error that leniency cannot skip (bad header, empty file, corrupt archive)."""
        return TraceError(f"{where(path, line, field_name)}: {problem}", path=str(path), line=line,
                          field_name=field_name)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def details(self) -> dict:
        """Flat entries for `Trace.details`: total and per-kind skipped rows."""
        out: dict = {"rows_skipped": self.total_skipped}
        for kind, n in sorted(self.skipped.items()):
            out[f"rows_skipped.{kind}"] = n
        return out
