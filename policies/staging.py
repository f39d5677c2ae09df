"""Built-in staging policies: full, pipelined (execute-while-load) and progressive."""

from __future__ import annotations

from dataclasses import replace

from contracts.plan import StagePlan, full_plan, pipelined_plan, progressive_plan
from policies.base import StagingPolicy
from policies.views import ModelView


class Full(StagingPolicy):
    """Serve only when every layer is on the GPU (what vLLM and most platforms do)."""

    name = "full"

    def plan(self, model: ModelView) -> StagePlan:
        return full_plan(model.num_layers)


class Pipelined(StagingPolicy):
    """Layer i computes while layer i+1 loads; the first token waits for the last layer."""

    name = "pipelined"

    def plan(self, model: ModelView) -> StagePlan:
        return pipelined_plan(model.num_layers)


class Progressive(StagingPolicy):
    """The seed's plan: serve after stage 1 with the missing layers alpha-gated off.

    `fractions` are the cumulative shares of layers bound after each stage, separated by
    '/': the default is the seed's 24, 28 and 32 of 32 layers. Stage 1 takes the most
    important layers by the profile's measured importance when it has one.

    `overlap`: allocate the KV cache and capture the CUDA graph while the weights load, not after
    stage 1 as the seed does. The alpha gate keeps the graph valid before any weight arrives
    (an absent layer is gated off), so nothing in the capture waits for the weights; this is what
    `pipelined` gets from overlapping, given to the progressive plan. Off, the label is the
    seed's plan's (`progressive[fractions=...]`), as before the parameter existed.
    """

    name = "progressive"

    def __init__(self, fractions: str = "0.75/0.875/1.0", overlap: bool = False):
        self.fractions = fractions
        self.overlap = bool(overlap)
        try:
            self._fractions = tuple(float(f) for f in str(fractions).split("/"))
        except ValueError:
            raise ValueError(f"fractions must look like 0.75/0.875/1.0, got {fractions!r}") from None
        progressive_plan(8, self._fractions)  # validate now, not at the first load

    def plan(self, model: ModelView) -> StagePlan:
        importance = list(model.layer_importance) if model.layer_importance else None
        plan = progressive_plan(model.num_layers, self._fractions, importance)
        return replace(plan, overlap_init=True) if self.overlap else plan

    @property
    def label(self) -> str:
        return f"progressive[fractions={self.fractions},overlap=True]" if self.overlap else \
            f"progressive[fractions={self.fractions}]"
