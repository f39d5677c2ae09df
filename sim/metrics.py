"""Run metrics: what one policy combination did, in constant memory.

`RunMetrics` is fed by the engine (`on_request` per finished or rejected request,
`on_memory` whenever GPU memory held by instances changes, `on_bytes` per transfer) and
turns into one summary row with `finish()`. Percentiles come from `QuantileSketch`
(relative error `alpha`), memory is integrated exactly as a piecewise-constant function,
and the memory-over-time plot keeps a bounded, deterministically downsampled timeline. No
structure grows with the number of requests, so day-long traces run in flat memory.

Units: seconds; GB = 1e9 bytes (the unit model sizes are quoted in); GB-hours = GB held
for one hour.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.records import RecordWriter, RequestRecord
from sim.sketch import QuantileSketch

GB = 1e9
_BYTE_SECONDS_PER_GB_HOUR = GB * 3600.0
_FLUSH = 4096  # latencies buffered in a list before one vectorised sketch update

SUMMARY_KEYS: tuple[str, ...] = (
    "policy", "requests", "served", "rejected", "cold_start_pct", "wake_pct",
    "cold_ttft_p50_s", "wake_ttft_p50_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "slo_attainment_pct",
    "quality_mean", "load_wait_mean_s", "gpu_mem_gb_hours", "gpu_idle_gb_hours",
    "horizon_s", "fidelity",
)  # followed by one gb_<link> column per link kind in LINK_KINDS, then any other kind seen

# Every run reports these, zero where nothing crossed them, so summaries of runs line up.
LINK_KINDS: tuple[str, ...] = ("network", "pcie", "pcie_d2h", "ssd")


class MemoryTimeline:
    """A bounded record of a step function (GPU memory in use) for plotting.

    Each stored point `(t, v)` summarises a bucket of consecutive changes: `t` is the time
    of the bucket's first change and `v` the largest value set within the bucket. Drawn as
    a step function (`where="post"`) it is an upper envelope of the true curve: never below
    it, and equal to it while no more than `max_points` changes have been seen. When the
    store fills up, neighbouring pairs merge (first time, larger value) and buckets double
    in size, so memory stays at most `max_points` points and the result depends only on the
    sequence of changes.
    """

    __slots__ = ("max_points", "_t", "_v", "_stride", "_bt", "_bv", "_bn", "_end", "_last")

    def __init__(self, max_points: int = 2000) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        self.max_points = max_points
        self._t: list[float] = []
        self._v: list[float] = []
        self._stride = 1
        self._bt = 0.0
        self._bv = 0.0
        self._bn = 0
        self._end: float | None = None
        self._last = 0.0

    def add(self, t: float, v: float) -> None:
        self._last = v
        if self._bn == 0:
            self._bt, self._bv = t, v
        elif v > self._bv:
            self._bv = v
        self._bn += 1
        if self._bn == self._stride:
            self._t.append(self._bt)
            self._v.append(self._bv)
            self._bn = 0
            if len(self._t) >= self.max_points:
                self._halve()

    def _halve(self) -> None:
        ts, vs = self._t, self._v
        odd_t = ts[-1] if len(ts) % 2 else None
        odd_v = vs[-1] if len(vs) % 2 else None
        self._t = ts[0:len(ts) - 1:2] if odd_t is not None else ts[0::2]
        self._v = [max(a, b) for a, b in zip(vs[0::2], vs[1::2], strict=False)]
        if odd_t is not None:
            # An unpaired last point reopens as a partly filled bucket of the new size.
            self._bt, self._bv, self._bn = odd_t, odd_v, self._stride
        self._stride *= 2

    def close(self, end: float) -> None:
        """Mark the end of the run, so that the last value is drawn up to `end`."""
        self._end = end

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) including the open bucket and, once closed, the end point."""
        ts, vs = list(self._t), list(self._v)
        if self._bn:
            ts.append(self._bt)
            vs.append(self._bv)
        if self._end is not None and ts and self._end > ts[-1]:
            ts.append(self._end)
            vs.append(self._last)
        return np.asarray(ts, dtype=np.float64), np.asarray(vs, dtype=np.float64)


