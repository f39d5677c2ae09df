"""`bench/bench_day.py` end to end with tiny options: one leg per combination in a child
process, a table, and a last line of key=value pairs whose numbers hang together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
        assert 0 < float(figures[f"{key}_peak_mem_mb"]) < 2048
        rate = float(figures[f"{key}_cpu_req_per_s"])
        day = float(figures[f"{key}_day_extrapolated_s"])
        # the day is the generator's expected count over the rate (printed rounded to whole requests/s)
        assert abs(day - int(figures["full_day_requests"]) / rate) <= 1 + day * 0.51 / rate
        # both printed rounded (the day to whole seconds, the ratio to hundredths)
        assert abs(float(figures[f"{key}_ratio_to_10min"]) - day / 600) <= 0.005 + 0.5 / 600


def test_bench_day_refuses_unpaired_legs():
    out = subprocess.run([sys.executable, "bench/bench_day.py", "--hours", "1,2", "--volume", "0.1,0.2,0.3"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode != 0 and "pair them" in out.stderr
