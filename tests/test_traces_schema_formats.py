"""Formats known here only by their published schema (Azure LLM 2024, Azure LMM 2025, the Copilot
coding-agent trace 2026): each read from a tiny file written here in the documented layout."""

from __future__ import annotations

import functools
import gzip
import json
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from traces import NAMES, TraceError, open_trace
from traces.download import REMOTES, Remote, download, remotes_for


@pytest.fixture
def clean(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    return tmp_path


# -- Azure LLM 2024 (one week) ---------------------------------------------------------------------

def test_azure_llm_2024_documented_rows_with_and_without_fraction(clean):
    (clean / "AzureLLMInferenceTrace_conv_1week.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-12 00:00:00.001163+00:00,2162,5\n"
        "2024-05-12 00:00:01+00:00,2399,6\n"  # the notebook: some rows have no fractional part
        "2024-05-12 00:00:02.500000+00:00,76,15\n")
    reqs = list(open_trace("azure_llm_2024_conv", trace_dir=str(clean)))
    assert [round(r.arrival_s, 6) for r in reqs] == [0.0, 0.998837, 2.498837]
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(2162, 5), (2399, 6), (76, 15)]
    assert {r.model for r in reqs} == {"llama-2-7b-conv"}


# -- Azure LMM 2025 --------------------------------------------------------------------------------

LMM = ("TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\n"
       "2024-10-15T12:00:00.269Z,0,770,491\n2024-10-15T12:00:00.900Z,1,949,126\n"
       "2024-10-15T12:00:02.269Z,1,964,79\n2024-10-15T12:00:05.000Z,0,78,0\n")


@pytest.mark.parametrize("gz", [False, True])
def test_azure_lmm_2025_by_name_plain_and_gzip(clean, gz):
    path = clean / ("AzureLMMInferenceTrace_multimodal.csv" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(LMM.encode()) if gz else LMM.encode())
    trace = open_trace("azure_lmm_2025", trace_dir=str(clean))
    reqs = list(trace)
    assert [round(r.arrival_s, 3) for r in reqs] == [0.0, 0.631, 2.0]  # the 0-token row dropped
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(770, 491), (949, 126), (964, 79)]
    assert {r.model for r in reqs} == {"llama-2-7b-multimodal"}
    assert trace.details["failures_dropped"] == 1 and "not yet run on the full file" in trace.details["note"]
    assert len(list(open_trace(str(path), failures="keep"))) == 4  # a path is recognised by its header


@pytest.mark.parametrize("row, needle", [
    ("2024-10-15 noon,0,1,1", "field 'TIMESTAMP'"),
    ("2024-10-15T12:00:03Z,-1,1,1", "field 'NumImages'"),
    ("2024-10-15T12:00:03Z,0,x,1", "field 'ContextTokens'"),
    ("2024-10-15T12:00:03Z,0,1", "field 'GeneratedTokens': 3 fields"),
])
def test_azure_lmm_2025_bad_rows(clean, row, needle):
    path = clean / "AzureLMMInferenceTrace_multimodal.csv"
    path.write_text(LMM + row + "\n")
    with pytest.raises(TraceError, match=f"multimodal.csv:6: {needle}"):
        list(open_trace(str(path)))
    assert open_trace(str(path), lenient=True).details["rows_skipped"] == 1


# -- GitHub Copilot coding agent 2026 ---------------------------------------------------------------

def call(ts: str, model: str, prompt: int, completion: int) -> dict:
    return {"message_id": "m", "timestamp": ts, "duration_ms": 900.0, "initiator_type": "agent", "model": model,
            "result": "Success", "status_code": "OK",
            "tokens": {"total": prompt + completion, "prompt": prompt, "completion": completion, "cached": 0,
                       "cached_pct": 0.0},
            "message_metadata": [{"type": "System", "role": "system", "sequenceId": 0, "token_len": 12}]}


def session(sid: str, day: str, calls: list[dict]) -> dict:
    return {"session_id": sid, "date": day,
            "turns": [{"turn_id": "t0", "llm_calls": calls,
                       "tool_batches": [{"timestamp": calls[0]["timestamp"], "duration_ms": 5.0, "auto_continue": True,
                                         "result": "ok", "request_id": "m",
                                         "function_calls": [{"name": "edit", "status": 1, "duration_ms": 4.0}]}]}]}


def write_shard(folder: Path, day: str, sessions: list[dict], n: int = 0) -> Path:
    d = folder / f"date={day}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"shards": 1}))
    path = d / f"shard-{n:04d}.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(s) + "\n" for s in sessions).encode()))
    return path


