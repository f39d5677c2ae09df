"""Time to first token from cold, per staging plan, split into the parts it is made of.

A cold start here begins with the checkpoint's pages dropped from the page cache (so the
weights come off the disk, as on a node that has not served the model recently) and an
engine that does not exist yet. Process start and CUDA context cannot recur inside this
process, so they are measured in child processes (`engine_phases`) and added as parts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from contracts.plan import StagePlan
from validate.probes import drop_file_cache
from validate.results import ColdStart


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine: the same for every plan so that only the plan differs."""

    ckpt_dir: Path
    device: str
    dtype: str
    use_cuda_graph: bool
    max_tokens: int
    max_batch: int = 1  # > 1: continuous batching, which decodes eagerly (no decode graph)


def make_engine(spec: EngineSpec, plan: StagePlan):
    from progressive_serve.engine import ProgressiveEngine

    return ProgressiveEngine(
        spec.ckpt_dir, plan, device=spec.device, dtype=spec.dtype,
        use_cuda_graph=spec.use_cuda_graph and spec.max_batch == 1, max_tokens=spec.max_tokens,
        max_batch=spec.max_batch,
    )  # fmt: skip


def release(engine) -> None:
    """Drop an engine's weights, cache and graphs (the engine empties the CUDA cache itself).

    No `gc.collect()` here: a full collection holds the GIL for a noticeable time with
    torch loaded, which would delay the replay's arrivals on other threads.
    """
    engine.unload()


def measure_cold_start(
    spec: EngineSpec,
    plan: StagePlan,
    prompt_ids: list[int],
    files: list[Path],
    process_s: float,
    context_s: float,
    *,
    until_first_token: bool = False,
) -> tuple[ColdStart, dict]:
    """One cold start of `plan`: (its ColdStart, the engine's own timings as a dict).

    `until_first_token`: unload right after the first token instead of waiting for the rest
    of the model (`full_load_s` is then NaN): a comparison of first tokens reads only the
    serving stage's bytes from the disk (the GPU call's budget counts them).
    With init overlapped (`StagePlan.overlap_init`, and every pipelined plan) the engine's
    constructor only allocates the weights: "engine init" is that, and the KV cache and the
    graph are made beside the load, inside "weights to serving stage".
    """
    drop_file_cache(files)
    t0 = time.perf_counter()
    engine = make_engine(spec, plan)
    init_s = time.perf_counter() - t0
    engine.start()
    result = engine.generate(prompt_ids, 1)
    if not until_first_token:
        engine.wait_until_loaded()
    timings = engine.timings.to_dict()
    full_load_s = timings["stage_ready_s"][-1] if timings["stage_ready_s"] and not until_first_token else float("nan")
    release(engine)
    parts = {
        "process start": process_s,
        "CUDA context": context_s,
        "engine init": init_s,
        "weights to serving stage": result.wait_s,
        "first token compute": result.ttft_s - result.wait_s,
    }
    cs = ColdStart(
        plan=plan.name,
        ttft_s=process_s + context_s + init_s + result.ttft_s,
        stage_at_first_token=int(result.stage_at_first_token),
        layers_at_first_token=int(result.layers_at_first_token),
        full_load_s=float(full_load_s),
        parts=parts,
    )
    return cs, timings
