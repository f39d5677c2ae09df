"""Readers give exactly what the real sample files contain (skipped when the samples are absent)."""

from __future__ import annotations

import csv
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
from test_traces_helpers import AF2019, BURSTGPT, LLM_CODE, LLM_CONV, need

from traces import open_trace
from traces.azure2019 import read_invocations


def _csv_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_2019_rows_match_file():
    path = need(AF2019)
    rows = list(read_invocations(path))
    assert [r.total for r in rows] == [288, 288, 10, 11, 9, 10, 3, 10, 432]
    assert sum(r.total for r in rows) == 1061
    assert Counter(r.trigger for r in rows) == {"http": 7, "orchestration": 2}


@pytest.mark.parametrize("within", ["poisson", "uniform"])
def test_2019_trace_reproduces_every_minute_count(within):
    path = need(AF2019)
    trace = open_trace(str(path), select="all", within_minute=within, seed=3)
    requests = list(trace)
    assert len(requests) == 1061 and not trace.synthetic
    assert "azure_functions_2019 (real:" in trace.name and "days d01" in trace.name
    got: dict[str, np.ndarray] = {}
    for r in requests:
        got.setdefault(r.function, np.zeros(1440, int))[int(r.arrival_s // 60)] += 1
    for row in read_invocations(path):
        label = f"{row.app[:8]}/{row.function[:8]}"
        assert np.array_equal(got[label], row.counts), label
    assert [r.request_id for r in requests] == list(range(1061))
    assert all(a.arrival_s <= b.arrival_s for a, b in pairwise(requests))


def test_2019_duration_cut_and_days_in_name():
    path = need(AF2019)
    requests = list(open_trace(str(path.parent), select="all", duration_s=6 * 3600))
    assert requests and requests[-1].arrival_s < 6 * 3600
    # the two 5-minute periodic functions alone give 12 per hour each
    assert len(requests) >= 2 * 12 * 6


@pytest.mark.parametrize("path_fn, kind", [(lambda: LLM_CODE, "code"), (lambda: LLM_CONV, "conv")])
def test_azure_llm_totals_and_tokens(path_fn, kind):
    path = need(path_fn())
    _, rows = _csv_rows(path)
    trace = open_trace(str(path), failures="keep")
    requests = list(trace)
    assert len(requests) == len(rows) == {"code": 8819, "conv": 19366}[kind]
    assert sum(r.prompt_tokens for r in requests) == sum(int(r[1]) for r in rows)
    assert sum(r.output_tokens for r in requests) == sum(int(r[2]) for r in rows)
    assert requests[0].arrival_s == 0.0 and {r.model for r in requests} == {f"llama-2-7b-{kind}"}
    assert all(a.arrival_s <= b.arrival_s for a, b in pairwise(requests))


def test_azure_llm_2023_merges_code_and_conv():
    need(LLM_CODE)
    trace = open_trace("azure_llm_2023", trace_dir=str(LLM_CODE.parent))
    models = Counter(r.model for r in trace)
    assert models == {"llama-2-7b-code": 8819, "llama-2-7b-conv": 19366}


def test_burstgpt_totals_failures_and_models():
    path = need(BURSTGPT)
    _, rows = _csv_rows(path)
    kept = list(open_trace(str(path), failures="keep"))
    assert len(kept) == len(rows) == 400
    assert sum(r.prompt_tokens for r in kept) == sum(int(r[2]) for r in rows)
    assert Counter(r.model for r in kept) == {"llama-2-7b-chatgpt": 320, "llama-2-7b-gpt-4": 80}
    trace = open_trace(str(path))
    assert len(list(trace)) == 383 and trace.details["failures_dropped"] == 17
    assert [r.arrival_s for r in kept] == sorted(float(r[0]) for r in rows)
    mapped = open_trace(str(path), model_map="ChatGPT=llama-2-13b,GPT-4=llama-2-70b", log_type="API log",
                        failures="keep")
    assert {r.model for r in mapped} <= {"llama-2-13b", "llama-2-70b"} and len(list(mapped)) == 2


def test_requests_csv_round_trip(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("arrival_s,model,prompt_tokens,output_tokens,function\n"
                    "2.5,a,10,5,f1\n0.5,b,20,6,\n1.0,a,30,7,f2\n")
    requests = list(open_trace(str(path)))
    assert [(r.arrival_s, r.model, r.prompt_tokens, r.output_tokens, r.function) for r in requests] == [
        (0.5, "b", 20, 6, ""), (1.0, "a", 30, 7, "f2"), (2.5, "a", 10, 5, "f1")]
    assert [r.request_id for r in requests] == [0, 1, 2]
    assert [r.arrival_s for r in open_trace(str(path), rate_scale=2.0)] == [0.25, 0.5, 1.25]


def test_azure_2021_start_times_reordered(tmp_path):
    path = tmp_path / "AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt"
    path.write_text("app,func,end_timestamp,duration\n"
                    "a1,f1,10.0,1.0\n"      # starts 9
                    "a2,f2,10.5,5.0\n"      # starts 5.5
                    "a1,f1,12.0,0.5\n"      # starts 11.5
                    "a1,f1,20.0,0.0\n")     # starts 20
    trace = open_trace(str(path), select="all", tokens="fixed:100,10")
    requests = list(trace)
    assert [r.arrival_s for r in requests] == [5.5, 9.0, 11.5, 20.0]
    assert Counter(r.model for r in requests) == {"llama-2-7b-fn0": 3, "llama-2-7b-fn1": 1}
    assert trace.details["invocations.in_files"] == 4
    assert all((r.prompt_tokens, r.output_tokens) == (100, 10) for r in requests)
    assert "azure_functions_2021 (real:" in trace.name
