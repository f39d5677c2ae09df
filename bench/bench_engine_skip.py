"""What an inactive layer costs in eager execution: the seed's gate against skipping it.

    python bench/bench_engine_skip.py [--shape smollm2-135m] [--device cpu|cuda] [--threads 1]

The seed's gate computes every layer and multiplies an absent one by alpha = 0, so a
partial model costs as much as the full one. `AlphaGatedLlama` with `skip_inactive=True`
(the engine's default) does not call a gated-off layer at all. For each stage of the seed's
progressive plan this times one decode step (one token attending over 256 cached
positions) and one 128-token prefill both ways, and prints each stage's time relative to the
full model: with skipping it should fall with the share of layers present; the seed's
stays at 1. The weights are zeros (a dense layer's time does not depend on its values), so
nothing is read from disk. Prints a table and, with `--out`, JSON. CUDA graphs (where the
branch sits outside the captured regions) are measured by `bench_engine_gpu.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from figures import flattened, print_figures  # noqa: E402

from contracts.plan import progressive_plan  # noqa: E402
from progressive_serve.config import shape_named  # noqa: E402
from progressive_serve.kv_cache import KVCache  # noqa: E402
from progressive_serve.model import AlphaGatedLlama  # noqa: E402

CONTEXT = 256
PREFILL = 128


def timed_pair(fns: dict, device: torch.device, reps: int) -> dict:
    """Median seconds of each `fns[k]()` over `reps` rounds, alternating them within each
    round so that a busy machine slows both alike; two warm-up rounds."""
    times: dict = {k: [] for k in fns}
    for i in range(reps + 2):
        for k, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


@torch.inference_mode()
def measure(shape_name: str, device: str, reps: int) -> list[dict]:
    dev = torch.device(device)
    shape = shape_named(shape_name)
    model = AlphaGatedLlama(shape=shape, device=dev, dtype=torch.float32, initial_gate=1.0)
    cache = KVCache.allocate(shape, batch=1, max_tokens=CONTEXT + 1, device=dev, dtype=torch.float32)
    plan = progressive_plan(shape.num_layers)
    token = torch.ones((1, 1), dtype=torch.long, device=dev)
    pos = torch.tensor([CONTEXT], device=dev)
    prompt = torch.ones((1, PREFILL), dtype=torch.long, device=dev)
    ppos = torch.arange(PREFILL, device=dev)
    rows = []
    for j in range(plan.num_stages):
        model.set_gates(plan.gates_after(j))
        row = {"stage": j, "layers": len(plan.layers_after(j))}
        modes = {"skip": True, "seed": False}
        row.update({f"decode_{k}_s": v for k, v in timed_pair({
            k: (lambda s=s: model(token, positions=pos, cache=cache, kv_len=CONTEXT + 1, skip_inactive=s))
            for k, s in modes.items()}, dev, reps).items()})
        row.update({f"prefill_{k}_s": v for k, v in timed_pair({
            k: (lambda s=s: model(prompt, positions=ppos, cache=cache, last_only=True, skip_inactive=s))
            for k, s in modes.items()}, dev, max(3, reps // 4)).items()})
        rows.append(row)
    full = rows[-1]
    for row in rows:
        for k in ("decode_skip_s", "decode_seed_s", "prefill_skip_s", "prefill_seed_s"):
            row[k[:-2] + "_vs_full"] = row[k] / full[k]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m", help="a named LLaMA shape (default smollm2-135m)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--reps", type=int, default=40, help="timed decode steps per point (median)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.shape, args.device, args.reps)
    print(f"{args.shape} on {args.device} ({args.threads} threads); time vs the full model, skip / seed")
    print(f"{'stage':>5} {'layers':>6} {'decode ms skip':>14} {'seed':>7} {'ratio skip':>10} {'seed':>6}"
          f" {'prefill ms skip':>15} {'seed':>7} {'ratio skip':>10} {'seed':>6}")
    for r in rows:
        print(f"{r['stage']:5d} {r['layers']:6d} {r['decode_skip_s'] * 1e3:14.2f} {r['decode_seed_s'] * 1e3:7.2f}"
              f" {r['decode_skip_vs_full']:10.2f} {r['decode_seed_vs_full']:6.2f}"
              f" {r['prefill_skip_s'] * 1e3:15.1f} {r['prefill_seed_s'] * 1e3:7.1f}"
              f" {r['prefill_skip_vs_full']:10.2f} {r['prefill_seed_vs_full']:6.2f}")
    if args.out:
        args.out.write_text(json.dumps({"shape": args.shape, "device": args.device, "rows": rows}, indent=2) + "\n")
    print_figures(flattened({f"stage{r['stage']}": {k: v for k, v in r.items() if k != "stage"} for r in rows}))


if __name__ == "__main__":
    main()
