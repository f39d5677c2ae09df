"""Arrival processes of the synthetic generator: stationary renewal processes on a diurnal
clock, streamed in time order with memory that does not grow with the number of requests.

Each function is a renewal process in *operational time* (time in which its rate is
constant); the diurnal clock maps operational time to wall time, so the rate follows the
hour-of-day shape. Two gap distributions are used: periodic (CV 0, every gap the mean)
and gamma (shape 1/CV^2, scale mean * CV^2; CV 1 is Poisson).

Why the first arrival needs care: a trace is a window cut out of processes that have been
running for a long time, so at time 0 each process is in its stationary state and the gap
that straddles 0 is *length-biased* (long gaps are more likely to cover a given instant).
The time to the first arrival then has the residual-life (forward recurrence) density

    f_e(x) = S(x) / mean,   S the survival function of the gap,

which makes the process an equilibrium renewal process: its expected count in any window
[a, b] is exactly rate * (b - a). Drawing the first arrival uniformly within one mean gap
instead is right only for periodic gaps; for a bursty gamma process it adds about
(CV^2 - 1) / 2 arrivals at the start. The exact draw used here (see `first_arrivals`):
a length-biased gap L (density x f(x) / mean) times an independent U(0, 1) has density
f_e. For gamma(k, theta) the length-biased gap is gamma(k + 1, theta); for periodic gaps
L is the period itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CHUNK_ARRIVALS = 65_536  # expected arrivals per generated chunk: bounds memory, keeps numpy busy
MAX_CHUNK_S = 3600.0
MIN_CHUNK_S = 1.0


@dataclass(frozen=True)
class DiurnalClock:
    """Wall time (s from the trace's start) <-> operational time, for an hourly rate shape.

    The multiplier is constant within each hour of the day, so operational time is
    piecewise linear in wall time with knots on the hour: both directions are exact
    (no grid). `shape` has 24 non-negative multipliers, at least one positive.
    """

    shape: tuple[float, ...]
    start_hour: float = 0.0

    def _cum(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.asarray(self.shape, float) * 3600.0)])

    def _absolute(self, s: np.ndarray) -> np.ndarray:
        """Operational time from midnight of day 0 to wall second `s` of the clock."""
        cum, m = self._cum(), np.asarray(self.shape, float)
        days, rest = np.divmod(s, 86400.0)
        hour = np.minimum((rest // 3600.0).astype(int), 23)
        return days * cum[-1] + cum[hour] + m[hour] * (rest - hour * 3600.0)

    def operational(self, t: np.ndarray | float) -> np.ndarray:
        """Integral of the rate multiplier from the start to wall time `t` (seconds)."""
        start = self.start_hour * 3600.0
        return self._absolute(np.asarray(t, float) + start) - self._absolute(np.asarray(start))

    def wall(self, op: np.ndarray | float) -> np.ndarray:
        """Inverse of `operational`: the earliest wall time reaching operational time `op`."""
        cum, m = self._cum(), np.asarray(self.shape, float)
        start = self.start_hour * 3600.0
        y = np.asarray(op, float) + self._absolute(np.asarray(start))
        days, rest = np.divmod(y, cum[-1])
        hour = np.clip(np.searchsorted(cum, rest, side="right") - 1, 0, 23)
        # a zero-rate hour has cum[h] == cum[h + 1]; side="right" never lands in one with rest > cum[h]
        within = np.divide(rest - cum[hour], m[hour], out=np.zeros_like(rest), where=m[hour] > 0)
        return days * 86400.0 + hour * 3600.0 + within - start


def gamma_params(rate: np.ndarray, cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gamma shape and scale of gaps with mean 1/rate and coefficient of variation cv (cv > 0)."""
    cv2 = np.asarray(cv, float) ** 2
    return 1.0 / cv2, cv2 / np.asarray(rate, float)


def first_arrivals(rate: np.ndarray, cv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """First arrival of each stationary (equilibrium) renewal process, in operational seconds.

    U * L with L length-biased: gamma(k + 1, theta) for a gamma(k, theta) gap, the period
    for a periodic one (U * period: a uniform random phase).
    """
    rate, cv = np.asarray(rate, float), np.asarray(cv, float)
    u = rng.random(len(rate))
    bursty = cv > 0
    length = 1.0 / rate
    if bursty.any():
        k, theta = gamma_params(rate[bursty], cv[bursty])
        length = length.copy()
        length[bursty] = rng.gamma(k + 1.0, theta)
    return u * length


def renewal_until(rate: float, cv: float, nxt: float, end: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Arrivals of one renewal process from `nxt` (its next arrival) up to `end`, and the first after."""
    mean = 1.0 / rate
    out = []
    while nxt < end:
        k = int((end - nxt) * rate * 1.2) + 16
        if cv == 0:
            gaps = np.full(k, mean)
        else:
            shape, scale = gamma_params(rate, cv)
            gaps = rng.gamma(float(shape), float(scale), size=k)
        times = nxt + np.concatenate([[0.0], np.cumsum(gaps)])
        inside = times[:-1][times[:-1] < end]
        out.append(inside)
        nxt = float(times[len(inside)])
    return (np.concatenate(out) if out else np.empty(0)), nxt


def chunk_length(rates: np.ndarray) -> float:
    """Operational seconds per chunk: about CHUNK_ARRIVALS expected arrivals, within [1 s, 1 h]."""
    return float(np.clip(CHUNK_ARRIVALS / max(float(np.sum(rates)), 1e-300), MIN_CHUNK_S, MAX_CHUNK_S))


def stream(rates: np.ndarray, cvs: np.ndarray, end_op: float,
           rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(operational times, function indices)` in time order, one chunk at a time, until `end_op`.

    Only the functions with an arrival due in a chunk are touched, so a population of rare
    functions costs little; memory holds one chunk. The chunk grid does not depend on
    `end_op`, so a shorter trace is a prefix of a longer one with the same seed.
    """
    rates, cvs = np.asarray(rates, float), np.asarray(cvs, float)
    nxt = first_arrivals(rates, cvs, rng)
    step = chunk_length(rates)
    a = 0.0
    while a < end_op:
        b = a + step
        parts, owners = [], []
        for i in np.flatnonzero(nxt < b).tolist():
            times, nxt[i] = renewal_until(float(rates[i]), float(cvs[i]), float(nxt[i]), b, rng)
            parts.append(times)
            owners.append(np.full(len(times), i, np.int64))
        if parts:
            tau = np.concatenate(parts)
            order = np.argsort(tau, kind="stable")
            yield tau[order], np.concatenate(owners)[order]
        a = b
