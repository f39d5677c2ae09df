"""QuantileSketch: the stated relative-error bound against numpy, merging, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.sketch import QuantileSketch

QS = np.array([0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0])

magnitudes = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
values = st.one_of(magnitudes, magnitudes.map(lambda x: -x), st.just(0.0))
arrays = st.lists(values, min_size=1, max_size=300)


def assert_within_bound(sketch: QuantileSketch, data: np.ndarray, qs: np.ndarray) -> None:
    """|estimate - true| <= alpha * ((1-f)|x_lo| + f|x_hi|), numpy 'linear' quantiles."""
    xs = np.sort(data)
    est = sketch.quantiles(qs)
    true = np.quantile(data, qs)
    rank = qs * (xs.size - 1)
    lo = np.floor(rank).astype(int)
    hi = np.ceil(rank).astype(int)
    f = rank - lo
    bound = sketch.alpha * ((1 - f) * np.abs(xs[lo]) + f * np.abs(xs[hi]))
    slack = 1e-12 * np.maximum(np.abs(xs[lo]), np.abs(xs[hi]))  # float rounding only
    assert np.all(np.abs(est - true) <= bound + slack), (est, true, bound)


@settings(max_examples=150, deadline=None)
@given(arrays, st.sampled_from([0.005, 0.01, 0.05]))
def test_quantiles_within_stated_bound(data, alpha):
    arr = np.array(data)
    s = QuantileSketch(alpha)
    s.add_many(arr)
    assert s.count == arr.size
    assert_within_bound(s, arr, QS)


@settings(max_examples=100, deadline=None)
@given(st.lists(magnitudes, min_size=1, max_size=300), st.floats(0.0, 1.0))
def test_positive_values_within_alpha_of_the_true_quantile(data, q):
    arr = np.array(data)
    s = QuantileSketch()
    s.add_many(arr)
    true = float(np.quantile(arr, q))
    assert abs(s.quantile(q) - true) <= 0.005 * true * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(arrays, arrays)
def test_merge_equals_sketch_of_concatenation(a, b):
    left, right, whole = QuantileSketch(), QuantileSketch(), QuantileSketch()
    left.add_many(a)
    right.add_many(b)
    whole.add_many(a + b)
    left.merge(right)
    assert left.count == whole.count
    assert np.array_equal(left.quantiles(QS), whole.quantiles(QS))
    assert np.array_equal(left.cdf_points(50)[0], whole.cdf_points(50)[0])


@settings(max_examples=40, deadline=None)
@given(st.lists(values, min_size=1, max_size=3000))
def test_scalar_adds_equal_add_many(data):
    one, many = QuantileSketch(), QuantileSketch()
    for x in data:
        one.add(x)
    many.add_many(np.array(data))
    assert one.count == many.count == len(data)
    assert np.array_equal(one.quantiles(QS), many.quantiles(QS))


def test_large_lognormal_sample_and_exact_extremes():
    rng = np.random.default_rng(42)
    data = rng.lognormal(0.0, 2.0, 200_000)
    s = QuantileSketch()
    s.add_many(data)
    assert_within_bound(s, data, np.linspace(0, 1, 201))
    assert s.quantile(0.0) == data.min() and s.quantile(1.0) == data.max()
    assert s.min == data.min() and s.max == data.max()


def test_memory_is_independent_of_count():
    rng = np.random.default_rng(0)
    s = QuantileSketch()
    s.add_many([1e-3, 1e3])
    buckets = s._pos.counts.size
    for _ in range(20):
        s.add_many(rng.uniform(1e-3, 1e3, 50_000))
    assert s._pos.counts.size == buckets
    # log(1e6)/log(gamma) buckets span the range, as the docstring states
    assert s._pos.counts.size <= math.ceil(math.log(1e6) / math.log(1.005 / 0.995)) + 2


def test_zeros_and_negatives_order():
    s = QuantileSketch()
    s.add_many([-10.0, -1.0, 0.0, 0.0, 1.0, 10.0])
    assert s.quantile(0.4) == 0.0 and s.quantile(0.6) == 0.0
    assert s.quantile(0.0) == -10.0 and s.quantile(1.0) == 10.0
    assert abs(s.quantile(0.2) - (-1.0)) <= 0.005


def test_hand_computed_bucket_representative():
    # 1.0 lies in bucket 0, which covers (1/gamma, 1]; its representative is 2/(gamma+1)
    # = 1 - alpha. With two values the clamp to [min, max] does not apply to the median.
    s = QuantileSketch(0.01)
    s.add_many([1.0, 1.0, 1.0, 100.0, 0.5])
    assert s.quantile(0.5) == pytest.approx(0.99, rel=1e-12)


def test_empty_and_invalid():
    s = QuantileSketch()
    assert math.isnan(s.quantile(0.5)) and s.count == 0 and math.isnan(s.min)
    assert s.cdf_points(10)[0].size == 0
    with pytest.raises(ValueError, match="finite"):
        s.add(math.nan)
    with pytest.raises(ValueError, match="finite"):
        s.add_many([1.0, math.inf])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.quantile(1.5)
    with pytest.raises(ValueError, match="alpha"):
        QuantileSketch(0.0)
    with pytest.raises(ValueError, match="merge"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


def test_cdf_points_are_monotone():
    rng = np.random.default_rng(3)
    s = QuantileSketch()
    s.add_many(rng.exponential(2.0, 10_000))
    xs, ps = s.cdf_points(100)
    assert xs.size == ps.size == 100
    assert np.all(np.diff(xs) >= 0) and ps[0] == 0.0 and ps[-1] == 1.0
