"""The compiled expected-TTFT walk (policies/ttft_kernel.py) against the Python walk.

`TtftEstimator` walks a model's instances compiled once the model has
`compiled_min_candidates` of them on a cluster that keeps routing rows (sim/routing_rows.py).
It must be a pure speed-up: the same instance, the same expected TTFT (to the last bit) and
the same learned state after every call. Checked here three ways:
- decision by decision: two estimators, one compiled from the first instance on and one never,
  are asked the same questions at every arrival of whole runs and must answer alike, with
  equal state after each call (one of them forgetting its known decode and prefill times
  before every call, so that every question the walk asks Python back is asked);
- run by run: every record and the summary are the same with and without compiling, over
  policy mixes that give the walk starting, loading, sleeping and queued instances;
- the routing rows: at every routing decision each candidate's row says what its
  properties say (state, capacity, waiting, active).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from test_bench_figures import _module  # noqa: E402  (loads a bench script as a module)

from policies.router import ExpectedWait  # noqa: E402
from policies.ttft import TtftEstimator, _CompiledModel  # noqa: E402
from sim.config import SimConfig  # noqa: E402
from sim.metrics import RunMetrics  # noqa: E402
from sim.policyset import PolicySet  # noqa: E402
from sim.profile import load_profile  # noqa: E402
from sim.records import RequestRecord  # noqa: E402
from sim.routing_rows import CAPACITY, STATE, STATE_CODES, WAITING, RoutingRows  # noqa: E402
from sim.simulator import Simulator  # noqa: E402
from traces.request import Request  # noqa: E402

NEVER = 10**9


# Poisson arrivals over Zipf-like model popularity, LLM-like prompt and output lengths
workload = _module("bench_sim").workload


class Collect:
    """A record writer that keeps every record as a tuple."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def write(self, rec: RequestRecord) -> None:
        self.rows.append(dataclasses.astuple(rec))

    def close(self) -> None:
        pass


def run(reqs, policies: PolicySet, nodes=2, gpus_per_node=4, fidelity="request"):
    writer = Collect()
    metrics = RunMetrics(policies.label, 5.0, writer=writer)
    sim = Simulator(load_profile(), policies, SimConfig(nodes=nodes, gpus_per_node=gpus_per_node,
                                                        fidelity=fidelity, seed=0), metrics)
    summary = sim.run(iter(reqs))
    return summary, writer.rows


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (floats compared exactly)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


# ---------------------------------------------------------------------------------------------
# decision by decision


def poisoned(values: np.ndarray) -> np.ndarray:
    """`values` as a view whose memory goes on with NaN: a read past its end (compiled code
    does not check bounds) gives NaN, which no answer survives."""
    buf = np.full(len(values) + 4, np.nan)
    buf[:len(values)] = values
    return buf[:len(values)]


class TwinRouter(ExpectedWait):
    """`expected_wait` routing with a compiled estimator, checked at every arrival against a
    Python one asked the very same questions."""

    def __init__(self, forgetful: bool = False, **kw):
        super().__init__(**kw)
        self.compiled = TtftEstimator()
        self.compiled.compiled_min_candidates = 1
        self.python = TtftEstimator()
        self.python.compiled_min_candidates = self.python.compiled_min_gpus = NEVER
        self.forgetful = forgetful
        self.calls = 0
        self.compiled_calls = 0

    def route(self, request, candidates, cluster):
        if self.forgetful:  # every question the walk can ask back is asked
            for compiled in self.compiled._compiled.values():
                if compiled is not None:
                    compiled.decode = poisoned(compiled.decode[:1])
                    compiled.prefill_n[:] = -1
        self._est = self.compiled
        answer = super().route(request, candidates, cluster)
        self._est = self.python
        expected = super().route(request, candidates, cluster)
        self.calls += 1
        assert answer == expected, (request, answer, expected)
        c, p = self.compiled, self.python
        assert same(c._slots, p._slots) and c._asked == p._asked and same(c._tokens, p._tokens)
        compiled = c._compiled.get(request.model)
        if compiled is not None:
            self.compiled_calls += 1
            seen = c._seen_rows
            kept = p._seen.get(request.model, {})
            slots = cluster.routing_slots(request.model, candidates)
            for inst, slot in zip(candidates, slots, strict=True):
                rec = kept.get(inst.id)
                if rec is None:
                    assert seen[slot, 0] != inst.id
                else:
                    assert seen[slot, 0] == inst.id
                    assert (bool(seen[slot, 1]), seen[slot, 2]) == (rec[0], rec[1])
                    assert same(float(seen[slot, 3]), math.nan if rec[2] is None else rec[2])
        return answer


