"""`python -m traces` as a user runs it: numbers that match the files, one-line errors, exit 2."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_traces_helpers import AF2019, BURSTGPT, LLM_CODE, LLM_CONV, need

from traces.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "traces", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def info(path: Path) -> dict:
    done = run("info", str(path), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_info_azure_functions_2019_sample():
    got = info(need(AF2019))
    assert got["functions"] == 9 and got["invocations"] == 1061 and got["days"] == 1
    assert got["triggers"] == "http 7, orchestration 2"
    assert got["daily_invocations_per_function"].startswith("p50 10,") and got["rows_skipped"] == 0


@pytest.mark.parametrize("which, rows", [(LLM_CODE, 8819), (LLM_CONV, 19366)])
def test_info_azure_llm_samples(which, rows):
    got = info(need(which))
    assert got["requests"] == rows and got["detail.rows_read"] == rows and got["models"] == 1
    assert got["span_s"] > 3000 and not got["synthetic"]


def test_info_burstgpt_sample():
    got = info(need(BURSTGPT))
    assert got["requests"] == 400 and got["first_arrival_s"] == 5.0 and got["last_arrival_s"] == 37274.0
    assert got["busiest_models"] == "llama-2-7b-chatgpt 320, llama-2-7b-gpt-4 80"


def test_info_text_and_synthetic_fallback(tmp_path):
    done = run("info", "azure_functions", env_extra={"XDG_CACHE_HOME": str(tmp_path), "PROGRESSIVE_SERVE_TRACES": ""})
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert "calibrated synthetic; no trace files found in" in first


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,model,prompt_tokens,output_tokens\n1,m,x,4\n")
    done = run("info", str(bad))  # once as a user runs it: no traceback, status 2
    assert done.returncode == 2 and done.stderr == f"error: {bad}:2: field 'prompt_tokens': 'x' is not a whole number\n"
    for args in (["info", "no_such_trace"], ["info", str(tmp_path / "missing.csv")], ["download", "nope"],
                 ["info", str(bad), "-o", "bogus=1"], ["info", "azure_functions", "--trace-dir", str(bad)]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_help_and_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "download" in capsys.readouterr().out
    assert main(["names"]) == 0
    out = capsys.readouterr().out
    assert "within_minute" in out and "azure_llm_2024" in out
    from traces.catalog import CatalogOptions
    from traces.rowtrace import RowOptions
    from traces.servegen import ServeGenOptions
    for cls in (CatalogOptions, ServeGenOptions, RowOptions):  # every option a trace accepts is listed
        for f in dataclasses.fields(cls):
            assert f"  {f.name} = " in out, (cls.__name__, f.name)
    with pytest.raises(SystemExit) as exit_:
        main(["info"])  # argparse usage error
    assert exit_.value.code == 2


def test_calibrate_writes_sourced_json(tmp_path):
    need(AF2019)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--trace-dir", str(AF2019.parents[1]), "--out", str(out)]) == 0
    cal = json.loads(out.read_text())
    committed = json.loads((REPO / "traces" / "calibration" / "azure_functions_2019.json").read_text())
    assert cal == committed
    for key in ("daily_invocations", "periodic_share", "cv_lognormal", "diurnal_hourly", "duration_s", "memory_mb",
                "trigger_shares"):
        assert cal[key]["source"], key
