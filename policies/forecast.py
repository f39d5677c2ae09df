"""Prewarm from a per-model forecast of the arrival rate (`forecast`).

Two forecasts of how many requests a model will get in the next few seconds, both from the
counts of its arrivals in fixed buckets of `bucket` seconds:

- `ewma`: one level per model, an exponentially weighted moving average of the bucket counts
  (the "recent rate" predictors of reactive-plus-predictive autoscalers);
- `seasonal`: one level per bucket of the season (`season` seconds, a day by default), each
  an EWMA across seasons of that bucket's count, initialised from the first season: the
  seasonal term of Holt-Winters, which a timer or a daily pattern repeats exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from contracts.decisions import Prewarm
from policies.base import PrewarmPolicy
from policies.prewarm import _new_run
from policies.views import ClusterView

MODES = ("ewma", "seasonal")


@dataclass
class RateRecord:
    """One model's counts: the open bucket, the EWMA level and the seasonal levels."""

    bucket: int = -1  # index of the open bucket (time // bucket_s); -1: none yet
    count: int = 0  # arrivals in the open bucket so far
    level: float = math.nan  # ewma: the smoothed count per bucket (NaN until the first closes)
    seasonal: dict[int, float] = field(default_factory=dict)  # seasonal: phase -> smoothed count
    last_arrival: float = -math.inf  # the newest arrival counted


class Forecast(PrewarmPolicy):
    """Load a model ahead of the demand its rate forecast predicts, a cold start early.

    Predictive scaling as in the seeds' proactive autoscalers (pHPA, GRAF, WarmServe: forecast
    each function's demand and start capacity a start-up time before it): every `interval`
    seconds, for each model with no instance, the expected number of its arrivals in the next
    `lead + interval` seconds, `lead` being its cold start from the profile
    (`ModelView.cold_start_s`, from the slowest tier its checkpoint sits in on any node); when
    that reaches `threshold`, one instance is loaded (`tier=gpu`) or a process started without
    weights (`tier=process`). `mode` picks the forecast (module docstring): `ewma` (smoothing
    `alpha`) follows a model's recent rate, `seasonal` repeats what the same time of the last
    seasons saw, so a timer or a daily peak is loaded for before it fires.

    Simplified: counts only (no trend term, no FFT or ARIMA); a seasonal bucket counts whole
    when the look-ahead touches it, so a load may start up to one bucket early rather than
    late; at most one instance per model is prewarmed (scaling out stays the router's).
    """

    name = "forecast"

    def __init__(self, mode: str = "seasonal", alpha: float = 0.5, bucket: float = 60.0, season: float = 86400.0,
                 threshold: float = 0.5, interval: float = 10.0, tier: str = "gpu"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0 < float(alpha) <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not 0 < float(bucket) < math.inf:
            raise ValueError(f"bucket must be > 0 seconds, got {bucket}")
        if not float(bucket) <= float(season) < math.inf:
            raise ValueError(f"season must be at least one bucket ({bucket} s), got {season}")
        if not float(threshold) > 0:
            raise ValueError(f"threshold must be > 0 expected requests, got {threshold}")
        if not 0 < float(interval) < math.inf:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        Prewarm("check", tier)  # a bad tier fails now, not at the first tick
        self.mode = mode
        self.alpha = float(alpha)
        self.bucket = float(bucket)
        self.season = float(season)
        self.threshold = float(threshold)
        self.interval = float(interval)
        self.interval_s = self.interval
        self.tier = tier
        self._phases = max(1, round(self.season / self.bucket))
        self._run = None  # a weak reference to the cluster of the run under way (its identity only)
        self._records: dict[str, RateRecord] = {}

    # --- the counts ------------------------------------------------------------------------------
    def _close(self, rec: RateRecord, upto: int) -> None:
        """Close buckets rec.bucket .. upto-1 (the open one with its count, the rest empty)."""
        a = self.alpha
        if self.mode == "ewma":
            n_empty = upto - rec.bucket - 1
            level = rec.count if math.isnan(rec.level) else a * rec.count + (1 - a) * rec.level
            rec.level = level * (1 - a) ** max(0, n_empty)  # empty buckets decay it
        else:
            for b in range(rec.bucket, min(upto, rec.bucket + self._phases)):  # a full season at most
                count = rec.count if b == rec.bucket else 0
                phase = b % self._phases
                old = rec.seasonal.get(phase)
                rec.seasonal[phase] = count if old is None else a * count + (1 - a) * old
        rec.bucket, rec.count = upto, 0

    def _observe(self, cluster: ClusterView, model: str, now: float) -> RateRecord:
        rec = self._records.setdefault(model, RateRecord())
        for t in cluster.arrivals(model):
            if t <= rec.last_arrival:
                continue
            b = int(t // self.bucket)
            if rec.bucket < 0:
                rec.bucket = b
            elif b > rec.bucket:
                self._close(rec, b)
            rec.count += 1
            rec.last_arrival = t
        current = int(now // self.bucket)
        if rec.bucket >= 0 and current > rec.bucket:
            self._close(rec, current)
        return rec

    def expected(self, rec: RateRecord, start: float, end: float) -> float:
        """Expected arrivals in [start, end) by the forecast."""
        if self.mode == "ewma":
            return 0.0 if math.isnan(rec.level) else rec.level * (end - start) / self.bucket
        first, last = int(start // self.bucket), int(math.ceil(end / self.bucket))
        return sum(rec.seasonal.get(b % self._phases, 0.0) for b in range(first, min(last, first + self._phases)))

    # --- the hook --------------------------------------------------------------------------------
    def on_tick(self, cluster: ClusterView) -> list[Prewarm]:
        if _new_run(self, cluster):  # forget the last run
            self._records = {}
        now = cluster.now
        nodes = sorted({g.node for g in cluster.gpus})
        out = []
        for model in cluster.models_seen:
            rec = self._observe(cluster, model, now)
            if cluster.instances_of(model):
                continue
            view = cluster.model(model)
            lead = max(view.cold_start_s(cluster.checkpoint_tier(model, n)) for n in nodes)
            if self.expected(rec, now, now + lead + self.interval) >= self.threshold:
                out.append(Prewarm(model, self.tier))
        return out