def policies_with(router, **specs) -> PolicySet:
    return dataclasses.replace(PolicySet.from_specs(**specs), router=router)


@pytest.mark.parametrize("forgetful", [False, True])
@pytest.mark.parametrize(("specs", "rate", "nodes", "gpus", "memo"), [
    (dict(staging="full", keepalive="fixed"), 20.0, 2, 4, None),  # queues, saturation, scale-out
    (dict(staging="progressive", keepalive="two_tier"), 2.0, 2, 4, None),  # sleeping, waking
    (dict(staging="pipelined", keepalive="none", prewarm="popular"), 6.0, 1, 4, None),  # starts, prewarm
    # overloaded, with a prefill memo of one entry: the queue sizes of a walk share it
    (dict(staging="full", keepalive="fixed"), 80.0, 2, 4, 1),
])
def test_the_compiled_walk_answers_every_arrival_as_the_python_walk(specs, rate, nodes, gpus, memo, forgetful,
                                                                     monkeypatch):
    if memo is not None:
        monkeypatch.setattr(_CompiledModel, "PREFILL_KEPT", memo)
    router = TwinRouter(forgetful=forgetful)
    policies = policies_with(router, **specs)
    run(workload(1500, 4, rate, 11), policies, nodes, gpus)
    assert router.calls > 1000
    assert router.compiled_calls > 0.9 * router.calls


# ---------------------------------------------------------------------------------------------
# run by run


MIXES = [
    dict(staging="full", keepalive="fixed"),
    dict(staging="progressive", keepalive="hybrid_histogram"),
    dict(staging="full", keepalive="two_tier", admission="deadline", prewarm="popular"),
    dict(staging="progressive", keepalive="greedy_dual", placement="locality", admission="goodput"),
    dict(staging="progressive", keepalive="fixed", admission="degrade"),
]


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
@pytest.mark.parametrize("specs", MIXES, ids=lambda s: "+".join(s.values()))
def test_compiling_the_walk_changes_no_record(specs, fidelity, monkeypatch):
    reqs = workload(800 if fidelity == "iteration" else 3000, 6, 20.0, 5)
    monkeypatch.setattr(TtftEstimator, "compiled_min_candidates", NEVER)
    summary, records = run(reqs, PolicySet.from_specs(**specs), fidelity=fidelity)
    monkeypatch.setattr(TtftEstimator, "compiled_min_candidates", 1)
    policies = PolicySet.from_specs(**specs)
    summary_c, records_c = run(reqs, policies, fidelity=fidelity)
    assert len(records) == len(reqs)
    assert same(records_c, records)
    assert same(summary_c, summary)
    compiled = [est for est in (getattr(policies.router, "_est", None), getattr(policies.admission, "_est", None))
                if est is not None and any(c is not None for c in est._compiled.values())]
    assert compiled, "no estimator compiled a walk"


def test_without_numba_the_python_walk_serves(monkeypatch):
    import policies

    monkeypatch.setitem(sys.modules, "policies.ttft_kernel", None)  # `import` raises ImportError
    monkeypatch.delattr(policies, "ttft_kernel", raising=False)
    monkeypatch.setattr(TtftEstimator, "compiled_min_candidates", 1)
    reqs = workload(1000, 4, 20.0, 3)
    policies = PolicySet.from_specs()
    summary, records = run(reqs, policies)
    assert set(policies.router._est._compiled.values()) == {None}
    monkeypatch.setattr(TtftEstimator, "compiled_min_candidates", NEVER)
    assert same(run(reqs, PolicySet.from_specs()), (summary, records))


@pytest.mark.parametrize(("candidates", "gpus", "compiles"), [(3, 8, False), (4, 8, True), (1, 64, True), (1, 63, False)])
def test_a_walk_is_compiled_from_four_instances_or_on_a_cluster_of_64_gpus(candidates, gpus, compiles):
    model = FakeModel(0.001, 0.01, 0.001, 0.01, {"dram": 1.0, "ssd": 2.0, "remote": 4.0}, 0.5)
    insts = [FakeInstance(100 + k, "full", 4, 0, 1, -math.inf, k, 0, now=5.0) for k in range(candidates)]
    est = TtftEstimator()
    got = est.best(Request(5.0, "m", 10, 8, 0), list(insts), FakeCluster(model, insts, 5.0, gpus))
    assert got[0] is insts[0]
    assert (est._compiled.get("m") is not None) is compiles