@pytest.fixture
def ghcp(clean):
    root = clean / "ghcp"
    write_shard(root, "2026-06-01", [
        session("s1", "2026-06-01", [call("2026-06-01T23:59:00Z", "Model A", 100, 10),
                                     call("2026-06-02T00:00:30.5Z", "Model B", 200, 0)]),  # runs past midnight
        session("s2", "2026-06-01", [call("2026-06-01T10:00:00Z", "Model A", 50, 5)])])
    write_shard(root, "2026-06-02", [session("s3", "2026-06-02", [call("2026-06-02T00:00:10Z", "Model C", 7, 3)])])
    return root


def test_ghcp_calls_in_time_order_across_day_partitions(ghcp):
    trace = open_trace("ghcp_coding_agent_2026", trace_dir=str(ghcp), failures="keep")
    reqs = list(trace)
    assert [r.arrival_s for r in reqs] == [0.0, 50340.0, 50410.0, 50430.5]
    assert [r.tenant for r in reqs] == ["s2", "s1", "s3", "s1"]
    assert [r.model for r in reqs] == ["llama-2-7b-model-a", "llama-2-7b-model-a", "llama-2-7b-model-c",
                                       "llama-2-7b-model-b"]
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs][-1] == (200, 0)
    assert trace.details["shards"] == 2 and "not yet run on the full release" in trace.details["note"]
    dropped = list(open_trace(str(ghcp), model_map="Model C=qwen3-32b"))  # a folder path; failures dropped
    assert [r.model for r in dropped] == ["llama-2-7b-model-a", "llama-2-7b-model-a", "qwen3-32b"]


def test_ghcp_call_before_its_day_and_bad_fields(ghcp):
    shard = write_shard(ghcp, "2026-06-02", [session("s4", "2026-06-02", [call("2026-06-01T12:00:00Z", "A", 1, 1)])],
                        n=1)
    with pytest.raises(TraceError, match=f"{shard.name}:1: field 'timestamp': call at .* before its folder's day"):
        list(open_trace(str(ghcp)))
    assert len(list(open_trace(str(ghcp), lenient=True, failures="keep"))) == 4
    bad = call("2026-06-02T01:00:00Z", "A", 1, 1)
    bad["tokens"]["prompt"] = -3
    write_shard(ghcp, "2026-06-02", [session("s5", "2026-06-02", [bad])], n=1)
    with pytest.raises(TraceError, match=r"shard-0001.jsonl.gz:1: field 'turns\[0\].llm_calls\[0\].tokens.prompt'"):
        list(open_trace(str(ghcp)))


# -- downloaders ------------------------------------------------------------------------------------

def test_official_locations_are_listed():
    for name in ("servegen", "mooncake", "mooncake_synthetic", "azure_lmm_2025", "ghcp_coding_agent_2026",
                 "azure_llm_2024"):
        assert name in NAMES and remotes_for(name)
    assert [r.filename for r in remotes_for("ghcp_coding_agent_2026")] == \
        [f"date.2026-06-0{d}.tar.gz" for d in range(1, 8)]
    assert all(r.url.startswith("https://github.com/Azure/AzurePublicDataset/releases/download/ghcp-coding-agent-2026/")
               for r in remotes_for("ghcp_coding_agent_2026"))
    assert remotes_for("servegen")[0].url.endswith("/archive/f891d1189eb32b3868dfc443800c4150548c282a.tar.gz")
    assert [r.filename for r in remotes_for("mooncake")] == ["conversation_trace.jsonl", "toolagent_trace.jsonl"]


def test_downloaded_day_archive_unpacks_where_the_reader_finds_it(clean, ghcp, monkeypatch):
    served = clean / "served"
    served.mkdir()
    with tarfile.open(served / "date.2026-06-01.tar.gz", "w:gz") as tar:
        tar.add(ghcp / "date=2026-06-01", arcname="date=2026-06-01")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/date.2026-06-01.tar.gz"
        monkeypatch.setitem(REMOTES, "ghcp_coding_agent_2026", [Remote(url, "date.2026-06-01.tar.gz", unpack="tar")])
        dest = clean / "cache" / "progressive-serve" / "traces" / "ghcp_coding_agent_2026"
        paths = download("ghcp_coding_agent_2026", dest, progress=False)
    finally:
        httpd.shutdown()
    assert any(p.name == "shard-0000.jsonl.gz" for p in paths)
    reqs = list(open_trace("ghcp_coding_agent_2026", failures="keep"))  # found in the cache
    assert [r.tenant for r in reqs] == ["s2", "s1", "s1"]
