"""Built-in prewarm policies."""

from __future__ import annotations

import weakref

from contracts.decisions import Prewarm
from policies import idle_histogram
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


def _new_run(policy, cluster) -> bool:
    """Whether `cluster` is not the one `policy` saw last (kept as a weak reference, for its identity only).

    A view that takes no weak reference (a hand-made one in a test) counts as one run throughout.
    """
    try:
        ref = weakref.ref(cluster)
    except TypeError:
        ref = None
    if policy._run is not None and (ref is None or policy._run() is cluster):
        return False
    policy._run = ref if ref is not None else (lambda: None)
    return True


class HistogramPrewarm(PrewarmPolicy):
    """Shahrad et al., "Serverless in the Wild", ATC'20: the hybrid histogram policy's pre-warming.

    Load a model that has no instance shortly before its predicted next request: at the last tick
    before the pre-warm window (the head of its idle-time histogram) ends, less the model's cold
    start from the profile (`ModelView.cold_start_s`, from the slowest tier its checkpoint sits in
    on any node), and only while the keep-alive window has not ended; once per idle period.

    Paired with the `hybrid_histogram` keep-alive it reads that policy's histograms and windows
    (`policies/idle_histogram.py` explains how the two find each other): the keep-alive unloads, this
    loads back. With any other keep-alive it keeps its own histograms, of the gaps between a model's
    arrivals, under the paper's parameters (head 5, tail 99, margin 10 %).
    `tier=process` buys only a warm process (no GPU memory; the request still loads the weights).

    Simplified: decisions happen on ticks of `interval` seconds, so a load starts up to one tick early.
    """

    name = "histogram"

    def __init__(self, interval: float = 10.0, tier: str = "gpu"):
        if not 0 < float(interval) < float("inf"):
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self.interval = float(interval)
        self.interval_s = self.interval
        self.tier = tier
        Prewarm("check", tier)  # a bad tier fails now, not at the first tick
        self._run = None  # a weak reference to the cluster of the run under way (its identity only)
        self._paired: idle_histogram.IdleLedger | None = None
        self._own: idle_histogram.IdleLedger | None = None
        self._seen: dict[str, float] = {}  # unpaired: the newest arrival fed to the own ledger, per model

    def _ledger(self, cluster: ClusterView) -> idle_histogram.IdleLedger:
        if _new_run(self, cluster):  # forget the last run
            self._paired, self._own, self._seen = None, None, {}
        if self._paired is None:
            self._paired = idle_histogram.ledger_in(cluster)
            if self._paired is not None:
                self._paired.tick_s = self.interval
        if self._paired is not None:
            return self._paired
        if self._own is None:
            self._own = idle_histogram.IdleLedger(idle_histogram.HybridRule())
        for model in cluster.models_seen:  # unpaired: an idle time is the gap between arrivals
            last = self._seen.get(model, float("-inf"))
            for t in cluster.arrivals(model):
                if t > last:
                    self._own.observe(model, t, t)
                    last = t
            self._seen[model] = last
        return self._own

    def on_tick(self, cluster: ClusterView) -> list[Prewarm]:
        ledger = self._ledger(cluster)
        now = cluster.now
        nodes = sorted({g.node for g in cluster.gpus})
        out = []
        for model in cluster.models_seen:
            rec = ledger.record(model)
            view = cluster.model(model)
            rec.lead_s = max(view.cold_start_s(cluster.checkpoint_tier(model, n)) for n in nodes)
            if cluster.instances_of(model) or not ledger.reload_due(rec, now, self.interval):
                continue
            rec.reloaded_at = now
            out.append(Prewarm(model, self.tier))
        return out
