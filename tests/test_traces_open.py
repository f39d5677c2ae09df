"""`open_trace` names, search order, fallback, selection options and the details it reports."""

from __future__ import annotations

import pytest
from test_traces_helpers import AF2019, BURSTGPT, LLM_CODE, need, row_2019, write_2019

from traces import NAMES, TraceError, open_trace
from traces.locate import cache_dir, search_dirs


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    return tmp_path


def _day(folder, fn_name, n):
    folder.mkdir(parents=True, exist_ok=True)
    return write_2019(folder, [row_2019("o", "a", fn_name, "http", {0: n})])


def test_search_order_trace_dir_env_cache(clean_env, monkeypatch):
    tmp = clean_env
    _day(tmp / "cache" / "progressive-serve" / "traces" / "azure_functions_2019", "cache", 1)
    assert open_trace("azure_functions").details["invocations.in_files"] == 1
    _day(tmp / "env", "env", 2)
    monkeypatch.setenv("PROGRESSIVE_SERVE_TRACES", str(tmp / "env"))
    assert open_trace("azure_functions").details["invocations.in_files"] == 2
    _day(tmp / "dir" / "nested", "dir", 3)
    trace = open_trace("azure_functions", trace_dir=str(tmp / "dir"))
    assert trace.details["invocations.in_files"] == 3 and f"real: {tmp / 'dir'}" in trace.name
    assert search_dirs(tmp / "dir")[0] == tmp / "dir" and search_dirs()[-1] == cache_dir()


def test_fallback_names_the_folders_searched(clean_env):
    (clean_env / "empty").mkdir()
    with pytest.raises(TraceError, match="nowhere: trace dir does not exist"):
        open_trace("azure_functions", trace_dir=str(clean_env / "nowhere"))
    trace = open_trace("azure_functions", trace_dir=str(clean_env / "empty"), rate_scale=None)
    assert trace.synthetic
    assert trace.name.startswith("azure_functions (calibrated synthetic; no trace files found in")
    assert str(clean_env / "empty") in trace.name
    assert open_trace(None).synthetic
    trace = open_trace("azure_functions", select="top", days="all", functions=3)
    assert trace.details["options.ignored"].startswith("days=all, select=top")
    assert trace.details["functions.kept"] == 3
    with pytest.raises(TraceError, match="unknown option"):
        open_trace("azure_functions", bogus=1)


def test_named_trace_missing_is_a_clear_error(clean_env):
    with pytest.raises(TraceError, match="python -m traces download burstgpt"):
        open_trace("burstgpt")
    with pytest.raises(TraceError, match="unknown trace 'nope'.*azure_functions"):
        open_trace("nope")
    with pytest.raises(TraceError, match="no such file"):
        open_trace("/no/such/file.csv")


def test_all_names_resolve_with_shared_samples(clean_env):
    shared = need(AF2019).parents[1]
    for name in ("azure_functions", "azure_functions_2019", "azure_llm_2023", "azure_llm_code", "azure_llm_conv",
                 "burstgpt", "synthetic"):
        trace = open_trace(name, trace_dir=str(shared), duration_s=600)
        assert trace.name and isinstance(trace.details, dict)
        assert all(isinstance(k, str) and isinstance(v, str | int | float) for k, v in trace.details.items())
        assert next(iter(trace)).request_id == 0
    assert set(NAMES) >= {"azure_functions_2021", "azure_llm_2024"}


def test_selection_top_sample_triggers(clean_env):
    rows = [row_2019("o", "a", f"f{i}", "timer" if i % 2 else "http", {i: i + 1}) for i in range(10)]
    path = write_2019(clean_env, rows)
    top = open_trace(str(path), select="top", functions=3)
    assert [top.details[f"function.{i}"].split(" (")[0] for i in range(3)] == ["a/f9", "a/f8", "a/f7"]
    assert len(list(top)) == 10 + 9 + 8
    assert open_trace(str(path), top_n=3).details == top.details
    timers = open_trace(str(path), select="all", triggers="timer")
    assert timers.details["functions.kept"] == 5
    s1 = open_trace(str(path), functions=4, seed=1).details
    assert s1 == open_trace(str(path), functions=4, seed=1).details
    assert "seeded uniform sample of 4" in s1["functions.how"]
    with pytest.raises(TraceError, match="no function left"):
        open_trace(str(path), triggers="queue")


def test_rate_scale_thins_function_counts(clean_env):
    path = write_2019(clean_env, [row_2019("o", "a", "f", "http", {m: 10 for m in range(600)})])
    n = len(list(open_trace(str(path), select="all", rate_scale=0.25)))
    assert abs(n - 1500) < 150
    n = len(list(open_trace(str(path), select="all", rate_scale=2.5)))
    assert n == 15000  # 10 x 2.5 is whole: no rounding noise


def test_multi_day_offsets(clean_env):
    write_2019(clean_env, [row_2019("o", "a", "f", "http", {0: 1})], day=1)
    write_2019(clean_env, [row_2019("o", "a", "f", "http", {0: 1})], day=3)
    trace = open_trace(str(clean_env), select="all", days="all", within_minute="uniform")
    assert [r.arrival_s for r in trace] == [30.0, 2 * 86400 + 30.0]
    assert "days d01,d03" in trace.name
    assert len(list(open_trace(str(clean_env), days="3"))) == 1
    assert open_trace(str(clean_env)).details["days"] == "d01"  # auto, no duration: the first day
    assert open_trace(str(clean_env), duration_s=3 * 86400).details["days"] == "d01,d03"
    with pytest.raises(TraceError, match="none of days 5"):
        open_trace(str(clean_env), days="5")


def test_tokens_from_an_llm_trace(clean_env):
    need(LLM_CODE)
    need(BURSTGPT)
    path = write_2019(clean_env, [row_2019("o", "a", "f", "http", {m: 2 for m in range(100)})])
    trace = open_trace(str(path), tokens="azure_llm_code", trace_dir=str(LLM_CODE.parents[1]))
    assert "resampled pairs from azure_llm_2023" in trace.details["tokens"]
    assert len({r.prompt_tokens for r in trace}) > 20
    with pytest.raises(TraceError, match="not a request-level LLM trace"):
        open_trace(str(path), tokens="synthetic")
