"""The platform catalogue: functions grouped by application onto N models, by popularity rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traces import open_trace
from traces.catalog import CatalogOptions, build_catalogue, skew
from traces.errors import TraceError
from traces.synthetic import synthetic_plan

REPO = Path(__file__).resolve().parents[1]


def test_applications_are_dealt_by_rank_hand_computed():
    # application rates: a0 = 5 + 5 = 10, a1 = 8, a2 = 1, a3 = 3 -> ranks a0, a1, a3, a2
    cat = build_catalogue(np.array([0, 0, 1, 2, 3]), np.array([5.0, 5.0, 8.0, 1.0, 3.0]), 2, ("b",), "per_function")
    assert cat.entry_of_app == {0: 0, 1: 1, 3: 0, 2: 1}
    assert cat.daily.tolist() == [13.0, 9.0]
    assert cat.apps_per_entry.tolist() == [2, 2]
    assert cat.targets == [("b-m0", ""), ("b-m1", "")]


def test_shared_mode_bases_round_robin_and_ties_by_app_id():
    cat = build_catalogue(np.array([7, 3, 5]), np.array([1.0, 1.0, 1.0]), 3, ("x", "y"), "shared")
    assert cat.entry_of_app == {3: 0, 5: 1, 7: 2}  # equal rates: lower application id first
    assert cat.targets == [("x", "m0"), ("y", "m1"), ("x", "m2")]


def test_fewer_applications_than_entries_use_fewer_entries():
    cat = build_catalogue(np.array([0, 1, 1]), np.array([1.0, 2.0, 2.0]), 10, ("b",), "per_function")
    assert len(cat.targets) == 2 and cat.entry_of_app == {1: 0, 0: 1}
    with pytest.raises(ValueError, match="at least 1"):
        build_catalogue(np.array([0]), np.array([1.0]), 0, ("b",), "per_function")


def test_entries_keep_the_applications_rank_order_on_a_generated_population():
    plan, _, _ = synthetic_plan(CatalogOptions(functions=3000, draw="sample"), seed=3)
    apps = np.array([f.app for f in plan.functions])
    daily = np.array([f.daily for f in plan.functions])
    cat = build_catalogue(apps, daily, 50, ("b",), "per_function")
    assert np.all(np.diff(cat.daily) <= 1e-9 * cat.daily[0])  # entry k is at least as busy as entry k+1
    assert cat.daily.sum() == pytest.approx(daily.sum())
    assert cat.apps_per_entry.sum() == len(np.unique(apps))


def test_skew_of_an_exact_zipf_and_of_hand_shares():
    ranks = np.arange(1, 1001)
    for s in (0.6, 1.0, 1.5):
        assert skew(1.0 / ranks**s).zipf_s == pytest.approx(s, abs=1e-9)
    rates = np.array([46.0, 18.0] + [2.0] * 18)  # 20 items, total 100: busiest 1% is 1 item, 10% is 2 items
    got = skew(rates[::-1])
    assert got.items == 20 and got.top1_share == pytest.approx(0.46) and got.top10_share == pytest.approx(0.64)
    with pytest.raises(ValueError):
        skew(np.zeros(3))


def test_trace_option_maps_every_application_to_one_entry_and_keeps_the_arrivals():
    opts = {"functions": 400, "draw": "sample", "rate_scale": 0.05}
    plain = list(open_trace("azure_functions", duration_s=900, seed=5, **opts))
    mapped_trace = open_trace("azure_functions", duration_s=900, seed=5, catalog_size=12, catalog="llama-3.1-8b",
                              **opts)
    mapped = list(mapped_trace)
    assert len(mapped) == len(plain) > 100
    assert [(r.arrival_s, r.function, r.prompt_tokens) for r in mapped] == \
        [(r.arrival_s, r.function, r.prompt_tokens) for r in plain]
    plan, _, _ = synthetic_plan(CatalogOptions(**opts), seed=5)
    model_of_app: dict[int, str] = {}
    for r in mapped:
        app = plan.functions[int(r.function[2:])].app
        assert model_of_app.setdefault(app, r.model) == r.model  # one model per application
    assert len(set(model_of_app.values())) <= 12
    assert all(m.startswith("llama-3.1-8b-m") for m in model_of_app.values())
    assert mapped_trace.details["catalog.entries_used"] == 12
    assert "function.40" not in mapped_trace.details  # 400 functions are not listed one by one


def test_bad_catalog_size_is_a_one_line_error_naming_the_option():
    with pytest.raises(TraceError, match="option catalog_size"):
        open_trace("azure_functions", catalog_size=-1)
    with pytest.raises(TraceError, match="catalog_size"):  # listed among the valid options
        open_trace("synthetic", catalogue=3)


def test_simulator_runs_the_catalogue_from_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "sim", "--trace", "azure_functions", "--trace-option", "functions=300",
         "--trace-option", "draw=sample", "--trace-option", "rate_scale=0.05", "--trace-option", "catalog_size=8",
         "--trace-option", "catalog=llama-3.1-8b", "--profile", "h100-llama3.1-8b-published", "--duration", "600",
         "--staging", "full", "--keepalive", "fixed", "--unknown-models", "error", "--quiet",
         "--out", str(tmp_path / "run"), "--no-records"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    models = pd.read_csv(tmp_path / "run" / "models.csv")["model"]
    assert 1 < models.nunique() <= 8 and models.str.startswith("llama-3.1-8b-m").all()
