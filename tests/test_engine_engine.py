"""ProgressiveEngine on the CPU: serve early, keep serving while stages bind, record stages."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from policies.plan import StagePlan, full_plan, progressive_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.testing import hf_greedy, hf_reference, random_prompt, torch_threads  # noqa: E402

PLAN = StagePlan("two", 6, ((0, 5, 1, 4), (2, 3)), serve_from=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=4, dtype="float32")


@pytest.fixture(scope="module")
def reference(tiny):
    return hf_reference(tiny)


def test_fully_loaded_engine_generates_like_transformers(tiny, reference):
    eng = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64).start()
    prompt = random_prompt(eng.shape, 8)
    res = eng.generate(prompt, 10)
    assert res.tokens == hf_greedy(reference, prompt, 10)
    assert res.stage_at_first_token == 0 and res.token_stages == [0] * 10
    assert res.layers_at_first_token == 6 and res.ttft_s >= res.wait_s >= 0
    eng.unload()


def test_stage_bound_mid_request_refills_and_continues_as_full_model(tiny, reference):
    eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=64)
    eng.bind_stage(0)
    prompt = random_prompt(eng.shape, 6, seed=1)

    def bind_at(i: int) -> None:
        if i == 2:  # after the third token, the rest of the model arrives
            eng.bind_stage(1)

    res = eng.generate(prompt, 8, on_token=bind_at)
    assert res.token_stages == [0, 0, 0, 1, 1, 1, 1, 1]
    assert res.refills == 1 and res.layers_at_first_token == 4
    # from the refill on, the engine is the full model continuing the same context
    assert res.tokens[3:] == hf_greedy(reference, prompt + res.tokens[:3], 5)


def test_plan_without_refill_keeps_decoding_when_a_stage_binds(tiny):
    eng = ProgressiveEngine(tiny, dataclasses.replace(PLAN, refill=False), device="cpu", max_tokens=64)
    eng.bind_stage(0)

    def bind_at(i: int) -> None:
        if i == 2:
            eng.bind_stage(1)

    res = eng.generate(random_prompt(eng.shape, 6, seed=1), 8, on_token=bind_at)
    assert res.token_stages == [0, 0, 0, 1, 1, 1, 1, 1]
    assert res.refills == 0


def test_background_loading_reports_stages_and_timings(tiny):
    plan = progressive_plan(6, fractions=(0.5, 1.0))
    eng = ProgressiveEngine(tiny, plan, device="cpu", max_tokens=64).start()
    res = eng.generate(random_prompt(eng.shape, 5), 6)
    assert res.stage_at_first_token in (0, 1)
    assert res.token_stages == sorted(res.token_stages)
    eng.wait_until_loaded(timeout=30)
    t = eng.timings
    assert len(t.stage_ready_s) == 2 and t.serve_ready_s == t.stage_ready_s[0]
    assert [r.layer for r in t.layers][0] is None and len(t.layers) == 7
    assert t.alloc_s > 0 and t.kv_alloc_s > 0 and t.process_s > 0 and t.context_s == 0.0
    assert t.load_bytes() > 0 and t.load_gbps() > 0
    assert set(t.to_dict()) >= {"process_s", "context_s", "alloc_s", "capture_s", "layers", "stage_ready_s"}
    eng.unload()


def test_concurrent_requests_are_served_one_at_a_time(tiny, reference):
    import threading

    eng = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64).start(background=False)
    prompts = [random_prompt(eng.shape, 5, seed=s) for s in range(4)]
    out: dict[int, list[int]] = {}
    threads = [
        threading.Thread(target=lambda k=k: out.__setitem__(k, eng.generate(prompts[k], 5).tokens))
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[k] for k in range(4)] == [hf_greedy(reference, p, 5) for p in prompts]


def test_gated_compute_and_skipped_compute_agree(tiny):
    """Skipping an absent layer and computing it with alpha = 0 give the same tokens."""
    outs = []
    for skip in (True, False):
        eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=64, skip_inactive=skip)
        eng.bind_stage(0)
        outs.append(eng.generate(random_prompt(eng.shape, 7, seed=3), 6).tokens)
    assert outs[0] == outs[1]


def test_errors_are_clear(tiny):
    eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=16)
    with pytest.raises(RuntimeError, match="start"):
        eng.generate([1, 2], 2)
    eng.bind_stage(0)
    with pytest.raises(ValueError, match="max_tokens"):
        eng.generate([1] * 10, 10)
    with pytest.raises(ValueError, match="out of order"):
        eng.bind_stage(0)
    with pytest.raises(ValueError, match="cuda"):
        ProgressiveEngine(tiny, PLAN, device="cpu", use_cuda_graph=True)


def test_unload_while_loading_stops_the_loader(tiny):
    eng = ProgressiveEngine(
        tiny, progressive_plan(6, fractions=(0.5, 1.0)), device="cpu", max_tokens=16
    ).start()
    eng.unload()
    assert not eng._thread.is_alive()
    assert eng.loader.bound_stage < 2 or len(eng.loader.records) == 7
    with pytest.raises(RuntimeError, match="unloaded"):
        eng.generate([1, 2], 2)


def test_plugin_module_imports_without_vllm():
    code = "import sys, progressive_serve.vllm_plugin as p; assert 'vllm' not in sys.modules; print(p.ARCH)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ProgressiveLlamaForCausalLM"
