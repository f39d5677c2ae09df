"""Mooncake: arrivals, lengths and prefix-block ids from the real files and from tiny ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_traces_helpers import SHARED, need

from traces import TraceError, open_trace

REPO = Path(__file__).resolve().parents[1]
CONV = SHARED / "mooncake" / "conversation_trace.jsonl"
SYNTH = SHARED / "mooncake" / "synthetic_trace.jsonl"


def line(t, inp, out, ids=None):
    ids = list(range(-(-inp // 512))) if ids is None else ids
    return json.dumps({"timestamp": t, "input_length": inp, "output_length": out, "hash_ids": ids})


def test_real_conversation_trace_is_read_whole():
    path = need(CONV)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    reqs = list(open_trace(str(path), failures="keep"))
    assert len(reqs) == len(rows) == 12031
    assert [r.arrival_s for r in reqs] == [x["timestamp"] / 1000 for x in rows]  # the file is in order
    assert [r.prompt_tokens for r in reqs] == [x["input_length"] for x in rows]
    assert [r.output_tokens for r in reqs] == [x["output_length"] for x in rows]
    assert [list(r.hash_ids) for r in reqs] == [x["hash_ids"] for x in rows]
    assert np.mean([r.prompt_tokens for r in reqs]) == pytest.approx(12035.06, abs=0.01)  # SOURCE.md
    assert reqs[-1].arrival_s == pytest.approx(3536.999)
    assert {r.model for r in reqs} == {"llama-2-7b-conversation"}


def test_names_merge_files_as_deployments(tmp_path, monkeypatch):
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    need(CONV)
    trace = open_trace("mooncake", trace_dir=str(SHARED), duration_s=60)
    assert trace.details["rows_read"] == 12031 and "hash_ids" in trace.details
    synth = list(open_trace("mooncake_synthetic", trace_dir=str(SHARED)))
    assert len(synth) == 3993 and synth[0].model == "llama-2-7b-synthetic"
    (tmp_path / "conversation_trace.jsonl").write_text("\n".join([line(0, 600, 5), line(2000, 100, 3)]) + "\n")
    (tmp_path / "toolagent_trace.jsonl").write_text(line(1000, 1030, 7, [4, 5, 6]) + "\n")
    merged = list(open_trace("mooncake", trace_dir=str(tmp_path), model_map="toolagent=qwen3-32b"))
    assert [(r.arrival_s, r.model, r.hash_ids) for r in merged] == [
        (0.0, "llama-2-7b-conversation", (0, 1)), (1.0, "qwen3-32b", (4, 5, 6)), (2.0, "llama-2-7b-conversation", (0,))]


def test_shared_prefix_ids_show_reuse():
    reqs = list(open_trace(str(need(CONV)), duration_s=600))
    first_blocks = [r.hash_ids[0] for r in reqs if r.hash_ids]
    assert len(set(first_blocks)) < len(first_blocks)  # many requests start with the same block


@pytest.mark.parametrize("text, needle", [
    ("{oops", r":2: .*not a JSON object"),
    ('{"timestamp": 5, "input_length": 3, "output_length": 1}', r":2: field 'hash_ids': field missing"),
    ('{"timestamp": -5, "input_length": 3, "output_length": 1, "hash_ids": [1]}', r":2: field 'timestamp'"),
    ('{"timestamp": 1e400, "input_length": 3, "output_length": 1, "hash_ids": [1]}', r":2: field 'timestamp'"),
    ('{"timestamp": 5, "input_length": 3.5, "output_length": 1, "hash_ids": [1]}', r":2: field 'input_length'"),
    ('{"timestamp": 5, "input_length": 3, "output_length": 1, "hash_ids": ["a"]}', r":2: field 'hash_ids': not a list"),
    ('{"timestamp": 5, "input_length": 1000, "output_length": 1, "hash_ids": [1]}',
     r":2: field 'hash_ids': 1 blocks, but input_length 1000 fills 2"),
    ('[1, 2]', r":2: .*expected a JSON object"),
])
def test_bad_lines_name_file_line_field_or_are_counted(tmp_path, text, needle):
    path = tmp_path / "conversation_trace.jsonl"
    path.write_text(line(0, 10, 1) + "\n" + text + "\n" + line(9000, 10, 1) + "\n")
    with pytest.raises(TraceError, match="conversation_trace.jsonl" + needle):
        list(open_trace(str(path)))
    lenient = open_trace(str(path), lenient=True)
    assert len(list(lenient)) == 2 and lenient.details["rows_skipped"] == 1


def test_out_of_order_and_rate_scale(tmp_path):
    path = tmp_path / "x_trace.jsonl"
    path.write_text("\n".join([line(0, 10, 1), line(5000, 10, 1), line(4000, 10, 2), line(200_000, 10, 1)]))
    reqs = list(open_trace(str(path), rate_scale=2))
    assert [r.arrival_s for r in reqs] == [0.0, 2.0, 2.5, 100.0]
    with pytest.raises(TraceError, match="x_trace.jsonl:3: field 'timestamp': arrival .* out of order"):
        list(open_trace(str(path), reorder_window_s=0.5))


def test_sim_replays_mooncake(tmp_path):
    need(CONV)
    proc = subprocess.run([sys.executable, "-m", "sim", "--trace", "mooncake", "--trace-dir", str(SHARED),
                           "--duration", "120", "--out", str(tmp_path / "mc"), "--quiet", "--keepalive", "fixed",
                           "--staging", "full"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trace: mooncake (real:" in proc.stdout
    assert "llama-2-7b-conversation" in (tmp_path / "mc" / "models.csv").read_text()
