"""Tests that kill mutants of the simulator core (issue 13; `python bench/mutation.py`).

mutmut mutated sim/serving.py, sim/lifecycle.py, sim/placing.py, sim/simulator.py and
sim/flows.py, and these mutants survived the rest of the suite. Each test pins the
behaviour one or more of them changed, with hand-computed expectations.

Numbers come from `small_profile_dict()` (test_sim_properties): a 10 GB GPU, `small` is
3 GB (2 GB of weights in 4 layers of 0.4 GB plus 0.4 GB of embedding and head, and a 1 GB
KV cache); process start 1 s + CUDA context 2 s, KV-cache allocation 0.5 s + graph capture
1.5 s; SSD loads at 0.5 x 2 GB/s = 1 GB/s (2 s), from host DRAM over PCIe at
0.5 x 4 GB/s = 2 GB/s (1 s); prefill 0.125 s, decode 0.0625 s. Every number is dyadic, so
the sums below are exact.
"""

from __future__ import annotations

import math

import pytest
import simpy
from test_sim_core import profile, req
from test_sim_properties import run_sim, small_profile_dict

from policies import Keep, KeepAlivePolicy, Place, PlacementPolicy, StagePlan, StagingPolicy, load_policy
from policies.decisions import SERVE
from sim.config import SimConfig
from sim.flows import FlowNetwork, Link
from sim.profile import profile_from_dict
from sim.simulator import gpus_can_be_shared, move_clock
from traces.request import Request

GB = 1e9
START = 1.0 + 2.0  # process start + CUDA context
INIT = 0.5 + 1.5  # KV-cache allocation + graph capture
PREFILL = 0.125
DECODE = 0.0625
COLD_SSD = START + 2.0 + INIT  # 7.0: ready after a cold start from SSD
COLD_DRAM = START + 1.0 + INIT  # 6.0: ready after a cold start whose checkpoint is in host DRAM


def by_id(records):
    out = {r.request_id: r for r in records}
    assert len(out) == len(records)
    return out


def total(sim, field: str) -> int:
    return sum(getattr(u, field) for u in sim.usage.models.values())


class PerModel(KeepAlivePolicy):
    """Keep-alive tiers chosen per model: {model: [(tier, seconds), ...]}; others stay on the GPU."""

    name = "test_per_model"

    def __init__(self, tiers: dict, default=(("gpu", 1000.0),)):
        self.tiers, self.default = tiers, default

    def on_idle(self, inst, now):
        return [Keep(t, s) for t, s in self.tiers.get(inst.model, self.default)]


# ---------------------------------------------------------------------------------------------
# simulator.py: the clock and the fidelity decision


def test_move_clock_to_the_instant_an_event_is_due():
    # An event due exactly at t is not "before" t: the clock may move there (the arrival loop
    # does this whenever an arrival coincides with a timer), and the event still fires at t.
    env = simpy.Environment()
    fired = []
    env.timeout(2.0).callbacks.append(lambda ev: fired.append(env.now))
    move_clock(env, 2.0)
    assert env.now == 2.0
    env.run()
    assert fired == [2.0]


def _sharing_profile(gpu_memory_gb: float, reserved_gb: float, slots: int):
    d = small_profile_dict()
    d["hardware"].update(gpu_memory_gb=gpu_memory_gb, gpu_reserved_gb=reserved_gb, compute_slots=slots)
    d["models"] = d["models"][:1]  # `small` only: 3 GB
    return profile_from_dict(d, "sharing")


@pytest.mark.parametrize(
    ("memory", "reserved", "slots", "shared"),
    [
        # 10 - 2 = 8 GB usable holds two 3 GB `small` instances (8 // 3 = 2, not 2.67):
        # no more instances than 2 compute slots, but more than 1.
        (10.0, 2.0, 2, False),
        (10.0, 2.0, 1, True),
        (10.0, 2.0, 3, False),
        # 8.999999999 GB holds two, a byte short of three (a scale of 1e9, not 1e9 + 1).
        (8.999999999, 0.0, 2, False),
        (9.0, 0.0, 2, True),
    ],
)
def test_gpus_can_be_shared_counts_whole_instances_of_the_smallest_model(memory, reserved, slots, shared):
    prof = _sharing_profile(memory, reserved, slots)
    assert gpus_can_be_shared(prof, SimConfig(compute_sharing="time_slice")) is shared
    assert gpus_can_be_shared(prof, SimConfig(compute_sharing="none")) is False


