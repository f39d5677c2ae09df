"""No device-wide call inside another engine's capture window: the race, emulated on the CPU.

Engines are built, used and unloaded in many threads at once, as the replay server does.
The device's calls go through `device_guard`'s ops; here a recorder stands in for CUDA:
each device-wide call takes real time (a sync waits for the device) and each capture
window stays open for the time a capture takes, so overlapping threads really interleave.
The check is on the recorded intervals: a call by thread A may not overlap a window of
thread B. The same stress against the old design (only captures took a lock) must find
overlaps, so the test is known to be able to fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")

from policies.plan import StagePlan  # noqa: E402
from progressive_serve import device_guard  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.testing import random_prompt, torch_threads  # noqa: E402

PLAN = StagePlan("two", 6, ((0, 5, 1, 4), (2, 3)), serve_from=0)
THREADS, ROUNDS = 6, 4


@dataclass(frozen=True)
class Interval:
    kind: str
    thread: int
    start: float
    end: float


class RecordingOps:
    """Records every device-wide call and capture window with the thread that made it."""

    def __init__(self, call_s: float = 0.002, capture_s: float = 0.006) -> None:
        self.call_s, self.capture_s = call_s, capture_s
        self.calls: list[Interval] = []
        self.windows: list[Interval] = []
        self._opened: dict[int, float] = {}
        self._lock = threading.Lock()

    def _call(self, kind: str) -> None:
        t0 = time.perf_counter()
        time.sleep(self.call_s)  # a device-wide call waits for the device
        with self._lock:
            self.calls.append(Interval(kind, threading.get_ident(), t0, time.perf_counter()))

    def init_context(self, device) -> None:
        self._call("init_context")

    def synchronize(self, device) -> None:
        self._call("synchronize")

    def empty_cache(self, device) -> None:
        self._call("empty_cache")

    def capture_opened(self, device) -> None:
        self._opened[threading.get_ident()] = time.perf_counter()
        time.sleep(self.capture_s)  # the capture's own time on the device

    def capture_closed(self, device) -> None:
        me = threading.get_ident()
        with self._lock:
            self.windows.append(Interval("capture", me, self._opened.pop(me), time.perf_counter()))

    def inside_foreign_capture(self) -> list[tuple[Interval, Interval]]:
        """Every (call, window) pair where a call overlaps another thread's capture window."""
        return [
            (c, w)
            for c in self.calls
            for w in self.windows
            if c.thread != w.thread and c.start < w.end and w.start < c.end
        ]


class CaptureOnlyGuard(device_guard.DeviceGuard):
    """The old design: a lock kept captures apart from each other, nothing else took it."""

    def init_context(self, device) -> None:
        self.ops.init_context(device)

    def synchronize(self, device) -> None:
        self.ops.synchronize(device)

    def empty_cache(self, device) -> None:
        self.ops.empty_cache(device)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=9, dtype="float32")


def _stress(tiny, guard: device_guard.DeviceGuard, monkeypatch) -> RecordingOps:
    """THREADS threads, each building, serving two tokens with the graph and unloading ROUNDS engines."""
    ops = guard.ops
    monkeypatch.setattr(device_guard, "GUARD", guard)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(k: int) -> None:
        try:
            start.wait()
            for r in range(ROUNDS):
                eng = ProgressiveEngine(
                    tiny, PLAN, device="cpu", use_cuda_graph=True, emulate_graph=True, max_tokens=32
                )
                eng.bind_stage(0)
                eng.generate(random_prompt(eng.shape, 4, seed=k * ROUNDS + r), 2)
                eng.unload()
        except BaseException as e:  # surfaced below
            errors.append(e)

    with torch_threads(1):
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    engines = THREADS * ROUNDS
    # every engine made its calls: the check below is over real traffic, not an empty log
    assert len(ops.windows) == engines
    assert sum(c.kind == "init_context" for c in ops.calls) == engines
    assert sum(c.kind == "empty_cache" for c in ops.calls) == engines
    return ops


def test_no_device_wide_call_falls_inside_another_engines_capture(tiny, monkeypatch):
    ops = _stress(tiny, device_guard.DeviceGuard(RecordingOps()), monkeypatch)
    bad = ops.inside_foreign_capture()
    assert not bad, f"{len(bad)} device-wide calls inside another thread's capture, e.g. {bad[0]}"
    # and captures never overlap each other
    ws = sorted(ops.windows, key=lambda w: w.start)
    assert all(a.end <= b.start for a, b in zip(ws, ws[1:], strict=False))


def test_the_old_capture_only_lock_lets_calls_into_captures(tiny, monkeypatch):
    """The detector is not blind: the design the engine had before puts calls inside captures."""
    ops = _stress(tiny, CaptureOnlyGuard(RecordingOps()), monkeypatch)
    bad = ops.inside_foreign_capture()
    assert len(bad) > 0
    assert {c.kind for c, _ in bad} & {"init_context", "empty_cache"}


def test_a_device_wide_call_waits_for_an_open_capture_window():
    """Step by step: thread B's sync starts only after thread A's window has closed."""
    ops = RecordingOps(call_s=0.0, capture_s=0.0)
    guard = device_guard.DeviceGuard(ops)
    cpu = torch.device("cpu")
    opened, release, log = threading.Event(), threading.Event(), []

    def capturer() -> None:
        with guard.capture_window(cpu):
            log.append("window opened")
            opened.set()
            release.wait(5)
            log.append("window closing")

    def syncer() -> None:
        opened.wait(5)
        guard.synchronize(cpu)
        log.append("synchronized")

    a, b = threading.Thread(target=capturer), threading.Thread(target=syncer)
    a.start()
    b.start()
    opened.wait(5)
    time.sleep(0.05)  # B has had every chance to run its sync
    assert log == ["window opened"]
    release.set()
    a.join(5)
    b.join(5)
    assert log == ["window opened", "window closing", "synchronized"]


def test_capture_window_is_reentrant_for_its_own_thread():
    ops = RecordingOps(call_s=0.0, capture_s=0.0)
    guard = device_guard.DeviceGuard(ops)
    cpu = torch.device("cpu")
    with guard.capture_window(cpu):
        guard.synchronize(cpu)  # the closing sync of a capture, same thread: no deadlock
    assert [c.kind for c in ops.calls] == ["synchronize"] and len(ops.windows) == 1
    assert not ops.inside_foreign_capture()
