"""What policies return. A decision is data; the simulator applies it."""

from __future__ import annotations

from dataclasses import dataclass

KEEP_TIERS = ("gpu", "dram")


@dataclass(frozen=True, slots=True)
class Keep:
    """Keep an idle instance in `tier` for `seconds`, then go to the next entry.

    `gpu`: weights stay bound, the process stays warm. `dram`: the process sleeps with its
    weights in host DRAM (vLLM sleep mode level 1); waking copies them back over PCIe.
    After the last entry the instance is evicted.
    """

    tier: str
    seconds: float

    def __post_init__(self) -> None:
        if self.tier not in KEEP_TIERS:
            raise ValueError(f"keep tier must be one of {KEEP_TIERS}, got {self.tier!r}")
        if not self.seconds >= 0:
            raise ValueError(f"keep seconds must be >= 0, got {self.seconds}")


@dataclass(frozen=True, slots=True)
class Place:
    """Start the new instance on GPU (`node`, `gpu`) after evicting `evict` (instance ids)."""

    node: int
    gpu: int
    evict: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Prewarm:
    """Start an instance of `model` ahead of demand (`tier` "gpu": load it fully)."""

    model: str
    tier: str = "gpu"


ADMIT_ACTIONS = ("serve", "reject")


@dataclass(frozen=True, slots=True)
class Admit:
    """`serve` lets the request in (it may queue); `reject` sheds it with `reason`."""

    action: str = "serve"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.action not in ADMIT_ACTIONS:
            raise ValueError(f"admission action must be one of {ADMIT_ACTIONS}, got {self.action!r}")


SERVE = Admit("serve")
