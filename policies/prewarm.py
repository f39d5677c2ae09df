"""Built-in prewarm policies."""

from __future__ import annotations

from contracts.decisions import Prewarm
from policies.base import PrewarmPolicy
from policies.views import ClusterView


class NoPrewarm(PrewarmPolicy):
    """Never load ahead of demand."""

    name = "none"
    interval_s = 0.0

    def on_tick(self, cluster: ClusterView) -> list[Prewarm]:
        return []


class Popular(PrewarmPolicy):
    """Keep one instance of every model that had at least `min_requests` in the last `window` s.

    A simple predictor in the spirit of the ATC'20 histogram policy: a model that was
    busy recently will be asked for again, so a cold start is paid ahead of the request.
    `tier=process` buys only a warm process (no GPU memory held; the request still loads
    the weights), `tier=gpu` a full load.
    """

    name = "popular"

    def __init__(self, window: float = 600.0, min_requests: int = 3, interval: float = 30.0, tier: str = "gpu"):
        self.window = float(window)
        self.min_requests = int(min_requests)
        self.interval = float(interval)
        self.interval_s = self.interval
        self.tier = tier
        Prewarm("check", tier)  # a bad tier fails now, not at the first tick

    def on_tick(self, cluster: ClusterView) -> list[Prewarm]:
        out = []
        since = cluster.now - self.window
        for model in cluster.models_seen:
            if cluster.instances_of(model):
                continue
            recent = sum(1 for t in cluster.arrivals(model) if t >= since)
            if recent >= self.min_requests:
                out.append(Prewarm(model, self.tier))
        return out
