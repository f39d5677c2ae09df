"""`python -m sim` as a user runs it: a requests CSV in, a table and result files out,
byte-identical reruns, one-line errors with exit 2 (bad input) or 1 (a policy failed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]

REQUESTS = """arrival_s,model,prompt_tokens,output_tokens
0,llama-a,100,10
0.5,llama-b,200,20
3,llama-a,50,5
40,llama-a,300,8
41,llama-c,64,4
700,llama-a,100,10
701,llama-b,80,3
"""
N_REQUESTS = 7

DEFAULT_LABELS = [
    "full + none",
    "full + fixed[ttl=600.0]",
    "pipelined + none",
    "pipelined + fixed[ttl=600.0]",
    "progressive[fractions=0.75/0.875/1.0] + none",
    "progressive[fractions=0.75/0.875/1.0] + fixed[ttl=600.0]",
]

POLICIES = '''
from policies import KeepAlivePolicy, RouterPolicy


class KeepFor(KeepAlivePolicy):
    """Keep on the GPU for `seconds`."""

    name = "keep_for"

    def __init__(self, seconds: float = 5.0):
        self.seconds = float(seconds)

    def on_idle(self, inst, now):
        return [("gpu", self.seconds)]


class Boom(KeepAlivePolicy):
    name = "boom"

    def on_idle(self, inst, now):
        raise RuntimeError("kaboom")


class BadRouter(RouterPolicy):
    name = "bad_router"

    def route(self, request, candidates, cluster):
        return 12345
'''


def run_sim(*args: str, env_extra: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def requests_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "requests.csv"
    path.write_text(REQUESTS)
    return path


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policies") / "my_policies.py"
    path.write_text(POLICIES)
    return path


@pytest.fixture(scope="module")
def two_runs(requests_csv, tmp_path_factory):
    """The same run twice, side by side (two processes at once halve the wall time)."""
    outs = [tmp_path_factory.mktemp(f"out{i}") for i in range(2)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "sim", "--trace", str(requests_csv), "--out", str(out), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        for out in outs
    ]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done, outs


def main_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """`sim.cli.main` without a new interpreter, for the cheap error paths."""
    from sim.cli import main

    code = main([*args, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_default_run_writes_everything(two_runs):
    (done, _), (out, _) = two_runs
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("trace:") and "requests.csv" in lines[0]
    for i, label in enumerate(DEFAULT_LABELS):  # the table's ids, listed with their full labels
        assert f"P{i + 1}  {label}" in lines, f"{label!r} missing under the table"
    assert any(line.startswith("best: P") for line in lines)
    assert "Traceback" not in done.stderr
    for name in ("requests.parquet", "summary.csv", "summary.md", "ttft_cdf.png", "gpu_memory.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    table = pq.read_table(out / "requests.parquet")
    assert table.num_rows == N_REQUESTS * len(DEFAULT_LABELS)
    df = table.to_pandas()
    assert sorted(df["policy"].unique()) == sorted(DEFAULT_LABELS)
    for _, group in df.groupby("policy"):
        assert sorted(group["request_id"]) == list(range(N_REQUESTS))
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("policy,requests,")
    assert [line.split(",")[0] for line in csv_lines[1:]] == DEFAULT_LABELS
    assert all(line.split(",")[1] == str(N_REQUESTS) for line in csv_lines[1:])
    assert (out / "ttft_cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_is_byte_identical(two_runs):
    done, outs = two_runs
    assert all(d.returncode == 0 for d in done)
    for name in ("summary.csv", "summary.md"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    tables = [[line for line in d.stdout.splitlines() if not line.startswith("wrote ")] for d in done]
    assert tables[0] == tables[1]


def test_bad_keepalive_name_lists_valid_ones(requests_csv):
    done = run_sim("--trace", str(requests_csv), "--keepalive", "fixed,forever", "--quiet")
    assert done.returncode == 2
    assert "forever" in done.stderr
    for name in ("fixed", "none", "two_tier"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, spec, words", [
    ("--keepalive", "fixed[ttl=soon]", ["ttl", "float"]),
    ("--keepalive", "fixed[ttl=-1]", ["ttl", ">= 0"]),
    ("--keepalive", "fixed[forever=1]", ["forever", "ttl"]),
    ("--staging", "progressive[fractions=0.5/0.9]", ["fractions"]),
    ("--admission", "max_queue[depth=-3]", ["depth"]),
    ("--placement", "nowhere", ["best_fit", "first_fit", "spread"]),
    ("--router", "no.such.module:X", ["no.such.module"]),
    ("--prewarm", "", ["--prewarm"]),
])
def test_bad_policy_specs_exit_2(capsys, requests_csv, flag, spec, words):
    code, out, err = main_in_process(capsys, "--trace", str(requests_csv), flag, spec)
    assert code == 2 and not out
    assert err.startswith("error: ")
    for word in words:
        assert word in err, (word, err)


def test_missing_profile_exits_2(requests_csv, tmp_path):
    done = run_sim("--trace", str(requests_csv), "--profile", str(tmp_path / "nope.json"), "--quiet")
    assert done.returncode == 2
    assert "nope" in done.stderr and "a6000-llama2-7b-published" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_profile_exits_2_naming_the_field(capsys, requests_csv, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "provenance": {"kind": "published"}}')
    code, _, err = main_in_process(capsys, "--trace", str(requests_csv), "--profile", str(bad))
    assert code == 2 and "bad.json" in err and "hardware" in err


def test_missing_trace_file_exits_2(capsys, tmp_path):
    code, _, err = main_in_process(capsys, "--trace", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in err


def test_slightly_unsorted_requests_csv_is_reordered(capsys, tmp_path):
    path = tmp_path / "unsorted.csv"
    path.write_text("arrival_s,model,prompt_tokens,output_tokens\n5,a,10,10\n1,a,10,10\n")
    code, out, err = main_in_process(capsys, "--trace", str(path), "--staging", "full", "--keepalive", "none")
    assert code == 0, err
    assert "P1  full + none" in out.splitlines() and "simulated 2 requests" in err
    row = next(line for line in out.splitlines() if line.startswith("1  P1 "))
    assert row.split()[-5] == "0"  # rejected


@pytest.mark.parametrize("args", [["--nodes", "0"], ["--slo-ttft", "0"]])
def test_bad_cluster_arguments_exit_2(capsys, requests_csv, args):
    code, _, err = main_in_process(capsys, "--trace", str(requests_csv), *args)
    assert code == 2 and err.startswith("error: ")


def test_user_policy_from_a_file(requests_csv, policy_file):
    done = run_sim("--trace", str(requests_csv), "--staging", "full", "--quiet",
                   "--keepalive", f"{policy_file}:KeepFor[seconds=30],none")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # each id is listed with its full label under the table
    assert "P1  full + keep_for[seconds=30.0]" in lines and "P2  full + none" in lines


def test_policy_that_raises_names_policy_hook_and_time(requests_csv, policy_file):
    done = run_sim("--trace", str(requests_csv), "--staging", "full", "--quiet",
                   "--keepalive", f"{policy_file}:Boom")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    m = re.search(r"policy (\S+) failed in (\w+)\(\) at t=([0-9.]+) s: RuntimeError: kaboom", done.stderr)
    assert m, done.stderr
    assert m.group(1) == "boom" and m.group(2) == "on_idle" and float(m.group(3)) > 0


def test_router_returning_a_stranger_is_a_policy_error(capsys, requests_csv, policy_file):
    code, _, err = main_in_process(capsys, "--trace", str(requests_csv), "--staging", "full", "--keepalive",
                                   "fixed", "--router", f"{policy_file}:BadRouter")
    assert code == 1
    assert re.search(r"policy bad_router failed in route\(\) at t=[0-9.]+ s: .*12345", err), err


def test_help():
    done = run_sim("--help")
    assert done.returncode == 0
    for flag in ("--trace", "--trace-dir", "--duration", "--seed", "--staging", "--keepalive", "--prewarm",
                 "--placement", "--router", "--admission", "--profile", "--nodes", "--gpus-per-node",
                 "--slo-ttft", "--fidelity", "--out"):
        assert flag in done.stdout, flag


def test_default_trace_falls_back_to_synthetic(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_sim("--trace", "azure_functions", "--duration", "600", "--quiet",
                   env_extra={"PROGRESSIVE_SERVE_TRACES": str(empty), "HOME": str(empty)})
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("trace: azure_functions") and "synthetic" in first
    for label in DEFAULT_LABELS:
        assert label in done.stdout