# ---------------------------------------------------------------------------------------------
# simulator.py: the ClusterView policies see


def test_cluster_view_model_and_arrivals():
    _, _, sim = run_sim([req(0.0, 0), req(1.5, 1)], keepalive="fixed[ttl=100]")
    assert sim.model("small").name == "small" and sim.model("small").footprint_bytes == 3 * GB
    assert sim.arrivals("small") == [0.0, 1.5]
    assert sim.arrivals("never-seen") == []
    assert sim.models_seen == ["small"]


def test_cluster_view_checkpoint_tiers_and_memory_epoch():
    """Two nodes: after `small` loads on node 0 from SSD its checkpoint is in node 0's host
    DRAM (page cache) and node 1 would read it from SSD; the epoch moved with the memory."""
    epochs = []

    class NoteEpoch(Watch):
        def admit(self, request, cluster):
            epochs.append(cluster.memory_epoch)
            return SERVE

    _, _, sim = run_sim([req(0.0, 0), req(1.0, 1)], nodes=2, keepalive="fixed[ttl=100]",
                        admission=NoteEpoch("small"))
    tiers = {sim.checkpoint_tier("small", n) for n in range(2)}
    assert sim.checkpoint_tiers("small") == frozenset(tiers) and len(tiers) == 2
    assert sim.checkpoint_tiers("never-seen") == frozenset({sim.checkpoint_tier("never-seen", 0)})
    assert epochs[0] != epochs[1]  # the first request's instance took GPU memory in between


class Watch:
    """Admission that admits everything and notes what `waiting` says at each arrival."""

    name = label = "watch"

    def __init__(self, model):
        self.model, self.seen = model, []

    def admit(self, request, cluster):
        self.seen.append((request.request_id, cluster.waiting(self.model)))
        return SERVE


class CountingFirstFit(PlacementPolicy):
    """first_fit, noting the time of every call."""

    name = "test_counting_first_fit"

    def __init__(self):
        self.inner = load_policy("placement", "first_fit")
        self.calls = []

    def place(self, model, cluster):
        self.calls.append((cluster.now, model.name))
        return self.inner.place(model, cluster)


def test_waiting_counts_requests_in_the_memory_queue_and_placement_is_not_asked_again():
    # small, m1, m2 fill the 10 GB GPU (3 x 3 GB) and stay busy for 200 tokens each
    # (ready at 3 + 3 x 2 / 2 + 2 = 8: three 2 GB loads share the 2 GB/s SSD link, then
    # 0.125 + 199 x 0.0625 = 12.5625 s of serving, until 20.5625). m3 at t=10 finds no room: it waits in the
    # memory queue, and placement's "no room" stands until memory changes, so the m3 at
    # t=11 is not offered to placement at all. Admission sees one m3 waiting at t=11.
    p = profile(m1="small", m2="small", m3="small")
    reqs = [req(0.0, i, model=m, out=200) for i, m in enumerate(["small", "m1", "m2"])]
    reqs += [req(10.0, 3, model="m3"), req(11.0, 4, model="m3")]
    watch, placement = Watch("m3"), CountingFirstFit()
    _, recs, sim = run_sim(reqs, p, keepalive="fixed[ttl=1]", admission=watch, placement=placement)
    assert watch.seen == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 1)]
    # At 20.5625 they go idle and placement evicts one for m3 (checkpoint from SSD: ready 7 s
    # later, at 27.5625), which serves both queued requests in two batch slots.
    assert [c for c in placement.calls if c[1] == "m3"] == [(10.0, "m3"), (20.5625, "m3")]
    r = by_id(recs)
    assert r[3].cold and r[4].cold
    assert r[3].first_token_s == r[4].first_token_s == 20.5625 + COLD_SSD + PREFILL
    assert (r[3].load_wait_s, r[4].load_wait_s) == (27.5625 - 10.0, 27.5625 - 11.0)
    assert sim.waiting("m3") == 0 and sim.pending_total == 0
    assert all(n == 0 for n in sim._unplaced.values())


