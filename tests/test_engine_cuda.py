"""CUDA paths: VMM layout (CPU), graph capture across stages and unmapped layers (GPU only)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from policies.plan import StagePlan, full_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.config import SHAPES  # noqa: E402
from progressive_serve.cuda_vmm import plan_layout  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.testing import random_prompt, torch_threads  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
PLAN = StagePlan("three", 6, ((0, 5), (1, 4), (2, 3)), serve_from=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.mark.parametrize("name", ["tiny", "smollm2-135m", "llama2-7b"])
def test_vmm_layout_gives_each_layer_its_own_mappable_range(name):
    shape = SHAPES[name]
    gran = 2 << 20
    slots = plan_layout(shape, element_size=2, granularity=gran)
    assert [s.layer for s in slots] == list(range(shape.num_layers))
    end = 0
    for s in slots:
        assert s.start == end and s.start % gran == 0 and s.size % gran == 0
        offsets = sorted(off for off, _ in s.tensors.values())
        assert offsets[0] == s.start and all(o % 256 == 0 for o in offsets)
        last_off, last_shape = max(s.tensors.values())
        n = 1
        for d in last_shape:
            n *= d
        assert last_off + 2 * n <= s.start + s.size  # every tensor inside its layer's range
        end = s.start + s.size
    # mapping granularity wastes under one granule per layer
    assert end - shape.num_layers * shape.layer_numel() * 2 < shape.num_layers * gran


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=6, dtype="float32")


@pytest.fixture(scope="module")
def cpu_tokens(tiny):
    out = []
    for j in range(PLAN.num_stages):
        eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=64)
        for k in range(j + 1):
            eng.bind_stage(k)
        out.append(eng.generate(random_prompt(eng.shape, 6), 8).tokens)
    return out


@pytest.mark.parametrize("mode", ["whole", "per_layer"])
def test_graph_runner_logic_emulated_on_cpu(tiny, cpu_tokens, mode):
    """Static buffers, fixed-shape steps and the per-layer skip, replayed eagerly: same tokens."""
    from progressive_serve.cuda_graph import DecodeGraph

    eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=64)
    eng.graph = DecodeGraph(model=eng.model, cache=eng.cache, mode=mode, emulate=True)
    eng.graph.capture()
    graphs = dict(eng.graph.graphs)
    assert len(graphs) == (1 if mode == "whole" else 6 + 2)
    for j in range(PLAN.num_stages):
        eng.bind_stage(j)
        assert eng.generate(random_prompt(eng.shape, 6), 8).tokens == cpu_tokens[j], f"stage {j}"
    assert eng.graph.graphs == graphs


def test_whole_graph_discards_a_closed_layer_even_when_its_weights_are_not_finite(tiny, cpu_tokens):
    """In one-graph mode closed layers run, possibly on half-copied weights: an inf there must
    not leak into the stream (lerp(h, inf, 0) would be NaN)."""
    from progressive_serve.cuda_graph import DecodeGraph

    eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=64)
    eng.graph = DecodeGraph(model=eng.model, cache=eng.cache, mode="whole", emulate=True)
    eng.graph.capture()
    eng.bind_stage(0)
    closed = PLAN.stages[1][0]
    with torch.no_grad():
        eng.model.model.layers[closed].mlp.down_proj.weight.fill_(float("inf"))
    res = eng.generate(random_prompt(eng.shape, 6), 8)
    assert res.tokens == cpu_tokens[0]


@cuda
@pytest.mark.parametrize("mode,vmm", [("whole", False), ("per_layer", False), ("per_layer", True)])
def test_graph_captured_before_stage_1_serves_every_stage(tiny, cpu_tokens, mode, vmm):
    eng = ProgressiveEngine(
        tiny, PLAN, device="cuda", use_cuda_graph=True, graph_mode=mode, use_vmm=vmm, max_tokens=64
    )
    graphs = dict(eng.graph.graphs)
    for j in range(PLAN.num_stages):
        eng.bind_stage(j)
        res = eng.generate(random_prompt(eng.shape, 6), 8)
        assert res.tokens == cpu_tokens[j], f"stage {j}"
        assert eng.graph.graphs == graphs  # the same graph objects: never re-captured
        if vmm:
            mapped = eng.arena.mapped_bytes()
            assert mapped == sum(eng.arena.slots[i].size for i in PLAN.layers_after(j))
    eng.unload()


@cuda
def test_cuda_engine_without_graphs_matches_cpu(tiny, cpu_tokens):
    eng = ProgressiveEngine(tiny, full_plan(6), device="cuda", max_tokens=64).start(background=False)
    assert eng.generate(random_prompt(eng.shape, 6), 8).tokens == cpu_tokens[-1]
    assert eng.timings.context_s > 0
    eng.unload()


@cuda
def test_engines_built_captured_and_unloaded_in_parallel_threads(tiny, cpu_tokens):
    """The replay server's pattern on a real device: captures in some threads while others
    build, serve and unload (device-wide calls go through `device_guard`); no capture error."""
    import threading

    errors: list[BaseException] = []
    tokens: list[list[int]] = []

    def worker(k: int) -> None:
        try:
            for _ in range(3):
                eng = ProgressiveEngine(tiny, full_plan(6), device="cuda", use_cuda_graph=True, max_tokens=64)
                eng.start(background=False)
                tokens.append(eng.generate(random_prompt(eng.shape, 6), 8).tokens)
                eng.unload()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, repr(errors[0])
    assert tokens == [cpu_tokens[-1]] * 12


@cuda
def test_cuda_batching_and_pipelined_prefill_give_the_cpu_tokens(tiny, cpu_tokens):
    from policies.plan import pipelined_plan

    eng = ProgressiveEngine(tiny, full_plan(6), device="cuda", max_tokens=64, max_batch=2).start(background=False)
    assert eng.generate(random_prompt(eng.shape, 6), 8).tokens == cpu_tokens[-1]
    eng.unload()
    eng = ProgressiveEngine(tiny, pipelined_plan(6), device="cuda", max_tokens=64).start()
    assert eng.generate(random_prompt(eng.shape, 6), 8).tokens == cpu_tokens[-1]
    eng.unload()


@cuda
@pytest.mark.parametrize("mode", ["whole", "per_layer"])
def test_cuda_graph_captured_beside_the_load_serves_the_cpu_tokens(tiny, cpu_tokens, mode):
    """Init overlapped on the GPU: the capture (and its warm-up over half-copied weights) runs
    while the loader copies stage 0; held before stage 1, every token is stage 0's, and the
    CPU engine's; once loaded, the full model's."""
    import dataclasses
    import threading

    plan = dataclasses.replace(PLAN, overlap_init=True)
    eng = ProgressiveEngine(tiny, plan, device="cuda", use_cuda_graph=True, graph_mode=mode, max_tokens=64)
    assert eng.graph is None and eng.cache is None
    gate = threading.Event()
    eng.loader.prepare_unit = lambda unit: unit in plan.stages[1] and gate.wait(60)
    eng.start()
    res = eng.generate(random_prompt(eng.shape, 6), 8)
    assert res.token_stages == [0] * 8 and res.tokens == cpu_tokens[0]
    assert eng.graph.captured and eng.timings.init_done_s is not None and eng.timings.capture_s > 0
    gate.set()
    eng.wait_until_loaded(60)
    assert eng.generate(random_prompt(eng.shape, 6), 8).tokens == cpu_tokens[-1]
    eng.unload()
