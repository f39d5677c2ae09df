"""Every bench ends with one machine-readable line of `key=value` pairs (issue "Scale"), written
by one helper (`bench/figures.py`): the helper's rules, and each bench run as a user runs it,
with tiny options, its last line parsed back."""

from __future__ import annotations

import collections
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH))  # the benches import their sibling `figures` as scripts do
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


figures = _module("figures")


def parse(line: str) -> dict[str, str]:
    pairs = [pair.split("=", 1) for pair in line.split(" ")]
    assert all(len(p) == 2 and p[0] and p[1] for p in pairs), line
    return dict(pairs)


def test_key_value_line_keeps_order_and_writes_booleans_as_numbers():
    line = figures.key_value_line({"b_req_per_s": 12, "a.ratio": 0.5, "done": True, "state": "inf"})
    assert line == "b_req_per_s=12 a.ratio=0.5 done=1 state=inf"
    assert parse(line) == {"b_req_per_s": "12", "a.ratio": "0.5", "done": "1", "state": "inf"}


@pytest.mark.parametrize("bad", [{"two words": 1}, {"a=b": 1}, {"": 1}, {"x": "two words"}, {"x": "a=b"},
                                 {"x": ""}])
def test_key_value_line_refuses_what_could_not_be_parsed_back(bad):
    with pytest.raises(ValueError):
        figures.key_value_line(bad)


def test_flattened_names_numbers_by_their_path_and_leaves_out_the_rest():
    got = figures.flattened({"tiny": {"cold direct": {"wall_s": 0.5, "note": "x"}, "ttft": [1.0, 2],
                                      "ok": True, "none": None}, "7B-4l": 3})
    assert got == {"tiny_cold_direct_wall_s": 0.5, "tiny_ttft_0": 1.0, "tiny_ttft_1": 2, "7b_4l": 3}
    assert figures.slug("sim.serving") == "sim_serving" and figures.slug("[a, b]") == "a_b"


def test_mutation_report_gives_each_file_and_the_whole_as_figures(capsys):
    mutation = _module("mutation")
    per_file = {"sim.serving": collections.Counter(killed=8, survived=1, timeout=1),
                "sim.flows": collections.Counter(killed=3, survived=3, suspicious=2)}
    score, got = mutation.report(per_file)
    assert math.isclose(score, 100.0 * 12 / 16)
    assert got["sim_serving_score_pct"] == 90.0 and got["sim_flows_score_pct"] == 50.0
    assert got["all_killed"] == 11 and got["all_survived"] == 4 and got["all_timeout"] == 1
    assert got["all_score_pct"] == 75.0
    assert "sim.serving" in capsys.readouterr().out


def run_bench(*args: str, timeout: int = 240) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return parse(out.stdout.strip().splitlines()[-1])


def test_bench_sim_last_line():
    got = run_bench("bench/bench_sim.py", "--requests", "1500", "--iteration-requests", "200", "--e2e-scale", "1",
                    "--e2e-hours", "2", "--baseline-customers", "3000")
    assert float(got["request_full_req_per_s"]) > 0 and float(got["iteration_full_none_events_per_req"]) > 0
    # compiled and Python batch loops, with the ratio of their rates (each rounded)
    for staging in ("full", "progressive"):
        assert math.isclose(float(got[f"request_{staging}_compiled_batches_speedup"]),
                            float(got[f"request_{staging}_req_per_s"])
                            / float(got[f"request_{staging}_python_batches_req_per_s"]), rel_tol=0.01)
    for case in ("warm", "default"):
        rate = float(got[f"request_e2e_{case}_req_per_s"])
        assert int(got[f"request_e2e_{case}_requests"]) > 0
        # the ratios are the rate over the baselines printed beside them (each rounded)
        assert math.isclose(float(got[f"request_e2e_{case}_ratio_to_simpy"]),
                            rate / float(got["mm8_simpy_customers_per_s"]), rel_tol=0.01, abs_tol=0.001)
        assert math.isclose(float(got[f"request_e2e_{case}_ratio_to_heap"]),
                            rate / float(got["mm8_heap_customers_per_s"]), rel_tol=0.01, abs_tol=0.0001)
    assert float(got["peak_mem_mb"]) > 0


def test_the_m_m_8_baselines_compute_the_same_queue_as_erlang_c_says():
    # The two baselines the end-to-end rate is compared with must be the queue they claim: the
    # same FIFO M/M/8 on the same draws (equal mean waits), whose mean wait matches Erlang C.
    bench_sim = _module("bench_sim")
    c, rho = 8, 0.8
    gaps, service = bench_sim.mmc_draws(60_000, c, rho, seed=5)
    _, w_simpy = bench_sim.mmc_simpy(gaps, service, c)
    _, w_heap = bench_sim.mmc_heap(gaps, service, c)
    assert math.isclose(w_simpy, w_heap, rel_tol=1e-9)
    a = rho * c  # offered load with mean service 1 s
    tail = a**c / math.factorial(c) / (1 - rho)
    erlang_c = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
    wq = erlang_c / (c - a)  # mean wait in queue, service rate 1
    assert math.isclose(w_heap, wq, rel_tol=0.10), (w_heap, wq)


def test_bench_metrics_last_line():
    got = run_bench("bench/bench_metrics.py", "--n", "3000")
    assert {"on_request_records_per_s", "parquet_records_per_s", "parquet_bytes_per_record",
            "on_memory_calls_per_s", "sketch_values_per_s"} <= set(got)
    assert float(got["parquet_bytes_per_record"]) > 0


def test_bench_traces_last_line():
    got = run_bench("bench/bench_traces.py", "--functions", "20")
    assert float(got["azure2019_rows_per_s"]) > 0 and float(got["synthetic_req_per_s"]) > 0
    assert "azure2019_top8_replay_req_per_s" in got


def test_bench_fidelity_last_line():
    got = run_bench("bench/bench_fidelity.py", "--only", "default", "--duration", "300")
    assert got["rows_outside"] == "0" and got["default_full_fixed_outside"] == "0"
    assert float(got["default_full_fixed_ttft_p99_s_rel_diff_pct"]) == 0.0
    assert int(got["default_full_fixed_requests"]) > 0


def test_the_engine_benches_last_lines():
    pytest.importorskip("torch")
    gpu = run_bench("bench/bench_engine_gpu.py", "--ckpt", "unused")
    import torch

    if not torch.cuda.is_available():
        assert gpu == {"skipped": "1"}
    skip = run_bench("bench/bench_engine_skip.py", "--shape", "tiny", "--reps", "2")
    assert float(skip["stage0_decode_skip_s"]) > 0 and "stage0_layers" in skip
    load = run_bench("bench/bench_engine_load.py", "--shapes", "tiny")
    assert float(load["tiny_cold_direct_wall_s"]) > 0 and int(load["threads"]) >= 1
