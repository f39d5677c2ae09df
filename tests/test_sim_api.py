"""`from sim import run`: the command's numbers, as DataFrames, with no files written; the
docs example runs."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import run
from sim.api import SimulationError, argv_for

REPO = Path(__file__).resolve().parents[1]
REQUESTS = """arrival_s,model,prompt_tokens,output_tokens
0,llama-a,100,10
0.5,llama-b,200,20
3,llama-a,50,5
40,llama-a,300,8
41,llama-c,64,4
200,llama-b,64,30
700,llama-a,100,10
701,llama-b,80,3
"""
N = 8
OPTIONS = {"staging": "full,progressive", "keepalive": ["none", "fixed[ttl=60]", "two_tier"], "seed": 3,
           "nodes": 1, "gpus_per_node": 2, "slo_ttft": 4.0}


def csv_cell(v) -> str:
    """A DataFrame value as summary.csv writes it (sim.report's CSV format)."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.9g}"
    return str(v)


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "requests.csv"
    path.write_text(REQUESTS)
    return path


@pytest.fixture(scope="module")
def cli_out(trace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "sim", "--trace", str(trace), *argv_for(OPTIONS), "--quiet",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    return out


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_api_returns_the_clis_numbers_and_writes_nothing(trace, cli_out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run(trace=str(trace), records=True, **OPTIONS)
    assert list(tmp_path.iterdir()) == []  # no files written without out=
    want = read(cli_out / "summary.csv")
    assert list(res.summary.columns) == list(want[0])
    got = [{k: csv_cell(v) for k, v in r.items()} for r in res.summary.to_dict("records")]
    assert got == want
    want_models = read(cli_out / "models.csv")
    got_models = [{k: csv_cell(v) for k, v in r.items()} for r in res.models.to_dict("records")]
    assert got_models == want_models
    # the records are the ones the command writes to requests.parquet
    import pandas as pd

    parquet = pd.read_parquet(cli_out / "requests.parquet")
    assert len(res.records) == N * 6 == len(parquet)
    pd.testing.assert_frame_equal(res.records.reset_index(drop=True), parquet.reset_index(drop=True),
                                  check_dtype=False, check_categorical=False)
    assert res.verdict and res.verdict[0].startswith("best: P")
    assert "best: P" in str(res)


def test_api_with_out_writes_the_clis_folder(trace, tmp_path):
    res = run(trace=str(trace), out=tmp_path / "o", no_records=True, staging="full", keepalive="none")
    assert (tmp_path / "o" / "summary.csv").is_file() and (tmp_path / "o" / "report.html").is_file()
    assert res.records is None and len(res.summary) == 1 and res.out == tmp_path / "o"


def test_bad_options_fail_as_the_command_does(trace):
    with pytest.raises(TypeError, match="unknown option 'keep_alive'.*keepalive"):
        run(trace=str(trace), keep_alive="fixed")
    with pytest.raises(SimulationError, match="forever") as e:
        run(trace=str(trace), keepalive="forever")
    assert e.value.exit_code == 2


def test_argv_for_maps_every_kind_of_option():
    assert argv_for({"trace_option": {"top_n": 20}, "quiet": True, "no_records": False, "duration": 60,
                     "staging": ["full", "progressive[fractions=0.5/1.0]"]}) == [
        "--trace-option", "top_n=20", "--quiet", "--duration", "60", "--staging", "full,progressive[fractions=0.5/1.0]"]


def test_docs_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "docs" / "notebook_example.py")], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "best: P" in done.stdout and "slo_attainment_pct" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_api_on_a_complete_run_reads_its_files(trace, tmp_path):
    first = run(trace=str(trace), out=tmp_path / "o", staging="full", keepalive="none,fixed")
    again = run(trace=str(trace), out=tmp_path / "o", staging="full", keepalive="none,fixed", resume=True)
    assert again.summary.shape == first.summary.shape
    for col in ("policy", "requests", "id", "rank", "pareto"):
        assert list(again.summary[col]) == list(first.summary[col]), col
    assert again.summary["slo_attainment_pct"].tolist() == pytest.approx(first.summary["slo_attainment_pct"].tolist())
    assert again.verdict == first.verdict
