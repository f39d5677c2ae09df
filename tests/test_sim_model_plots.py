"""Per-model and per-request plots: the numbers they draw, by hand, and the files a run with
records writes (a TTFT panel in per_model.png, quality_over_time.png for a progressive plan)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim.metrics import RunMetrics
from sim.model_plots import below_full_quality, busiest_models, load_records, quality_by_time
from sim.records import RecordWriter, RequestRecord
from sim.report import write_results


def rec(label: str, i: int, model: str, arrival: float, ttft: float, tokens: int, quality: float, cold: bool,
        rejected: bool = False) -> RequestRecord:
    if rejected:
        return RequestRecord.rejection(policy=label, request_id=i, model=model, function="f", arrival_s=arrival,
                                       prompt_tokens=10, output_tokens=tokens, reason="full")
    return RequestRecord(label, i, model, "f", arrival, arrival + ttft, arrival + ttft + 1.0, ttft, 0.01, 10, tokens,
                         cold, ttft if cold else 0.0, 0, quality, False, "", 0, 0, 0)


RECORDS = [
    # bucket [0, 10): two served (10 tokens at 0.8, 30 at 1.0), one cold of two arrivals
    rec("prog", 0, "a", 1.0, 2.0, 10, 0.8, True),
    rec("prog", 1, "a", 5.0, 0.5, 30, 1.0, False),
    # bucket [10, 20): one rejected arrival, none served
    rec("prog", 2, "b", 12.0, 0.0, 5, 0.0, False, rejected=True),
    # another combination, which must not leak in
    rec("full", 0, "a", 1.0, 9.0, 10, 1.0, True),
]


def frame(records) -> pd.DataFrame:
    from sim.records import RECORD_FIELDS

    return pd.DataFrame([[getattr(r, f) for f in RECORD_FIELDS] for r in records], columns=list(RECORD_FIELDS))


def test_quality_by_time_by_hand():
    q, share = quality_by_time(frame(RECORDS), "prog", np.array([0.0, 10.0, 20.0, 30.0]))
    assert q[0] == pytest.approx((10 * 0.8 + 30 * 1.0) / 40)
    assert math.isnan(q[1]) and math.isnan(q[2])
    assert share[0] == 50.0 and share[1] == 0.0 and math.isnan(share[2])


def test_busiest_models_and_below_full_quality():
    models = [{"policy": "p", "model": "b", "requests": 5}, {"policy": "q", "model": "b", "requests": 5},
              {"policy": "p", "model": "a", "requests": 10}, {"policy": "p", "model": "c", "requests": 1}]
    assert busiest_models(models, 2) == ["a", "b"]  # a: 10, b: 5 + 5, tie by name
    assert below_full_quality([{"quality_mean": 1.0}, {"quality_mean": 0.97}, {"quality_mean": math.nan}]) == [1]


def test_a_run_with_records_draws_ttft_per_model_and_quality_over_time(tmp_path):
    parts, ms, rows = [], [], []
    for k, label in enumerate(("full", "prog")):
        path = tmp_path / f"{k:03d}.parquet"
        w = RecordWriter(path)
        m = RunMetrics(label, slo_ttft_s=5.0, writer=w)
        for r in RECORDS:
            if r.policy == label:
                m.on_request(r)
        w.close()
        parts.append(path)
        ms.append(m)
        rows.append(m.finish(30.0))
    assert len(load_records(parts)) == len(RECORDS)
    models = [{"policy": "full", "model": "a", "requests": 1, "cold": 1, "loads": 1, "wakes": 0},
              {"policy": "prog", "model": "a", "requests": 2, "cold": 1, "loads": 1, "wakes": 1},
              {"policy": "prog", "model": "b", "requests": 1, "cold": 0, "loads": 0, "wakes": 0}]
    with_records = write_results(tmp_path / "a", rows, ms, {"trace": "t"}, models, parts)
    without = write_results(tmp_path / "b", rows, ms, {"trace": "t"}, models)
    assert "quality_over_time" in with_records and "quality_over_time" not in without
    assert (tmp_path / "a" / "quality_over_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    # the TTFT panel makes the per-model figure a third taller
    h_with = imread(with_records["per_model"]).shape[0]
    h_without = imread(without["per_model"]).shape[0]
    assert h_with > 1.3 * h_without
    # every plot is in the page: five with records, four without
    assert (tmp_path / "a" / "report.html").read_text().count("data:image/png;base64,") == 5
    assert (tmp_path / "b" / "report.html").read_text().count("data:image/png;base64,") == 4
