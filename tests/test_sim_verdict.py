"""The ranking, the Pareto front and the verdict, on hand-computed cases; the printed summary
fits 120 columns."""

from __future__ import annotations

import math

import pytest

from sim.report import format_summary
from sim.verdict import instance_counts, pareto_flags, rank, ranked_rows, verdict


def row(label: str, slo: float, gbh: float, q: float = 1.0, p99: float = 10.0) -> dict:
    return {"policy": label, "requests": 100, "served": 100, "rejected": 0, "slo_attainment_pct": slo,
            "gpu_mem_gb_hours": gbh, "quality_mean": q, "ttft_p99_s": p99}


# The example: two_tier reaches fixed's SLO attainment with less than half the memory.
ROWS = [
    row("full + none", 40.0, 5.0),
    row("full + fixed", 91.7, 55.2),
    row("full + two_tier", 91.2, 23.8),
    row("progressive + two_tier", 91.7, 23.8, q=0.97),
    row("pipelined + none", 40.0, 5.0, p99=8.0),
]


def test_rank_order_slo_then_cost_then_quality_then_tail():
    order = [r.id for r in rank(ROWS)]
    # P4 and P2 tie on SLO; P4 is cheaper. P3 next on SLO. P5 and P1 tie on all three; P5's tail is lower.
    assert order == ["P4", "P2", "P3", "P5", "P1"]
    assert [r.rank for r in rank(ROWS)] == [1, 2, 3, 4, 5]


def test_pareto_front_by_hand():
    # P4 is cheaper than P2 at the same SLO but of lower quality: P2 stays on the front.
    # P1 and P5 tie exactly: neither dominates the other.
    assert pareto_flags(ROWS) == [True, True, True, True, True]
    rows = [row("a", 90.0, 10.0), row("b", 90.0, 12.0), row("c", 80.0, 10.0), row("d", 95.0, 30.0, q=0.9)]
    assert pareto_flags(rows) == [True, False, False, True]


def test_verdict_names_best_and_cheapest_within_one_point():
    v = verdict(ROWS)
    assert v is not None and v.best.id == "P4"
    # within 1 pp of 91.7: P2 (55.2), P3 (23.8, 91.2), P4 (23.8): the cheapest, ties by rank: P4
    assert v.cheapest.id == "P4"
    first, second = v.lines()
    assert first.startswith("best: P4 progressive + two_tier (SLO 91.7 % met, 23.80 GPU GB-h, quality 0.970)")
    assert "P4 itself" in second
    v2 = verdict([row("fixed", 92.0, 55.2), row("two_tier", 91.5, 23.8), row("none", 80.0, 1.0)])
    assert v2 is not None and (v2.best.id, v2.cheapest.id) == ("P1", "P2")
    assert "57 % fewer GPU GB-h than the best" in v2.lines()[1]
    v3 = verdict([row("fixed", 92.0, 55.2), row("two_tier", 91.5, 23.8)], tolerance_pp=0.25)
    assert v3 is not None and v3.cheapest.id == "P1"
    assert verdict([]) is None
    with pytest.raises(ValueError, match="tolerance_pp"):
        verdict(ROWS, tolerance_pp=-1)


def test_missing_values_rank_last():
    rows = [row("empty", math.nan, 0.0, q=math.nan), row("ok", 10.0, 100.0)]
    assert [r.id for r in rank(rows)] == ["P2", "P1"]
    assert pareto_flags(rows) == [True, True]  # P1 is cheaper: nothing beats it on cost


def test_ranked_rows_keep_run_order_and_labels():
    out = ranked_rows(ROWS)
    assert [r["policy"] for r in out] == [r["policy"] for r in ROWS]
    assert [(r["id"], r["rank"]) for r in out] == [("P1", 5), ("P2", 2), ("P3", 3), ("P4", 1), ("P5", 4)]
    assert all(r["pareto"] in (0, 1) for r in out)


def test_instance_counts_sum_models():
    models = [{"policy": "a", "model": "m1", "loads": 2, "wakes": 1}, {"policy": "a", "model": "m2", "loads": 1,
                                                                        "wakes": 0},
              {"policy": "b", "model": "m1", "loads": 0, "wakes": 4}]
    assert instance_counts(models) == {"a": {"loads": 3, "wakes": 1}, "b": {"loads": 0, "wakes": 4}}


def test_summary_fits_120_columns_and_lists_every_label():
    label = "progressive[fractions=0.75/0.875/1.0] + two_tier[gpu=120.0,dram=1800.0] + first_fit + expected_wait"
    rows = []
    for i in range(12):
        r = row(f"{label} #{i}", 100.0 * i / 11, 123456.78 / (i + 1), q=0.95 + 0.004 * i, p99=1234.5)
        r.update(rejected=1_000_000, cold_start_pct=100.0, ttft_p50_s=0.0123, gpu_idle_gb_hours=99999.99,
                 load_wait_mean_s=123.4)
        rows.append(r)
    models = [{"policy": r["policy"], "model": "m", "loads": 12345, "wakes": 67890} for r in rows]
    text = format_summary(rows, models)
    lines = text.splitlines()
    labels = [line for line in lines if line.startswith("P") and label in line]
    assert len(labels) == 12 and labels[0] == f"P1   {label} #0"
    others = [line for line in lines if line not in labels and not line.startswith(("best:", "cheapest"))]
    assert max(map(len, others)) <= 120, max(others, key=len)
    assert lines[-2].startswith("best: P12 ") and lines[-1].startswith("cheapest within 1 pp")
    table = lines[1:15]
    assert table[0].split()[:4] == ["#", "id", "pareto", "SLO"]
    assert table[2].split()[:3] == ["1", "P12", "yes"]
    assert "12345" in table[2] and "67890" in table[2]
