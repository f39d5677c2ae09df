"""Smoke tests: the default trace opens anywhere and replays identically."""

from itertools import pairwise

from traces import Trace, open_trace


def test_default_opens_and_replays(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    trace = open_trace()
    assert isinstance(trace, Trace)
    assert trace.synthetic and "calibrated synthetic" in trace.name
    first, second = list(trace), list(trace)
    assert first == second and len(first) > 50
    assert [r.request_id for r in first] == list(range(len(first)))
    assert all(a.arrival_s <= b.arrival_s for a, b in pairwise(first))
    assert first[-1].arrival_s < 3600.0