# ---------------------------------------------------------------------------------------------
# records: every field of a served and a rejected record


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_served_and_rejected_records_carry_the_request(fidelity):
    reqs = [Request(0.0, "small", 123, 1, 0, function="fn-a"), Request(1.0, "huge", 77, 9, 1, function="fn-b")]
    row, recs, sim = run_sim(reqs, fidelity=fidelity, keepalive="none")
    r = by_id(recs)
    served, rejected = r[0], r[1]
    assert served.policy == sim.label == row["policy"]
    assert (served.function, served.prompt_tokens, served.output_tokens) == ("fn-a", 123, 1)
    assert served.reason == "" and not served.rejected
    assert math.isnan(served.tpot_s)  # a single token has no time per output token
    assert rejected.rejected and rejected.policy == sim.label
    assert (rejected.function, rejected.prompt_tokens, rejected.output_tokens) == ("fn-b", 77, 9)
    assert "more than any GPU has" in rejected.reason


# ---------------------------------------------------------------------------------------------
# simulator.py: lifecycle hooks


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_a_request_that_waited_for_the_load_reports_its_wait(fidelity):
    # Arrives at 5: ready at 5 + 7 = 12, first token at 12.125; it waited 7 s, not 5 + 12.
    _, recs, sim = run_sim([req(5.0, 0, out=3)], fidelity=fidelity, keepalive="fixed[ttl=100]")
    (r,) = recs
    assert r.cold and r.load_wait_s == COLD_SSD and r.first_token_s == 5.0 + COLD_SSD + PREFILL
    assert r.finish_s == r.first_token_s + 2 * DECODE
    (inst,) = sim.instances.values()
    assert inst.state == "full"  # every layer bound: full, not a partial stage


def test_a_sleeper_wakes_into_exactly_the_memory_it_left():
    # A 9 GB GPU holds small, m1, m2 (3 GB each) exactly. `small` goes to sleep in host DRAM
    # 1 s after its request, m1 and m2 stay. At t=100 the GPU has exactly 3 GB free: `small`
    # wakes there (0.5 s + 2 GB over PCIe at 2 GB/s = 1.5 s) instead of a new cold start.
    d = small_profile_dict()
    d["hardware"]["gpu_memory_gb"] = 9.0
    for name in ("m1", "m2"):
        d["models"].append(dict(d["models"][0], name=name))
    p = profile_from_dict(d, "exact-fit")
    reqs = [req(0.0, i, model=m) for i, m in enumerate(["small", "m1", "m2"])] + [req(100.0, 3)]
    ka = PerModel({"small": [("gpu", 1.0), ("dram", 1000.0)]})
    _, recs, sim = run_sim(reqs, p, keepalive=ka)
    r = by_id(recs)
    assert r[3].cold and r[3].ttft_s == 0.5 + 1.0 + PREFILL
    assert total(sim, "wakes") == 1 and total(sim, "loads") == 3
    # the record and the summary tell the wake from the three loads from scratch
    assert r[3].woke and not any(r[i].woke for i in range(3)) and all(r[i].cold for i in range(3))


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_the_summary_splits_waits_for_a_load_from_waits_for_a_wake(fidelity):
    """`small` loads from SSD (6 s + prefill), sleeps in host DRAM 1 s after its request and
    wakes at 100 s (1.5 s + prefill), as at 50 s; at 102 s it is awake: 3 of 4 waited,
    2 of them for a wake."""
    ka = PerModel({"small": [("gpu", 1.0), ("dram", 1000.0)]})
    row, recs, _ = run_sim([req(0.0, 0), req(50.0, 1), req(100.0, 2), req(102.0, 3)], keepalive=ka,
                           fidelity=fidelity)
    r = by_id(recs)
    assert [(x.cold, x.woke) for x in (r[0], r[1], r[2], r[3])] == [
        (True, False), (True, True), (True, True), (False, False)]
    assert row["cold_start_pct"] == 75.0 and row["wake_pct"] == 50.0
    assert row["cold_ttft_p50_s"] == pytest.approx(r[0].ttft_s, rel=0.01)
    assert row["wake_ttft_p50_s"] == pytest.approx(0.5 + 1.0 + PREFILL, rel=0.01)


