"""`bench/bench_day.py` end to end with tiny options: one leg per combination in a child
process, a table, and a last line of key=value pairs whose numbers hang together."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from test_bench_figures import _module  # loads a bench script as a module

REPO = Path(__file__).resolve().parents[1]


def test_bench_day_tiny_run_prints_key_value_figures(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "bench/bench_day.py", "--hours", "0.01", "--volume", "0.02", "--functions", "400",
         "--catalog", "6", "--nodes", "2", "--gpus-per-node", "4", "--combos", "full+fixed,progressive+none",
         "--log", str(tmp_path / "log")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = dict(pair.split("=", 1) for pair in out.stdout.strip().splitlines()[-1].split())
    for combo in ("full_fixed", "progressive_none"):
        key = f"{combo}_h0p01_v0p02"
        requests = int(figures[f"{key}_requests"])
        assert requests > 0
        # the progress log's last line is the leg's end, and agrees with the printed figures
        last = json.loads((tmp_path / "log" / f"{key}.jsonl").read_text().splitlines()[-1])
        assert last["done"] and last["requests"] == last["finished"] == requests
        assert last["served"] + last["rejected"] == requests and 0 <= last["slo_met"] <= last["served"]
    # --report reads the logs back: each leg done, with the CPU time it took
    rep = subprocess.run([sys.executable, "bench/bench_day.py", "--report", str(tmp_path / "log")],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert rep.returncode == 0, rep.stderr[-2000:]
    got = dict(pair.split("=", 1) for pair in rep.stdout.strip().splitlines()[-1].split())
    for combo in ("full_fixed", "progressive_none"):
        key = f"{combo}_h0p01_v0p02"
        assert got[f"{key}_done"] == "1" and got[f"{key}_requests"] == figures[f"{key}_requests"]
        assert float(got[f"{key}_leg_cpu_s"]) == round(float(got[f"{key}_cpu_s"]))
        assert 0 < float(figures[f"{key}_peak_mem_mb"]) < 2048
        rate = float(figures[f"{key}_cpu_req_per_s"])
        day = float(figures[f"{key}_day_extrapolated_s"])
        # the day is the generator's expected count over the rate (printed rounded to whole requests/s)
        assert abs(day - int(figures["full_day_requests"]) / rate) <= 1 + day * 0.51 / rate
        # both printed rounded (the day to whole seconds, the ratio to hundredths)
        assert abs(float(figures[f"{key}_ratio_to_10min"]) - day / 600) <= 0.005 + 0.5 / 600
        # the header names the code and machine the leg ran on, and --report shows the code
        header = json.loads((tmp_path / "log" / f"{key}.jsonl").read_text().splitlines()[0])
        assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?|unknown", header["code"]), header["code"]
        assert f"{os.cpu_count()} CPUs" in header["machine"]
        assert header["versions"]["python"] == sys.version.split()[0] and "simpy" in header["versions"]
        row = next(line for line in rep.stdout.splitlines() if line.startswith(key + " "))
        assert row.split()[-1] == header["code"]


def test_bench_day_runs_each_leg_with_both_walks_and_prints_the_speedup():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "bench/bench_day.py", "--hours", "0.01", "--volume", "0.05", "--functions", "400",
         "--catalog", "4", "--nodes", "8", "--gpus-per-node", "8", "--combos", "full+fixed",
         "--walk", "compiled,python"],  # 64 GPUs: every model's walk is compiled in the first leg
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = dict(pair.split("=", 1) for pair in out.stdout.strip().splitlines()[-1].split())
    compiled, python = "full_fixed_h0p01_v0p05", "full_fixed_h0p01_v0p05_python"
    # the same run either way: the walk changes speed, not results
    for field in ("requests", "cold_start_pct"):
        assert figures[f"{compiled}_{field}"] == figures[f"{python}_{field}"]
    speedup = float(figures[f"{compiled}_walk_speedup"])
    rates = float(figures[f"{compiled}_cpu_req_per_s"]) / float(figures[f"{python}_cpu_req_per_s"])
    assert abs(speedup - rates) < 1e-3
    bad = subprocess.run([sys.executable, "bench/bench_day.py", "--walk", "cython"], capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=60)
    assert bad.returncode != 0 and "--walk 'cython'" in bad.stderr


def test_bench_day_refuses_unpaired_legs():
    out = subprocess.run([sys.executable, "bench/bench_day.py", "--hours", "1,2", "--volume", "0.1,0.2,0.3"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode != 0 and "pair them" in out.stderr


def test_bench_day_report_projects_an_unfinished_leg_and_skips_a_torn_last_line(tmp_path):
    # a leg killed a quarter of the way through, its last line cut mid-write
    log = tmp_path / "full_fixed_h24_v1.jsonl"
    progress = {"requests": 1000, "sim_s": 360.0, "wall_s": 12.0, "cpu_s": 10.0, "cpu_req_per_s": 100, "rss_mb": 250.0,
                "finished": 990, "served": 990, "rejected": 0, "cold": 9, "slo_met": 891, "ttft_p50_s": 0.1,
                "ttft_p99_s": 9.0, "instances": 4, "done": False}
    log.write_text(json.dumps({"leg": {"hours": 24}, "expected_requests": 4000}) + "\n" + json.dumps(progress) + "\n"
                   + '{"requests": 2000, "sim')
    rep = subprocess.run([sys.executable, "bench/bench_day.py", "--report", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert rep.returncode == 0, rep.stderr[-2000:]
    got = dict(pair.split("=", 1) for pair in rep.stdout.strip().splitlines()[-1].split())
    assert got["full_fixed_h24_v1_done"] == "0" and got["full_fixed_h24_v1_requests"] == "1000"
    assert got["full_fixed_h24_v1_leg_cpu_s"] == "40"  # 10 s for a quarter of the expected 4,000
    assert "90.0" in rep.stdout  # SLO met by 891 of 990 served
    row = next(line for line in rep.stdout.splitlines() if line.startswith("full_fixed_h24_v1 "))
    assert row.split()[-1] == "?"  # a header from before logs named their code
    # a bad line that is not the last is an error naming the file and the line
    log.write_text('{"requests": 2000, "sim\n' + json.dumps(progress) + "\n")
    bad = subprocess.run([sys.executable, "bench/bench_day.py", "--report", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode != 0 and "line 1: not a JSON line" in bad.stderr and str(log) in bad.stderr


def _figures(stdout: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in stdout.strip().splitlines()[-1].split())


def test_cells_share_the_platform_exactly_and_draw_their_own_functions():
    day = _module("bench_day")
    whole = day.Leg(24.0, 1.0, "full+fixed", 46_001, 300, 128, 8, "p", 3)
    cells = day.cell_legs(whole, 8)
    # the parts add up to the platform, the first cells taking what does not divide
    assert sum(c.functions for c in cells) == 46_001 and [c.functions for c in cells][:2] == [5751, 5750]
    assert sum(c.catalog for c in cells) == 300 and [c.catalog for c in cells] == [38] * 4 + [37] * 4
    assert sum(c.nodes for c in cells) == 128 and {c.nodes for c in cells} == {16}
    # each cell its own seed, none shared with another platform seed's cells
    assert [c.seed for c in cells] == list(range(24, 32))
    assert {c.seed for c in day.cell_legs(replace(whole, seed=2), 8)}.isdisjoint(c.seed for c in cells)
    assert [c.tag for c in cells[:2]] == ["h24_v1_c0of8", "h24_v1_c1of8"] and cells[0].platform_tag == "h24_v1_cells8"
    assert day.cell_legs(whole, 1) == [whole]
    # a log's leg is the same run whatever it is called and wherever it logs
    logged = {**day.asdict(cells[0]), "log": "elsewhere.jsonl", "cell": 5}
    assert cells[0].same_run(logged) and not cells[1].same_run(logged)


def test_a_platform_run_as_cells_a_few_at_a_time_adds_up_once_every_cell_has_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "bench/bench_day.py", "--hours", "0.01", "--volume", "0.02", "--functions", "400",
            "--catalog", "6", "--nodes", "2", "--gpus-per-node", "4", "--combos", "full+fixed", "--cells", "2",
            "--log", str(tmp_path)]
    first = subprocess.run(base + ["--cell", "1"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    got = _figures(first.stdout)
    assert "1 of 2 cells done" in first.stdout and got["full_fixed_h0p01_v0p02_cells2_cells_done"] == "1"
    assert "full_fixed_h0p01_v0p02_c0of2_requests" not in got  # cell 0 was not asked for
    assert "full_fixed_h0p01_v0p02_cells2_requests" not in got  # no partial sums passed off as the platform's
    cell1 = int(got["full_fixed_h0p01_v0p02_c1of2_requests"])
    # the rest of the platform: cell 1 is read from its log, not run again
    second = subprocess.run(base, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "cell 1/2 (logged)" in second.stdout and "cell 0/2 (logged)" not in second.stdout
    both = _figures(second.stdout)
    cell0 = int(both["full_fixed_h0p01_v0p02_c0of2_requests"])
    assert int(both["full_fixed_h0p01_v0p02_c1of2_requests"]) == cell1
    assert both["full_fixed_h0p01_v0p02_cells2_cells_done"] == "2"
    assert int(both["full_fixed_h0p01_v0p02_cells2_requests"]) == cell0 + cell1 > 0
    assert len((tmp_path / "full_fixed_h0p01_v0p02_c1of2.jsonl").read_text().splitlines()) == 2  # header, end
    # --report adds the same platform up from the logs
    rep = subprocess.run([sys.executable, "bench/bench_day.py", "--report", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert rep.returncode == 0, rep.stderr[-2000:]
    from_logs = _figures(rep.stdout)
    for field in ("cells_done", "requests", "cpu_s", "slo_pct", "cold_start_pct", "peak_mem_mb", "longest_cell_cpu_s"):
        assert from_logs[f"full_fixed_h0p01_v0p02_cells2_{field}"] == both[f"full_fixed_h0p01_v0p02_cells2_{field}"]
    cell_cpu = [float(both[f"full_fixed_h0p01_v0p02_c{k}of2_cpu_s"]) for k in (0, 1)]
    assert float(both["full_fixed_h0p01_v0p02_cells2_longest_cell_cpu_s"]) == max(cell_cpu) > 0


def test_bench_day_refuses_cells_it_cannot_make():
    for args, message in ((["--cells", "3", "--nodes", "2"], "--cells 3: expected 1 to 2"),
                          (["--cells", "2", "--cell", "2"], "--cell '2': expected indices from 0 to 1"),
                          (["--cell", "0"], "--cell '0': expected indices"),
                          (["--cells", "2", "--cell", "x"], "--cell 'x': expected comma-separated")):
        out = subprocess.run([sys.executable, "bench/bench_day.py", *args], capture_output=True, text=True,
                             cwd=REPO, timeout=60)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-500:])


def test_a_log_from_before_compiled_batches_is_a_python_loops_leg():
    """Logs written before `batches` existed ran Python loops: a compiled leg is not read from
    them (its time would be another code's), a `--batches python` leg is, and names its log apart."""
    bench_day = _module("bench_day")
    leg = bench_day.Leg(24.0, 1.0, "full+fixed", 5750, 38, 16, 8, "h100-llama3.1-8b-published", 0)
    old = {k: v for k, v in leg.__dict__.items() if k != "batches"}  # a header without the field
    assert leg.batches == "compiled" and not leg.same_run(old)
    python = replace(leg, batches="python")
    assert python.same_run(old) and python.tag == leg.tag + "_pyloops"
    assert bench_day.CELL_LOG.fullmatch("full_fixed_h24_v1_c3of8_python_pyloops").groups() == (
        "full_fixed_h24_v1", "3", "8", "_python_pyloops")
