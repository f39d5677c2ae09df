"""`python -m sim` on bad input files: exit 2 and exactly one line on stderr, never a traceback.

One subprocess per case, all started together (each spends most of its time importing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_traces_helpers import row_2019, write_2019

from traces import TraceError, open_trace

REPO = Path(__file__).resolve().parents[1]
CHEAP = ["--quiet", "--staging", "full", "--keepalive", "none", "--nodes", "1", "--gpus-per-node", "1"]

KEEPALIVE_HEAD = "from policies.base import KeepAlivePolicy\n\n\n"
LLM_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _cases(d: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments after CHEAP, pieces the one stderr line must contain)."""
    days = d / "days"
    days.mkdir()
    huge = write_2019(days, [row_2019("o", "a", "f1", "http", {0: 3}), row_2019("o", "a", "f2", "http", {7: 99999999999})])
    busy = d / "busy"
    busy.mkdir()
    busy_day = write_2019(busy, [row_2019("o", "a", "f1", "http", {0: 3})])
    (d / "profile_dir").mkdir()
    (d / "binary.json").write_bytes(b"\xff\xfe{\x00")
    (d / "syntax.py").write_text(KEEPALIVE_HEAD + "class P(KeepAlivePolicy:\n    pass\n")
    (d / "importfail.py").write_text("import nonexistent_module_xyz\n")
    (d / "ctor.py").write_text(KEEPALIVE_HEAD + "class P(KeepAlivePolicy):\n    name = 'p'\n\n"
                               "    def __init__(self):\n        raise RuntimeError('no config')\n\n"
                               "    def on_idle(self, inst, now):\n        return []\n")
    (d / "AzureLLMInferenceTrace_conv.csv").write_text(
        LLM_HEADER + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:35:46.6805900,374,44\n"
        "2023-11-16 18:16:46.6805900,100,10\n")
    (d / "mystery.csv").write_text("arrival_s,model,prompt_tokens,output_tokens\n0.5,mystery,10,10\n")
    (d / "far.csv").write_text("arrival_s,model,prompt_tokens,output_tokens\n0.5,m,10,10\n1e300,m,10,10\n")
    return {
        "unknown_model_refused": (["--trace", str(d / "mystery.csv"), "--unknown-models", "error"],
                                  ["'mystery' is not in profile", "--unknown-models default"]),
        "arrival_of_1e300": (["--trace", str(d / "far.csv")], ["1e+300"]),
        "count_of_99999999999": (["--trace", str(huge)],
                                 [f"{huge}:3: field '8'", "99999999999", "1,000,000 invocations a minute"]),
        "rate_scale_beyond_the_per_minute_limit": (["--trace", str(busy), "--trace-option", "rate_scale=1e6"],
                                                   ["option rate_scale", "(3 invocations", f"{busy_day}:2"]),
        "profile_is_a_directory": (["--profile", str(d / "profile_dir")], [f"{d / 'profile_dir'}: is a directory"]),
        "profile_not_text": (["--profile", str(d / "binary.json")], [f"{d / 'binary.json'}", "not UTF-8"]),
        "policy_syntax_error": (["--keepalive", f"{d / 'syntax.py'}:P"],
                                [f"'{d / 'syntax.py'}:P'", f"syntax error at {d / 'syntax.py'}:4"]),
        "policy_import_fails": (["--keepalive", f"{d / 'importfail.py'}:P"],
                                [f"'{d / 'importfail.py'}:P'", "No module named 'nonexistent_module_xyz'",
                                 f"{d / 'importfail.py'}:1"]),
        "policy_constructor_raises": (["--keepalive", f"{d / 'ctor.py'}:P"],
                                      [f"'{d / 'ctor.py'}:P'", "constructor raised RuntimeError: no config",
                                       f"{d / 'ctor.py'}:8"]),
        "llm_row_far_out_of_order": (["--trace", str(d / "AzureLLMInferenceTrace_conv.csv")],
                                     [f"{d / 'AzureLLMInferenceTrace_conv.csv'}:4: field 'TIMESTAMP'",
                                      "out of order by 1140.000 s", "reorder_window_s"]),
        "reorder_window_negative": (["--trace", str(d / "AzureLLMInferenceTrace_conv.csv"),
                                     "--trace-option", "reorder_window_s=-1"], ["option reorder_window_s"]),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, list[str]]]:
    d = tmp_path_factory.mktemp("bad_inputs")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {}
    for name, (args, expected) in _cases(d).items():
        cmd = [sys.executable, "-m", "sim", *CHEAP, *args]
        procs[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True), expected)
    out = {}
    for name, (proc, expected) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), expected)
    return out