def test_a_process_prewarmed_ahead_of_a_request_skips_the_process_start():
    # popular[interval=5, tier=process]: `small` served at 0 (cold, done at 7.125, no
    # keep-alive: evicted then). The tick at 10 finds no instance and starts a process:
    # start + CUDA context + graph capture = 4.5 s, asleep at 14.5. The request at 12 waits
    # for it, then wakes it: 0.5 s + the weights from host DRAM (1 s) + KV-cache allocation
    # 0.5 s: first token at 16.5 + 0.125, TTFT 4.625 (a cold start would take 6.125).
    reqs = [req(0.0, 0), req(12.0, 1)]
    _, recs, sim = run_sim(reqs, keepalive="none", prewarm="popular[window=300,min_requests=1,interval=5,tier=process]")
    r = by_id(recs)
    assert r[1].cold and r[1].ttft_s == 4.625 and r[1].load_wait_s == 4.5
    assert total(sim, "wakes") == 1 and total(sim, "loads") == 1


def test_a_queued_request_an_idling_instance_takes_is_cold_and_the_instance_is_still_evicted():
    # The scenario of test_sim_core's "handed a queued request as it idles": `big` fits the
    # GPU once, max_batch 1. B (big2) serves until 11.125; A1 (big, t=1) evicts it and starts
    # X (ready at 22.125, A1 done at 22.25); A2 (big, t=2) waits in the memory queue and X
    # takes it as it idles at 22.25: a cold request (it waited 20.25 s for memory and the
    # load), counted once, like A1. With no keep-alive, X is evicted when A2 is done.
    p = profile(max_batch=1, big2="big")
    reqs = [req(0.0, 0, "big2"), req(1.0, 1, "big"), req(2.0, 2, "big")]
    _, recs, sim = run_sim(reqs, p, keepalive="none")
    r = by_id(recs)
    assert r[2].cold and r[2].load_wait_s == 22.25 - 2.0 and r[2].first_token_s == 22.375
    assert sim.usage.of("big").cold == 2 and sim.usage.of("big2").cold == 1
    assert not sim.instances and sim.usage.of("big").evictions == 1


# ---------------------------------------------------------------------------------------------
# lifecycle.py: keep-alive tiers


class Tiers(KeepAlivePolicy):
    """Fixed tiers, returned as plain (tier, seconds) tuples; notes (model, now) of each call."""

    name = "test_tiers"

    def __init__(self, *tiers):
        self.tiers, self.calls = tiers, []

    def on_idle(self, inst, now):
        self.calls.append((inst.model, now))
        return list(self.tiers)


def test_the_process_tier_straight_from_the_gpu_drops_the_weights():
    # Idle at 7.125, on the GPU until 8.125, then asleep without weights (sleep level 2, no
    # copy to host DRAM). A request at 20 wakes it: 0.5 s + the weights from the page cache
    # (1 s) + KV-cache allocation 0.5 s, then the prefill: TTFT 2.125.
    ka = Tiers(("gpu", 1.0), ("process", 100.0))
    row, recs, sim = run_sim([req(0.0, 0), req(20.0, 1)], keepalive=ka)
    r = by_id(recs)
    assert r[1].cold and r[1].ttft_s == 0.5 + 1.0 + 0.5 + PREFILL
    assert total(sim, "wakes") == 1 and total(sim, "loads") == 1
    assert row["gb_pcie_d2h"] == 0.0
    assert ka.calls[0] == ("small", COLD_SSD + PREFILL)


def test_a_second_dram_tier_keeps_the_weights_in_host_dram():
    # gpu 1 s, dram 5 s, dram 5 s: from 8.125 to 18.125 the weights stay in host DRAM (level
    # 1: copied out once, 2 GB). A request at 15 wakes it over PCIe: 0.5 + 1 s, TTFT 1.625.
    ka = Tiers(("gpu", 1.0), ("dram", 5.0), ("dram", 5.0))
    row, recs, sim = run_sim([req(0.0, 0), req(15.0, 1)], keepalive=ka)
    r = by_id(recs)
    assert r[1].cold and r[1].ttft_s == 0.5 + 1.0 + PREFILL
    assert row["gb_pcie_d2h"] == 2.0
    assert total(sim, "wakes") == 1 and total(sim, "loads") == 1
    assert sim.nodes[0].dram.pinned == 0


# ---------------------------------------------------------------------------------------------
# lifecycle.py: where a checkpoint lands


