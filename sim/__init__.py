"""The progressive-serve simulator. `from sim import run` runs it from Python (sim.api)."""

from __future__ import annotations

from typing import Any


def run(**options: Any) -> Any:
    """`sim.api.run`: the command line's run as a function (imported on first use, so that
    `python -m sim --help` stays fast)."""
    from sim.api import run as _run

    return _run(**options)


__all__ = ["run"]
