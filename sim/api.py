"""`from sim import run`: the command line's run as a function, for notebooks and scripts.

    from sim import run
    res = run(trace="azure_functions", duration=600, keepalive=["none", "fixed"])
    res.summary      # pandas DataFrame: summary.csv's rows (run order, id, rank, pareto)
    res.models       # per model and combination: models.csv's rows
    print(res)       # the ranked table and the verdict, as the command prints them

Keyword arguments are the command's options with `_` for `-` (`gpus_per_node=2`,
`slo_ttft=3.0`, `trace_option={"top_n": 20}`); a policy option takes a string
(`"none,fixed[ttl=60]"`) or a list of specs. The call goes through `sim.cli.main` itself, with
the same parsing, checks and simulation, so its numbers are the command's. Nothing is
written unless `out=` is given (then the folder is what `--out` writes). `records=True` adds
the per-request records as a DataFrame (kept in memory without `out`; read back from
requests.parquet with it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from sim.records import RequestRecord


class SimulationError(RuntimeError):
    """The run failed as the command would have (bad input, a failing policy): the message is
    the command's one-line error; `exit_code` its exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RecordList:
    """The records of a run without `out`, in memory (what `RecordWriter` is to a file)."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def write(self, rec: RequestRecord) -> None:
        self.records.append(rec)

    def discard(self) -> None:
        self.records.clear()

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        from sim.records import RECORD_FIELDS

        return pd.DataFrame([[getattr(r, f) for f in RECORD_FIELDS] for r in self.records], columns=list(RECORD_FIELDS))


@dataclass
class Results:
    """What `run` returns. `text` is what the command prints (table, labels, verdict)."""

    summary: pd.DataFrame
    models: pd.DataFrame
    records: pd.DataFrame | None = None
    verdict: list[str] = field(default_factory=list)
    text: str = ""
    out: Path | None = None

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:  # a notebook shows the ranked table
        import html

        return f"<pre>{html.escape(self.text)}</pre>"


def _options() -> dict[str, argparse.Action]:
    from sim.cli import build_parser

    return {a.dest: a for a in build_parser()._actions if a.option_strings and a.dest != "help"}


def argv_for(options: Mapping[str, Any]) -> list[str]:
    """The command line `python -m sim` would take for these keyword options."""
    known = _options()
    argv: list[str] = []
    for name, value in options.items():
        action = known.get(name)
        if action is None:
            raise TypeError(f"run() got an unknown option {name!r}; options: {', '.join(sorted(known))}")
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, Mapping) else \
                [value] if isinstance(value, str) else list(value)
            for item in items:
                argv += [flag, str(item)]
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, Sequence) and not isinstance(value, str) else str(value)
            argv += [flag, text]
    return argv


def run(*, records: bool = False, verbose: bool = False, **options: Any) -> Results:
    """Simulate every combination of the given policies, as `python -m sim` does (see the
    module docstring). `verbose` lets the command's lines and progress bars through."""
    import pandas as pd

    from sim import cli
    from sim.report import _columns, format_summary
    from sim.verdict import RANK_COLUMNS, ranked_rows, verdict

    argv = argv_for(options)
    if not verbose:
        argv.append("--quiet")
    out = options.get("out")
    sink = RecordList() if records and out is None else None
    held: list[Any] = []
    err, said = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if not verbose:
            stack.enter_context(contextlib.redirect_stdout(said))
        stack.enter_context(contextlib.redirect_stderr(_Tee(err, sys.stderr) if verbose else err))
        code = cli.main(argv, record_sink=sink, on_run=held.append)
    if code != 0:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        raise SimulationError(lines[-1] if lines else f"python -m sim exited with status {code}", code)
    done = held[0].results if held else {}
    if done:
        rows = [done[i].row for i in sorted(done)]
        model_rows = [m for i in sorted(done) for m in done[i].models]
        summary = pd.DataFrame(ranked_rows(rows), columns=[*_columns(rows), *RANK_COLUMNS])
        models = pd.DataFrame(model_rows)
    else:  # --resume found the run in `out` complete: nothing was simulated, read its files
        summary = pd.read_csv(Path(out) / "summary.csv")
        models = pd.read_csv(Path(out) / "models.csv")
        rows, model_rows = summary.drop(columns=list(RANK_COLUMNS)).to_dict("records"), models.to_dict("records")
    table = None
    if sink is not None:
        table = sink.frame()
    elif records and out is not None:
        table = pd.read_parquet(Path(out) / "requests.parquet")
    v = verdict(rows)
    return Results(summary, models, table, v.lines() if v else [], format_summary(rows, model_rows),
                   Path(out) if out is not None else None)


class _Tee(io.TextIOBase):
    """Writes to two streams: the caller's stderr and the buffer the error line is read from."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()
