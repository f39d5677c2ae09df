"""Latency tables per stage (prefill vs prompt tokens, decode step vs batch) and the gate's cost.

Tables are measured on a fully loaded model with each stage's gates set, through the
model's own forward pass (the engine serves batch 1; the simulator needs batches, so the
decode table calls the model with a batch KV cache). With `skip_inactive` an absent
layer costs nothing, so a stage's tables are below the full model's: that ratio is the
profile's `latency_scale`.
"""

from __future__ import annotations

import statistics

from contracts.plan import StagePlan
from validate.device import repeat_timed
from validate.results import LatencyTable


def _model_step(model, batch: int, tokens: int, context: int, device: str):
    """A closure running one forward pass of `tokens` new tokens after `context` cached ones."""
    import torch

    from progressive_serve.kv_cache import KVCache

    cache = KVCache.allocate(
        model.shape, batch=batch, max_tokens=context + tokens, device=device, dtype=model.dtype
    )
    gen = torch.Generator().manual_seed(batch * 7919 + tokens)
    ids = torch.randint(0, model.shape.vocab_size, (batch, tokens), generator=gen).to(device)
    pos = torch.arange(context, context + tokens, device=device)

    @torch.inference_mode()
    def step():
        return model(
            ids, positions=pos, cache=cache, kv_len=context + tokens, last_only=True, skip_inactive=True
        )

    return step


def prefill_table(model, device: str, tokens: tuple[int, ...], repeats: int) -> LatencyTable:
    """Median seconds of a one-request prefill for each prompt length."""
    secs = [
        statistics.median(repeat_timed(_model_step(model, 1, t, 0, device), device, repeats)) for t in tokens
    ]
    return LatencyTable([float(t) for t in tokens], secs)


def decode_table(model, device: str, batches: tuple[int, ...], context: int, repeats: int) -> LatencyTable:
    """Median seconds of one decode step (one new token per sequence) for each batch size."""
    secs = [
        statistics.median(repeat_timed(_model_step(model, b, 1, context, device), device, repeats))
        for b in batches
    ]
    return LatencyTable([float(b) for b in batches], secs)


def stage_tables(
    model, plan: StagePlan, stage_names: list[str], device: str, sizes
) -> tuple[dict[str, LatencyTable], dict[str, LatencyTable]]:
    """(prefill, decode) tables for every stage of `plan`, keyed by stage name; gates restored after."""
    saved = model.gates.tolist()
    prefill, decode = {}, {}
    try:
        for j, name in enumerate(stage_names):
            model.set_gates(plan.gates_after(j))
            prefill[name] = prefill_table(model, device, sizes.prefill_tokens, sizes.repeats)
            decode[name] = decode_table(
                model, device, sizes.decode_batches, sizes.decode_context, sizes.repeats
            )
    finally:
        model.set_gates(saved)
    return prefill, decode


def gate_overhead(engine, prompt_ids: list[int], steps: int, lerp_s_per_step: float | None = None) -> dict:
    """Decode tokens/s of the engine with every gate at 1, and the share the gates themselves cost.

    The project's model has no ungated twin, so "without gates" is derived from the
    gate's only extra work, one `lerp` per layer per step, timed alone on the same device
    and shapes (`lerp_s_per_step`): plain = 1 / (step - lerp time). With CUDA graphs the
    lerps are inside the graph, so this is their kernel time, not a launch cost.
    """
    result = engine.generate(prompt_ids, steps + 1)
    step_s = result.decode_s_per_token
    out = {
        "gated_tok_s": 1.0 / step_s if step_s > 0 else float("nan"),
        "cuda_graph": engine.graph is not None,
        "batch": 1,
        "steps": steps,
        "method": "engine decode with all gates at 1; ungated = same minus the measured per-step lerp time",
    }
    if lerp_s_per_step is not None and 0 < lerp_s_per_step < step_s:
        out["plain_tok_s"] = 1.0 / (step_s - lerp_s_per_step)
        out["overhead"] = lerp_s_per_step / (step_s - lerp_s_per_step)
    return out


def lerp_seconds_per_step(hidden_size: int, num_layers: int, dtype: str, device: str, repeats: int) -> float:
    """Seconds of `num_layers` gate lerps on one decode token's hidden state (the gate's extra work)."""
    import torch

    td = getattr(torch, dtype)
    h = torch.randn(1, 1, hidden_size, device=device).to(td)
    f = torch.randn(1, 1, hidden_size, device=device).to(td)
    gates = torch.ones(num_layers, device=device, dtype=td)

    inner = 50  # many rounds per timed call, so launch and timer overheads spread thin

    def run():
        x = h
        for _ in range(inner):
            for i in range(num_layers):
                x = torch.lerp(x, f, gates[i])
        return x

    fn = run
    if device.startswith("cuda"):
        from progressive_serve import device_guard

        graph = torch.cuda.CUDAGraph()
        run()
        with device_guard.capture_window(torch.device(device)):  # the one owner of captures
            device_guard.synchronize(torch.device(device))
            with torch.cuda.graph(graph):
                run()
        fn = graph.replay
    return statistics.median(repeat_timed(fn, device, repeats)) / inner


def served_decode_by_context(engine, device: str, contexts: tuple[int, ...], repeats: int) -> dict:
    """Median seconds of the decode step the engine itself serves (its captured graph on CUDA,
    eager elsewhere) at several positions. The graph attends over all of the cache's slots
    whatever the position (a fixed shape), so on CUDA the step should not grow with context;
    the eager step attends over position + 1 slots."""
    import torch

    usable = [c for c in contexts if c < engine.cache.max_tokens]

    def at(pos: int):
        @torch.inference_mode()
        def step():
            return engine._decode(1, pos)

        return step

    secs = [statistics.median(repeat_timed(at(c), device, repeats)) for c in usable]
    return {
        "contexts": usable,
        "seconds": secs,
        "cuda_graph": engine.graph is not None,
        "kv_slots_attended": engine.cache.max_tokens if engine.graph is not None else "position + 1",
        "method": "engine._decode at each position, fully loaded, batch 1",
    }
