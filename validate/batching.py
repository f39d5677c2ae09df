"""The engine's own continuous batching and execute-while-load, measured as the engine serves.

The latency tables time the model's forward pass at batch sizes the engine never served
before it could batch. Here the engine itself (`ProgressiveEngine(max_batch=B)`) serves B
concurrent requests of the same prompt length and output length, and the decode step time
is read from their results: per request (total - TTFT) / (tokens - 1), the median over the
batch. Execute-while-load needs no table of its own: the `pipelined` cold start in
`cold_starts` is served by it, and its overlap is reported here from the same run.
"""

from __future__ import annotations

import statistics
import threading
import time

from contracts.plan import StagePlan
from validate.coldstart import EngineSpec


def measure_batching(
    spec: EngineSpec, plan: StagePlan, prompt_ids: list[int], batches: tuple[int, ...], tokens: int
) -> list[dict]:
    """One row per batch size: decode seconds per step, tokens/s, and whether steps were shared."""
    from progressive_serve.engine import ProgressiveEngine

    rows = []
    for b in batches:
        # KV slots only as long as these requests: B x 4,096 slots of a 7B model would be 69 GB
        eng = ProgressiveEngine(
            spec.ckpt_dir, plan, device=spec.device, dtype=spec.dtype, max_tokens=len(prompt_ids) + tokens,
            max_batch=max(b, 2),
        )  # fmt: skip
        eng.start(background=False)
        eng.generate(prompt_ids, 2)  # first-use costs (kernels, allocator) are not the batch's
        results: list = [None] * b
        start = threading.Barrier(b)

        def call(k: int, eng=eng, start=start, results=results) -> None:
            start.wait()
            results[k] = eng.generate(prompt_ids, tokens)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=call, args=(k,)) for k in range(b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        shared = eng.batcher.max_seen if eng.batcher is not None else 1
        eng.unload()
        step = statistics.median(r.decode_s_per_token for r in results)
        rows.append(
            {
                "batch": b,
                "prompt_tokens": len(prompt_ids),
                "tokens": tokens,
                "decode_s_per_step": step,
                "tokens_per_s": b * tokens / wall,
                "largest_shared_step": shared,
                "cuda_graph": False,
            }
        )
    return rows
