"""The synthetic arrival processes are stationary: the expected count holds over any window.

Tolerances are derived from the samples themselves: over n independent seeds the mean of
(count - expected) must be within Z standard errors of 0, the standard error estimated
from the same n values; Z = 4.4 (a two-sided normal tail of 1e-5 per check, so a correct
generator fails a check about once in 100,000 runs). The same statistic is shown to
reject the old start (first arrival uniform within one mean gap), so the checks can fail.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from traces import open_trace
from traces.arrivals import DiurnalClock, first_arrivals, gamma_params, renewal_until
from traces.options import parse_options
from traces.synthetic import SyntheticOptions, expected_requests, synthetic_plan

Z = 4.4
KS_ALPHA = 1e-4


def within_noise(diffs: np.ndarray) -> tuple[bool, float, float]:
    """(mean within Z standard errors of 0, mean, standard error) of per-seed differences."""
    diffs = np.asarray(diffs, float)
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    return abs(diffs.mean()) <= Z * se, float(diffs.mean()), float(se)


def residual_life_cdf(x: np.ndarray, rate: float, cv: float) -> np.ndarray:
    """F_e(x) = (1/mean) * integral_0^x S(t) dt = x S(x) / mean + G_{k+1}(x) for gamma(k, theta) gaps."""
    k, theta = gamma_params(np.array(rate), np.array(cv))
    return x * stats.gamma.sf(x, k, scale=theta) * rate + stats.gamma.cdf(x, k + 1, scale=theta)


@settings(max_examples=20, deadline=None)
@given(cv=st.floats(0.1, 12.0), rate=st.floats(1e-4, 10.0), seed=st.integers(0, 2**32 - 1))
def test_first_arrival_has_the_residual_life_distribution(cv, rate, seed):
    rng = np.random.default_rng(seed)
    x = first_arrivals(np.full(4000, rate), np.full(4000, cv), rng)
    assert stats.kstest(x, lambda v: residual_life_cdf(v, rate, cv)).pvalue > KS_ALPHA


def test_periodic_first_arrival_is_a_uniform_phase():
    x = first_arrivals(np.full(4000, 0.5), np.zeros(4000), np.random.default_rng(3))
    assert stats.kstest(x, stats.uniform(0, 2.0).cdf).pvalue > KS_ALPHA


def hour_one_counts(first: str, n: int, seed: int) -> np.ndarray:
    """Counts in [0, 3600) of the issue's function (125 invocations a day, CV 4.12)."""
    rate, cv = 125 / 86400, 4.12
    rng = np.random.default_rng(seed)
    counts = np.empty(n)
    for s in range(n):
        start = first_arrivals(np.array([rate]), np.array([cv]), rng)[0] if first == "equilibrium" \
            else rng.random() / rate
        counts[s] = len(renewal_until(rate, cv, start, 3600.0, rng)[0])
    return counts - rate * 3600.0


def test_bursty_function_gets_its_target_in_hour_one():
    ok, mean, se = within_noise(hour_one_counts("equilibrium", 20_000, 1))
    assert ok, f"hour 1: {mean + 125 / 24:.3f} arrivals against {125 / 24:.3f} (se {se:.3f})"
    ok_old, mean_old, _ = within_noise(hour_one_counts("uniform within a mean gap", 20_000, 1))
    assert not ok_old and mean_old > 5  # the old start: about 12.2 against 5.2


WINDOWS = [(0.0, 60.0), (0.0, 600.0), (1500.0, 2100.0), (3000.0, 3600.0), (0.0, 3600.0)]


def window_diffs(n: int, **options) -> dict[tuple[float, float], np.ndarray]:
    """Per seed: arrivals in each window minus the trace's own expected count there."""
    opts = parse_options(SyntheticOptions, options, "synthetic")
    out = {w: np.empty(n) for w in WINDOWS}
    for seed in range(n):
        t = np.array([r.arrival_s for r in open_trace("synthetic", seed=seed, tokens="fixed:8,4", **options)])
        plan = synthetic_plan(opts, seed)[0]
        for a, b in WINDOWS:
            expected = expected_requests(plan.functions, 1.0, plan.clock, a, b)
            out[(a, b)][seed] = np.count_nonzero((t >= a) & (t < b)) - expected
    return out


