"""Built-in keep-alive policies."""

from __future__ import annotations

from contracts.decisions import Keep
from policies.base import KeepAlivePolicy
from policies.views import InstanceView


class NoKeepAlive(KeepAlivePolicy):
    """Evict as soon as the instance is idle: every burst after a gap is a cold start."""

    name = "none"

    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        return []


class Fixed(KeepAlivePolicy):
    """Keep on the GPU for `ttl` seconds after the last request (OpenWhisk, Knative: 10 min)."""

    name = "fixed"

    def __init__(self, ttl: float = 600.0):
        if not float(ttl) >= 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        self.ttl = float(ttl)

    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        return [Keep("gpu", self.ttl)]


class TwoTier(KeepAlivePolicy):
    """`gpu` seconds warm on the GPU, then `dram` seconds asleep with weights in host DRAM."""

    name = "two_tier"

    def __init__(self, gpu: float = 120.0, dram: float = 1800.0):
        if not (float(gpu) >= 0 and float(dram) >= 0):
            raise ValueError(f"gpu and dram seconds must be >= 0, got gpu={gpu}, dram={dram}")
        self.gpu = float(gpu)
        self.dram = float(dram)

    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        return [Keep("gpu", self.gpu), Keep("dram", self.dram)]