CASE_NAMES = ["unknown_model_refused", "arrival_of_1e300", "count_of_99999999999", "rate_scale_beyond_the_per_minute_limit", "profile_is_a_directory",
              "profile_not_text", "policy_syntax_error", "policy_import_fails", "policy_constructor_raises",
              "llm_row_far_out_of_order", "reorder_window_negative"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_exit_2_with_one_line(results, case):
    r, expected = results[case]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])


def test_every_case_is_listed(tmp_path):
    assert sorted(_cases(tmp_path)) == sorted(CASE_NAMES)


# -- what the Azure LLM reader does with rows out of order (the reader alone: no subprocess) ---------


def test_a_row_before_the_first_row_keeps_its_time_and_the_first_arrival_is_time_0(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_code.csv"
    path.write_text(LLM_HEADER + "2023-11-16 18:15:46.5,374,44\n2023-11-16 18:15:40.0,100,10\n"
                    "2023-11-16 18:15:50.0,7,3\n")
    got = [(round(r.arrival_s, 3), r.prompt_tokens) for r in open_trace(str(path))]
    assert got == [(0.0, 100), (6.5, 374), (10.0, 7)]  # before: (0, 374), (0, 100) -- clamped


def test_a_gap_does_not_let_a_late_row_through_and_inf_sorts_the_whole_file(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_code.csv"
    path.write_text(LLM_HEADER + "2023-11-16 18:00:00.0,1,1\n2023-11-16 19:00:00.0,2,2\n"
                    "2023-11-16 18:30:00.0,3,3\n2023-11-16 19:00:30.0,4,4\n")
    with pytest.raises(TraceError, match=r"code\.csv:4: field 'TIMESTAMP': .*out of order by 1800\.000 s"):
        open_trace(str(path))
    lenient = open_trace(str(path), lenient=True)
    assert [r.prompt_tokens for r in lenient] == [1, 2, 4]
    assert lenient.details["rows_skipped.out_of_order"] == 1
    everything = open_trace(str(path), reorder_window_s="inf")
    assert [(r.arrival_s, r.prompt_tokens) for r in everything] == [(0.0, 1), (1800.0, 3), (3600.0, 2), (3630.0, 4)]


def test_a_row_exactly_the_window_late_is_kept(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text("arrival_s,model,prompt_tokens,output_tokens\n100.3,m,1,1\n160.3,m,2,2\n100.3,m,3,3\n"
                    "0.1,m,4,4\n")
    with pytest.raises(TraceError, match=r"requests\.csv:5: field 'arrival_s'"):
        open_trace(str(path))
    rows = open_trace(str(path), lenient=True)
    assert [r.prompt_tokens for r in rows] == [1, 3, 2]


def test_a_policy_hook_that_hangs_ends_the_run_with_exit_1_naming_it(tmp_path):
    stuck = tmp_path / "stuck.py"
    stuck.write_text("import time\n\nfrom policies.base import RouterPolicy\n\n\nclass Stuck(RouterPolicy):\n"
                     "    name = 'stuck'\n\n    def route(self, request, candidates, cluster):\n"
                     "        while True:\n            time.sleep(0.05)\n")
    trace = tmp_path / "two.csv"
    trace.write_text("arrival_s,model,prompt_tokens,output_tokens\n0.5,m,10,10\n100,m,10,10\n")
    r = subprocess.run([sys.executable, "-m", "sim", *CHEAP, "--trace", str(trace), "--router", f"{stuck}:Stuck",
                        "--hook-timeout", "1", "--keepalive", "fixed"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("error: "))
    assert "policy stuck failed in route() at t=100.000 s" in line and "did not return within 1 s" in line
