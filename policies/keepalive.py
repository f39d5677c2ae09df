"""Built-in keep-alive policies."""

from __future__ import annotations

import math

from contracts.decisions import Keep
from policies import idle_histogram
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


class Tiered(KeepAlivePolicy):
    """`gpu` seconds warm on the GPU, then `dram` seconds asleep with the weights in host DRAM, then
    `process` seconds asleep without them, then evicted: each tier on its own timer.

    The tiers are vLLM's sleep mode: level 1 (`Keep("dram", s)`) copies the weights to host DRAM and
    a wake copies them back over PCIe; level 2 (`Keep("process", s)`) drops them and a wake loads them
    from wherever the checkpoint sits, without the process start and CUDA context of a cold start.
    What each costs comes from the profile (`engine.wake_from_sleep_s`, the links), not from here.
    A sleeping process holds no GPU memory. `process=0` is `two_tier`; a `dram` tier of 0 seconds
    before a process tier is skipped (it would copy the weights out only to drop them).
    """

    name = "tiered"

    def __init__(self, gpu: float = 120.0, dram: float = 1800.0, process: float = 3600.0):
        if not (float(gpu) >= 0 and float(dram) >= 0 and float(process) >= 0):
            raise ValueError(f"gpu, dram and process seconds must be >= 0, got gpu={gpu}, dram={dram}, "
                             f"process={process}")
        self.gpu = float(gpu)
        self.dram = float(dram)
        self.process = float(process)

    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        tiers = [Keep("gpu", self.gpu)]
        if self.dram > 0 or self.process == 0:
            tiers.append(Keep("dram", self.dram))
        if self.process > 0:
            tiers.append(Keep("process", self.process))
        return tiers


class TwoTier(Tiered):
    """`gpu` seconds warm on the GPU, then `dram` seconds asleep with weights in host DRAM.

    `tiered` with no process tier: `two_tier[gpu=g,dram=d]` decides exactly what
    `tiered[gpu=g,dram=d,process=0]` does.
    """

    name = "two_tier"

    def __init__(self, gpu: float = 120.0, dram: float = 1800.0):
        if not (float(gpu) >= 0 and float(dram) >= 0):
            raise ValueError(f"gpu and dram seconds must be >= 0, got gpu={gpu}, dram={dram}")
        super().__init__(gpu, dram, 0.0)


class HybridHistogram(KeepAlivePolicy):
    """Shahrad et al., "Serverless in the Wild", ATC'20: the hybrid histogram policy's keep-alive.

    Per model, a histogram of idle times (`bin_s` bins over `range_s`: 1 minute over 4 hours). While it
    is representative (at least `min_samples` idle times, and a coefficient of variation of the bin
    counts of at least `cv`), the pre-warm window is its `head` percentile less `margin` and the
    keep-alive window its `tail` percentile plus `margin`; while it is not, the model is kept
    `fallback` seconds (the fixed policy). When a share `oob` or more of the idle times lie beyond
    the range, a forecast of the next idle time sets both windows (+/- `forecast_margin`).

    Paired with the `histogram` prewarm policy (the paper's pre-warming), an idle model whose
    pre-warm window is longer than a load is unloaded at once and loaded again shortly before the
    window ends, then kept until the keep-alive window ends. Without that prewarm nothing would load
    it back, so it is kept on the GPU for the keep-alive window instead.

    Simplified (see `policies/idle_histogram.py`, which holds the state both policies share): the
    time series is a log-space exponentially weighted mean, not ARIMA; an idle time is measured from
    the moment the model went idle to its last request before it next goes idle (the next request,
    when a busy period holds one); `min_samples` is this project's choice (the paper names none).
    An instance loaded by another prewarm policy looks to it as if a request had come then.
    """

    name = "hybrid_histogram"

    def __init__(self, head: float = 5.0, tail: float = 99.0, margin: float = 0.1, bin_s: float = 60.0,
                 range_s: float = 14400.0, cv: float = 2.0, oob: float = 0.5, min_samples: int = 5,
                 fallback: float = 600.0, forecast_margin: float = 0.15):
        self.head, self.tail, self.margin = float(head), float(tail), float(margin)
        self.bin_s, self.range_s, self.cv, self.oob = float(bin_s), float(range_s), float(cv), float(oob)
        self.min_samples, self.fallback = int(min_samples), float(fallback)
        self.forecast_margin = float(forecast_margin)
        self._rule = idle_histogram.HybridRule(
            self.head, self.tail, self.margin, self.bin_s, self.range_s, self.cv, self.oob,
            self.min_samples, self.fallback, self.forecast_margin)
        self._ledger: idle_histogram.IdleLedger | None = None
        self._last_now = -math.inf

    def ledger(self, now: float) -> idle_histogram.IdleLedger:
        """This run's ledger: a new one when time goes back (the policy object was reused for a new run)."""
        if self._ledger is None or now < self._last_now:
            self._ledger = idle_histogram.IdleLedger(self._rule)
        self._last_now = now
        return self._ledger

    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        ledger = self.ledger(now)
        idle_histogram.file_under(inst, ledger)
        rec = ledger.record(inst.model)
        if rec.reloaded_at is not None and inst.last_used == rec.reloaded_at and rec.windows is not None:
            # the paired prewarm's reload, unused so far: keep it to the end of the keep-alive window
            return [Keep("gpu", max(0.0, rec.idle_start + rec.windows.keepalive_s - now))]
        rec = ledger.observe(inst.model, now, inst.last_used)
        if ledger.may_unload(rec):
            rec.unloaded = True
            return []
        return [Keep("gpu", rec.windows.keepalive_s)]


class GreedyDualKeep(KeepAlivePolicy):
    """FaaSCache (Fuerst and Sharma, ASPLOS'21), the keep-alive side: keep-alive as caching.

    An idle instance stays on its GPU (`ttl` seconds, forever by default) until its memory is needed;
    which instance then goes is the `greedy_dual` placement policy's choice (lowest priority
    `clock + frequency x cost / size`). With another placement, evictions follow that placement's
    order (least recently used for `first_fit`).
    """

    name = "greedy_dual"

    def __init__(self, ttl: float = math.inf):
        if not float(ttl) >= 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        self.ttl = float(ttl)

    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        return [Keep("gpu", self.ttl)]
