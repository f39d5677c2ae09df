"""Init overlapped with the load: the KV cache and the graph are made while stage 0's weights stream.

The loader or the init is paced by the test, so the order is forced, not hoped for: init
finishes while the loader is held inside stage 0's first unit, and the loader binds every
stage while the capture is held (the device lock taken by the test). Tokens equal the
engine that initialises before loading.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from policies.plan import StagePlan, full_plan, pipelined_plan, progressive_plan  # noqa: E402
from progressive_serve import device_guard  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.config import LlamaShape  # noqa: E402
from progressive_serve.engine import ProgressiveEngine, init_overlaps  # noqa: E402
from progressive_serve.testing import random_prompt, torch_threads, wait_until  # noqa: E402

PLAN = progressive_plan(6)  # stages of 4, 1 and 1 layers (ends inward), serve after the first
OVERLAP = dataclasses.replace(PLAN, overlap_init=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=7, dtype="float32")


def _engine(tiny, plan: StagePlan, **kw) -> ProgressiveEngine:
    return ProgressiveEngine(tiny, plan, device="cpu", max_tokens=64, use_cuda_graph=True, emulate_graph=True, **kw)


def _stage_by_stage(eng: ProgressiveEngine, prompt: list[int], n: int) -> list[int]:
    """Stage 0 bound, then stages 1 and 2 bound after tokens 1 and 3: the same points in every run."""
    if eng.stage < 0:
        eng.bind_stage(0)
    binds = {1: 1, 3: 2}
    return eng.generate(prompt, n, on_token=lambda i: i in binds and eng.bind_stage(binds[i])).tokens


def test_the_plan_decides_as_the_simulator_does(tiny):
    assert not init_overlaps(PLAN) and init_overlaps(OVERLAP) and init_overlaps(pipelined_plan(6))
    assert not init_overlaps(full_plan(6))
    eng = _engine(tiny, OVERLAP)
    assert eng.overlap_init and not eng.initialized and eng.cache is None and eng.graph is None
    assert eng.timings.kv_alloc_s == 0.0 and eng.timings.init_overlapped
    eng.unload()  # never started: nothing to join
    forced = _engine(tiny, OVERLAP, overlap_init=False)
    assert forced.initialized and forced.cache is not None and forced.graph.captured
    forced.unload()


def test_init_finishes_before_stage_0_binds_while_the_loader_streams_it(tiny):
    eng = _engine(tiny, OVERLAP)
    units = threading.Semaphore(0)  # the test lets the loader take one unit at a time
    entered: list[int | None] = []

    def paced(unit: int | None) -> None:
        entered.append(unit)
        units.acquire()

    eng.loader.prepare_unit = paced
    prompt = random_prompt(eng.shape, 6, seed=2)
    eng.start()
    # the loader is inside stage 0's first unit and init is done: the two ran side by side
    wait_until(lambda: eng.initialized and entered == [None])
    assert eng.loader.bound_stage == -1 and eng.graph.captured and eng.cache is not None
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", eng.generate(prompt, 6)))
    t.start()
    time.sleep(0.05)
    assert "r" not in out  # serving waits for stage 0's weights
    units.release(1 + len(PLAN.stages[0]))  # stage 0: the embedding unit and its layers
    t.join(30)  # the loader now waits in stage 1's first unit: every token is stage 0's
    res = out["r"]
    assert res.token_stages == [0] * 6 and eng.loader.bound_stage == 0
    tm = eng.timings
    assert tm.init_done_s is not None and tm.init_done_s < tm.stage_ready_s[0] == tm.serve_ready_s
    assert res.wait_s > 0
    units.release(len(PLAN.stages[1]) + len(PLAN.stages[2]))
    eng.wait_until_loaded(30)
    eng.unload()

    ref = _engine(tiny, PLAN)
    ref.bind_stage(0)
    assert ref.generate(prompt, 6).tokens == res.tokens
    ref.unload()


def test_the_load_runs_while_the_capture_is_held_and_serving_waits_for_both(tiny):
    eng = _engine(tiny, OVERLAP)
    prompt = random_prompt(eng.shape, 5, seed=4)
    out: dict = {}
    with device_guard.exclusive():  # the capture window cannot open: init stops before the graph
        eng.start()
        eng.wait_for_stage(PLAN.num_stages - 1, timeout=30)  # the whole model binds meanwhile
        assert not eng.initialized and eng.graph is None
        t = threading.Thread(target=lambda: out.setdefault("r", eng.generate(prompt, 4)))
        t.start()
        time.sleep(0.05)
        assert "r" not in out  # the weights are there, the graph is not: no token yet
    t.join(30)
    tm = eng.timings
    assert tm.init_done_s == tm.serve_ready_s and tm.init_done_s > tm.stage_ready_s[-1]
    full = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64).start(background=False)
    assert out["r"].tokens == full.generate(prompt, 4).tokens
    eng.unload()
    full.unload()


@pytest.mark.parametrize("graph", [True, False])
def test_tokens_equal_the_engine_that_initialises_first_at_every_stage(tiny, graph):
    prompt = random_prompt(LlamaShape.from_dir(tiny), 7, seed=9)
    kw = {} if graph else {"use_cuda_graph": False, "emulate_graph": False}
    mk = (lambda plan: _engine(tiny, plan)) if graph else (
        lambda plan: ProgressiveEngine(tiny, plan, device="cpu", max_tokens=64, **kw))
    ref, ovl = mk(PLAN), mk(OVERLAP)
    assert ref.initialized and not ovl.initialized
    want = _stage_by_stage(ref, prompt, 8)
    assert _stage_by_stage(ovl, prompt, 8) == want  # bind_stage(0) initialises first, then binds
    ref.unload()
    ovl.unload()
    bg = mk(OVERLAP).start(background=False)  # loader and init in the background, then served
    full = mk(full_plan(6)).start(background=False)
    assert bg.generate(prompt, 8).tokens == full.generate(prompt, 8).tokens
    bg.unload()
    full.unload()


def test_continuous_batching_starts_after_an_overlapped_init(tiny):
    eng = ProgressiveEngine(tiny, OVERLAP, device="cpu", max_tokens=64, max_batch=2)
    assert eng.batcher is None  # the batcher serves from the KV cache: made by the init thread
    eng.start().wait_until_loaded(30)
    prompts = [random_prompt(eng.shape, 4 + i, seed=20 + i) for i in range(2)]
    results: list = [None, None]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, eng.generate(prompts[i], 5)))
               for i in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    full = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64).start(background=False)
    assert [r.tokens for r in results] == [full.generate(p, 5).tokens for p in prompts]
    eng.unload()
    full.unload()
