"""Load throughput of the staged loader and cold-start TTFT of the engine, full vs progressive.

    python bench/bench_engine_load.py [--device cpu|cuda] [--shapes smollm2-135m,llama2-7b-4l] [--out F]

For each shape a random fp16 checkpoint is written (timed), then loaded layer by layer
twice: with the files in the page cache ("warm") and after evicting them with
`posix_fadvise(DONTNEED)` ("cold", as after a reboot; no root needed). `llama2-7b-4l` is
LLaMA-2-7B with 4 of its 32 layers: real 405 MB layers without 13.5 GB of RAM. Then the
engine's time to first token from `start()` is measured for the full plan and the seed's
progressive plan (serve after 22 of 30 layers on SmolLM2's shape).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from figures import flattened, print_figures  # noqa: E402

from contracts.plan import full_plan, progressive_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.config import SHAPES  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.loader import StagedLoader  # noqa: E402
from progressive_serve.model import AlphaGatedLlama  # noqa: E402

BENCH_SHAPES = {
    "tiny": SHAPES["tiny"],
    "smollm2-135m": SHAPES["smollm2-135m"],
    "llama2-7b-4l": dataclasses.replace(SHAPES["llama2-7b"], num_layers=4),
    "llama2-7b": SHAPES["llama2-7b"],
}


def evict(ckpt: Path) -> None:
    """Drop the checkpoint's pages from the page cache (clean pages only; no root needed)."""
    for f in ckpt.glob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load_once(ckpt: Path, shape, device: str, direct: bool) -> dict:
    model = AlphaGatedLlama(shape=shape, device=device, dtype=torch.float16, initial_gate=0.0)
    loader = StagedLoader(ckpt, model, full_plan(shape.num_layers), device, direct_read=direct)
    t = time.perf_counter()
    loader.run()
    wall = time.perf_counter() - t
    nbytes = sum(r.nbytes for r in loader.records)
    read = sum(r.read_s for r in loader.records)
    copy = sum(r.copy_s for r in loader.records)
    del model, loader
    return {
        "bytes": nbytes,
        "wall_s": wall,
        "read_s": read,
        "copy_s": copy,
        "gbps": nbytes / wall / 1e9,
        "read_gbps": nbytes / read / 1e9 if read else None,
    }


def ttft(ckpt: Path, plan, device: str) -> dict:
    t = time.perf_counter()
    eng = ProgressiveEngine(
        ckpt, plan, device=device, dtype="float16" if device == "cuda" else "float32", max_tokens=128
    )
    init = time.perf_counter() - t
    eng.start()
    res = eng.generate([1, 2, 3, 4, 5, 6, 7, 8], 1)
    out = {
        "plan": plan.name,
        "init_s": init,
        "ttft_from_start_s": res.ttft_s,
        "stage_at_first_token": res.stage_at_first_token,
        "layers_at_first_token": res.layers_at_first_token,
    }
    eng.wait_until_loaded()
    out["all_loaded_s"] = eng.timings.stage_ready_s[-1]
    eng.unload()
    return out


def stage_latency(ckpt: Path, plan, tokens: int = 16) -> list[dict]:
    """Decode seconds per token at each stage, absent layers skipped vs computed with alpha = 0."""
    rows = []
    for skip in (True, False):
        eng = ProgressiveEngine(ckpt, plan, device="cpu", max_tokens=128, skip_inactive=skip)
        for j in range(plan.num_stages):
            eng.bind_stage(j)
            eng.generate(list(range(1, 33)), 4)  # warm
            res = eng.generate(list(range(1, 33)), tokens)
            rows.append(
                {
                    "stage": j,
                    "layers": len(plan.layers_after(j)),
                    "skip_inactive": skip,
                    "decode_s_per_token": res.decode_s_per_token,
                    "prefill_s": res.ttft_s - res.wait_s,
                }
            )
        eng.unload()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="smollm2-135m,llama2-7b-4l")
    ap.add_argument("--dir", default=None, help="where checkpoints go (default: a temp dir, removed)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="ps-bench-"))
    results: dict = {
        "device": a.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "shapes": {},
    }
    for name in a.shapes.split(","):
        shape = BENCH_SHAPES[name]
        ckpt = root / f"{name}-fp16"
        t = time.perf_counter()
        if not (ckpt / "config.json").exists():
            write_random_checkpoint(ckpt, shape, seed=0, dtype="float16")
        write_s = time.perf_counter() - t
        r: dict = {"write_s": write_s}
        for direct in [True, False] if a.device == "cpu" else [False]:
            key = "direct" if direct else "buffered"
            load_once(ckpt, shape, a.device, direct)  # warm the page cache
            r[f"warm_{key}"] = load_once(ckpt, shape, a.device, direct)
            evict(ckpt)
            r[f"cold_{key}"] = load_once(ckpt, shape, a.device, direct)
        if name in ("smollm2-135m", "tiny"):
            n = shape.num_layers
            r["ttft"] = [ttft(ckpt, p, a.device) for p in (full_plan(n), progressive_plan(n))]
            if a.device == "cpu":
                r["stage_latency"] = stage_latency(ckpt, progressive_plan(n))
        results["shapes"][name] = r
        print(name, json.dumps(r, indent=1), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    print_figures({"threads": results["threads"], **flattened(results["shapes"])})
    if not a.dir:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
