"""Arrival-order restoration and request-level details (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traces.requests_trace as requests_trace
from traces import TraceError, open_trace
from traces.errors import Issues
from traces.llm import parse_timestamp
from traces.ordering import in_arrival_order


@settings(max_examples=100, deadline=None)
@given(base=st.lists(st.floats(0, 1e5, allow_nan=False), max_size=60),
       jitter=st.lists(st.floats(0, 5.0, allow_nan=False), max_size=60))
def test_bounded_disorder_is_fully_restored(base, jitter):
    """Rows displaced by at most the window come out sorted and none is lost."""
    times = sorted(base)
    rows = [(t + (jitter[i] if i < len(jitter) else 0.0), i + 2, i) for i, t in enumerate(times)]
    rows.sort(key=lambda r: r[0] - (jitter[r[2]] if r[2] < len(jitter) else 0.0))  # file order: by base time
    out = list(in_arrival_order(rows, 5.0, "f.csv", Issues()))
    assert [t for t, _ in out] == sorted(r[0] for r in rows)
    assert sorted(p for _, p in out) == list(range(len(rows)))


@settings(max_examples=100, deadline=None)
@given(times=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=40))
def test_any_disorder_is_sorted_or_reported(times):
    """Arbitrary order: strict gives sorted output or a located error; lenient counts the rest."""
    rows = [(t, i + 2, i) for i, t in enumerate(times)]
    try:
        out = [t for t, _ in in_arrival_order(rows, 1.0, "f.csv", Issues())]
        assert out == sorted(times)
    except TraceError as exc:
        assert "f.csv:" in str(exc) and "out of order" in str(exc)
    issues = Issues(lenient=True)
    out = [t for t, _ in in_arrival_order(rows, 1.0, "f.csv", issues)]
    assert out == sorted(out) and len(out) + issues.total_skipped == len(times)


def test_timestamps_2023_and_2024_formats():
    assert parse_timestamp("1970-01-01 00:00:01.5000000") == 1.5
    assert parse_timestamp("1970-01-02 00:00:00.000000+00:00") == 86400.0
    assert parse_timestamp("1970-01-01 02:00:00+01:00") == 3600.0
    assert parse_timestamp("1970-01-01T00:00:10Z") == 10.0
    with pytest.raises(ValueError):
        parse_timestamp("1970-01-01 25:00:00")


def test_azure_llm_2024_by_name_and_lenient_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "AzureLLMInferenceTrace_code_1week.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.008370+00:00,100,10\n"
        "2024-05-10 00:00:01.500000+00:00,200,0\n"
        "2024-05-10 00:00:02.000000+00:00,oops,5\n"
        "2024-05-10 00:00:03.000000+00:00,300,30\n")
    (tmp_path / "AzureLLMInferenceTrace_conv_1week.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.500000+00:00,50,5\n")
    with pytest.raises(TraceError, match="_code_1week.csv:4: field 'ContextTokens'"):
        open_trace("azure_llm_2024", trace_dir=str(tmp_path))
    monkeypatch.setattr(requests_trace, "COUNT_AT_OPEN_BYTES", 0)  # as for a big file: count during the run
    trace = open_trace("azure_llm_2024", trace_dir=str(tmp_path), lenient=True)
    assert trace.details["rows_read"] == "counted after the first full pass"
    got = [(round(r.arrival_s, 6), r.model) for r in trace]
    assert got == [(0.0, "llama-2-7b-code"), (0.49163, "llama-2-7b-conv"), (2.99163, "llama-2-7b-code")]
    assert trace.details["rows_read"] == 4 and trace.details["failures_dropped"] == 1
    assert trace.details["rows_skipped"] == 1 and trace.details["rows_skipped.non_numeric"] == 1
