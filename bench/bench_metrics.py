"""How fast RunMetrics accounts requests: the per-request cost the simulator pays.

The design's target is 50k simulated requests/s per core at `request` fidelity, so the
metrics path must cost well under 20 us per request. Records are built before timing, so
the figures are the cost of `on_request` (and of the Parquet writer when enabled) alone.

    python bench/bench_metrics.py [--n 500000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from figures import print_figures

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.metrics import GB, RunMetrics  # noqa: E402
from sim.records import RecordWriter, RequestRecord  # noqa: E402
from sim.sketch import QuantileSketch  # noqa: E402


def make_records(n: int, seed: int = 0) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.01, n)).tolist()
    ttfts = rng.lognormal(0.0, 1.5, n).tolist()
    outs = rng.integers(1, 512, n).tolist()
    rejected = (rng.random(n) < 0.01).tolist()
    recs = []
    for i in range(n):
        a, t, o = arrivals[i], ttfts[i], outs[i]
        if rejected[i]:
            recs.append(RequestRecord.rejection(
                policy="progressive+fixed", request_id=i, model="llama-2-7b", function="f",
                arrival_s=a, prompt_tokens=128, output_tokens=o, reason="shed"))
        else:
            recs.append(RequestRecord(
                "progressive+fixed", i, "llama-2-7b", f"f{i % 50}", a, a + t, a + t + 0.02 * o,
                t, 0.02, 128, o, t > 5.0, max(0.0, t - 0.5), 1, 0.97, False, "", i % 64, i % 8, i % 4,
            ))
    return recs


def bench(recs: list[RequestRecord], writer: RecordWriter | None) -> float:
    m = RunMetrics("progressive+fixed", slo_ttft_s=5.0, writer=writer)
    on_request = m.on_request
    start = time.perf_counter()
    for r in recs:
        on_request(r)
    if writer is not None:
        writer.close()  # the tail flush belongs to the writer's cost
    m.finish(recs[-1].finish_s + 1.0)
    return len(recs) / (time.perf_counter() - start)


def bench_memory(n: int) -> float:
    m = RunMetrics("p", 5.0)
    on_memory = m.on_memory
    used = (np.random.default_rng(1).integers(0, 8, n) * 13.5 * GB).tolist()
    start = time.perf_counter()
    for i, u in enumerate(used):
        on_memory(float(i), u, 0.5 * u)
    return n / (time.perf_counter() - start)


def bench_sketch(n: int) -> float:
    values = np.random.default_rng(2).lognormal(0.0, 1.5, n)
    s = QuantileSketch()
    start = time.perf_counter()
    for lo in range(0, n, 4096):
        s.add_many(values[lo : lo + 4096])
    s.quantiles([0.5, 0.9, 0.99])
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000, help="records per measurement")
    args = ap.parse_args()
    recs = make_records(args.n)
    pa.array([0.0])  # pyarrow's first conversion imports its pandas shim (~0.4 s once per process)
    figures: dict[str, object] = {}
    bare = figures["on_request_records_per_s"] = round(bench(recs, None))
    print(f"on_request, no writer:       {bare:>12,.0f} records/s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.parquet"
        rate = bench(recs, RecordWriter(path))
        size = path.stat().st_size
    print(f"on_request + Parquet writer: {rate:>12,.0f} records/s  ({size / args.n:.1f} bytes/record on disk)")
    memory, sketch = bench_memory(args.n), bench_sketch(args.n)
    print(f"on_memory:                   {memory:>12,.0f} calls/s")
    print(f"sketch add_many (4096/call): {sketch:>12,.0f} values/s")
    figures.update(parquet_records_per_s=round(rate), parquet_bytes_per_record=round(size / args.n, 2),
                   on_memory_calls_per_s=round(memory), sketch_values_per_s=round(sketch))
    print_figures(figures)


if __name__ == "__main__":
    main()
