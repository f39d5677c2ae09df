"""Fluid links: concurrent transfers share links max-min fairly.

A transfer crosses a path of links (remote storage -> NIC, SSD, PCIe). Its rate is its
max-min fair share, computed by progressive filling over every active transfer, and
capped by the loader's efficiency times its slowest link (a loader reaches a fraction of
its link; two loaders on one fast link can each reach their own cap). A multi-hop load is
pipelined, so it moves at the slowest share on its path. Rates are recomputed whenever a
transfer starts or ends; in between, every transfer moves at a constant rate, so
completion times are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

_EPS_BYTES = 1.0  # a transfer within a byte of its end (or a nanosecond) has ended


@dataclass(eq=False)
class Link:
    """One shared resource with a bandwidth in bytes per second."""

    name: str
    kind: str  # "network", "ssd" or "pcie": the column the summary reports bytes under
    capacity: float
    transfers: set = field(default_factory=set)
    bytes_carried: float = 0.0

    def __post_init__(self) -> None:
        if not self.capacity > 0:
            raise ValueError(f"link {self.name}: capacity must be > 0, got {self.capacity}")

    @property
    def rate_in_use(self) -> float:
        return sum(t.rate for t in self.transfers)


@dataclass(eq=False)
class Transfer:
    path: tuple[Link, ...]
    nbytes: float
    cap: float
    done: simpy.Event
    remaining: float = 0.0
    rate: float = 0.0
    generation: int = 0


class FlowNetwork:
    """All links of a cluster and the transfers in flight on them."""

    def __init__(self, env: simpy.Environment, on_bytes: Callable[[str, float], None] | None = None):
        self.env = env
        self.on_bytes = on_bytes
        self.active: list[Transfer] = []
        self._last = env.now

    def transfer(self, path: tuple[Link, ...], nbytes: float, efficiency: float = 1.0) -> simpy.Event:
        """Start moving `nbytes` over `path`; the returned event fires when the last byte lands."""
        if not path:
            raise ValueError("a transfer needs at least one link")
        if not 0 < efficiency <= 1:
            raise ValueError(f"loader efficiency must be in (0, 1], got {efficiency}")
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        cap = efficiency * min(link.capacity for link in path)
        t = Transfer(path, float(nbytes), cap, done, remaining=float(nbytes))
        self._advance()
        self.active.append(t)
        for link in path:
            link.transfers.add(t)
        self._reallocate()
        return done

    def _advance(self) -> None:
        """Move every active transfer forward to now at its current rate."""
        dt = self.env.now - self._last
        if dt > 0:
            for t in self.active:
                moved = t.rate * dt
                t.remaining -= moved
                for link in t.path:
                    link.bytes_carried += moved
        self._last = self.env.now

    def _reallocate(self) -> None:
        """Progressive filling: raise all unfrozen rates together until a link or a cap binds."""
        residual = {}
        for t in self.active:
            t.rate = 0.0
            for link in t.path:
                residual[link] = link.capacity
        unfrozen = set(self.active)
        while unfrozen:
            counts: dict[Link, int] = {}
            for t in unfrozen:
                for link in t.path:
                    counts[link] = counts.get(link, 0) + 1
            step = min(residual[link] / n for link, n in counts.items())
            step = min(step, min(t.cap - t.rate for t in unfrozen))
            step = max(step, 0.0)
            saturated = set()
            for t in unfrozen:
                t.rate += step
            for link, n in counts.items():
                residual[link] -= step * n
                if residual[link] <= link.capacity * 1e-12:
                    saturated.add(link)
            frozen = {t for t in unfrozen if t.rate >= t.cap * (1 - 1e-12) or any(lk in saturated for lk in t.path)}
            if not frozen:  # numerical safety: cannot happen with exact arithmetic
                break
            unfrozen -= frozen
        for t in self.active:
            t.generation += 1
            delay = t.remaining / t.rate if t.rate > 0 else math.inf
            if math.isfinite(delay):
                ev = self.env.timeout(max(delay, 0.0))
                ev.callbacks.append(self._make_finisher(t, t.generation))

    def _make_finisher(self, t: Transfer, generation: int):
        def finish(_event) -> None:
            if t.generation != generation or t not in self.active:
                return  # rates changed since this completion was scheduled
            self._advance()
            now = self.env.now
            if t.remaining > _EPS_BYTES and now + t.remaining / t.rate > now + 1e-9:
                # float drift left more than a byte-sliver that the clock can still show
                # (late in a long run a nanosecond rounds away): schedule the rest
                self._reallocate()
                return
            self.active.remove(t)
            for link in t.path:
                link.transfers.discard(t)
                link.bytes_carried += t.remaining  # account for rounding so totals are exact
                if self.on_bytes is not None:
                    self.on_bytes(link.kind, t.nbytes)
            self._reallocate()
            t.done.succeed()

        return finish
