"""The calibrated population: trigger shares of functions and of invocations, the full spread
of daily rates, functions per application, each against the published ATC'20 number.

Sampled shares are compared with binomial standard errors of the sample itself (Z = 4.4, a
two-sided normal tail of 1e-5); the trigger mix is checked exactly by integration.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_traces_helpers import AF2019, need

from traces import open_trace
from traces.population import (
    U_GRID,
    app_sizes,
    invocation_cdf,
    periodic_probability,
    quantile_daily,
    rate_quantiles,
    trigger_model,
)
from traces.synthetic import load_calibration

CAL = load_calibration()
Z = 4.4
N = 400_000


def binomial_ok(share: float, target: float, n: int) -> bool:
    return abs(share - target) <= Z * np.sqrt(max(target * (1 - target), 1e-12) / n)


def test_trigger_mix_gives_both_published_columns_exactly():
    model = trigger_model(CAL)
    cum = invocation_cdf(CAL)
    i0 = float(np.interp(model.split, U_GRID, cum))
    fn_pub, inv_pub = CAL["trigger_shares"]["value"], CAL["trigger_invocation_shares"]["value"]
    for t, lo, hi in zip(model.names, model.low, model.high, strict=True):
        assert lo >= 0 and hi >= 0
        assert lo * model.split + hi * (1 - model.split) == pytest.approx(fn_pub[t] / sum(fn_pub.values()), abs=1e-9)
        assert lo * i0 + hi * (1 - i0) == pytest.approx(inv_pub[t] / sum(inv_pub.values()), abs=1e-9)


def test_sampled_trigger_shares_of_functions_and_periodic_share():
    rng = np.random.default_rng(11)
    model = trigger_model(CAL)
    trig = model.draw(rng.random(N), rng)
    fn_pub = CAL["trigger_shares"]["value"]
    for t in model.names:
        assert binomial_ok(float(np.mean(trig == t)), fn_pub[t] / sum(fn_pub.values()), N), t
    p_timer, p_other = periodic_probability(CAL)
    share = np.mean(np.where(trig == "timer", p_timer, p_other))
    assert share == pytest.approx(CAL["periodic_share"]["value"], abs=Z * np.sqrt(0.22 * 0.78 / N))


def test_sample_spans_the_full_published_spread():
    """draw=sample: the share of functions below each published quantile is that quantile's level."""
    u = rate_quantiles(CAL, "sample", N, 1.0, 1.0, N, np.random.default_rng(12))
    daily = quantile_daily(CAL, u)
    for p in (0.1, 0.5, 0.9, 0.99, 0.999):
        assert binomial_ok(float(np.mean(daily <= quantile_daily(CAL, np.array(p)))), p, N), p
    assert np.log10(daily.max() / daily.min()) > 7  # about 8 orders of magnitude, not the band's 2.8


@settings(max_examples=15, deadline=None)
@given(population=st.integers(50, 10**9), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_top_is_the_top_order_statistics(population, n, seed):
    n = min(n, population)
    u = rate_quantiles(CAL, "top", n, 1.0, 1.0, population, np.random.default_rng(seed))
    assert np.all(np.diff(u) <= 0) and np.all((u > 0) & (u < 1))


def test_top_matches_a_brute_force_population():
    """The largest of N uniforms: its mean is N / (N + 1), the 3rd largest (N - 2) / (N + 1)."""
    rng = np.random.default_rng(13)
    draws = np.array([rate_quantiles(CAL, "top", 3, 1.0, 1.0, 100, rng) for _ in range(20_000)])
    for k, col in enumerate(draws.T):
        se = col.std(ddof=1) / np.sqrt(len(col))
        assert abs(col.mean() - (100 - k) / 101) <= Z * se


def test_functions_per_application_follow_figure_1():
    sizes = app_sizes(CAL, np.random.default_rng(14), N)
    bins = CAL["functions_per_app"]["bins"]
    total = sum(b[2] for b in bins)
    for lo, hi, share in bins:
        assert binomial_ok(float(np.mean((sizes >= lo) & (sizes <= hi))), share / total, N), (lo, hi)
    assert np.mean(sizes <= 10) == pytest.approx(0.95, abs=0.005)  # the paper's 95% at most 10


def test_info_shows_generated_next_to_published(tmp_path):
    import contextlib
    import io

    from traces.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["info", "synthetic", "--json"]) == 0
    info = json.loads(buf.getvalue())
    for key in ("trigger_share_of_functions", "trigger_share_of_invocations", "daily_invocations_per_function",
                "functions_per_application", "periodic_share"):
        assert "(" in info[f"population.{key}"]
    assert "http 55." in info["population.trigger_share_of_functions"]


def test_run_triggers_and_apps_are_reported():
    trace = open_trace("synthetic", functions=12, draw="sample", seed=3)
    described = [trace.details[f"function.{i}"] for i in range(12)]
    assert all(" (app" in d for d in described) and trace.details["functions.apps"] >= 1
    assert "uniform sample" in trace.details["functions.how"]


def test_measured_samples_are_the_real_file():
    from traces.azure2019 import read_invocations
    rows = list(read_invocations(need(AF2019)))
    total = sum(r.total for r in rows)
    http = sum(r.total for r in rows if r.trigger == "http") / total
    assert CAL["trigger_invocation_shares"]["measured_sample"]["value"]["http"] == pytest.approx(http, abs=1e-6)
    apps: dict = {}
    for r in rows:
        apps[r.key[:-1]] = apps.get(r.key[:-1], 0) + 1
    assert sorted(apps.values()) == CAL["functions_per_app"]["measured_sample"]["value"]
