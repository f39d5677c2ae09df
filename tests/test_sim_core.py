"""The simulator's core, one fact at a time: the clock, the instance life, what routing and
admission see of queued requests, the keep-alive horizon, and the checks that mutation
testing showed were missing (batch-dependent decode, the keep-alive's re-check).

Numbers come from `small_profile_dict()` (test_sim_properties): start 3 s, init 2 s, SSD
loads at 1 GB/s, prefill 0.125 s, decode 0.0625 s at batch 1 unless a test changes it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st
from test_sim_properties import run_sim, small_profile_dict

from sim.instance import TRANSITIONS, IllegalTransition, InstanceState
from sim.profile import profile_from_dict
from sim.simulator import move_clock
from sim.stepclock import steps_begun, timeout_at
from traces.request import Request

GB = 1e9


def req(t, i, model="small", out=1, prompt=100):
    return Request(arrival_s=t, model=model, prompt_tokens=prompt, output_tokens=out, request_id=i)


def profile(max_batch=4, decode=(0.0625, 0.0625), **extra_models):
    d = small_profile_dict()
    for m in d["models"]:
        m["max_batch"] = max_batch
        m["decode"] = {"x": [1, 64], "seconds": list(decode)}
    for name, base in extra_models.items():
        copy = dict(next(m for m in d["models"] if m["name"] == base))
        copy["name"] = name
        d["models"].append(copy)
    return profile_from_dict(d, "core-test")


# ---------------------------------------------------------------------------------------------
# the clock


def test_move_clock_moves_simpy_time_and_later_events_still_fire_on_time():
    env = simpy.Environment()
    move_clock(env, 7.5)
    assert env.now == 7.5  # fails if SimPy stops keeping its clock where move_clock writes it
    fired = []

    def proc():
        yield env.timeout(2.0)
        fired.append(env.now)

    env.process(proc())
    env.run()
    assert fired == [9.5]


def test_move_clock_refuses_to_jump_over_a_due_event():
    env = simpy.Environment()
    env.timeout(1.0)
    with pytest.raises(RuntimeError, match="due"):
        move_clock(env, 2.0)


# ---------------------------------------------------------------------------------------------
# the instance's life


@pytest.mark.parametrize(("old", "new"), list(itertools.product(InstanceState, InstanceState)))
def test_only_the_listed_moves_are_allowed(old, new):
    from sim.routing_rows import INSTANCE_ID, STATE, STATE_CODES, WIDTH, RoutingRows

    class Probe:
        id, model = 0, "m"
        _state = old
        _rows = RoutingRows(1)
        _row = _rows.acquire(7, old.value, 1)
        _batches = None  # request fidelity's compiled batches: none here
        move_to = __import__("sim.instance", fromlist=["Instance"]).Instance.move_to

    p = Probe()
    if new in TRANSITIONS[old]:
        p.move_to(new)
        assert p._state is new
        row = p._rows.view()[p._row // WIDTH]
        if new is InstanceState.EVICTED:  # its slot is free for the next instance
            assert row[INSTANCE_ID] == -1 and p._rows.acquire(8, "starting", 1) == p._row
        else:
            assert row[STATE] == STATE_CODES[new.value] and row[INSTANCE_ID] == 7
    else:
        with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
            p.move_to(new)


def test_the_life_has_no_dead_ends_but_eviction():
    for state, nexts in TRANSITIONS.items():
        assert nexts or state is InstanceState.EVICTED
        assert state is InstanceState.EVICTED or InstanceState.EVICTED in nexts
    assert InstanceState.FULL == "full"  # policies compare with plain names


# ---------------------------------------------------------------------------------------------
# routing and admission see every request an instance owes


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_a_burst_splits_evenly_when_every_instance_is_busy(fidelity):
    # max_batch 1, two GPUs that each hold one `big`: two instances, then a burst of 10 that
    # finds both busy. Routing must see the queue each has, so they get 5 each.
    p = profile(max_batch=1)
    reqs = [req(0.0, 0, "big"), req(0.0, 1, "big")] + [req(100.0, 2 + i, "big", out=4) for i in range(10)]
    _, recs, sim = run_sim(reqs, p, gpus=2, fidelity=fidelity, keepalive="fixed[ttl=1000]")
    burst = [r for r in recs if r.request_id >= 2]
    per = {iid: sum(1 for r in burst if r.instance_id == iid) for iid in {r.instance_id for r in recs}}
    assert sorted(per.values()) == [5, 5]
    # each instance serves its 5 back to back: prefill + 3 decodes = 0.3125 s each
    assert max(r.finish_s for r in burst) == pytest.approx(100.0 + 5 * 0.3125, rel=1e-12)


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_active_and_waiting_count_queued_requests(fidelity):
    p = profile(max_batch=1)
    reqs = [req(0.0, 0, "big")] + [req(50.0, 1 + i, "big", out=9) for i in range(3)]
    seen = []

    class Watch:
        name = label = "watch"

        def admit(self, request, cluster):
            insts = cluster.instances_of("big")
            seen.append((cluster.waiting("big"), [i.active for i in insts]))
            from policies.decisions import SERVE
            return SERVE

    run_sim(reqs, p, fidelity=fidelity, keepalive="fixed[ttl=1000]", admission=Watch())
    # at t=50 the instance is idle, then owes 1 (running), then 2 (1 running + 1 queued)
    assert seen[1:] == [(0, [0]), (0, [1]), (1, [2])]


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_max_queue_sheds_behind_a_busy_warm_instance(fidelity):
    # one warm instance (`big` fits the GPU once), max_batch 1, each request 1.125 s of work,
    # one every 0.5 s: the queue grows; with depth 1 only a request that finds nobody waiting
    # is admitted.
    p = profile(max_batch=1)
    reqs = [req(0.0, 0, "big")] + [req(20.0 + 0.5 * i, 1 + i, "big", out=17) for i in range(40)]
    row, recs, _ = run_sim(reqs, p, fidelity=fidelity, keepalive="fixed[ttl=1000]", admission="max_queue[depth=1]")
    shed = [r for r in recs if r.rejected]
    assert len(shed) > 10
    served = [r for r in recs if not r.rejected and r.request_id > 0]
    # nobody admitted waits behind more than the one running: TTFT <= 1.125 + prefill
    assert max(r.ttft_s for r in served) <= 1.125 + 0.125 + 1e-9


# ---------------------------------------------------------------------------------------------
# batch size matters: the decode step is read at the batch the request found


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_continuous_batching_by_hand(fidelity):
    # decode 0.0625 s at batch 1, +0.01 s per extra request; prefill 0.125 s whatever the
    # tokens. Three requests of 5 tokens reach a warm instance at t=20:
    # - r1 starts alone: its prefill step ends at 20.125 (first token);
    # - r2, r3 arrived during it, so they join at 20.125: prefill of both + r1's decode
    #   = 0.125 + 0.0625 -> 20.3125 (r1: 2 tokens, r2 and r3: their first);
    # - batch of 3 decodes at 0.0825 s until r1 is done: 3 steps -> 20.56;
    # - batch of 2 at 0.0725 s: one step -> 20.6325, r2 and r3 done.
    p = profile(max_batch=4, decode=(0.0625, 0.0625 + 63 * 0.01))
    reqs = [req(0.0, 0)] + [req(20.0, 1 + i, out=5) for i in range(3)]
    _, recs, _ = run_sim(reqs, p, fidelity=fidelity, keepalive="fixed[ttl=1000]")
    by = {r.request_id: r for r in recs}
    assert (by[1].first_token_s, by[1].finish_s) == pytest.approx((20.125, 20.56), rel=1e-12)
    for i in (2, 3):
        assert (by[i].first_token_s, by[i].finish_s) == pytest.approx((20.3125, 20.6325), rel=1e-12)
    assert by[1].tpot_s == pytest.approx((20.56 - 20.125) / 4, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# keep-alive: the re-check after a request taken from the memory queue


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_an_instance_handed_a_queued_request_as_it_idles_is_not_evicted(fidelity):
    # `big` (6 GB weights + 0.4 GB KV) fits once on the 10 GB GPU; `big2` is the same shape.
    # B (big2) loads 0 -> 11 s, serves until 11.125. A1 and A2 (big) wait for memory. At
    # 11.125 B idles, A1 evicts it and starts X (ready at 22.125, A1 done at 22.25); A2 cannot
    # join X (batch 1) nor start another, so it waits in the memory queue until X idles at
    # 22.25 and takes X at once. X must not be evicted under it.
    p = profile(max_batch=1, big2="big")
    reqs = [req(0.0, 0, "big2"), req(1.0, 1, "big"), req(2.0, 2, "big")]
    row, recs, sim = run_sim(reqs, p, fidelity=fidelity, keepalive="none")
    by = {r.request_id: r for r in recs}
    assert not any(r.rejected for r in recs)
    assert by[1].first_token_s == pytest.approx(22.25, rel=1e-12)
    assert by[2].first_token_s == pytest.approx(22.375, rel=1e-12)
    assert by[2].instance_id == by[1].instance_id
    held = sim.usage.of("big").mem_byte_s
    assert held == pytest.approx(6.4 * GB * (22.375 - 11.125), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# keep-alive cost up to the horizon


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
@pytest.mark.parametrize(("horizon", "idle_s"), [(None, 0.0), (100.0, 100.0 - 7.125), (1000.0, 600.0)])
def test_idle_memory_is_charged_until_eviction_or_the_horizon(fidelity, horizon, idle_s):
    # one request at 0, done at 7.125; fixed TTL 600 evicts at 607.125. With no horizon the
    # run ends at the last finish (nothing idle charged); a 100 s horizon charges idle memory
    # to 100 s; a 1000 s horizon to the eviction.
    from test_sim_properties import SMALL, Recorder

    from sim.config import SimConfig
    from sim.policyset import PolicySet
    from sim.simulator import Simulator

    policies = PolicySet.from_specs(staging="full", keepalive="fixed[ttl=600]")
    metrics = Recorder(policies.label)
    sim = Simulator(SMALL, policies, SimConfig(nodes=1, gpus_per_node=1, fidelity=fidelity,
                                               compute_sharing="none"), metrics)
    row = sim.run([req(0.0, 0)], horizon_s=horizon)
    footprint = 3 * GB
    assert row["gpu_idle_gb_hours"] == pytest.approx(footprint * idle_s / (GB * 3600), abs=1e-12)
    assert row["horizon_s"] == (7.125 if horizon is None else horizon)


# ---------------------------------------------------------------------------------------------
# the collaborators' interface


def test_the_simulator_offers_everything_simcore_names():
    from test_sim_properties import SMALL, Recorder

    from sim.config import SimConfig
    from sim.core import SimCore
    from sim.policyset import PolicySet
    from sim.simulator import Simulator

    sim = Simulator(SMALL, PolicySet.from_specs(), SimConfig(nodes=1, gpus_per_node=1), Recorder("x"))
    names = set(SimCore.__annotations__) | {n for n in vars(SimCore) if not n.startswith("_")}
    missing = sorted(n for n in names if not hasattr(sim, n))
    assert not missing
    assert "outstanding" in names and "register" in names


def test_collaborators_use_only_the_interface():
    # lifecycle, keep-alive, serving and placing may use `sim.<name>` only for names SimCore lists
    import re
    from pathlib import Path

    from sim.core import SimCore

    allowed = set(SimCore.__annotations__) | {n for n in vars(SimCore) if not n.startswith("_")}
    root = Path(__file__).resolve().parent.parent / "sim"
    for module in ("lifecycle.py", "keeper.py", "serving.py", "placing.py"):
        code = (root / module).read_text()
        code = re.sub(r"^\s*(from|import) .*$", "", code, flags=re.M)
        used = set(re.findall(r"\bsim\.([A-Za-z_]\w*)", code))
        assert used <= allowed, (module, sorted(used - allowed))


# ---------------------------------------------------------------------------------------------
# requests that cannot be served say why


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_a_request_larger_than_the_kv_cache_is_rejected_with_a_reason(fidelity):
    d = small_profile_dict()
    d["models"][0]["max_tokens_in_flight"] = 1000
    p = profile_from_dict(d, "kv")
    reqs = [req(0.0, 0, prompt=900, out=100), req(1.0, 1, prompt=900, out=101), req(2.0, 2, prompt=10**6, out=1)]
    _, recs, _ = run_sim(reqs, p, fidelity=fidelity)
    by = {r.request_id: r for r in recs}
    assert not by[0].rejected  # exactly fills the cache
    for i in (1, 2):
        assert by[i].rejected and "tokens of KV cache" in by[i].reason and "holds 1000" in by[i].reason


def test_a_placement_that_never_places_is_named_in_the_reason():
    class Never:
        name = label = "never"

        def place(self, model, cluster):
            return None

    _, recs, _ = run_sim([req(0.0, 0)], placement=Never())
    assert recs[0].rejected
    assert "placement never chose no GPU although one had 3.0 GB free" in recs[0].reason


def test_a_placement_returning_the_wrong_type_is_a_policy_error():
    from sim.policyset import PolicyError

    class Wrong:
        name = label = "wrong"

        def place(self, model, cluster):
            return "gpu0"

    with pytest.raises(PolicyError, match=r"policy wrong failed in place\(\).*'gpu0', not a Place"):
        run_sim([req(0.0, 0)], placement=Wrong())


def test_a_staging_plan_of_the_wrong_type_is_a_policy_error():
    from sim.policyset import PolicyError

    class Wrong:
        name = label = "wrong"

        def plan(self, model):
            return [[0, 1], [2, 3]]

    with pytest.raises(PolicyError, match=r"policy wrong failed in plan\(\).*not a StagePlan"):
        run_sim([req(0.0, 0)], staging=Wrong())


# ---------------------------------------------------------------------------------------------
# what policies can plan with


def test_cold_start_estimate_matches_the_simulated_cold_start():
    # `small` from SSD: 3 s start + 2 GB at 1 GB/s + 2 s init = 7 s, then a 0.125 s prefill
    from test_sim_properties import SMALL

    from sim.deployment import Deployment

    dep = Deployment("small", SMALL.model("small"), SMALL.hardware, SMALL.engine)
    assert dep.cold_start_s("ssd") == pytest.approx(7.0, rel=1e-12)
    assert dep.cold_start_s("dram") == pytest.approx(3.0 + 2.0 / 2.0 + 2.0, rel=1e-12)
    assert dep.cold_start_s("remote") == pytest.approx(3.0 + 2.0 / 0.5 + 2.0, rel=1e-12)
    assert dep.prefill_s(100) == 0.125 and dep.decode_s(1) == 0.0625 and dep.max_batch == 4
    with pytest.raises(ValueError, match="tier"):
        dep.cold_start_s("tape")
    _, recs, _ = run_sim([req(0.0, 0)])
    assert recs[0].ttft_s == pytest.approx(dep.cold_start_s("ssd") + dep.prefill_s(100), rel=1e-12)


def test_checkpoint_tier_and_loads_in_flight_follow_the_run():
    seen = []

    class Watch:
        name = label = "watch"

        def admit(self, request, cluster):
            seen.append((cluster.checkpoint_tier("small", 0), cluster.loads_in_flight(0, 0)))
            from policies.decisions import SERVE
            return SERVE

    # t=0: on SSD, nothing moving; t=4: the load (3..5 s) is on the SSD and PCIe links;
    # t=100 (after eviction): the checkpoint is cached in host DRAM
    run_sim([req(0.0, 0), req(4.0, 1, model="m1"), req(100.0, 2)], admission=Watch(), keepalive="none")
    assert seen[0] == ("ssd", 0)
    assert seen[1][1] == 1
    assert seen[2] == ("dram", 0)


def test_the_cli_horizon_is_duration_then_the_traces_length_then_the_last_arrival():
    from sim.cli import replay_horizon

    assert replay_horizon(900.0, {"duration_s": 3600.0}) == (900.0, "900 s (--duration)")
    assert replay_horizon(None, {"duration_s": 3600.0}) == (3600.0, "3600 s (the trace's length)")
    assert replay_horizon(None, {"duration_s": "whole days"}) == (None, "the last arrival")
    assert replay_horizon(None, {}) == (None, "the last arrival")


# ---------------------------------------------------------------------------------------------
# model names, arrival range, hook time limit


def test_model_names_resolve_exactly_by_prefix_or_to_the_default():
    from test_sim_properties import SMALL

    assert SMALL.resolve("big") == (SMALL.model("big"), "exact")
    assert SMALL.resolve("big-fn3") == (SMALL.model("big"), "prefix")
    assert SMALL.resolve("bigger") == (SMALL.models[0], "default")


def test_unknown_model_names_are_listed_or_refused():
    from test_sim_properties import SMALL, Recorder

    from sim.config import SimConfig
    from sim.errors import UnknownModelError
    from sim.policyset import PolicySet
    from sim.simulator import Simulator

    reqs = [req(0.0, 0, model="small-a"), req(1.0, 1, model="mystery")]
    sim = Simulator(SMALL, PolicySet.from_specs(), SimConfig(nodes=1, gpus_per_node=1), Recorder("x"))
    sim.run(reqs)
    assert sim.defaulted_models == ["mystery"]
    sim = Simulator(SMALL, PolicySet.from_specs(), SimConfig(nodes=1, gpus_per_node=1, unknown_models="error"),
                    Recorder("x"))
    with pytest.raises(UnknownModelError, match="'mystery' is not in profile small-test"):
        sim.run(reqs)


def test_an_absurd_arrival_time_is_bad_input():
    from sim.errors import BadRequestError

    with pytest.raises(BadRequestError, match="beyond"):
        run_sim([req(0.0, 0), req(1e300, 1)])


def test_a_hook_that_never_returns_ends_the_run_naming_it():
    import time

    from test_sim_properties import SMALL, Recorder

    from policies import load_policy
    from sim.config import SimConfig
    from sim.policyset import PolicyError, PolicySet
    from sim.simulator import Simulator

    class Stuck:
        name = label = "stuck"

        def route(self, request, candidates, cluster):
            while True:
                time.sleep(0.05)

    chosen = {k: load_policy(k, v) for k, v in dict(staging="full", keepalive="fixed", prewarm="none",
                                                      placement="first_fit", admission="always").items()}
    sim = Simulator(SMALL, PolicySet(router=Stuck(), **chosen),
                    SimConfig(nodes=1, gpus_per_node=1, hook_timeout_s=0.5), Recorder("x"))
    t0 = time.monotonic()
    with pytest.raises(PolicyError, match=r"policy stuck failed in route\(\) at t=1.000 s: HookTimeout: route\(\) "
                                          r"did not return within 0.5 s"):
        sim.run([req(0.0, 0), req(1.0, 1)])
    assert time.monotonic() - t0 < 5.0


def test_simpy_internals_that_decode_runs_move_a_process_with():
    # sim.instance.DecodeRun.cut moves a waiting process from one timeout to another
    env = simpy.Environment()
    woke = []

    def proc():
        t = env.timeout(10.0)
        holder.append(t)
        yield t
        woke.append(env.now)

    holder = []
    p = env.process(proc())
    env.run(until=1.0)
    t = holder[0]
    assert p._target is t and p._resume in t.callbacks
    from sim.instance import DecodeRun

    run = DecodeRun(env, p, 0.0, 2.0, 5, t)
    run.cut(1.0)  # the step 0..2 is under way: the run ends at 2
    assert run.steps == 1
    env.run()
    assert woke == [2.0]


# ---------------------------------------------------------------------------------------------
# step boundaries as both fidelities compute them (sim/stepclock.py)

TIMES = st.floats(0.0, 1e7, allow_nan=False)
STEPS = st.floats(1e-6, 10.0, allow_nan=False)


@given(now=TIMES, ahead=st.floats(0.0, 1e5, allow_nan=False))
def test_timeout_at_fires_at_exactly_the_time_asked(now, ahead):
    env = simpy.Environment()
    move_clock(env, now)
    t = now + ahead * math.pi  # any float at or after now
    fired = []
    timeout_at(env, t).callbacks.append(lambda _: fired.append(env.now))
    env.run()
    assert fired == [t]


def test_timeout_at_refuses_the_past():
    env = simpy.Environment()
    move_clock(env, 5.0)
    with pytest.raises(ValueError):
        timeout_at(env, 4.0)


@given(start=TIMES, step=STEPS, n=st.integers(0, 10_000))
def test_steps_begun_compares_with_the_boundary_as_scheduled(start, step, n):
    boundary = start + n * step
    # at a boundary the step after it has begun; just before, it has not
    assert steps_begun(start, step, boundary) == n + 1
    before = math.nextafter(boundary, -math.inf)
    if n and before >= start:
        assert steps_begun(start, step, before) == n


def test_timeout_at_reaches_a_time_no_delay_can():
    """From 1.65 every sum 1.65 + delay near 5.67 is a tie that rounds to even: 5.668483479817708
    (odd) is reached only by putting the event on SimPy's queue at that time (found by a hunt)."""
    env = simpy.Environment()
    move_clock(env, 1.65)
    t = 5.668483479817708
    assert all(1.65 + d != t for d in (t - 1.65, math.nextafter(t - 1.65, 0), math.nextafter(t - 1.65, 9)))
    fired = []

    def proc():
        yield timeout_at(env, t)
        fired.append(env.now)

    env.process(proc())
    env.run()
    assert fired == [t]


def test_a_request_is_a_frozen_dataclass_made_by_its_fast_init():
    """`Request.__init__` is written by hand (speed): it must set every field, in order, by
    position and keyword, and the request must stay frozen, comparable, hashable and picklable."""
    import dataclasses
    import pickle

    from contracts.request import Request

    names = [f.name for f in dataclasses.fields(Request)]
    assert list(Request.__slots__) == names
    values = (1.5, "m", 3, 4, 5, "fn", "ad", "te", (1, 2))
    by_position, by_keyword = Request(*values), Request(**dict(zip(names, values, strict=True)))
    assert by_position == by_keyword and tuple(getattr(by_position, n) for n in names) == values
    assert Request(1.0, "m", 1, 1) == Request(1.0, "m", 1, 1, 0, "", "", "", ())
    assert hash(by_position) == hash(by_keyword) and pickle.loads(pickle.dumps(by_position)) == by_position
    assert dataclasses.replace(by_position, model="x").model == "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_position.model = "y"
