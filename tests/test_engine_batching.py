"""Continuous batching on the CPU: concurrent requests share steps and get the batch-1 engine's tokens."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from policies.plan import StagePlan, full_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.testing import random_prompt, torch_threads  # noqa: E402

PLAN = StagePlan("two", 6, ((0, 5, 1, 4), (2, 3)), serve_from=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=4, dtype="float32")


def _requests(shape, n):
    return [(random_prompt(shape, 3 + 2 * k, seed=k), 4 + (k % 3) * 3) for k in range(n)]


def _sequential(tiny, plan, reqs, bind_after: list[int | None] | None = None):
    """Each request alone on a batch-1 engine; stage 1 bound after token `bind_after[k]` if given."""
    out = []
    for k, (prompt, n) in enumerate(reqs):
        eng = ProgressiveEngine(tiny, plan, device="cpu", max_tokens=64)
        eng.bind_stage(0)
        at = bind_after[k] if bind_after else None
        if at is None and plan.num_stages > 1:
            eng.bind_stage(1)

        def hook(i: int, eng=eng, at=at) -> None:
            if i == at:
                eng.bind_stage(1)

        out.append(eng.generate(prompt, n, on_token=hook))
        eng.unload()
    return out


def _concurrent(eng, reqs):
    results: list = [None] * len(reqs)
    start = threading.Barrier(len(reqs))

    def call(k: int) -> None:
        start.wait()
        results[k] = eng.generate(*reqs[k])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_requests_get_the_batch_1_engines_tokens(tiny):
    eng = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64, max_batch=3).start(
        background=False
    )
    reqs = _requests(eng.shape, 6)
    got = _concurrent(eng, reqs)
    want = _sequential(tiny, full_plan(6), reqs)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert all(len(r.tokens) == n for r, (_, n) in zip(got, reqs, strict=True))
    # they really shared steps, never more than the slots
    assert eng.batcher.steps > 0 and 2 <= eng.batcher.max_seen <= 3
    assert sorted(eng.batcher.free) == [0, 1, 2] and not eng.batcher.active
    eng.unload()


def test_a_request_joins_a_running_batch_at_a_step_boundary(tiny):
    eng = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=64, max_batch=2).start(
        background=False
    )
    (pa, na), (pb, nb) = (random_prompt(eng.shape, 5, seed=1), 10), (random_prompt(eng.shape, 4, seed=2), 4)
    late: dict = {}

    def launch_b(i: int) -> None:
        if i == 2:  # A is mid-decode: B arrives, and is queued before A's next step
            t = threading.Thread(target=lambda: late.setdefault("b", eng.generate(pb, nb)))
            t.start()
            late["thread"] = t
            while not eng.batcher.pending:
                threading.Event().wait(0.001)

    a = eng.generate(pa, na, on_token=launch_b)
    late["thread"].join(30)
    want = _sequential(tiny, full_plan(6), [(pa, na), (pb, nb)])
    assert a.tokens == want[0].tokens and late["b"].tokens == want[1].tokens
    assert eng.batcher.steps >= nb - 1  # B's decode steps all ran beside A's
    eng.unload()


def test_a_stage_bound_mid_batch_refills_each_sequence_like_the_batch_1_engine(tiny):
    eng = ProgressiveEngine(tiny, PLAN, device="cpu", max_tokens=64, max_batch=3)
    eng.bind_stage(0)
    reqs = _requests(eng.shape, 3)
    bound = threading.Event()

    def bind_once(i: int) -> None:
        if i == 2 and not bound.is_set():
            bound.set()
            eng.bind_stage(1)

    results: list = [None] * 3
    threads = [
        threading.Thread(
            target=lambda k=k: results.__setitem__(k, eng.generate(*reqs[k], on_token=bind_once))
        )
        for k in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert bound.is_set()
    # each sequence: stage 0 up to where the stage bound for it, one refill, then stage 1 (the
    # threads' timing decides where that is: one that started after the bind is all stage 1
    # with no refill, one that finished before it all stage 0)
    for r in results:
        assert r.token_stages == sorted(r.token_stages) and set(r.token_stages) <= {0, 1}
        assert r.refills == (1 if set(r.token_stages) == {0, 1} else 0)

    def bound_after(stages: list[int]) -> int | None:
        if 0 not in stages:
            return None  # bound before its first token
        return stages.count(0) - 1 if 1 in stages else len(stages)  # len: never, in its life

    at = [bound_after(r.token_stages) for r in results]
    want = _sequential(tiny, PLAN, reqs, bind_after=at)
    assert [r.tokens for r in results] == [w.tokens for w in want]
    assert [r.token_stages for r in results] == [w.token_stages for w in want]
    eng.unload()


def test_batching_refuses_graphs_and_bad_sizes_and_unload_fails_waiting_requests(tiny):
    with pytest.raises(ValueError, match="use_cuda_graph=False"):
        ProgressiveEngine(tiny, PLAN, device="cpu", use_cuda_graph=True, emulate_graph=True, max_batch=2)
    with pytest.raises(ValueError, match="at least 1"):
        ProgressiveEngine(tiny, PLAN, device="cpu", max_batch=0)
    eng = ProgressiveEngine(tiny, full_plan(6), device="cpu", max_tokens=16, max_batch=2).start(
        background=False
    )
    with pytest.raises(ValueError, match="max_tokens"):
        eng.generate([1] * 10, 10)
    eng.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        eng.generate([1, 2], 2)
