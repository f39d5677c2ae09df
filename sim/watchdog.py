"""A time limit on policy hooks: a hook that never returns ends the run, naming itself.

A user's policy that loops forever would otherwise hang a run with no word. Checking a
clock around every hook call would cost the hot path (two hooks per request), so the
limit is kept from the outside: a daemon thread samples the main thread's stack a few
times a second, and when the same call of a hook (the same frame of one of the run's
policy hook methods) has been on it longer than the limit, it sends the main thread a
signal whose handler raises `HookTimeout` inside the hook. The simulator's usual guard
turns that into a `PolicyError` naming the policy, the hook and the simulated time.

Only the main thread can take the signal; a run in another thread gets no limit.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import CodeType, FrameType

HOOKS = ("plan", "on_idle", "on_tick", "place", "route", "admit")


class HookTimeout(Exception):
    """Raised inside a policy hook that ran longer than the run's limit."""


def hook_codes(policies) -> dict[CodeType, str]:
    """The code objects of the run's policy hook methods, each with the hook's name."""
    out: dict[CodeType, str] = {}
    for p in policies:
        for hook in HOOKS:
            fn = getattr(type(p), hook, None)
            code = getattr(fn, "__code__", None)
            if code is not None:
                out[code] = hook
    return out


class HookWatchdog:
    """Context manager: while entered, a hook call longer than `limit_s` raises HookTimeout in it."""

    def __init__(self, policies, limit_s: float | None, poll_s: float | None = None):
        self.limit_s = limit_s
        self.poll_s = poll_s if poll_s is not None else (min(0.5, limit_s / 4) if limit_s else 0.5)
        self._codes = hook_codes(policies)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous = None
        self._main = threading.main_thread()
        self.fired: str | None = None

    def __enter__(self) -> HookWatchdog:
        if self.limit_s is None or threading.current_thread() is not self._main or not self._codes:
            return self
        self._previous = signal.signal(signal.SIGUSR1, self._raise)
        self._thread = threading.Thread(target=self._watch, name="hook-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        signal.signal(signal.SIGUSR1, self._previous)

    def _raise(self, signum, frame) -> None:
        raise HookTimeout(f"{self.fired or 'a hook'} did not return within {self.limit_s:g} s "
                          f"(the run's hook time limit)")

    def _hook_frame(self) -> tuple[FrameType, str] | None:
        frame = sys._current_frames().get(self._main.ident)
        while frame is not None:
            hook = self._codes.get(frame.f_code)
            if hook is not None:
                return frame, hook
            frame = frame.f_back
        return None

    def _watch(self) -> None:
        seen: FrameType | None = None
        since = 0.0
        while not self._stop.wait(self.poll_s):
            found = self._hook_frame()
            if found is None:
                seen = None
                continue
            frame, hook = found
            now = time.monotonic()
            if frame is not seen:
                seen, since = frame, now
            elif now - since > self.limit_s:
                self.fired = f"{hook}()"
                signal.pthread_kill(self._main.ident, signal.SIGUSR1)
                seen = None  # one signal per stuck call