def test_a_checkpoint_from_remote_storage_lands_on_the_ssd():
    # Host DRAM (1 GB) cannot cache the 2 GB checkpoint, so the second cold start cannot load
    # from there; it loads from the local SSD where the first load left it (2 GB at 1 GB/s),
    # not again from remote storage (2 GB at 0.5 GB/s).
    d = small_profile_dict()
    d["hardware"]["host_dram_gb"] = 1.0
    p = profile_from_dict(d, "small-dram")
    _, recs, sim = run_sim([req(0.0, 0), req(100.0, 1)], p, storage="remote", keepalive="none")
    r = by_id(recs)
    assert r[0].ttft_s == START + 4.0 + INIT + PREFILL
    assert r[1].ttft_s == START + 2.0 + INIT + PREFILL
    assert "small" in sim.nodes[0].ssd and "small" not in sim.nodes[0].dram


# ---------------------------------------------------------------------------------------------
# placing.py: a placement's answer is checked


class FixedPlace(PlacementPolicy):
    """Places the request for model `on` as told; first_fit for every other model."""

    name = "test_fixed_place"

    def __init__(self, on: str, place_as):
        self.on, self.place_as = on, place_as
        self.inner = load_policy("placement", "first_fit")

    def place(self, model, cluster):
        return self.place_as if model.name == self.on else self.inner.place(model, cluster)


def _exact_profile(gpu_memory_gb: float, *copies: str):
    d = small_profile_dict()
    d["hardware"]["gpu_memory_gb"] = gpu_memory_gb
    for name in copies:
        d["models"].append(dict(d["models"][0], name=name))
    return profile_from_dict(d, "exact")


@pytest.mark.parametrize(
    ("place", "message"),
    [
        (Place(1, 0), r"GPU \(1, 0\) does not exist"),
        (Place(0, 1), r"GPU \(0, 1\) does not exist"),
        (Place(0, 0, (99,)), r"instance 99 is not an idle instance on that GPU"),
        (Place(0, 0, (0,)), r"instance 0 is not an idle instance on that GPU"),  # busy
        # m1 on the other GPU is idle, but not on the GPU named
        (Place(0, 0, (1,)), r"instance 1 is not an idle instance on that GPU"),
        # 8.999999999 GB minus 2 x 3 GB leaves 2.999999999 GB: one byte short of 3 GB
        (Place(0, 0), r"GPU \(0, 0\) has 3.0 GB free after evictions; the model needs 3.0 GB"),
    ],
)
def test_a_placement_that_cannot_be_applied_is_a_policy_error(place, message):
    from sim.policyset import PolicyError

    p = _exact_profile(8.999999999, "m1", "m2")
    # small on GPU 0, busy at 30 (ready at 8, 400 tokens: until 8.125 + 399 x 0.0625 = 33.06),
    # m1 idle from 8.125, on GPU 0 too unless the case wants it on GPU 1
    reqs = [req(0.0, 0, out=400), req(0.0, 1, model="m1"), req(30.0, 2, model="m2")]
    if place.evict == (1,):

        class M1OnGpu1(FixedPlace):
            def place(self, model, cluster):
                if model.name == "m1":
                    return Place(0, 1)
                return super().place(model, cluster)

        placement = M1OnGpu1("m2", place)
        gpus = 2
    else:
        placement, gpus = FixedPlace("m2", place), 1
    with pytest.raises(PolicyError, match=rf"policy test_fixed_place\[.*\] failed in place\(\) at t=30.000 s: {message}"):
        run_sim(reqs, p, gpus=gpus, keepalive="fixed[ttl=1000]", placement=placement)


def test_a_staging_answer_that_is_not_a_plan_is_named_by_its_type():
    from sim.policyset import PolicyError

    class Dict(StagingPolicy):
        name = "test_dict_plan"

        def plan(self, model):
            return {"stages": [[0, 1, 2, 3]]}

    with pytest.raises(PolicyError, match=r"returned dict \{'stages'.*not a StagePlan"):
        run_sim([req(0.0, 0)], staging=Dict())


def test_placement_evicts_the_least_recently_used_idle_instance():
    # small, m1, m2 fill the GPU (3 x 3 GB of 10) and idle with a long keep-alive; m1 is used
    # again at 20 and small at 30, so m2 (last used at 0) is the one m3 evicts at 100.
    p = profile(m1="small", m2="small", m3="small")
    reqs = [req(0.0, i, model=m) for i, m in enumerate(["small", "m1", "m2"])]
    reqs += [req(20.0, 3, model="m1"), req(30.0, 4), req(100.0, 5, model="m3")]
    _, _, sim = run_sim(reqs, p, keepalive="fixed[ttl=1000]")
    assert sorted(i.model for i in sim.instances.values()) == ["m1", "m3", "small"]
    assert sim.usage.of("m2").evictions == 1


