"""The CUDA context's memory is the child's own, not the parent's context and cache as well.

The device is a small bookkeeping object behind `engine_phases.DeviceMemory`: the parent
holds a context and the copy probe's cached 512 MiB (as in a real run after the copy probe),
and each child adds its own context while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from validate.engine_phases import probe_context

MiB = 2**20


@dataclass
class Device:
    """Bytes in use by holder; `total - free` is their sum."""

    held: dict[str, int] = field(default_factory=dict)

    def used(self) -> int:
        return sum(self.held.values())


@dataclass
class Parent:
    """The measuring process: `quiesce` returns its allocator's cached blocks to the driver."""

    device: Device
    calls: list[str] = field(default_factory=list)

    def quiesce(self) -> None:
        self.calls.append("quiesce")
        self.device.held.pop("parent cache", None)

    def used_bytes(self) -> int:
        self.calls.append("used")
        return self.device.used()


def child(device: Device, own: int, seconds: float = 0.3):
    """A fresh process: its context exists while it measures, and is gone when it exits."""

    def run() -> tuple[float, int]:
        device.held["child context"] = own
        seen = device.used()  # the child's `total - free`
        del device.held["child context"]
        return seconds, seen

    return run


def test_child_context_bytes_exclude_the_parents_context_and_cache():
    dev = Device({"parent context": 500 * MiB, "parent cache": 512 * MiB, "other process": 100 * MiB})
    parent = Parent(dev)
    probe = probe_context(parent, child(dev, 530 * MiB), repeats=3)
    assert probe.own_bytes == 530 * MiB  # what the old `total - free` said: 1,642 MiB
    assert probe.seconds == 0.3 and len(probe.samples) == 3 and probe.parent_drift_bytes == 0
    # each child is bracketed: quiesce, read, child, read
    assert parent.calls == ["quiesce", "used", "used"] * 3


def test_the_median_discounts_one_odd_child_and_drift_is_reported():
    dev = Device({"parent context": 500 * MiB})
    parent = Parent(dev)
    sizes = iter([520 * MiB, 900 * MiB, 530 * MiB])
    times = iter([0.2, 1.5, 0.25])

    def run() -> tuple[float, int]:
        seen = dev.used() + next(sizes)
        dev.held["leak"] = dev.held.get("leak", 0) + 8 * MiB  # someone else allocates meanwhile
        return next(times), seen

    probe = probe_context(parent, run, repeats=3)
    assert probe.own_bytes == 530 * MiB and probe.seconds == 0.25
    assert probe.parent_drift_bytes == 8 * MiB
