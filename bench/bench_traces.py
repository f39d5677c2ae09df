"""Throughput of the trace readers and generators (rows/s and requests/s), on generated files.

Run: `.venv/bin/python bench/bench_traces.py [--functions 3000]`. Writes nothing into the
project; temporary files go to a temp folder. The shared real samples are used where present
(beside the checkout, ../shared/traces) for the LLM readers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from figures import print_figures

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from traces import open_trace  # noqa: E402
from traces.azure2019 import read_invocations  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"


def make_day(folder: Path, functions: int, seed: int = 0) -> Path:
    """A day file with heavy-tailed per-function counts (log-normal daily totals)."""
    rng = np.random.default_rng(seed)
    path = folder / "invocations_per_function_md.anon.d01.csv"
    daily = np.exp(rng.normal(3.7, 2.0, functions))
    with open(path, "w") as f:
        f.write("HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(i) for i in range(1, 1441)) + "\n")
        for i in range(functions):
            counts = rng.poisson(daily[i] / 1440, 1440)
            f.write(f"o{i % 97:x},a{i % 500:x},f{i:x},http," + ",".join(map(str, counts)) + "\n")
    return path


def timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=3000, help="rows in the generated day file")
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = make_day(Path(tmp), args.functions)
        mb = path.stat().st_size / 1e6
        secs, rows = timed(lambda: sum(1 for _ in read_invocations(path)))
        print(f"azure2019 read_invocations   {rows / secs:10.0f} rows/s  ({rows * 1440 / secs / 1e6:.1f} M cells/s, "
              f"{mb / secs:.1f} MB/s, {rows} rows, {mb:.0f} MB)")
        figures.update(azure2019_rows_per_s=round(rows / secs), azure2019_mb_per_s=round(mb / secs, 1))
        trace = open_trace(str(path), select="all", tokens="fixed:100,10")
        secs, n = timed(lambda: sum(1 for _ in trace))
        print(f"azure2019 trace (all fns)    {n / secs:10.0f} requests/s  ({n} requests, incl. re-reading the file)")
        figures["azure2019_all_req_per_s"] = round(n / secs)
        t0 = time.perf_counter()
        trace = open_trace(str(path), select="top", functions=8)
        figures["azure2019_top8_open_s"] = round(time.perf_counter() - t0, 3)
        print(f"azure2019 open (pass 1)      {figures['azure2019_top8_open_s']:10.2f} s")
        secs, n = timed(lambda: sum(1 for _ in trace))
        print(f"azure2019 trace (top 8)      {n / secs:10.0f} requests/s  ({n} requests, first pass reads the file)")
        figures["azure2019_top8_req_per_s"] = round(n / secs)
        secs, n = timed(lambda: sum(1 for _ in trace))
        print(f"azure2019 replay (top 8)     {n / secs:10.0f} requests/s  (cells cached between replays)")
        figures["azure2019_top8_replay_req_per_s"] = round(n / secs)
    conv = SHARED / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
    if conv.exists():
        trace = open_trace(str(conv))
        secs, n = timed(lambda: sum(1 for _ in trace))
        print(f"azure_llm_2023 conv          {n / secs:10.0f} requests/s  ({n} requests)")
        figures["azure_llm_2023_conv_req_per_s"] = round(n / secs)
    trace = open_trace("synthetic", duration_s=86400.0, rate_scale=50.0)
    secs, n = timed(lambda: sum(1 for _ in trace))
    print(f"synthetic (8 fns, 1 day x50) {n / secs:10.0f} requests/s  ({n} requests)")
    figures["synthetic_req_per_s"] = round(n / secs)
    print_figures(figures)


if __name__ == "__main__":
    main()
