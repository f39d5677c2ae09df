"""Execute-while-load on the CPU: a pipelined plan's prefill computes layer i while layer i+1 loads."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from policies.plan import StagePlan, full_plan, pipelined_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.testing import random_prompt, torch_threads, wait_until  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=5, dtype="float32")


def test_prefill_runs_each_layer_as_it_binds_and_gives_the_full_models_tokens(tiny):
    eng = ProgressiveEngine(tiny, pipelined_plan(6), device="cpu", max_tokens=64)
    units = threading.Semaphore(0)  # the test lets the loader take one unit at a time
    eng.loader.prepare_unit = lambda unit: units.acquire()
    prompt = random_prompt(eng.shape, 7, seed=3)
    out: dict = {}
    eng.start()
    t = threading.Thread(target=lambda: out.setdefault("r", eng.generate(prompt, 6)))
    t.start()
    units.release(2)  # stage 0: the embedding unit and layer 0
    for k in range(6):
        # layer k is computed before layer k+1 is even started: compute overlaps the load
        wait_until(lambda k=k: eng.pipelined_progress == k + 1)
        assert eng.loader.bound_stage == k
        if k < 5:  # layer k + 1 is not loaded: no token yet (once the last is, it may finish any time)
            assert "r" not in out
        units.release()
    t.join(30)
    res = out["r"]
    full = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64).start(background=False)
    assert res.tokens == full.generate(prompt, 6).tokens
    assert res.overlapped_layers == 5 and res.stage_at_first_token == 5 and res.layers_at_first_token == 6
    assert res.refills == 0 and res.wait_s > 0
    eng.unload()
    full.unload()


def test_a_loaded_pipelined_engine_serves_normally(tiny):
    eng = ProgressiveEngine(tiny, pipelined_plan(6), device="cpu", max_tokens=64).start(background=False)
    res = eng.generate(random_prompt(eng.shape, 4), 3)
    assert res.overlapped_layers == 0 and res.stage_at_first_token == 5
    eng.unload()


def test_a_pipelined_plan_must_bind_layers_in_order(tiny):
    bad = StagePlan("shuffled", 6, tuple((i,) for i in (1, 0, 2, 3, 4, 5)), serve_from=5, pipelined=True)
    with pytest.raises(ValueError, match="in order"):
        ProgressiveEngine(tiny, bad, device="cpu")
