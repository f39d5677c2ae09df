"""CUDA-graph invariance: one decode graph, captured once, replayed correctly at every stage.

The alpha gate's promise is that loading a stage changes data (weights, gate values),
never the graph. This check builds the engine as it serves (graph mode `per_layer`: one
graph per decoder layer plus embedding and head), loads everything, then for each stage
of the plan sets that stage's gates and compares one graph replay with the eager forward
pass on the same input. The graph objects must be the same ones before and after (no
re-capture), and their total node count (the graphs are captured with `keep_graph=True`,
so the CUDA runtime can count them) must not change.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from contracts.plan import StagePlan
from validate.coldstart import EngineSpec, make_engine, release


def _cudart():
    """The CUDA runtime library that torch already loaded (found in this process's memory map)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "libcudart" in path:
            return ctypes.CDLL(path)
    return None


def graph_node_count(graph) -> int | None:
    """Nodes of a captured torch CUDAGraph, or None when the raw graph is not kept (torch frees it)."""
    try:
        raw = graph.raw_cuda_graph()
    except (AttributeError, RuntimeError):
        return None
    lib = _cudart()
    if lib is None or not raw:
        return None
    count = ctypes.c_size_t(0)
    err = lib.cudaGraphGetNodes(ctypes.c_void_p(raw), None, ctypes.byref(count))
    return int(count.value) if err == 0 else None


def _node_total(graphs: dict) -> int | None:
    counts = [graph_node_count(g) for g in graphs.values()]
    return None if any(c is None for c in counts) else sum(counts)


def check_graph_invariance(spec: EngineSpec, plan: StagePlan, token: int = 1, position: int = 3) -> dict:
    """Replay the captured decode step at every stage of `plan`; compare with eager; report."""
    import torch

    if not spec.device.startswith("cuda"):
        return {"skipped": "CUDA graphs need a CUDA device (run with --gpu)"}
    engine = make_engine(EngineSpec(spec.ckpt_dir, spec.device, spec.dtype, True, spec.max_tokens), plan)
    try:
        graph = engine.graph
        before_ids = {k: id(g) for k, g in graph.graphs.items()}
        nodes_before = _node_total(graph.graphs)
        engine.start()
        engine.wait_until_loaded()
        model, cache = engine.model, engine.cache
        diffs, replays = [], 0
        with torch.inference_mode():
            for j in range(plan.num_stages):
                model.set_gates(plan.gates_after(j))
                replayed = graph.step(token, position).float().clone()
                replays += 1
                ids = torch.tensor([[token]], device=model.device)
                pos = torch.tensor([position], device=model.device)
                eager = model(ids, positions=pos, cache=cache, kv_len=cache.max_tokens, skip_inactive=False)
                diffs.append(float((replayed.reshape(-1) - eager.float().reshape(-1)).abs().max()))
        after_ids = {k: id(g) for k, g in graph.graphs.items()}
        nodes_after = _node_total(graph.graphs)
        scale = 1e-2 if spec.dtype in ("float16", "bfloat16") else 1e-4
        same = before_ids == after_ids and nodes_before == nodes_after
        return {
            "mode": getattr(graph, "mode", "?"),
            "captures": len(before_ids),
            "graphs_same_objects": before_ids == after_ids,
            "nodes_before": nodes_before,
            "nodes_after": nodes_after,
            "replays": replays,
            "stage_max_abs_diff": diffs,
            "max_abs_diff": max(diffs) if diffs else None,
            "invariant": bool(same and diffs and max(diffs) <= scale * 100),
        }
    finally:
        release(engine)
