"""Init overlapped with the load: the measured saving beside the simulator's min(init, load)."""

from __future__ import annotations

import pytest

from validate.init_overlap import init_overlap
from validate.report import init_overlap_lines
from validate.results import ColdStart


def _timings(*, overlapped: bool, alloc=0.5, kv=0.2, capture=0.8, serve_ready=3.0, init_done=None) -> dict:
    return {"alloc_s": alloc, "kv_alloc_s": kv, "capture_s": capture, "stage_ready_s": [serve_ready, 4.0, 5.0],
            "serve_ready_s": serve_ready, "init_overlapped": overlapped, "init_done_s": init_done}  # fmt: skip


def _cold(plan: str, ttft: float) -> ColdStart:
    return ColdStart(plan, ttft, 0, 24, float("nan"))


def test_init_bound_the_simulator_saves_init_and_the_profile_counts_the_weights_as_init():
    o = init_overlap(_cold("progressive", 5.0), _timings(overlapped=False),
                     _cold("progressive+overlap", 4.1), _timings(overlapped=True, init_done=1.1))  # fmt: skip
    assert o.measured_saving_s == pytest.approx(0.9)
    assert o.init_s == pytest.approx(1.0) and o.load_to_serving_s == 3.0 and o.init_done_s == 1.1
    # the load (3 s) is longer than either init: the whole init is saved
    assert o.predicted_engine_saving_s == pytest.approx(1.0)  # KV 0.2 + capture 0.8
    assert o.predicted_saving_s == pytest.approx(1.5)  # the profile's kv_cache_alloc_s holds the 0.5 s too


def test_load_bound_the_simulator_saves_the_load():
    o = init_overlap(_cold("p", 2.0), _timings(overlapped=False, serve_ready=0.3),
                     _cold("p+overlap", 1.75), _timings(overlapped=True))  # fmt: skip
    assert o.predicted_saving_s == o.predicted_engine_saving_s == pytest.approx(0.3)
    assert o.measured_saving_s == pytest.approx(0.25)


def test_rows_in_the_wrong_order_or_without_a_serving_stage_are_refused():
    base, ovl = _timings(overlapped=False), _timings(overlapped=True)
    with pytest.raises(ValueError, match="must initialise before loading"):
        init_overlap(_cold("a", 1.0), ovl, _cold("b", 1.0), base)
    with pytest.raises(ValueError, match="no time to its serving stage"):
        init_overlap(_cold("a", 1.0), {**base, "serve_ready_s": None}, _cold("b", 1.0), ovl)


def test_the_report_shows_measured_and_predicted_side_by_side():
    o = init_overlap(_cold("progressive", 5.0), _timings(overlapped=False),
                     _cold("progressive+overlap", 4.1), _timings(overlapped=True, init_done=1.1))  # fmt: skip
    lines = init_overlap_lines(o.to_dict())
    assert lines[0] == "## Init overlapped with the load (progressive)"
    row = next(line for line in lines if line.startswith("| 5.00"))
    assert row.split(" | ")[2:4] == ["0.9", "1.00"] and "| 1.50 | 1.00 |" in row
    assert init_overlap_lines({}) == []