def test_where_numba_cannot_compile_the_python_walk_serves_and_says_so(monkeypatch):
    from policies import ttft_kernel

    def broken():
        raise RuntimeError("no locator available")  # what numba raises where it cannot cache

    monkeypatch.setattr(ttft_kernel, "ready", broken)
    monkeypatch.setattr(TtftEstimator, "compiled_min_candidates", 1)
    reqs = workload(600, 3, 20.0, 4)
    policies = PolicySet.from_specs()
    with pytest.warns(RuntimeWarning, match="compiled router walk is unavailable.*no locator"):
        got = run(reqs, policies)
    assert set(policies.router._est._compiled.values()) == {None}
    monkeypatch.setattr(TtftEstimator, "compiled_min_candidates", NEVER)
    assert same(run(reqs, PolicySet.from_specs()), got)


def test_the_profile_answers_the_walk_needs_are_kept_as_arrays():
    class Model:
        def prefill_s(self, n):
            return n / 1000

        def decode_s(self, b):
            return 0.01 * b

    compiled = _CompiledModel(Model(), kernel=None)
    kept = _CompiledModel.PREFILL_KEPT
    assert compiled.know_prefill(5) == 0.005
    compiled.know_prefill(5 + kept)  # the same entry: the later size replaces the earlier
    assert compiled.prefill_n[5] == 5 + kept and compiled.prefill_v[5] == (5 + kept) / 1000
    assert (np.delete(compiled.prefill_n, 5) == -1).all()
    compiled.decode_up_to(3)
    assert list(compiled.decode) == [0.01, 0.01, 0.02, 0.03]
    compiled.decode_up_to(5)  # grows to at least double
    assert len(compiled.decode) >= 8 and compiled.decode[5] == 0.05
    call_n, call_v = compiled.more_call_room()
    assert len(call_n) == len(call_v) == 16 and (call_n == -1).all()


# ---------------------------------------------------------------------------------------------
# the routing rows


class RowChecker(ExpectedWait):
    """`expected_wait`, checking at every arrival that each candidate's routing row agrees
    with its properties."""

    checked = 0

    def route(self, request, candidates, cluster):
        rows = cluster.routing_view()
        slots = cluster.routing_slots(request.model, candidates)
        now = cluster.now
        for inst, slot in zip(candidates, slots, strict=True):
            row = rows[slot]
            assert row[STATE] == STATE_CODES[inst.state]
            assert row[CAPACITY] == inst.capacity
            assert row[WAITING] == inst.waiting
            alone = 1 if row[4] > now else 0
            assert alone + row[WAITING] + row[3] == inst.active
            assert row[5] == inst.id
            RowChecker.checked += 1
        return super().route(request, candidates, cluster)


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
@pytest.mark.parametrize("specs", MIXES[:4], ids=lambda s: "+".join(s.values()))
def test_each_routing_row_says_what_its_instance_says(specs, fidelity):
    RowChecker.checked = 0
    policies = policies_with(RowChecker(), **specs)
    reqs = workload(600 if fidelity == "iteration" else 2000, 4, 8.0, 9)
    run(reqs, policies, fidelity=fidelity)
    assert RowChecker.checked > len(reqs)


def test_routing_rows_reuse_slots_and_grow_without_losing_rows():
    rows = RoutingRows(2)
    a = rows.acquire(10, "starting", 4)
    b = rows.acquire(11, "full", 8)
    view = rows.view()
    assert view[a // 6, 5] == 10 and view[b // 6, CAPACITY] == 8
    c = rows.acquire(12, "loading", 2)  # a third: the table doubles, rows kept
    assert rows.slots == 4
    view = rows.view()
    assert list(view[:3, 5]) == [10, 11, 12] and view[1, STATE] == STATE_CODES["full"]
    rows.release(a)
    assert rows.view()[0, 5] == -1
    assert rows.acquire(13, "starting", 1) == a  # the freed slot, not a new one
    assert c == 2 * 6


# ---------------------------------------------------------------------------------------------
# any state: random candidates and estimator state, both walks from the same start

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sim.routing_rows import INSTANCE_ID, RUNNING, SOLO_FINISH  # noqa: E402

DYADIC = st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])  # ties are likely, and exact