def test_a_sleeper_that_cannot_wake_gives_way_to_a_cold_start_on_another_gpu():
    # Two GPUs. `small` sleeps in host DRAM from 8.125 (gpu 1 s). At 10, m1..m3 (busy for
    # 200 tokens) fill GPU 0 (first fit), so at 20 `small` cannot wake there: it starts cold
    # on GPU 1 at once, with its checkpoint in host DRAM (6 s + prefill).
    p = profile(m1="small", m2="small", m3="small")
    reqs = [req(0.0, 0)] + [req(10.0, i, model=f"m{i}", out=200) for i in (1, 2, 3)] + [req(20.0, 4)]
    ka = PerModel({"small": [("gpu", 1.0), ("dram", 1000.0)]})
    _, recs, sim = run_sim(reqs, p, gpus=2, keepalive=ka)
    r = by_id(recs)
    assert r[4].cold and r[4].ttft_s == COLD_DRAM + PREFILL and r[4].gpu == 1
    assert total(sim, "wakes") == 0


# ---------------------------------------------------------------------------------------------
# serving.py: the closed form and the batch loop


def test_a_slot_that_frees_exactly_at_an_arrival_is_free():
    # decode 0.0625 s at batch 1, 0.078125 at batch 2 (the table rises 1/64 s per request).
    # Request 1 (t=100, 2 tokens) holds a slot until 100.1875; request 2 arrives exactly then,
    # finds that slot free and decodes alone: 100.1875 + 0.125 + 0.0625 = 100.375.
    p = profile(max_batch=4, decode=(0.0625, 0.0625 + 63 / 64))
    reqs = [req(0.0, 0), req(100.0, 1, out=2), req(100.1875, 2, out=2)]
    _, recs, _ = run_sim(reqs, p, keepalive="fixed[ttl=1000]")
    r = by_id(recs)
    assert r[1].finish_s == 100.1875
    assert r[2].tpot_s == DECODE and r[2].finish_s == 100.375


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_a_partial_stage_with_a_latency_scale_serves_faster(fidelity):
    # progressive: stage 1 (3 layers + embedding + head, 1.6 GB) lands at 4.6, ready at 6.6.
    # Its measured latency scale 0.5 halves prefill and decode: first token 6.6 + 0.0625,
    # the second 0.03125 later, both before stage 2 lands at 7.0.
    d = small_profile_dict()
    d["models"][0]["stages"][0]["latency_scale"] = 0.5
    p = profile_from_dict(d, "scaled")
    _, recs, _ = run_sim([req(0.0, 0, out=2)], p, fidelity=fidelity, staging="progressive", keepalive="none")
    (r,) = recs
    assert r.first_token_s == pytest.approx(6.6 + PREFILL / 2, rel=1e-12)
    assert r.finish_s == pytest.approx(6.6 + PREFILL / 2 + DECODE / 2, rel=1e-12)
    assert r.quality == 0.5


def test_the_kv_cache_limits_the_batch_at_iteration_fidelity():
    # KV cache of 1000 tokens; A, B, C (498 + 2 tokens each) arrive together at a warm instance.
    # 20.0: A starts alone (the loop started before B and C arrived): prefill, first token 20.125.
    # 20.125: B joins (500 + 500 = 1000 fits exactly), C does not (1500): prefill of B plus
    #         A's decode, 0.1875 s: A finishes, B's first token at 20.3125.
    # 20.3125: C joins (500 + 500): prefill plus B's decode: B finishes, C's first token at 20.5.
    # 20.5: C's decode: finishes at 20.5625. Nothing is left in the KV cache.
    d = small_profile_dict()
    d["models"][0]["max_tokens_in_flight"] = 1000
    p = profile_from_dict(d, "kv-1000")
    reqs = [req(0.0, 0)] + [req(20.0, i, out=2, prompt=498) for i in (1, 2, 3)]
    _, recs, sim = run_sim(reqs, p, fidelity="iteration", keepalive="fixed[ttl=1000]")
    r = by_id(recs)
    assert (r[1].first_token_s, r[1].finish_s) == (20.125, 20.3125)
    assert (r[2].first_token_s, r[2].finish_s) == (20.3125, 20.5)
    assert (r[3].first_token_s, r[3].finish_s) == (20.5, 20.5625)
    (inst,) = sim.instances.values()
    assert inst.tokens_in_flight == 0 and not inst.running and not inst.queue


