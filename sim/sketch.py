"""A streaming, mergeable quantile sketch with a relative-error guarantee (DDSketch-style).

Why a sketch: the summary's TTFT/TPOT percentiles must not require keeping every request's
latency (memory must stay flat for day-long traces), and per-policy or per-shard sketches
must merge exactly.

Estimator. With `gamma = (1 + alpha) / (1 - alpha)`, a value `x != 0` goes to bucket
`i = ceil(log(|x|) / log(gamma))`, which covers `(gamma**(i-1), gamma**i]`; positive and
negative values have separate bucket stores and zeros an exact counter. A bucket is
represented by `2 * gamma**i / (gamma + 1)`, which is within a relative `alpha` of every
value in it. `quantile(q)` uses numpy's default ("linear") definition: with `n` values
sorted as `x_0 <= ... <= x_{n-1}` and `r = q * (n - 1)`, the true quantile is
`x_lo + (r - lo) * (x_hi - x_lo)` with `lo = floor(r)`, `hi = ceil(r)`. The sketch finds the
buckets holding ranks `lo` and `hi` and interpolates their representatives the same way.

Bound. Each order-statistic estimate `e_k` satisfies `|e_k - x_k| <= alpha * |x_k|`, so
`|estimate - true| <= alpha * ((1 - f) * |x_lo| + f * |x_hi|)` with `f = r - lo`; when
`x_lo` and `x_hi` do not have opposite signs (always, for latencies) this is
`|estimate - true| <= alpha * |true|`. Ranks 0 and n-1 are the exact min and max, and
estimates are clamped to `[min, max]`, which can only move them closer. The bound holds for
magnitudes between about `1e-300` and `1e300` (where `gamma**i` is representable).

Cost. Memory is one counter per occupied bucket in a dense range, i.e. bounded by
`log(max/min) / log(gamma)` (about 1,400 counters for 1 ms .. 1000 s at alpha=0.005),
independent of the number of values. Everything is exact integer counting plus a
deterministic function of the inputs, so identical inputs give identical results; a
merged sketch equals the sketch of the concatenated inputs.
"""

from __future__ import annotations

import math

import numpy as np

_PENDING_MAX = 1024  # scalar add() values buffered before a vectorised flush


class _Store:
    """Dense bucket counters for one sign: `counts[j]` counts bucket index `offset + j`."""

    __slots__ = ("offset", "counts")

    def __init__(self) -> None:
        self.offset = 0
        self.counts = np.zeros(0, dtype=np.int64)

    def add_indices(self, idx: np.ndarray) -> None:
        if idx.size == 0:
            return
        lo, hi = int(idx.min()), int(idx.max())
        self._cover(lo, hi)
        binned = np.bincount(idx - lo, minlength=hi - lo + 1)
        start = lo - self.offset
        self.counts[start : start + binned.size] += binned

    def add_store(self, other: _Store) -> None:
        if other.counts.size == 0:
            return
        self._cover(other.offset, other.offset + other.counts.size - 1)
        start = other.offset - self.offset
        self.counts[start : start + other.counts.size] += other.counts

    def _cover(self, lo: int, hi: int) -> None:
        """Grow the dense range so that bucket indices lo..hi exist."""
        if self.counts.size == 0:
            self.offset = lo
            self.counts = np.zeros(hi - lo + 1, dtype=np.int64)
            return
        cur_hi = self.offset + self.counts.size - 1
        new_lo, new_hi = min(lo, self.offset), max(hi, cur_hi)
        if new_lo == self.offset and new_hi == cur_hi:
            return
        grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        start = self.offset - new_lo
        grown[start : start + self.counts.size] = self.counts
        self.offset, self.counts = new_lo, grown

    def occupied(self) -> tuple[np.ndarray, np.ndarray]:
        """(bucket indices, counts) of the non-empty buckets, ascending by index."""
        nz = np.flatnonzero(self.counts)
        return nz + self.offset, self.counts[nz]


