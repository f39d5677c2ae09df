"""validate's measurement of engines serving side by side (the profile's compute_slots)."""

from __future__ import annotations

import json

import pytest

from validate.report import sharing_lines
from validate.sharing import compute_slots, implied_slots, rows_from_times


def test_implied_slots_inverts_processor_sharing():
    # processor sharing with s slots: k steps of t seconds each take t * k / s when k > s
    for k, s in ((2, 1.0), (4, 2.0), (4, 2.5), (8, 3.0)):
        assert implied_slots(k, 1.0, 1.0 * k / s) == pytest.approx(s)
    assert implied_slots(4, 1.0, 1.0) == 4.0  # no slowdown: every engine at full speed
    assert implied_slots(4, 1.0, 0.8) == 4.0  # faster than alone is noise, not more slots
    assert implied_slots(4, 1.0, 9.0) == 1.0  # slower than serialised is not fewer than one slot
    assert implied_slots(3, 0.0, 1.0) == 1.0 and implied_slots(3, 1.0, 0.0) == 1.0


def test_rows_take_medians_per_part_and_compare_with_one_engine():
    times = {
        1: [(0.10, 0.020, 0.72), (0.12, 0.022, 0.80), (0.11, 0.021, 0.76)],
        2: [(0.20, 0.021, 0.90), (0.22, 0.023, 0.95), (0.90, 0.9, 9.0), (0.21, 0.022, 0.92)],
        4: [(0.44, 0.042, 1.52)] * 4,
    }
    rows = rows_from_times(times)
    assert [r.engines for r in rows] == [1, 2, 4]
    one, two, four = rows
    assert (one.prefill_s, one.decode_s_per_token, one.request_s) == (0.11, 0.021, 0.76)
    assert one.slots_prefill == one.slots_decode == one.slots_request == 1.0
    # medians of four: (0.21 + 0.22) / 2 prefill, 0.0225 decode, 0.935 request
    assert two.prefill_s == pytest.approx(0.215)
    assert two.slots_prefill == pytest.approx(2 * 0.11 / 0.215)
    assert two.slots_decode == pytest.approx(2 * 0.021 / 0.0225)
    assert four.slots_request == pytest.approx(4 * 0.76 / 1.52)
    assert compute_slots(rows) == four.slots_request == pytest.approx(2.0)


def test_rows_need_the_one_engine_reference():
    with pytest.raises(ValueError, match="one-engine"):
        rows_from_times({2: [(1.0, 1.0, 1.0)]})


def test_the_report_shows_each_count_and_the_figure_the_profile_takes():
    rows = rows_from_times({1: [(0.1, 0.02, 0.7)], 4: [(0.2, 0.04, 1.4)]})
    sh = {"rows": [r.__dict__ for r in rows], "compute_slots": compute_slots(rows), "prompt_tokens": 1024,
          "tokens": 32, "repeats": 3, "plan": "full", "note": ""}  # fmt: skip
    text = "\n".join(sharing_lines(sh))
    assert "compute_slots` = 2.00" in text and "| 4 | 0.2 | 0.04 | 1.40 | 2.00 | 2.00 | 2.00 |" in text
    assert sharing_lines({}) == []


def test_engines_measured_side_by_side_on_the_cpu(tmp_path):
    """The real engine, tiny and on the CPU: every count is served, and the slots stay in [1, k]."""
    pytest.importorskip("torch")
    from policies.plan import full_plan
    from progressive_serve.checkpoint import write_random_checkpoint
    from progressive_serve.testing import torch_threads
    from validate.coldstart import EngineSpec
    from validate.sharing import measure_sharing

    ckpt = write_random_checkpoint(tmp_path / "tiny", "tiny", seed=3, dtype="float32")
    spec = EngineSpec(ckpt, "cpu", "float32", False, 64)
    with torch_threads(1):
        out = measure_sharing(spec, full_plan(6), [1, 2, 3, 4, 5, 6, 7, 8], 6, (1, 2, 3), 2)
    json.dumps(out)  # it travels in measurements.json
    assert [r["engines"] for r in out["rows"]] == [1, 2, 3]
    for r in out["rows"]:
        assert r["prefill_s"] > 0 and r["decode_s_per_token"] > 0
    assert out["compute_slots"] == out["rows"][-1]["slots_request"]
    assert (out["prompt_tokens"], out["tokens"], out["repeats"], out["note"]) == (8, 6, 2, "")


class _OutOfMemory(RuntimeError):
    pass


def test_a_device_that_holds_fewer_engines_measures_what_it_holds(monkeypatch):
    """Out of memory building the third engine: two are measured, the note says so, and the
    engine that failed half-built is released; out of memory at the first is the error it is."""
    import validate.sharing as sharing

    built, released = [], []

    class Engine:
        def __init__(self):
            if len(built) == limit[0]:
                raise _OutOfMemory("CUDA out of memory. Tried to allocate 13.5 GiB")
            built.append(self)

        def start(self, background=False):
            return self

        def generate(self, prompt, n):
            from types import SimpleNamespace

            return SimpleNamespace(ttft_s=0.1, decode_s_per_token=0.01)

    limit = [2]
    monkeypatch.setattr(sharing, "make_engine", lambda spec, plan: Engine())
    monkeypatch.setattr(sharing, "release", released.append)
    from contracts.plan import full_plan

    out = sharing.measure_sharing(None, full_plan(2), [1, 2], 3, (1, 2, 4), 1)
    assert [r["engines"] for r in out["rows"]] == [1, 2] and "held 2 engine(s) of the 4" in out["note"]
    assert released == built  # both measured engines released, nothing else was built
    built.clear(), released.clear()
    limit[0] = 0
    with pytest.raises(_OutOfMemory):
        sharing.measure_sharing(None, full_plan(2), [1, 2], 3, (1, 2), 1)
