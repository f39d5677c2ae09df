"""Staging plans: which layers load in which stage, and from which stage serving may start.

This is the one object that both the simulator's staging policies produce and the real
engine's staged loader follows (`progressive_serve` imports it; it has no dependencies).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StagePlan:
    """An ordered partition of a model's decoder layers into loading stages.

    `stages[j]` holds the layer indices bound at the end of stage j (0-based). The
    embedding and the head are loaded with stage 0: no token can be produced without
    them. `serve_from` is the 0-based stage after which the instance may serve; layers
    not yet bound run with alpha = 0. `pipelined` means layer i may compute while
    layer i+1 loads (execute-while-load): the first token waits for the last layer, but
    compute overlaps the transfer.

    `refill`: when a stage binds new layers in the middle of a request, those layers have
    no K/V for the tokens so far; the engine then computes the next token with a prefill
    over the whole context instead of a decode step (the simulator charges the same at
    iteration fidelity). False: the new layers see only the tokens after they bound.

    `overlap_init`: the engine's KV-cache allocation and graph capture run while the weights
    load instead of after the serving stage (the alpha gates keep the captured graph valid
    before any weight arrives); a pipelined plan always overlaps them.
    """

    name: str
    num_layers: int
    stages: tuple[tuple[int, ...], ...]
    serve_from: int
    pipelined: bool = False
    refill: bool = True
    overlap_init: bool = False

    def __post_init__(self) -> None:
        seen = sorted(i for stage in self.stages for i in stage)
        if seen != list(range(self.num_layers)):
            raise ValueError(
                f"staging plan {self.name!r}: stages must cover layers 0..{self.num_layers - 1} "
                f"exactly once, got {len(seen)} entries"
            )
        if not 0 <= self.serve_from < len(self.stages):
            raise ValueError(
                f"staging plan {self.name!r}: serve_from={self.serve_from} outside 0..{len(self.stages) - 1}"
            )
        if any(len(s) == 0 for s in self.stages):
            raise ValueError(f"staging plan {self.name!r}: empty stage")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def layers_after(self, stage: int) -> tuple[int, ...]:
        """The layers bound once `stage` (0-based) has finished, sorted."""
        return tuple(sorted(i for s in self.stages[: stage + 1] for i in s))

    def gates_after(self, stage: int) -> list[float]:
        """Per-layer alpha after `stage` has finished: 1.0 bound, 0.0 absent."""
        bound = set(self.layers_after(stage))
        return [1.0 if i in bound else 0.0 for i in range(self.num_layers)]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_layers": self.num_layers,
            "stages": [list(s) for s in self.stages],
            "serve_from": self.serve_from,
            "pipelined": self.pipelined,
            "refill": self.refill,
            "overlap_init": self.overlap_init,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StagePlan:
        return cls(
            name=str(d["name"]),
            num_layers=int(d["num_layers"]),
            stages=tuple(tuple(int(i) for i in s) for s in d["stages"]),
            serve_from=int(d["serve_from"]),
            pipelined=bool(d.get("pipelined", False)),
            refill=bool(d.get("refill", True)),
            overlap_init=bool(d.get("overlap_init", False)),
        )


def full_plan(num_layers: int) -> StagePlan:
    """Everything in one stage; serve only when every layer is bound."""
    return StagePlan("full", num_layers, (tuple(range(num_layers)),), serve_from=0)


def pipelined_plan(num_layers: int) -> StagePlan:
    """One stage per layer in natural order; compute overlaps loading; no quality loss."""
    stages = tuple((i,) for i in range(num_layers))
    return StagePlan("pipelined", num_layers, stages, serve_from=num_layers - 1, pipelined=True)


def importance_order(num_layers: int, importance: list[float] | None = None) -> list[int]:
    """Layers from most to least important.

    With measured per-layer importance (higher = more harmful to drop), sort by it. Without
    a measurement, fall back to the shape measured on SmolLM2 (docs/design.md, "Measured facts"): the first
    and last layers matter most, the middle least, so load from both ends inwards.
    """
    if importance is not None:
        if len(importance) != num_layers:
            raise ValueError(f"importance has {len(importance)} entries for {num_layers} layers")
        return sorted(range(num_layers), key=lambda i: (-importance[i], i))
    order: list[int] = []
    lo, hi = 0, num_layers - 1
    while lo <= hi:
        order.append(lo)
        if hi != lo:
            order.append(hi)
        lo, hi = lo + 1, hi - 1
    return order


def progressive_plan(
    num_layers: int,
    fractions: tuple[float, ...] = (0.75, 0.875, 1.0),
    importance: list[float] | None = None,
    name: str = "progressive",
) -> StagePlan:
    """The seed's 3-stage plan: serve after stage 1 (24 of 32 layers for LLaMA-2-7B).

    `fractions` are the cumulative share of layers bound after each stage; stage 1 holds
    the most important layers (see `importance_order`).
    """
    strictly_increasing = all(a < b for a, b in zip(fractions, fractions[1:], strict=False))
    if not fractions or abs(fractions[-1] - 1.0) > 1e-9 or not strictly_increasing or fractions[0] <= 0:
        raise ValueError(f"fractions must be strictly increasing in (0, 1] and end at 1.0, got {fractions}")
    order = importance_order(num_layers, importance)
    stages: list[tuple[int, ...]] = []
    start = 0
    for f in fractions:
        end = max(start + 1, round(f * num_layers)) if f < 1.0 else num_layers
        end = min(end, num_layers)
        if end > start:
            stages.append(tuple(sorted(order[start:end])))
        start = end
    return StagePlan(name, num_layers, tuple(stages), serve_from=0)