class QuantileSketch:
    """Streaming quantiles within a relative error `alpha` (see the module docstring)."""

    __slots__ = ("alpha", "_gamma", "_log_gamma", "_pos", "_neg", "_zeros", "_n", "_min", "_max", "_pending")

    def __init__(self, alpha: float = 0.005) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = float(alpha)
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._pos = _Store()
        self._neg = _Store()
        self._zeros = 0
        self._n = 0
        self._min = math.inf
        self._max = -math.inf
        self._pending: list[float] = []

    # -- adding ---------------------------------------------------------------------------
    def add(self, x: float) -> None:
        """Add one value. Buffered: the bucket arithmetic runs vectorised per 1024 values."""
        if not math.isfinite(x):
            raise ValueError(f"QuantileSketch.add: value must be finite, got {x}")
        pending = self._pending
        pending.append(x)
        if len(pending) >= _PENDING_MAX:
            self._flush()

    def add_many(self, values: np.ndarray | list[float]) -> None:
        """Add an array of values (the fast path)."""
        self._flush()
        self._add_array(np.asarray(values, dtype=np.float64).ravel())

    def _flush(self) -> None:
        if self._pending:
            values = np.asarray(self._pending, dtype=np.float64)
            self._pending = []
            self._add_array(values)

    def _add_array(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError("QuantileSketch.add_many: values must be finite (no NaN or inf)")
        self._n += int(x.size)
        self._min = min(self._min, float(x.min()))
        self._max = max(self._max, float(x.max()))
        pos = x[x > 0.0]
        neg = x[x < 0.0]
        self._zeros += int(x.size - pos.size - neg.size)
        self._pos.add_indices(self._index(pos))
        self._neg.add_indices(self._index(-neg))

    def _index(self, magnitudes: np.ndarray) -> np.ndarray:
        return np.ceil(np.log(magnitudes) / self._log_gamma).astype(np.int64)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Fold `other` into this sketch (same alpha required); returns self."""
        if other.alpha != self.alpha:
            raise ValueError(f"cannot merge sketches with alpha {self.alpha} and {other.alpha}")
        self._flush()
        other._flush()
        self._pos.add_store(other._pos)
        self._neg.add_store(other._neg)
        self._zeros += other._zeros
        self._n += other._n
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        return self

    # -- reading --------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self._n + len(self._pending)

    @property
    def min(self) -> float:
        self._flush()
        return self._min if self._n else math.nan

    @property
    def max(self) -> float:
        self._flush()
        return self._max if self._n else math.nan

    def quantile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1), numpy 'linear' definition; NaN when empty."""
        return float(self.quantiles(np.array([q], dtype=np.float64))[0])

    def quantiles(self, qs: np.ndarray | list[float]) -> np.ndarray:
        """Vectorised `quantile` for an array of q values."""
        qs = np.asarray(qs, dtype=np.float64)
        if ((qs < 0.0) | (qs > 1.0) | np.isnan(qs)).any():
            raise ValueError(f"quantiles must lie in [0, 1], got {qs}")
        self._flush()
        if self._n == 0:
            return np.full(qs.shape, math.nan)
        values, cum = self._ordered()
        rank = qs * (self._n - 1)
        lo = np.floor(rank)
        hi = np.ceil(rank)
        frac = rank - lo
        e_lo = self._at_ranks(values, cum, lo)
        e_hi = self._at_ranks(values, cum, hi)
        est = e_lo + frac * (e_hi - e_lo)
        return np.clip(est, self._min, self._max)

    def _at_ranks(self, values: np.ndarray, cum: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """Order-statistic estimates; the first and last ranks are the exact min and max."""
        est = values[np.searchsorted(cum, ranks, side="right")]
        est[ranks == 0] = self._min
        est[ranks == self._n - 1] = self._max
        return est

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Representatives of all non-empty buckets in ascending value order, and the
        cumulative counts (so rank k lies in the first bucket whose cumulative count > k)."""
        scale = 2.0 / (self._gamma + 1.0)
        # Exponents are capped so that gamma**i stays finite; the clamp to [min, max] in
        # quantiles() handles anything beyond (see the bound's stated range).
        n_idx, n_cnt = self._neg.occupied()
        p_idx, p_cnt = self._pos.occupied()
        neg_vals = -scale * np.exp(np.minimum(n_idx[::-1] * self._log_gamma, 709.0))
        pos_vals = scale * np.exp(np.minimum(p_idx * self._log_gamma, 709.0))
        zero_vals = np.zeros(1 if self._zeros else 0)
        zero_cnt = np.full(zero_vals.size, self._zeros, dtype=np.int64)
        values = np.concatenate([neg_vals, zero_vals, pos_vals])
        counts = np.concatenate([n_cnt[::-1], zero_cnt, p_cnt])
        return values, np.cumsum(counts)

    def cdf_points(self, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """`n` points (x, P[X <= x]) of the estimated CDF for plotting: x are the quantiles
        at n evenly spaced probabilities from 0 to 1. Empty arrays when the sketch is empty."""
        if n < 2:
            raise ValueError(f"cdf_points needs n >= 2, got {n}")
        if self.count == 0:
            return np.zeros(0), np.zeros(0)
        probs = np.linspace(0.0, 1.0, n)
        return self.quantiles(probs), probs

    def __repr__(self) -> str:
        return f"QuantileSketch(alpha={self.alpha}, count={self.count})"
