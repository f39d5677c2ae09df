"""What policies return. A decision is data; the simulator applies it."""

from __future__ import annotations

from dataclasses import dataclass

KEEP_TIERS = ("gpu", "dram", "process")


@dataclass(frozen=True, slots=True)
class Keep:
    """Keep an idle instance in `tier` for `seconds`, then go to the next entry.

    `gpu`: weights stay bound, the process stays warm. `dram`: the process sleeps with its
    weights in host DRAM (vLLM sleep mode level 1); waking copies them back over PCIe.
    `process`: the process sleeps with its weights dropped (level 2); waking loads them
    again from wherever the checkpoint sits, but pays no process start or CUDA context.
    Sleeping frees the instance's GPU memory. After the last entry the instance is evicted.
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


PREWARM_TIERS = ("gpu", "process")


@dataclass(frozen=True, slots=True)
class Prewarm:
    """Start an instance of `model` ahead of demand.

    `gpu`: a full cold start now, so the first request finds it warm. `process`: start the
    process, CUDA context and graph capture only, and leave it asleep without weights (vLLM
    sleep level 2): it holds no GPU memory, and a request then pays only the weight load.
    """

    model: str
    tier: str = "gpu"

    def __post_init__(self) -> None:
        if self.tier not in PREWARM_TIERS:
            raise ValueError(f"prewarm tier must be one of {PREWARM_TIERS}, got {self.tier!r}")


ADMIT_ACTIONS = ("serve", "reject", "degrade")


@dataclass(frozen=True, slots=True)
class Admit:
    """`serve` lets the request in (it may queue); `reject` sheds it with `reason`; `degrade`
    lets it in and has the model's fully loaded progressive instances serve at their first
    serving stage (the later stages' alpha gates closed: fewer layers, lower quality, a step as
    fast as the profile measured that stage) until an arrival of the model is admitted with
    `serve` again."""

    action: str = "serve"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.action not in ADMIT_ACTIONS:
            raise ValueError(f"admission action must be one of {ADMIT_ACTIONS}, got {self.action!r}")


SERVE = Admit("serve")