class FakeModel:
    """A ModelView with linear, dyadic tables (exact sums, so boundaries are met exactly)."""

    name = "m"

    def __init__(self, prefill_per_token, prefill_base, decode_per_seq, decode_base, cold, wake):
        self.p, self.p0, self.d, self.d0, self.cold, self.wake = (
            prefill_per_token, prefill_base, decode_per_seq, decode_base, cold, wake)

    def prefill_s(self, n):
        return self.p0 + self.p * n

    def decode_s(self, b):
        return self.d0 + self.d * b

    def cold_start_s(self, tier="ssd", base_resident=False):
        return self.cold[tier]

    def wake_s(self, level, tier="ssd"):
        return self.wake * level + self.cold[tier] / 8


@dataclasses.dataclass
class FakeInstance:
    id: int
    state: str
    capacity: int
    waiting: int
    running: int
    solo_finish: float
    node: int
    sleep_level: int
    model: str = "m"
    now: float = 0.0

    @property
    def can_serve(self):
        return self.state in ("ready", "full")

    @property
    def active(self):
        return (1 if self.solo_finish > self.now else 0) + self.waiting + self.running


class FakeCluster:
    """A ClusterView that keeps routing rows, as the simulator does."""

    def __init__(self, model, instances, now, gpus=8):
        self._model, self.instances, self.now = model, instances, now
        self.gpus = [object()] * gpus

    def model(self, name):
        return self._model

    def checkpoint_tier(self, name, node):
        return ("dram", "ssd", "remote")[node % 3]

    def routing_view(self):
        rows = np.zeros((2 * len(self.instances) + 1, 6))
        for k, inst in enumerate(self.instances):
            row = rows[2 * k + 1]  # rows need not be in candidate order
            row[STATE], row[CAPACITY], row[WAITING], row[RUNNING] = (
                STATE_CODES[inst.state], inst.capacity, inst.waiting, inst.running)
            row[SOLO_FINISH], row[INSTANCE_ID] = inst.solo_finish, inst.id
        return rows

    def routing_slots(self, model, candidates):
        return np.array([-1 if c.state == "evicted" else 2 * self.instances.index(c) + 1 for c in candidates],
                        dtype=np.int64)


@st.composite
def instances(draw, now):
    cap = draw(st.integers(1, 6))
    state = draw(st.sampled_from(["starting", "loading", "ready", "full", "full", "sleeping", "evicted"]))
    serving = state in ("ready", "full")
    running = draw(st.integers(0, cap)) if serving else 0
    solo = draw(st.sampled_from([-math.inf, now - 1.0, now, now + 0.5])) if serving and running == 0 else -math.inf
    return FakeInstance(0, state, cap, draw(st.integers(0, 4)), running, solo, draw(st.integers(0, 5)),
                        draw(st.sampled_from([0, 1, 2])), now=now)


@st.composite
def situations(draw):
    now = draw(st.sampled_from([4.0, 8.0, 16.0]))
    insts = draw(st.lists(instances(now), min_size=1, max_size=7))
    for k, inst in enumerate(insts):
        inst.id = 100 + k
    model = FakeModel(draw(DYADIC), draw(DYADIC), draw(DYADIC), draw(DYADIC),
                      {t: draw(DYADIC) * 8 for t in ("dram", "ssd", "remote")}, draw(DYADIC))
    seen = {}  # what the estimator saw of some of them before
    for inst in insts:
        if draw(st.booleans()):
            queue = draw(st.sampled_from([None, now, now - 0.5, now - 2.0, now - 6.0]))
            seen[inst.id] = [draw(st.booleans()), now - draw(DYADIC) * 4, queue]
    state = dict(
        learned=draw(st.sampled_from([None, 1, 2.5, 4.0, 0.75])),
        tokens=[draw(st.sampled_from([1.0, 2.5, 3.5, 100.0])), draw(st.sampled_from([0.5, 1.0, 4.0, 60.0]))],
        asked=draw(st.sampled_from([None, now - 1.0, now - 3.0])),
        seen=seen,
    )
    later = draw(st.sampled_from([0.0, 0.25, 1.0, 3.0]))  # a second arrival, this much later
    return model, insts, state, later


def primed(state, min_candidates):
    est = TtftEstimator()
    est.compiled_min_candidates = est.compiled_min_gpus = min_candidates
    if state["learned"] is not None:
        est._slots["m"] = state["learned"]
    est._tokens["m"] = list(state["tokens"])
    if state["asked"] is not None:
        est._asked["m"] = state["asked"]
    est._seen["m"] = {iid: list(rec) for iid, rec in state["seen"].items()}
    est._now = 0.0
    return est


