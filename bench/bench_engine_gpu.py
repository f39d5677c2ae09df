"""On a GPU: what an inactive layer costs (compute and memory) in each execution mode.

    python bench/bench_engine_gpu.py --ckpt DIR [--plan-fractions 0.75,0.875,1.0] [--out F]

For each stage of the seed's progressive plan it reports the decode-step time of one
captured graph in `whole` mode (the seed: inactive layers computed on zero weights and
multiplied by 0) and in `per_layer` mode (inactive layers not launched), and, with
`use_vmm`, the physical GPU memory mapped for layers (`LayerArena.mapped_bytes`) next to
what `torch.cuda.mem_get_info` sees. Needs CUDA; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from figures import flattened, print_figures  # noqa: E402

from contracts.plan import progressive_plan  # noqa: E402
from progressive_serve.config import LlamaShape  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402


def step_time(eng: ProgressiveEngine, reps: int = 50) -> float:
    """Mean seconds per captured decode step (one token at position 16)."""
    for _ in range(5):
        eng.graph.step(1, 16)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        eng.graph.step(1, 16)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def run_mode(ckpt: Path, plan, mode: str, vmm: bool, dtype: str) -> dict:
    free0 = torch.cuda.mem_get_info()[0]
    t = time.perf_counter()
    eng = ProgressiveEngine(
        ckpt,
        plan,
        device="cuda",
        dtype=dtype,
        use_cuda_graph=True,
        graph_mode=mode,
        use_vmm=vmm,
        max_tokens=256,
    )
    init_s = time.perf_counter() - t
    out = {
        "mode": mode,
        "vmm": vmm,
        "init_s": init_s,
        "capture_s": eng.timings.capture_s,
        "used_before_load_gb": (free0 - torch.cuda.mem_get_info()[0]) / 1e9,
        "stages": [],
    }
    for j in range(plan.num_stages):
        eng.bind_stage(j)
        out["stages"].append(
            {
                "stage": j,
                "layers": len(plan.layers_after(j)),
                "step_s": step_time(eng),
                "used_gb": (free0 - torch.cuda.mem_get_info()[0]) / 1e9,
                "mapped_layer_gb": eng.arena.mapped_bytes() / 1e9 if eng.arena is not None else None,
            }
        )
    out["layers"] = [r.to_dict() for r in eng.timings.layers]
    eng.unload()
    torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--plan-fractions", default="0.75,0.875,1.0")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        print_figures({"skipped": 1})
        return 0
    ckpt = Path(a.ckpt)
    n = LlamaShape.from_dir(ckpt).num_layers
    plan = progressive_plan(n, fractions=tuple(float(x) for x in a.plan_fractions.split(",")))
    res = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "ckpt": str(ckpt),
        "plan": plan.to_dict(),
        "runs": [
            run_mode(ckpt, plan, m, v, a.dtype)
            for m, v in (("whole", False), ("per_layer", False), ("per_layer", True))
        ],
    }
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    # per mode: the load and each stage's step time and memory (the per-layer timings stay in the JSON)
    print_figures(flattened({f"{r['mode']}{'_vmm' if r['vmm'] else ''}": {k: v for k, v in r.items() if k != "layers"}
                             for r in res["runs"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