class OneLayerPerStage(StagingPolicy):
    """Four stages of one layer each (stage 0 also carries embedding and head); serve from stage 0."""

    name = "test_one_layer_per_stage"

    def plan(self, model):
        return StagePlan("one-layer", model.num_layers, tuple((i,) for i in range(model.num_layers)), 0)


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_a_request_spanning_several_stages_gets_the_quality_of_each(fidelity):
    # Stage 0 (1 layer + 0.4 GB: 0.8 s) lands at 3.8, init 2 s: ready at 5.8. Stages 1, 2, 3
    # (0.4 s each) land at 6.2, 6.6, 7.0, with quality 0 (1 and 2 layers: below the profile's
    # first measured stage), 0.5 (3 layers) and 1.0. Tokens (a step has the quality of the
    # stage bound when it starts; the first step after a bind re-runs the prefill, 0.125 s):
    #   5.925 first token, decodes to 6.2375            tokens 1-6   quality 0
    #   refill -> 6.3625, decodes to 6.6125             tokens 7-11  quality 0
    #   refill -> 6.7375, decodes to 7.05               tokens 12-17 quality 0.5
    #   refill -> 7.175, decodes to 7.3                 tokens 18-20 quality 1.0
    # (6 x 0.5 + 3) / 20 = 0.3. The partial record must wait for stage 3: at stage 1 its later
    # tokens are not known yet.
    _, recs, sim = run_sim([req(0.0, 0, out=20)], fidelity=fidelity, staging=OneLayerPerStage(), keepalive="none")
    (r,) = recs
    assert r.stage_at_first_token == 0 and r.first_token_s == pytest.approx(5.925, rel=1e-12)
    assert r.finish_s == pytest.approx(7.3, rel=1e-12)
    assert r.quality == pytest.approx(0.3, rel=1e-12)
    assert total(sim, "refills") == 3  # three stages bind mid-request


# ---------------------------------------------------------------------------------------------
# the link solver (sim/flows.py): what its mutation run left alive


def test_a_link_of_under_one_byte_per_second_is_a_link():
    """Fractional bandwidths are legal, and a transfer over one runs at its rate: 1 byte at
    0.25 B/s lands at 4 s (not at once, not at a floor of 1 B/s, not never)."""
    env = simpy.Environment()
    net = FlowNetwork(env)
    slow = Link("slow", "network", 0.25)
    done = net.transfer((slow,), 1.0)
    landed = []
    done.callbacks.append(lambda _: landed.append(env.now))
    env.run()
    assert landed == [4.0] and slow.bytes_carried == 1.0


def test_a_transfer_is_refused_without_a_path_or_with_no_efficiency():
    net = FlowNetwork(simpy.Environment())
    with pytest.raises(ValueError, match="at least one link"):
        net.transfer((), 10.0)
    with pytest.raises(ValueError, match="efficiency"):
        net.transfer((Link("l", "ssd", 1.0),), 10.0, efficiency=0.0)


def test_a_completion_made_stale_by_a_rate_change_does_nothing():
    """A (1000 B) starts alone on a 100 B/s link at 0 s; B (100 B) joins at 5 s, so both move at
    50 B/s; B lands at 7 s, A alone again lands at 11 s. A's completions planned at 10 s
    (alone) and at 15 s (shared) went stale; firing, they must change nothing and plan
    nothing: the events are the 4 completions the three rate changes planned (A at 0 s; A and
    B at 5 s; A at 7 s) and the 2 `done` events."""
    env = simpy.Environment()
    net = FlowNetwork(env)
    link = Link("pcie", "pcie", 100.0)
    landed = {}
    a = net.transfer((link,), 1000.0)
    a.callbacks.append(lambda _: landed.setdefault("a", env.now))

    def later():
        yield env.timeout(5.0)
        b = net.transfer((link,), 100.0)
        b.callbacks.append(lambda _: landed.setdefault("b", env.now))

    env.process(later())
    events = 0
    while env.peek() < math.inf:
        env.step()
        events += 1
    assert landed == {"b": 7.0, "a": 11.0} and link.bytes_carried == 1100.0
    # the process `later`: its start, its timeout and its end are 3 events of its own
    assert events == 4 + 2 + 3