@pytest.mark.parametrize("options", [{}, {"start_hour": 13.5}, {"diurnal": "false", "functions": 3}])
def test_expected_count_holds_in_every_window(options):
    for window, diffs in window_diffs(400, **options).items():
        ok, mean, se = within_noise(diffs)
        assert ok, f"window {window}: mean excess {mean:.3f} arrivals, standard error {se:.3f}"


def test_diurnal_shape_comes_back_in_quiet_and_busy_hours():
    """One-day traces: arrivals in 00:00-04:00 (the trough) and 12:00-16:00 (the peak) match the
    calibrated shape, and the peak is busier than the trough."""
    opts = {"functions": 4, "min_daily": 2000, "max_daily": 4000, "duration_s": 86400.0}
    diffs: dict[tuple[float, float], list[float]] = {(0.0, 14400.0): [], (43200.0, 57600.0): []}
    counts = {w: 0 for w in diffs}
    parsed = parse_options(SyntheticOptions, {k: v for k, v in opts.items() if k != "duration_s"}, "synthetic")
    for seed in range(60):
        t = np.array([r.arrival_s for r in open_trace("synthetic", seed=seed, tokens="fixed:8,4", **opts)])
        plan = synthetic_plan(parsed, seed)[0]
        for a, b in diffs:
            counts[(a, b)] += np.count_nonzero((t >= a) & (t < b))
            diffs[(a, b)].append(np.count_nonzero((t >= a) & (t < b)) -
                                 expected_requests(plan.functions, 1.0, plan.clock, a, b))
    for window, d in diffs.items():
        ok, mean, se = within_noise(np.array(d))
        assert ok, f"window {window}: mean excess {mean:.1f} (standard error {se:.1f})"
    assert counts[(43200.0, 57600.0)] > counts[(0.0, 14400.0)]


def test_default_hour_total_matches_expected_requests():
    """The issue's check: before the fix, 200 seeds gave 91,779 requests against 67,129 expected."""
    diffs = []
    for seed in range(200):
        trace = open_trace("synthetic", seed=seed, tokens="fixed:8,4")
        diffs.append(sum(1 for _ in trace) - trace.details["expected_requests"])
    ok, mean, se = within_noise(np.array(diffs))
    assert ok, f"mean excess {mean:.2f} requests per hour (standard error {se:.2f})"


@settings(max_examples=30, deadline=None)
@given(start=st.floats(0, 47.9), t=st.lists(st.floats(0, 3 * 86400.0), min_size=1, max_size=20),
       shape=st.lists(st.floats(0, 3.0), min_size=24, max_size=24).filter(lambda s: sum(s) > 0.1))
def test_clock_is_exact_and_invertible(start, t, shape):
    clock = DiurnalClock(tuple(shape), start)
    op = clock.operational(np.array(t))
    assert np.all(np.diff(clock.operational(np.sort(t))) >= -1e-6)
    assert np.allclose(clock.operational(clock.wall(op)), op, rtol=1e-9, atol=1e-6)
    day = clock.operational(np.array([86400.0]))[0]
    assert day == pytest.approx(3600.0 * sum(shape), rel=1e-9)


def test_shorter_trace_is_a_prefix_of_a_longer_one():
    short = list(open_trace("synthetic", seed=4, duration_s=600))
    long = list(open_trace("synthetic", seed=4, duration_s=1800))
    assert short == long[:len(short)] and long[len(short)].arrival_s >= 600


def peak_bytes(duration: float) -> tuple[int, int]:
    tracemalloc.start()
    n = 0
    for _ in open_trace("synthetic", duration_s=duration, functions=2000, min_daily=1 / 14, max_daily=1e7,
                        tokens="fixed:8,4", seed=2):
        n += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, peak


def test_memory_is_flat_in_the_number_of_requests():
    n_short, short = peak_bytes(60.0)
    n_long, long = peak_bytes(600.0)
    assert n_long > 8 * n_short
    assert long < 1.5 * short + 2**20, f"{n_short} requests: {short / 2**20:.1f} MiB; {n_long}: {long / 2**20:.1f}"