@settings(max_examples=600, deadline=None)
@given(situations(), st.integers(1, 50), st.sampled_from([1, 2, 1024]))
def test_the_compiled_walk_equals_the_python_walk_from_any_state(situation, prompt, memo):
    kept, room = _CompiledModel.PREFILL_KEPT, _CompiledModel.CALL_ROOM
    # 1 or 2: the queue sizes one walk needs share memo entries, and its own list must grow
    _CompiledModel.PREFILL_KEPT = memo
    _CompiledModel.CALL_ROOM = 1
    try:
        walk_both(*situation, prompt)
    finally:
        _CompiledModel.PREFILL_KEPT, _CompiledModel.CALL_ROOM = kept, room


def walk_both(model, insts, state, later, prompt):
    compiled, python = primed(state, 1), primed(state, NEVER)
    request = Request(0.0, "m", prompt, 8, 0)
    for step in (0.0, later):  # two arrivals: the second walks what the first left
        now = insts[0].now + step
        for inst in insts:
            inst.now = now
        cluster = FakeCluster(model, insts, now)
        for kept in compiled._compiled.values():  # every decode step asked back, and none read past
            if kept is not None:
                kept.decode = poisoned(kept.decode[:1])
        got = compiled.best(request, list(insts), cluster)
        want = python.best(request, list(insts), cluster)
        assert (got[0] is want[0]) and same(got[1], want[1]), (got, want)
        assert same(compiled._slots, python._slots) and compiled._asked == python._asked
        seen = compiled._seen_rows
        slots = cluster.routing_slots("m", insts)
        for inst, slot in zip(insts, slots, strict=True):
            rec = python._seen["m"].get(inst.id)
            if slot < 0:
                continue
            if rec is None:
                assert seen[slot, 0] != inst.id
            else:
                assert (seen[slot, 0], bool(seen[slot, 1]), seen[slot, 2]) == (inst.id, rec[0], rec[1])
                assert same(float(seen[slot, 3]), math.nan if rec[2] is None else rec[2])


@pytest.mark.parametrize(("prompt_mean", "ahead"), [(2.5, 1), (3.5, 1), (2.5, 3), (0.4, 1), (1.25, 2)])
def test_the_walk_asks_for_the_prefill_of_the_queue_rounded_as_python_rounds(prompt_mean, ahead):
    from policies.ttft_kernel import NEED_PREFILL, walk

    rows = np.zeros((1, 6))
    rows[0, [STATE, CAPACITY, WAITING, RUNNING, SOLO_FINISH, INSTANCE_ID]] = (
        STATE_CODES["full"], 4, ahead, 2, -math.inf, 7)
    seen = np.array([[7.0, 0.0, 0.0, 9.5]])  # its queue seen since 9.5: young, so not saturated yet
    code, pos, _, learned, used, need = walk(
        rows, np.array([0]), seen, np.zeros(0), False, np.full(8, -1), np.zeros(8),
        np.zeros(0, dtype=np.int64), np.zeros(0), np.ones(5),
        10.0, 0.1, math.nan, math.nan, 0.5, prompt_mean, 3.0)
    assert (code, pos, used) == (NEED_PREFILL, -1, False) and math.isnan(learned)
    assert need == max(1, round(prompt_mean * ahead))


@pytest.mark.parametrize("running", [1, 3])
def test_the_walk_asks_for_a_decode_step_it_does_not_hold_instead_of_reading_past_its_table(running):
    from policies.ttft_kernel import NEED_DECODE, walk

    rows = np.zeros((1, 6))
    rows[0, [STATE, CAPACITY, WAITING, RUNNING, SOLO_FINISH, INSTANCE_ID]] = (
        STATE_CODES["full"], 4, 2, running, -math.inf, 7)
    seen = np.array([[7.0, 0.0, 0.0, 1.0]])  # a queue seen since 1.0: old, saturated at `running`
    code, pos, _, learned, used, need = walk(
        rows, np.array([0]), seen, np.zeros(0), False, np.full(8, -1), np.zeros(8),
        np.zeros(0, dtype=np.int64), np.zeros(0), poisoned(np.ones(running)),
        10.0, 0.1, math.nan, math.nan, 0.5, 2.0, 3.0)
    assert (code, pos, need) == (NEED_DECODE, -1, running)
