"""GPU memory held by instances: the one ledger that owns it.

Every byte an instance reserves on a GPU, and whether it is idle, is written here and
nowhere else. The ledger keeps each GPU's `used_bytes` (what placement reads), the
cluster's totals, and feeds the two integrals that report it: the run's summary
(`RunMetrics.on_memory`) and the per-model usage (`UsageLedger`). Before it existed the
same facts were kept in four places that had to be updated together.
"""

from __future__ import annotations

from typing import Protocol

from sim.cluster import BaseResidency, Gpu, base_key
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
    @property
    def dep(self): ...  # its Deployment: `gpu_base`, `base_bytes`
    base_residency: BaseResidency | None  # written here: the base copy it uses while it holds memory
    base_was_resident: bool  # written here: whether that copy was there before it


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
        self._next_base_uid = -1  # usage-ledger keys of base copies (instance ids are >= 0)

    def holds(self, inst: Holder) -> bool:
        return inst in inst.gpu_ref.instances

    def counts_idle(self, inst: Holder) -> bool:
        """Whether the memory `inst` holds counts as idle now."""
        return inst.id in self._idle

    def reserve(self, inst: Holder, now: float) -> None:
        """`inst` takes its footprint on its GPU; never more than the GPU has.

        An instance whose model shares a base in GPU memory (`Deployment.gpu_base`) takes its
        own bytes and uses the GPU's copy of the base, which the first such instance brings:
        `inst.base_was_resident` says which it was.
        """
        gpu = inst.gpu_ref
        base = inst.dep.gpu_base
        residency = gpu.bases.get(base) if base is not None else None
        need = inst.memory_bytes + (inst.dep.base_bytes if base is not None and residency is None else 0)
        if gpu.used_bytes + need > gpu.capacity_bytes:
            raise AssertionError(f"GPU ({gpu.node}, {gpu.index}) memory over-committed by instance {inst.id}")
        if base is not None:
            inst.base_was_resident = residency is not None
            if residency is None:
                residency = gpu.bases[base] = BaseResidency(base, inst.dep.base_bytes, self._next_base_uid)
                self._next_base_uid -= 1
                gpu.used_bytes += residency.nbytes
                self.used_bytes += residency.nbytes
                self.usage.held(residency.uid, now)
            elif residency.idle:  # a busy instance uses it now
                self._base_busy(residency, now)
            residency.holders.add(inst.id)
            inst.base_residency = residency
        gpu.used_bytes += inst.memory_bytes
        gpu.instances.append(inst)
        self.usage.held(inst.id, now)
        self.used_bytes += inst.memory_bytes
        self._changed(now)

    def release(self, inst: Holder, now: float) -> None:
        """`inst` gives its GPU memory back (it sleeps or is evicted), and its shared base's
        copy with it when no other instance there uses that."""
        gpu = inst.gpu_ref
        gpu.used_bytes -= inst.memory_bytes
        gpu.instances.remove(inst)
        self.used_bytes -= inst.memory_bytes
        was_idle = inst.id in self._idle
        if was_idle:
            self._idle.discard(inst.id)
            self.usage.busy(inst.id, inst.model, inst.memory_bytes, now)
            self.idle_bytes -= inst.memory_bytes
        self.usage.freed(inst.id, inst.model, inst.memory_bytes, now)
        residency = inst.base_residency
        if residency is not None:
            inst.base_residency = None
            residency.holders.discard(inst.id)
            residency.idle_holders -= was_idle
            if not residency.holders:
                if residency.idle:
                    self._base_busy(residency, now)
                del gpu.bases[residency.name]
                gpu.used_bytes -= residency.nbytes
                self.used_bytes -= residency.nbytes
                self.usage.freed(residency.uid, base_key(residency.name), residency.nbytes, now)
            elif residency.idle_holders == len(residency.holders) and not residency.idle:
                self._base_idle(residency, now)
        self._changed(now)

    def set_idle(self, inst: Holder, idle: bool, now: float) -> None:
        """Held memory of `inst` counts as idle (nothing in flight) or busy from `now`; a shared
        base's copy is idle while every instance using it is."""
        self.epoch += 1  # an idle instance is evictable: placement's answer may change
        residency = inst.base_residency
        if idle:
            if inst.id in self._idle:
                return
            self._idle.add(inst.id)
            self.usage.idle(inst.id, now)
            self.idle_bytes += inst.memory_bytes
            if residency is not None:
                residency.idle_holders += 1
                if residency.idle_holders == len(residency.holders):
                    self._base_idle(residency, now)
        else:
            if inst.id not in self._idle:
                return
            self._idle.discard(inst.id)
            self.usage.busy(inst.id, inst.model, inst.memory_bytes, now)
            self.idle_bytes -= inst.memory_bytes
            if residency is not None:
                residency.idle_holders -= 1
                if residency.idle:
                    self._base_busy(residency, now)
        self._changed(now)

    def _base_idle(self, residency: BaseResidency, now: float) -> None:
        residency.idle = True
        self.usage.idle(residency.uid, now)
        self.idle_bytes += residency.nbytes

    def _base_busy(self, residency: BaseResidency, now: float) -> None:
        residency.idle = False
        self.usage.busy(residency.uid, base_key(residency.name), residency.nbytes, now)
        self.idle_bytes -= residency.nbytes

    def touch(self) -> None:
        """Something placement reads changed without memory changing (an instance came or went)."""
        self.epoch += 1

    def close(self, instances, now: float) -> None:
        """The end of the run: charge what is still held up to `now` (shared bases' copies too)."""
        instances = list(instances)
        self.usage.close(instances, now)
        seen: set[int] = set()
        for inst in instances:
            r = inst.base_residency
            if r is not None and r.uid not in seen:
                seen.add(r.uid)
                if r.idle:
                    self.usage.busy(r.uid, base_key(r.name), r.nbytes, now)
                self.usage.freed(r.uid, base_key(r.name), r.nbytes, now)

    def _changed(self, now: float) -> None:
        self.epoch += 1
        self.sink.on_memory(now, self.used_bytes, self.idle_bytes)
