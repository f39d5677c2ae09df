"""The calibrated generator: seeded, lazy, and statistically like the real sample.

Tolerances: two-sample Kolmogorov-Smirnov tests must not reject at the 1% level (p > 0.01)
against the statistics measured from the real Azure Functions 2019 sample (recorded in
the calibration JSON as `measured_sample`). Rates and the diurnal shape are checked window
by window over many seeds in `test_traces_stationary.py`.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp
from test_traces_helpers import AF2019, need

from traces import open_trace
from traces.arrivals import first_arrivals, renewal_until
from traces.calibrate import iat_cv
from traces.population import draw_cvs, quantile_daily, rate_quantiles
from traces.synthetic import load_calibration

CAL = load_calibration()
ALPHA = 0.01


def test_same_seed_same_requests_other_seed_differs():
    a = list(open_trace("synthetic", seed=7))
    assert a == list(open_trace("synthetic", seed=7))
    assert a != list(open_trace("synthetic", seed=8))
    assert a[-1].arrival_s < 3600.0 and len({r.model for r in a}) >= 4


def test_default_load_gives_cold_and_warm_candidates():
    """Some deployments are hit at most a few times an hour (cold), some many times (warm)."""
    trace = open_trace("synthetic")
    counts = np.bincount([int(r.model.rsplit("fn", 1)[1]) for r in trace], minlength=8)
    assert counts.max() >= 60 and counts.min() <= 5


def test_daily_counts_span_orders_of_magnitude_and_match_sample():
    rng = np.random.default_rng(1)
    population = quantile_daily(CAL, rate_quantiles(CAL, "band", 5000, 1.0, 1e7, 5000, rng))
    assert np.percentile(population, 99) / np.percentile(population, 1) > 1e4
    sample = CAL["daily_invocations"]["measured_sample"]["value"]
    assert ks_2samp(population, sample).pvalue > ALPHA


def test_measured_sample_is_the_real_file():
    from traces.azure2019 import read_invocations
    totals = sorted(r.total for r in read_invocations(need(AF2019)))
    assert totals == CAL["daily_invocations"]["measured_sample"]["value"]


def test_inter_arrival_cv_matches_sample():
    """Generate days for functions with the sample's daily totals, measure CV as the sample was."""
    rng = np.random.default_rng(2)
    sample_totals = CAL["daily_invocations"]["measured_sample"]["value"]
    cvs_target = draw_cvs(CAL, np.array(["http"] * 300), rng)
    measured = []
    for i, cv in enumerate(cvs_target):
        rate = sample_totals[i % len(sample_totals)] / 86400.0
        start = first_arrivals(np.array([rate]), np.array([cv]), rng)[0]
        times, _ = renewal_until(rate, float(cv), start, 86400.0, rng)
        counts = np.bincount((times // 60).astype(int), minlength=1440)[:1440]
        value = iat_cv(counts, rng)
        if value is not None:
            measured.append(value)
    real = CAL["cv_lognormal"]["measured_sample"]["value"]
    assert ks_2samp(measured, real).pvalue > ALPHA


@pytest.mark.parametrize("mode", ["per_function", "shared"])
def test_mapping_modes_and_catalog(mode):
    trace = open_trace("synthetic", mode=mode, catalog="llama-2-7b,mistral-7b", functions=4)
    requests = list(trace)
    if mode == "shared":
        assert {r.model for r in requests} <= {"llama-2-7b", "mistral-7b"}
        assert {r.adapter for r in requests} <= {"fn0", "fn1", "fn2", "fn3"}
    else:
        assert all(r.model.endswith(r.function) and r.adapter == "" for r in requests)
    assert trace.details["mapping.mode"] == mode


def test_token_options():
    fixed = list(open_trace("synthetic", tokens="fixed:512,64"))
    assert {(r.prompt_tokens, r.output_tokens) for r in fixed} == {(512, 64)}
    code = [r.prompt_tokens for r in open_trace("synthetic", tokens="calibrated:code", duration_s=7200)]
    q = CAL["tokens"]["code"]["prompt_quantiles"]["value"]
    probs = CAL["quantile_probs"]
    assert abs(np.median(code) - q[probs.index(0.5)]) / q[probs.index(0.5)] < 0.25


def test_rate_scale_scales():
    base = len(list(open_trace("synthetic", duration_s=7200)))
    double = len(list(open_trace("synthetic", duration_s=7200, rate_scale=2.0)))
    assert 1.6 < double / base < 2.4


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), functions=st.integers(1, 12), duration=st.floats(1.0, 7200.0),
       start_hour=st.floats(0, 23.9), scale=st.floats(0.1, 5.0))
def test_any_options_give_a_valid_stream(seed, functions, duration, start_hour, scale):
    trace = open_trace("synthetic", seed=seed, functions=functions, duration_s=duration, start_hour=start_hour,
                       rate_scale=scale, tokens="fixed:8,4")
    requests = list(trace)
    assert [r.request_id for r in requests] == list(range(len(requests)))
    assert all(0 <= a.arrival_s <= b.arrival_s < duration for a, b in pairwise(requests))
    assert {r.model for r in requests} <= {f"llama-2-7b-fn{i}" for i in range(functions)}
