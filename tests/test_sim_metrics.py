"""RunMetrics: hand-computed oracles for counts, SLO, quality, memory integral, timeline."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics import GB, SUMMARY_KEYS, MemoryTimeline, RunMetrics
from sim.records import RecordWriter, RequestRecord


def rec(ttft: float, *, out: int = 10, quality: float = 1.0, cold: bool = False,
        wait: float = 0.0, tpot: float = 0.02, policy: str = "p") -> RequestRecord:
    return RequestRecord(
        policy, 0, "m", "f", 0.0, ttft, ttft + tpot * out, ttft, tpot, 5, out, cold, wait,
        1, quality, False, "", 0, 0, 0,
    )


def rejected(cold: bool = False) -> RequestRecord:
    return RequestRecord.rejection(
        policy="p", request_id=1, model="m", function="f", arrival_s=0.0,
        prompt_tokens=5, output_tokens=10, reason="shed", cold=cold,
    )


def test_keys_and_order():
    m = RunMetrics("full+none", 1.0)
    m.on_bytes("ssd", 2e9)
    m.on_bytes("network", 1e9)
    m.on_bytes("pcie", 3e9)
    m.on_bytes("pcie", 1.5e9)
    m.on_bytes("nvlink", 1e9)
    row = m.finish(10.0)
    # every run has the same link columns (zero where nothing moved), then any other kind seen
    assert list(row) == [*SUMMARY_KEYS, "gb_network", "gb_pcie", "gb_pcie_d2h", "gb_ssd", "gb_nvlink"]
    assert row["gb_pcie_d2h"] == 0.0 and row["gb_nvlink"] == 1.0
    assert row["horizon_s"] == 10.0 and row["fidelity"] == "request"
    assert row["gb_pcie"] == 4.5 and row["gb_network"] == 1.0 and row["gb_ssd"] == 2.0
    assert row["policy"] == "full+none" and row["requests"] == 0
    assert math.isnan(row["ttft_p50_s"]) and math.isnan(row["quality_mean"])


def test_slo_boundary_counts_and_rejections():
    m = RunMetrics("p", slo_ttft_s=2.0)
    m.on_request(rec(2.0))                 # exactly at the SLO: met
    m.on_request(rec(math.nextafter(2.0, 3.0)))  # just above: missed
    m.on_request(rec(0.5, cold=True))      # met
    m.on_request(rejected(cold=True))      # rejected: missed
    row = m.finish(0.0)
    assert (row["requests"], row["served"], row["rejected"]) == (4, 3, 1)
    assert row["slo_attainment_pct"] == 50.0
    assert row["cold_start_pct"] == 50.0
    assert m.slo_met == 2


def test_quality_is_token_weighted_and_tpot_needs_two_tokens():
    m = RunMetrics("p", 1.0)
    m.on_request(rec(1.0, out=30, quality=0.9, wait=3.0, tpot=0.05))
    m.on_request(rec(1.0, out=10, quality=0.5, wait=1.0, tpot=0.05))
    m.on_request(rec(1.0, out=1, quality=1.0, tpot=99.0))  # one token: no TPOT
    m.on_request(rejected())                               # contributes nothing
    row = m.finish(0.0)
    assert row["quality_mean"] == pytest.approx((30 * 0.9 + 10 * 0.5 + 1.0) / 41)
    assert row["load_wait_mean_s"] == pytest.approx(4.0 / 3)
    assert m.tpot_sketch.count == 2
    assert row["tpot_p50_s"] == pytest.approx(0.05, rel=0.005)
    assert m.ttft_sketch.count == 3


def test_memory_integral_of_a_known_step_function():
    # used: 0 on [0,10), 20 GB on [10,3610), 5 GB on [3610,7210), 0 from 7210 to the end.
    # idle: 0, then 20 GB for 1800 s, then 5 GB until 7210.
    m = RunMetrics("p", 1.0)
    m.on_memory(10.0, 20 * GB, 0.0)
    m.on_memory(1810.0, 20 * GB, 20 * GB)
    m.on_memory(3610.0, 5 * GB, 5 * GB)
    m.on_memory(7210.0, 0.0, 0.0)
    row = m.finish(9000.0)
    assert row["gpu_mem_gb_hours"] == pytest.approx(20 + 5)
    assert row["gpu_idle_gb_hours"] == pytest.approx(20 * 0.5 + 5)
    ts, gb = m.memory_timeline
    assert ts.tolist() == [10.0, 1810.0, 3610.0, 7210.0, 9000.0]
    assert gb.tolist() == [20.0, 20.0, 5.0, 0.0, 0.0]


def test_memory_held_until_finish_is_counted():
    m = RunMetrics("p", 1.0)
    m.on_memory(0.0, 13.5 * GB, 13.5 * GB)
    assert m.finish(7200.0)["gpu_mem_gb_hours"] == pytest.approx(27.0)
    assert m.finish(7200.0)["gpu_mem_gb_hours"] == pytest.approx(27.0)  # idempotent
    with pytest.raises(ValueError, match="already finished"):
        m.finish(8000.0)


def test_time_going_backwards_is_an_error():
    m = RunMetrics("p", 1.0)
    m.on_memory(5.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="backwards"):
        m.on_memory(4.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="before"):
        m.finish(1.0)
    with pytest.raises(ValueError, match="slo"):
        RunMetrics("p", 0.0)


def test_percentiles_match_numpy_across_flush_boundaries():
    rng = np.random.default_rng(7)
    ttfts = rng.lognormal(0.0, 1.0, 10_000)  # more than two sketch flushes
    m = RunMetrics("p", 1.0)
    for t in ttfts:
        m.on_request(rec(float(t)))
    row = m.finish(0.0)
    for key, q in (("ttft_p50_s", 0.5), ("ttft_p90_s", 0.9), ("ttft_p99_s", 0.99)):
        assert row[key] == pytest.approx(np.quantile(ttfts, q), rel=0.005)
    assert row["slo_attainment_pct"] == pytest.approx(100.0 * np.mean(ttfts <= 1.0))


def test_records_are_streamed_to_a_shared_writer(tmp_path):
    path = tmp_path / "records.parquet"
    with RecordWriter(path, chunk_rows=3) as w:
        a, b = RunMetrics("a", 1.0, writer=w), RunMetrics("b", 1.0, writer=w)
        for _ in range(4):
            a.on_request(rec(0.5, policy="a"))
        b.on_request(rec(0.5, policy="b"))
        b.on_request(rejected())
    df = pq.read_table(path).to_pandas()
    assert len(df) == 6 and df["policy"].tolist() == ["a"] * 4 + ["b", "p"]


def test_timeline_is_bounded():
    m = RunMetrics("p", 1.0, timeline_points=50)
    for i in range(100_000):
        m.on_memory(float(i), float(i % 97) * GB, 0.0)
    ts, gb = m.memory_timeline
    assert ts.size <= 51
    assert gb.max() == 96.0


def _true_step(times: list[float], vals: list[float], at: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(np.asarray(times), at, side="right") - 1
    return np.asarray(vals)[idx]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 1e3)), min_size=1, max_size=400),
    st.integers(2, 40),
)
def test_timeline_is_an_upper_envelope(steps, max_points):
    """Drawn with where="post", the timeline is never below the true step function."""
    times = list(np.cumsum([dt for dt, _ in steps]))
    vals = [v for _, v in steps]
    tl = MemoryTimeline(max_points)
    for t, v in zip(times, vals, strict=True):
        tl.add(float(t), v)
    tl.close(times[-1] + 1.0)
    ts, vs = tl.points()
    assert ts.size <= max_points + 1
    assert np.all(np.diff(ts) >= 0) and ts[0] == times[0]
    assert vs.max() == max(vals)
    probe = np.unique(np.concatenate([times, ts]))
    # at equal times the last change is the one that holds
    env = _true_step(list(ts), list(vs), probe)
    truth = _true_step(times, vals, probe)
    assert np.all(env >= truth)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 50.0), st.floats(0.0, 100.0), st.floats(0.0, 1.0)),
                min_size=1, max_size=50))
def test_memory_integral_equals_sum_of_rectangles(steps):
    m = RunMetrics("p", 1.0)
    t, expect_used, expect_idle = 0.0, 0.0, 0.0
    prev_used = prev_idle = 0.0
    for dt, used, idle_frac in steps:
        t += dt
        expect_used += dt * prev_used
        expect_idle += dt * prev_idle
        prev_used, prev_idle = used * GB, used * idle_frac * GB
        m.on_memory(t, prev_used, prev_idle)
    expect_used += 10.0 * prev_used
    expect_idle += 10.0 * prev_idle
    row = m.finish(t + 10.0)
    assert row["gpu_mem_gb_hours"] == pytest.approx(expect_used / GB / 3600.0, rel=1e-9, abs=1e-12)
    assert row["gpu_idle_gb_hours"] == pytest.approx(expect_idle / GB / 3600.0, rel=1e-9, abs=1e-12)
    assert row["gpu_idle_gb_hours"] <= row["gpu_mem_gb_hours"] * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.0, 20.0)), min_size=1, max_size=200))
def test_every_request_is_served_or_rejected(ttfts):
    m = RunMetrics("p", 5.0)
    for t in ttfts:
        m.on_request(rejected() if t is None else rec(t))
    row = m.finish(0.0)
    assert row["served"] + row["rejected"] == row["requests"] == len(ttfts)
    met = sum(1 for t in ttfts if t is not None and t <= 5.0)
    assert row["slo_attainment_pct"] == pytest.approx(100.0 * met / len(ttfts))