class RunMetrics:
    """Accumulates one policy combination's results; `finish()` gives its summary row.

    Counting rules: `cold_start_pct` is the requests that waited for weights (a load from
    scratch or a wake) over all requests, `wake_pct` those that waited for a wake, and
    `cold_ttft_p50_s` / `wake_ttft_p50_s` the TTFT medians of the served ones that waited for
    a load from scratch / a wake (a high `cold_start_pct` with a low TTFT is many cheap wakes); TTFT, TPOT, load
    wait and quality are over served requests only (TPOT only for requests with more than
    one output token, where it is defined); SLO attainment counts a served request with
    `ttft_s <= slo_ttft_s` as met and every rejected request as missed; quality is weighted
    by output tokens. If `writer` is given, every record is also streamed to it (the writer
    may be shared by several RunMetrics; its owner closes it).
    """

    def __init__(
        self,
        label: str,
        slo_ttft_s: float,
        writer: RecordWriter | None = None,
        timeline_points: int = 2000,
        alpha: float = 0.005,
    ) -> None:
        if not slo_ttft_s > 0:
            raise ValueError(f"slo_ttft_s must be positive, got {slo_ttft_s}")
        self.label = label
        self.slo_ttft_s = float(slo_ttft_s)
        self.writer = writer
        self.requests = 0
        self.served = 0
        self.rejected = 0
        self.cold = 0
        self.woke = 0
        self.slo_met = 0
        self._tokens = 0
        self._quality_tokens = 0.0
        self._load_wait = 0.0
        self._ttft = QuantileSketch(alpha)
        self._tpot = QuantileSketch(alpha)
        # TTFT of the requests that waited for a load from scratch / a wake
        self._cold_ttft = QuantileSketch(alpha)
        self._wake_ttft = QuantileSketch(alpha)
        self._ttft_buf: list[float] = []
        self._tpot_buf: list[float] = []
        # GPU memory, integrated as a piecewise-constant function of time.
        self._mem_t = 0.0
        self._mem_used = 0.0
        self._mem_idle = 0.0
        self._used_byte_s = 0.0
        self._idle_byte_s = 0.0
        self._timeline = MemoryTimeline(timeline_points)
        self._bytes: dict[str, float] = {}
        self._finished_at: float | None = None
        self.fidelity = "request"  # the fidelity the run served at (the Simulator sets it)

    # -- hot path -------------------------------------------------------------------------
    def on_request(self, rec: RequestRecord) -> None:
        """Account one finished or rejected request (called once per request)."""
        # Performance: plain attribute arithmetic and list appends only; the sketches are
        # updated in batches of _FLUSH values by _flush_latencies().
        self.requests += 1
        cold = rec.cold
        if cold:
            self.cold += 1
            if rec.woke:
                self.woke += 1
        if rec.rejected:
            self.rejected += 1
        else:
            self.served += 1
            ttft = rec.ttft_s
            if cold:
                (self._wake_ttft if rec.woke else self._cold_ttft).add(ttft)
            if ttft <= self.slo_ttft_s:
                self.slo_met += 1
            n = rec.output_tokens
            self._tokens += n
            self._quality_tokens += rec.quality * n
            self._load_wait += rec.load_wait_s
            if n > 1:
                self._tpot_buf.append(rec.tpot_s)
            buf = self._ttft_buf
            buf.append(ttft)
            if len(buf) >= _FLUSH:
                self._flush_latencies()
        if self.writer is not None:
            self.writer.write(rec)

    def _flush_latencies(self) -> None:
        if self._ttft_buf:
            self._ttft.add_many(self._ttft_buf)
            self._ttft_buf = []
        if self._tpot_buf:
            self._tpot.add_many(self._tpot_buf)
            self._tpot_buf = []

    def on_memory(self, now: float, used_bytes: float, idle_bytes: float) -> None:
        """GPU memory held by instances changed at `now` (idle: held with nothing in flight)."""
        dt = now - self._mem_t
        if dt < 0:
            raise ValueError(f"on_memory: time went backwards ({now} < {self._mem_t})")
        self._used_byte_s += dt * self._mem_used
        self._idle_byte_s += dt * self._mem_idle
        self._mem_t = now
        self._mem_used = used_bytes
        self._mem_idle = idle_bytes
        self._timeline.add(now, used_bytes / GB)

    def on_bytes(self, link: str, nbytes: float) -> None:
        """`nbytes` were moved over a link of kind `link` ("network", "ssd", "pcie", ...)."""
        self._bytes[link] = self._bytes.get(link, 0.0) + nbytes

    # -- results --------------------------------------------------------------------------
    @property
    def ttft_sketch(self) -> QuantileSketch:
        self._flush_latencies()
        return self._ttft

    @property
    def tpot_sketch(self) -> QuantileSketch:
        self._flush_latencies()
        return self._tpot

    @property
    def memory_timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """(times in s, GB in use) for plotting; an upper envelope, see MemoryTimeline."""
        return self._timeline.points()

    @property
    def bytes_by_link(self) -> dict[str, float]:
        return dict(sorted(self._bytes.items()))

    def finish(self, end_time: float) -> dict[str, Any]:
        """Close the memory integral at `end_time` and return the summary row.

        Keys are SUMMARY_KEYS then `gb_<link>` per link kind (LINK_KINDS always, others
        as seen, sorted). `horizon_s` is `end_time`: memory is charged up to it. Statistics over no
        values are NaN. Calling it again with the same end time returns the same row.
        """
        if self._finished_at is None:
            if end_time < self._mem_t:
                raise ValueError(f"finish: end_time {end_time} is before the last memory change {self._mem_t}")
            self.on_memory(end_time, self._mem_used, self._mem_idle)
            self._timeline.close(end_time)
            self._finished_at = end_time
        elif end_time != self._finished_at:
            raise ValueError(f"finish: already finished at {self._finished_at}, not {end_time}")
        ttft = self.ttft_sketch.quantiles([0.5, 0.9, 0.99])
        nan = math.nan
        row: dict[str, Any] = {
            "policy": self.label,
            "requests": self.requests,
            "served": self.served,
            "rejected": self.rejected,
            "cold_start_pct": 100.0 * self.cold / self.requests if self.requests else nan,
            "wake_pct": 100.0 * self.woke / self.requests if self.requests else nan,
            "cold_ttft_p50_s": self._cold_ttft.quantile(0.5),
            "wake_ttft_p50_s": self._wake_ttft.quantile(0.5),
            "ttft_p50_s": float(ttft[0]),
            "ttft_p90_s": float(ttft[1]),
            "ttft_p99_s": float(ttft[2]),
            "tpot_p50_s": self.tpot_sketch.quantile(0.5),
            "slo_attainment_pct": 100.0 * self.slo_met / self.requests if self.requests else nan,
            "quality_mean": self._quality_tokens / self._tokens if self._tokens else nan,
            "load_wait_mean_s": self._load_wait / self.served if self.served else nan,
            "gpu_mem_gb_hours": self._used_byte_s / _BYTE_SECONDS_PER_GB_HOUR,
            "gpu_idle_gb_hours": self._idle_byte_s / _BYTE_SECONDS_PER_GB_HOUR,
            "horizon_s": self._finished_at,
            "fidelity": self.fidelity,
        }
        for link in LINK_KINDS:
            row[f"gb_{link}"] = self._bytes.get(link, 0.0) / GB
        for link, nbytes in sorted(self._bytes.items()):
            if link not in LINK_KINDS:
                row[f"gb_{link}"] = nbytes / GB
        return row
