"""Per-model idle-time histograms: the state `hybrid_histogram` (keep-alive) and `histogram` (prewarm) share.

Shahrad et al., "Serverless in the Wild: Characterizing and Optimizing the Serverless Workload at a
Large Cloud Provider", USENIX ATC'20, section 4.2 (the hybrid histogram policy). Per application
(here: per model) the policy keeps a histogram of idle times, the time from the moment the model
ran out of work to its next request, in 1-minute bins over a 4-hour range. While the histogram is
representative, the *pre-warm window* is its head (5th percentile, less a 10 % margin) and the
*keep-alive window* its tail (99th percentile, plus 10 %): the model is unloaded when it goes idle,
loaded again when the pre-warm window has passed and kept until the keep-alive window ends. While
it is not representative (too few samples, or a coefficient of variation of the bin counts below
a threshold: a flat histogram predicts nothing) the policy falls back to a fixed keep-alive. When
most idle times fall beyond the range, a time series predicts the next one.

Simplified here:
- The time-series fallback is not ARIMA: the next idle time is forecast as the exponentially
  weighted mean (alpha 0.5) of the logarithms of the model's recent idle times (the last 32),
  and the windows are that forecast less / plus `forecast_margin` (15 %, the margin dslab-faas'
  reproduction uses around its ARIMA forecast).
- "Too few samples" is a count (`min_samples`, 5 by default); the paper names no number.
- Windows are measured from the moment the model went idle, and the model is meant to be loaded
  from `idle + prewarm` to `idle + keepalive` (the paper's picture: loaded from the head of the
  idle-time distribution to its tail).

How the two policies share the state
------------------------------------
The paper's policy is one controller with two outputs: when to unload an idle instance and when to
load it back. Here those are two hooks that see different things: `KeepAlivePolicy.on_idle(inst,
now)` sees one instance and the time, `PrewarmPolicy.on_tick(cluster)` sees the cluster, and no
object of the run reaches both. So:

- The keep-alive owns an `IdleLedger` and is the only writer of its histograms and windows. It
  records a sample when a model goes idle again: the gap from the previous idle moment to the
  model's last request since (`InstanceView.last_used`). That is the first request after the gap
  when the busy period held one request; with more it overstates the idle time by the busy period
  (seconds here, against 1-minute bins).
- It files every instance it decides about under its ledger in `_LEDGER_OF`, keyed by the instance
  object itself (weakly): simulator objects belong to one run and vanish with it, so the link
  cannot leak into another run or another policy combination.
- The prewarm looks its cluster's live instances up there and, once it finds a ledger, is paired
  with it for the rest of the run. It tells the ledger its tick and, per model, the cold-start
  estimate (`ModelView.cold_start_s`): only then does the keep-alive unload an idle model, and only
  if the pre-warm window is longer than a load plus a tick (a reload that would start at once
  saves nothing; these loads take half a minute, not the paper's milliseconds).
- The prewarm writes one thing back per model: when it asked for the reload (`reloaded_at`), so
  that the keep-alive recognises the reloaded instance while it is unused (its `last_used` is its
  creation time) and keeps it to the end of the keep-alive window, instead of taking its load for
  an idle period of its own.

Unpaired, each works alone: the keep-alive never unloads (it keeps the instance on the GPU for the
keep-alive window); the prewarm builds a ledger of its own from the arrivals it sees (idle time =
the gap between arrivals) and loads a model that has no instance shortly before its pre-warm window
ends. A simulator hook that showed the keep-alive the cluster (or arrivals) would make the link
unnecessary.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from dataclasses import dataclass, field


class IdleHistogram:
    """Idle times of one model: counts in `bin_s` bins up to `range_s`, the rest counted out of bounds."""

    __slots__ = ("bin_s", "bins", "in_range", "oob", "recent")

    def __init__(self, bin_s: float = 60.0, range_s: float = 14400.0, keep_recent: int = 32):
        self.bin_s = float(bin_s)
        self.bins = [0] * max(1, int(round(range_s / bin_s)))
        self.in_range = 0
        self.oob = 0
        self.recent: deque[float] = deque(maxlen=keep_recent)  # for the time-series forecast

    def add(self, idle_s: float) -> None:
        idle_s = max(0.0, float(idle_s))
        self.recent.append(idle_s)
        i = int(idle_s // self.bin_s)
        if i < len(self.bins):
            self.bins[i] += 1
            self.in_range += 1
        else:
            self.oob += 1

    @property
    def samples(self) -> int:
        return self.in_range + self.oob

    @property
    def oob_rate(self) -> float:
        return self.oob / self.samples if self.samples else 0.0

    def cv(self) -> float:
        """Coefficient of variation of the bin counts (sample standard deviation over the mean)."""
        n = len(self.bins)
        if not self.in_range or n < 2:
            return 0.0
        mean = self.in_range / n
        var = sum((c - mean) ** 2 for c in self.bins) / (n - 1)
        return math.sqrt(var) / mean

    def percentile_bin(self, pct: float) -> int:
        """The first bin at which the cumulative share of in-range samples reaches `pct` percent."""
        target = pct / 100.0 * self.in_range
        total = 0
        for i, c in enumerate(self.bins):
            total += c
            if c and total >= target:
                return i
        return len(self.bins) - 1

    def forecast(self) -> float:
        """The next idle time: exponentially weighted mean (alpha 0.5) of the logs of recent ones."""
        if not self.recent:
            return 0.0
        level = None
        for x in self.recent:
            lx = math.log(max(x, 1.0))
            level = lx if level is None else 0.5 * lx + 0.5 * level
        return math.exp(level)


@dataclass(frozen=True, slots=True)
class Windows:
    """Keep the model loaded from `idle + prewarm_s` to `idle + keepalive_s`; `source` says which rule set them."""

    prewarm_s: float
    keepalive_s: float
    source: str  # "fallback", "histogram" or "forecast"


@dataclass(frozen=True)
class HybridRule:
    """The ATC'20 rule from a histogram to windows (parameters as `hybrid_histogram` takes them)."""

    head: float = 5.0
    tail: float = 99.0
    margin: float = 0.1
    bin_s: float = 60.0
    range_s: float = 14400.0
    cv: float = 2.0
    oob: float = 0.5
    min_samples: int = 5
    fallback: float = 600.0
    forecast_margin: float = 0.15

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.head <= 100, f"head must be a percentile in [0, 100], got {self.head}"),
            (self.head <= self.tail <= 100, f"tail must be in [head, 100], got {self.tail}"),
            (0 <= self.margin < 1, f"margin must be in [0, 1), got {self.margin}"),
            (0 < self.bin_s < math.inf, f"bin_s must be > 0 seconds, got {self.bin_s}"),
            (self.bin_s <= self.range_s <= 1e7, f"range_s must be in [bin_s, 1e7] seconds, got {self.range_s}"),
            (self.range_s <= self.bin_s * 100_000, f"range_s / bin_s must be at most 100000 bins, got "
                                                   f"{self.range_s / self.bin_s:.3g}"),
            (self.cv >= 0, f"cv must be >= 0, got {self.cv}"),
            (0 < self.oob <= 1, f"oob must be a share in (0, 1], got {self.oob}"),
            (self.min_samples >= 1, f"min_samples must be >= 1, got {self.min_samples}"),
            (self.fallback >= 0, f"fallback must be >= 0 seconds, got {self.fallback}"),
            (0 <= self.forecast_margin < 1, f"forecast_margin must be in [0, 1), got {self.forecast_margin}"),
        ]
        for ok, message in checks:
            if not ok:  # also refuses NaN, which compares false with everything
                raise ValueError(message)

    def histogram(self) -> IdleHistogram:
        return IdleHistogram(self.bin_s, self.range_s)

    def windows(self, hist: IdleHistogram) -> Windows:
        if hist.samples < self.min_samples:
            return Windows(0.0, self.fallback, "fallback")
        if hist.oob_rate >= self.oob:
            f = hist.forecast()
            return Windows(f * (1 - self.forecast_margin), f * (1 + self.forecast_margin), "forecast")
        if hist.cv() < self.cv:
            return Windows(0.0, self.fallback, "fallback")
        head = hist.percentile_bin(self.head)
        tail = hist.percentile_bin(self.tail)
        return Windows(head * self.bin_s * (1 - self.margin), (tail + 1) * self.bin_s * (1 + self.margin), "histogram")


