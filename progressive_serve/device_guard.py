"""The one owner of device-wide CUDA calls and of CUDA-graph capture windows.

Several engines live in one process (the replay server builds and unloads them in worker
threads while others serve). A graph capture is fragile against two kinds of call made by
*another* thread while it is open:

* a device-wide synchronisation (`torch.cuda.synchronize`) waits on the capturing stream,
  which is illegal during capture and invalidates it (CUDA error 900);
* `torch.cuda.empty_cache` (and the allocator's release of cached blocks) asserts that no
  capture is underway (`captures_underway`).

So every such call and every capture goes through one process-wide lock held by this
module: a capture holds it for its whole window (warm-up, every piece, the closing sync);
a device-wide call holds it for its own duration. No device-wide call can then fall inside
another thread's capture window, by construction. Synchronisation that only needs one
stream (timing an allocation, a loader's copies) stays stream-local and takes no lock:
it is legal during another thread's `thread_local` capture and does not wait on its stream.
docs/engine.md ("Device-wide calls and capture") says why a lock and not one process per
engine.

The calls themselves go through `ops` (an object with the four methods of `DeviceOps`), so
a test can observe them on a machine without a GPU: `tests/test_engine_device_guard.py`
swaps in a recorder and emulates capture windows of real length.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch


class DeviceOps(Protocol):
    """What the guard calls; `CudaOps` is the real one (a no-op off CUDA)."""

    def init_context(self, device: torch.device) -> None: ...

    def synchronize(self, device: torch.device) -> None: ...

    def empty_cache(self, device: torch.device) -> None: ...

    def capture_opened(self, device: torch.device) -> None: ...

    def capture_closed(self, device: torch.device) -> None: ...


class CudaOps:
    """The real device-wide calls; nothing happens for a device that is not CUDA."""

    def init_context(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.init()
            torch.empty(1, device=device)
            torch.cuda.synchronize(device)

    def synchronize(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def empty_cache(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def capture_opened(self, device: torch.device) -> None:
        pass

    def capture_closed(self, device: torch.device) -> None:
        pass


class DeviceGuard:
    """One re-entrant lock around every device-wide call and every capture window."""

    def __init__(self, ops: DeviceOps) -> None:
        self.ops = ops
        self._lock = threading.RLock()  # re-entrant: a capture window syncs inside itself

    def init_context(self, device: torch.device) -> None:
        """Create the CUDA context (first call of a process) and wait for it."""
        with self._lock:
            self.ops.init_context(device)

    def synchronize(self, device: torch.device) -> None:
        """A device-wide synchronisation, never inside another thread's capture."""
        with self._lock:
            self.ops.synchronize(device)

    def empty_cache(self, device: torch.device) -> None:
        """Return cached allocator blocks to the driver, never inside another thread's capture."""
        with self._lock:
            self.ops.empty_cache(device)

    @contextmanager
    def capture_window(self, device: torch.device) -> Iterator[None]:
        """Hold the device for a whole capture (warm-up, every graph, the closing sync)."""
        with self._lock:
            self.ops.capture_opened(device)
            try:
                yield
            finally:
                self.ops.capture_closed(device)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the device for a sequence of calls that must not meet a capture (VMM remaps)."""
        with self._lock:
            yield


GUARD = DeviceGuard(CudaOps())


# Module-level entry points look GUARD up at call time, so a test may replace it.
def init_context(device: torch.device) -> None:
    GUARD.init_context(device)


def synchronize(device: torch.device) -> None:
    GUARD.synchronize(device)


def empty_cache(device: torch.device) -> None:
    GUARD.empty_cache(device)


def capture_window(device: torch.device):
    return GUARD.capture_window(device)


def exclusive():
    return GUARD.exclusive()


def stream_synchronize(device: torch.device) -> None:
    """Wait for this thread's current stream only (legal during another thread's capture)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
