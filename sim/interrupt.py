"""SIGINT and SIGTERM as an exception raised where it is safe to stop.

`SignalGuard` turns both signals into `Interrupted`, raised in the main thread wherever it
is, except inside `critical()` sections (a chunk of records being written, a combination's
files being committed), where a first signal is held back until the section ends. A second
signal raises at once, wherever the program is. This module imports only the standard
library, so that `python -m sim` can install the guard before its heavy imports.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. `forced`: a second signal cut the orderly stop short."""

    def __init__(self, signum: int, forced: bool = False) -> None:
        super().__init__(signum, forced)
        self.signum = signum
        self.forced = forced

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class SignalGuard:
    """Turns SIGINT and SIGTERM into `Interrupted`, raised where the main thread is, except
    inside `critical()` sections (a chunk of records being written, a combination's files
    being committed), where it is held back until the section ends. A second signal raises
    at once, wherever the program is: the user insists."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._depth = 0
        self._held = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle the signals (main thread only; a signal the parent ignores stays ignored)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            if signal.getsignal(s) is signal.SIG_IGN:
                continue
            self._previous[s] = signal.signal(s, self._handle)

    def ignore(self) -> None:
        """From now on ignore the signals (while the last words are printed)."""
        for s in self._previous:
            signal.signal(s, signal.SIG_IGN)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.count > 1:
            raise Interrupted(self.signum, forced=True)
        if self._depth:
            self._held = True
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def critical(self, deliver: bool = True) -> Iterator[None]:
        """Hold back a first signal until the block ends; then raise it if `deliver` (else
        `check()` raises it later)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if deliver:
            self.check()

    def check(self) -> None:
        """Raise a signal held back by a critical section that has ended."""
        if self._held and not self._depth:
            self._held = False
            raise Interrupted(self.signum)  # type: ignore[arg-type]