@dataclass
class ModelRecord:
    """One model's idle times and what was decided when it last went idle."""

    hist: IdleHistogram
    idle_start: float | None = None  # when the model last ran out of work
    windows: Windows | None = None  # decided at idle_start
    unloaded: bool = False  # the keep-alive unloaded it at idle_start, counting on a reload
    reloaded_at: float | None = None  # when the paired prewarm last asked for a reload
    lead_s: float | None = None  # the paired prewarm's estimate of a load of this model


@dataclass
class IdleLedger:
    """Per-model records under one rule, for one run; `tick_s` is set once a prewarm is paired with it."""

    rule: HybridRule
    models: dict[str, ModelRecord] = field(default_factory=dict)
    tick_s: float | None = None

    def record(self, model: str) -> ModelRecord:
        rec = self.models.get(model)
        if rec is None:
            rec = self.models[model] = ModelRecord(self.rule.histogram())
        return rec

    def observe(self, model: str, idle_at: float, used_at: float) -> ModelRecord:
        """The model ran out of work at `idle_at`; its last request before that came at `used_at`.

        If that request came after the previous idle moment, the gap is an idle-time sample.
        The windows are decided again from the histogram as it is now.
        """
        rec = self.record(model)
        if rec.idle_start is not None and used_at > rec.idle_start:
            rec.hist.add(used_at - rec.idle_start)
        rec.idle_start = idle_at
        rec.windows = self.rule.windows(rec.hist)
        rec.unloaded = False
        return rec

    def may_unload(self, rec: ModelRecord) -> bool:
        """A paired prewarm will load the model back after a gap worth unloading for."""
        if self.tick_s is None or rec.lead_s is None or rec.windows is None:
            return False
        return rec.windows.prewarm_s - rec.lead_s > self.tick_s

    def reload_due(self, rec: ModelRecord, now: float, tick_s: float) -> bool:
        """Whether a model with no instance should be loaded now: the last tick before its
        pre-warm window ends (less a load), and before the keep-alive window ends; once per idle period."""
        w = rec.windows
        if rec.idle_start is None or w is None or w.prewarm_s <= 0:
            return False
        if rec.reloaded_at is not None and rec.reloaded_at >= rec.idle_start:
            return False
        start = rec.idle_start + w.prewarm_s - (rec.lead_s or 0.0)
        return now + tick_s > start and now < rec.idle_start + w.keepalive_s


# instance object -> the keep-alive's ledger that decided about it (see the module docstring)
_LEDGER_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def file_under(inst: object, ledger: IdleLedger) -> None:
    """Let a prewarm policy that sees `inst` in its cluster find `ledger`."""
    try:
        _LEDGER_OF[inst] = ledger
    except TypeError:  # a hand-made view that takes no weak reference: nothing can pair with it
        pass


def ledger_in(cluster) -> IdleLedger | None:
    """The keep-alive ledger filed under any live instance of the cluster, if one is."""
    for model in cluster.models_seen:
        for inst in cluster.instances_of(model):
            try:
                ledger = _LEDGER_OF.get(inst)
            except TypeError:
                continue
            if ledger is not None:
                return ledger
    return None
