"""GPU memory held by instances: the one ledger that owns it.

Every byte an instance reserves on a GPU, and whether it is idle, is written here and
nowhere else. The ledger keeps each GPU's `used_bytes` (what placement reads), the
cluster's totals, and feeds the two integrals that report it: the run's summary
(`RunMetrics.on_memory`) and the per-model usage (`UsageLedger`). Before it existed the
same facts were kept in four places that had to be updated together.
"""

from __future__ import annotations

from typing import Protocol

from sim.cluster import Gpu
from sim.usage import UsageLedger


class MemorySink(Protocol):
    """Who hears of every change in total memory held and idle (the run's metrics)."""

    def on_memory(self, now: float, used_bytes: float, idle_bytes: float) -> None: ...


class Holder(Protocol):
    """What the ledger needs of an instance."""

    @property
    def id(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def gpu_ref(self) -> Gpu: ...


class MemoryLedger:
    """Reserved and idle GPU bytes per GPU and in total, integrated over time.

    `epoch` changes whenever memory or idleness changes (placement's answer depends on
    nothing else, so a "no room" answer holds until it changes).
    """

    def __init__(self, usage: UsageLedger, sink: MemorySink) -> None:
        self.usage = usage
        self.sink = sink
        self.used_bytes = 0
        self.idle_bytes = 0
        self.epoch = 0
        self._idle: set[int] = set()  # ids of held instances counted as idle

    def holds(self, inst: Holder) -> bool:
        return inst in inst.gpu_ref.instances

    def reserve(self, inst: Holder, now: float) -> None:
        """`inst` takes its footprint on its GPU; never more than the GPU has."""
        gpu = inst.gpu_ref
        if gpu.used_bytes + inst.memory_bytes > gpu.capacity_bytes:
            raise AssertionError(f"GPU ({gpu.node}, {gpu.index}) memory over-committed by instance {inst.id}")
        gpu.used_bytes += inst.memory_bytes
        gpu.instances.append(inst)
        self.usage.held(inst.id, now)
        self.used_bytes += inst.memory_bytes
        self._changed(now)

    def release(self, inst: Holder, now: float) -> None:
        """`inst` gives its GPU memory back (it sleeps or is evicted)."""
        gpu = inst.gpu_ref
        gpu.used_bytes -= inst.memory_bytes
        gpu.instances.remove(inst)
        self.used_bytes -= inst.memory_bytes
        if inst.id in self._idle:
            self._idle.discard(inst.id)
            self.usage.busy(inst.id, inst.model, inst.memory_bytes, now)
            self.idle_bytes -= inst.memory_bytes
        self.usage.freed(inst.id, inst.model, inst.memory_bytes, now)
        self._changed(now)

    def set_idle(self, inst: Holder, idle: bool, now: float) -> None:
        """Held memory of `inst` counts as idle (nothing in flight) or busy from `now`."""
        self.epoch += 1  # an idle instance is evictable: placement's answer may change
        if idle:
            if inst.id in self._idle:
                return
            self._idle.add(inst.id)
            self.usage.idle(inst.id, now)
            self.idle_bytes += inst.memory_bytes
        else:
            if inst.id not in self._idle:
                return
            self._idle.discard(inst.id)
            self.usage.busy(inst.id, inst.model, inst.memory_bytes, now)
            self.idle_bytes -= inst.memory_bytes
        self._changed(now)

    def touch(self) -> None:
        """Something placement reads changed without memory changing (an instance came or went)."""
        self.epoch += 1

    def close(self, instances, now: float) -> None:
        """The end of the run: charge what is still held up to `now`."""
        self.usage.close(instances, now)

    def _changed(self, now: float) -> None:
        self.epoch += 1
        self.sink.on_memory(now, self.used_bytes, self.idle_bytes)
