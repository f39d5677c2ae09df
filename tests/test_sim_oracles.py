"""Hand-computed oracles: max-min fair link sharing, the phases of a cold start, the
keep-alive boundary, and progressive staging's earlier-but-partial first token.

The profile is `small_profile_dict()` from test_sim_properties: every number is dyadic, so
the sums below are exact. From SSD a load runs at 0.5 x 2 GB/s = 1 GB/s; `small` has 2 GB
of weights in 4 layers of 0.4 GB plus 0.4 GB of embedding and head.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import simpy
from test_sim_properties import SMALL, SleepTiers, run_sim, small_profile_dict, time_limit

from policies import KeepAlivePolicy, Place, StagePlan, StagingPolicy, load_policy
from sim.flows import FlowNetwork, Link
from sim.policyset import PolicyError
from sim.profile import profile_from_dict
from sim.simulator import TraceOrderError
from traces.request import Request

GB = 1e9
START = 1.0 + 2.0  # process start + CUDA context
INIT = 0.5 + 1.5  # KV-cache allocation + graph capture
PREFILL = 0.125
DECODE = 0.0625
COLD_FULL_SSD = START + 2.0 + INIT + PREFILL  # 7.125: 2 GB at 1 GB/s


def req(t, i, model="small", out=1, prompt=100):
    return Request(arrival_s=t, model=model, prompt_tokens=prompt, output_tokens=out, request_id=i)


def total(sim, field: str) -> int:
    """A counter of the run's per-model ledger, summed over models."""
    return sum(getattr(u, field) for u in sim.usage.models.values())


def by_id(records):
    out = {r.request_id: r for r in records}
    assert len(out) == len(records)
    return out


# ---------------------------------------------------------------------------------------------
# links


def run_transfers(specs, t0: float = 0.0):
    """specs: (start, path, nbytes, efficiency); returns completion times."""
    env = simpy.Environment(initial_time=t0)
    net = FlowNetwork(env)
    done = {}

    def proc(i, start, path, nbytes, eff):
        yield env.timeout(start)
        yield net.transfer(path, nbytes, eff)
        done[i] = env.now

    for i, s in enumerate(specs):
        env.process(proc(i, *s))
    env.run()
    return [done[i] for i in range(len(specs))]


def test_max_min_three_transfers_three_links():
    # A = 10, B = 12, C = 4 GB/s. T1 on A, T2 on A+B, T3 on B+C.
    # Filling: all rise to 4, C saturates (T3 = 4); T1, T2 rise to 5, A saturates. B carries 9.
    # T1 (10 GB at 5) ends at 2. Then T3 = 4 (C), T2 = min(A 10, B 12 - 4) = 8: its 16 GB left end at 4.
    # T3 had 40 - 8 - 8 = 24 GB left at t=4, alone at 4 GB/s: ends at 10.
    a, b, c = Link("A", "network", 10 * GB), Link("B", "ssd", 12 * GB), Link("C", "pcie", 4 * GB)
    got = run_transfers([(0, (a,), 10 * GB, 1.0), (0, (a, b), 26 * GB, 1.0), (0, (b, c), 40 * GB, 1.0)])
    assert got == pytest.approx([2.0, 4.0, 10.0], rel=1e-12)
    assert a.bytes_carried == pytest.approx(36 * GB) and b.bytes_carried == pytest.approx(66 * GB)
    assert c.bytes_carried == pytest.approx(40 * GB)


def test_max_min_late_arrival_and_loader_caps():
    # One 10 GB/s link. T1 (efficiency 0.2: cap 2 GB/s) and T2 (uncapped) start at 0: 2 and 8.
    # T3 arrives at 1 s: T1 keeps 2, T2 and T3 share 8 -> 4 each.
    # T2: 8 GB by 1 s, 12 GB left at 4 -> ends at 4. T3 then gets 8: 12 GB by 4 s (12 GB), 4 left -> 4.5.
    # T1: 2 GB/s throughout, 10 GB -> 5.
    lk = Link("L", "ssd", 10 * GB)
    got = run_transfers([(0, (lk,), 10 * GB, 0.2), (0, (lk,), 20 * GB, 1.0), (1, (lk,), 16 * GB, 1.0)])
    assert got == pytest.approx([5.0, 4.0, 4.5], rel=1e-12)


@pytest.mark.parametrize("t0", [1e5, 3e7])
def test_transfers_months_into_a_run_still_end(t0):
    # Late in a run a nanosecond is below the clock's resolution: float slivers of a
    # transfer must end it, not be rescheduled at the same instant forever.
    a, b = Link("a", "ssd", 3 * GB), Link("b", "pcie", 7 * GB)
    specs = [(0.1 * k, (a, b) if k % 2 else (a,), (1 + k) * 0.37 * GB, 0.9) for k in range(7)]
    with time_limit(10.0):
        done = run_transfers(specs, t0)
    ref = run_transfers(specs)
    assert [d - t0 for d in done] == pytest.approx(ref, rel=1e-6)


def test_transfer_argument_errors():
    env = simpy.Environment()
    net = FlowNetwork(env)
    lk = Link("L", "ssd", 1 * GB)
    with pytest.raises(ValueError, match="at least one link"):
        net.transfer((), 10)
    with pytest.raises(ValueError, match="efficiency"):
        net.transfer((lk,), 10, 1.5)
    with pytest.raises(ValueError, match="capacity"):
        Link("bad", "ssd", 0)
    assert net.transfer((lk,), 0).triggered


# ---------------------------------------------------------------------------------------------
# a cold start's phases


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_cold_start_phases_from_ssd(fidelity):
    _, recs, sim = run_sim([req(0.0, 0)], fidelity=fidelity, keepalive="none")
    (rec,) = recs
    assert rec.cold and not rec.rejected
    assert rec.ttft_s == pytest.approx(COLD_FULL_SSD, rel=1e-12)
    assert rec.load_wait_s == pytest.approx(COLD_FULL_SSD - PREFILL, rel=1e-12)
    assert rec.quality == 1.0 and rec.stage_at_first_token == 0
    assert total(sim, "loads") == 1


def test_cold_start_from_remote_then_from_dram():
    # Remote: 2 GB at 0.5 x 1 GB/s = 4 s. The checkpoint then sits in the node's DRAM, so the
    # next cold start loads over PCIe only: 2 GB at 0.5 x 4 GB/s = 1 s.
    _, recs, _ = run_sim([req(0.0, 0), req(100.0, 1)], storage="remote", keepalive="none")
    r = by_id(recs)
    assert r[0].ttft_s == pytest.approx(START + 4.0 + INIT + PREFILL, rel=1e-12)
    assert r[1].cold and r[1].ttft_s == pytest.approx(START + 1.0 + INIT + PREFILL, rel=1e-12)


def test_a_loader_slower_from_host_dram_loads_at_its_own_share_there():
    # `loader_efficiency_dram` 0.125: the remote load is unchanged (4 s); the load from DRAM
    # runs at 0.125 x 4 GB/s, 2 GB in 4 s. The estimates policies plan with say the same.
    from sim.deployment import Deployment

    prof = profile_from_dict(small_profile_dict(loader_efficiency_dram=0.125), "dram-share")
    _, recs, _ = run_sim([req(0.0, 0), req(100.0, 1)], profile=prof, storage="remote", keepalive="none")
    r = by_id(recs)
    assert r[0].ttft_s == pytest.approx(START + 4.0 + INIT + PREFILL, rel=1e-12)
    assert r[1].cold and r[1].ttft_s == pytest.approx(START + 4.0 + INIT + PREFILL, rel=1e-12)
    m = prof.models[0]
    dep = Deployment(m.name, m, prof.hardware, prof.engine)
    assert dep.cold_start_s("dram") == pytest.approx(START + 4.0 + INIT)
    assert dep.cold_start_s("ssd") == pytest.approx(START + 2.0 + INIT)
    assert dep.layer_load_s("dram") == pytest.approx(0.4 / 0.5) and dep.layer_load_s("ssd") == pytest.approx(0.4)
    assert prof.engine.loader_efficiency_from("ssd") == 0.5 and prof.engine.loader_efficiency_from("dram") == 0.125
    plain = profile_from_dict(small_profile_dict(), "plain").engine
    assert plain.loader_efficiency_dram is None and plain.loader_efficiency_from("dram") == 0.5


@pytest.mark.parametrize("value", [0, -0.5, 1.5, "fast"])
def test_a_host_dram_loader_share_outside_zero_to_one_is_refused(value):
    from sim.profile import ProfileError

    with pytest.raises(ProfileError, match="loader_efficiency_dram"):
        profile_from_dict(small_profile_dict(loader_efficiency_dram=value), "bad")


def test_cold_start_with_bind_time_and_output_tokens():
    prof = profile_from_dict(small_profile_dict(bind_s_per_layer=0.25), "bind")
    _, recs, _ = run_sim([req(0.0, 0, out=5)], profile=prof, keepalive="none")
    (rec,) = recs
    first = START + 2.0 + 4 * 0.25 + INIT + PREFILL
    assert rec.first_token_s == pytest.approx(first, rel=1e-12)
    assert rec.finish_s == pytest.approx(first + 4 * DECODE, rel=1e-12)
    assert rec.tpot_s == pytest.approx(DECODE)


def test_pipelined_first_token_overlaps_prefill_with_the_load():
    # Same bytes as full; the prefill ran layer by layer as the layers arrived, only the last
    # layer's share (1/4) is left. Engine init (KV cache, graph) runs while the layers load:
    # computing with layer 0 before layer 1 lands needs the KV cache first.
    _, recs, _ = run_sim([req(0.0, 0)], staging="pipelined", keepalive="none")
    (rec,) = recs
    assert rec.ttft_s == pytest.approx(START + max(2.0, INIT) + PREFILL / 4, rel=1e-12)
    assert rec.quality == 1.0 and rec.stage_at_first_token == 3


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_progressive_serves_earlier_at_partial_quality(fidelity):
    # `small`, progressive 0.75/0.875/1.0 of 4 layers: stage 1 = 3 layers + embedding + head
    # (1.6 GB, 1.6 s), stage 2 = 1 layer (0.4 GB, 0.4 s). The first token comes after stage 1
    # and init: 3 + 1.6 + 2 + 0.125 = 6.725. Stage 2 lands at 3 + 1.6 + 2 + 0.4 = 7.0.
    # 20 tokens every 0.0625 s from 6.725: those before 7.0 are k = 0..4 (6.725 + 4 x 0.0625 = 6.975),
    # 5 tokens at quality 0.5 and 15 at 1.0 -> 0.875.
    out = 20
    _, full, _ = run_sim([req(0.0, 0, out=out)], fidelity=fidelity, staging="full", keepalive="none")
    _, prog, _ = run_sim([req(0.0, 0, out=out)], fidelity=fidelity, staging="progressive", keepalive="none")
    f, p = full[0], prog[0]
    assert p.ttft_s == pytest.approx(START + 1.6 + INIT + PREFILL, rel=1e-12)
    assert p.ttft_s < f.ttft_s
    assert p.stage_at_first_token == 0 and f.stage_at_first_token == 0
    assert f.quality == 1.0
    assert 0.5 <= p.quality < 1.0
    # Stage 2 binds at 7.0, inside the decode step 6.975..7.0375: that step keeps stage 1's
    # quality; the next one is a refill (a prefill over the context, 0.125 s: 7.0375..7.1625)
    # at full quality, then 14 decodes. Tokens at stage 1: 6.725 + k x 0.0625 for k = 0..5
    # (6 tokens at 0.5), 14 at 1.0 -> 0.85, at both fidelities.
    assert p.quality == pytest.approx((6 * 0.5 + 14 * 1.0) / out, rel=1e-12)
    assert p.finish_s == pytest.approx(7.0375 + 0.125 + 13 * DECODE, rel=1e-12)


class ProgressiveNoRefill(StagingPolicy):
    """The built-in progressive plan, with new layers left without K/V for earlier tokens."""

    name = "test_progressive_no_refill"

    def plan(self, model):
        return dataclasses.replace(load_policy("staging", "progressive").plan(model), refill=False)


@pytest.mark.parametrize("refill", [True, False])
def test_stage_bound_mid_request_refills_the_context_at_iteration_fidelity(refill):
    # As above: first token at 6.725, one decode step every 0.0625 s, stage 1 lands at 7.0.
    # The step that starts at 6.975 still computes with 3 layers: 6 tokens at quality 0.5.
    # The next step (from 7.0375) finds a new stage: with refill it is a prefill over the
    # 100 + 6 tokens so far (0.125 s) instead of a decode (0.0625 s); then 13 decodes.
    out = 20
    staging = "progressive" if refill else ProgressiveNoRefill()
    _, recs, sim = run_sim([req(0.0, 0, out=out)], fidelity="iteration", staging=staging, keepalive="none")
    r = recs[0]
    assert r.first_token_s == pytest.approx(6.725, rel=1e-12)
    if refill:
        assert r.finish_s == pytest.approx(6.725 + 5 * DECODE + PREFILL + 13 * DECODE, rel=1e-12)
    else:
        assert r.finish_s == pytest.approx(6.725 + 19 * DECODE, rel=1e-12)
    assert r.quality == pytest.approx((6 * 0.5 + 14 * 1.0) / out, rel=1e-12)
    assert total(sim, "refills") == (1 if refill else 0)


def test_progressive_request_after_last_stage_has_full_quality():
    _, recs, _ = run_sim([req(0.0, 0), req(7.5, 1, out=10)], staging="progressive", keepalive="fixed[ttl=60]")
    r = by_id(recs)
    assert r[0].quality == 0.5 and r[0].cold
    assert not r[1].cold and r[1].quality == 1.0 and r[1].ttft_s == pytest.approx(PREFILL)


# ---------------------------------------------------------------------------------------------
# keep-alive boundaries (the first request finishes at COLD_FULL_SSD = 7.125, exactly)


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
@pytest.mark.parametrize(
    "delta, cold",
    [(-1.0, False), (-1e-9, False), (0.0, True), (1e-9, True), (1.0, True)],
    ids=["inside", "just-inside", "at-boundary", "just-after", "after"],
)
def test_fixed_ttl_boundary(fidelity, delta, cold):
    ttl = 10.0
    _, recs, sim = run_sim([req(0.0, 0), req(COLD_FULL_SSD + ttl + delta, 1)], fidelity=fidelity,
                           keepalive=f"fixed[ttl={ttl}]")
    r = by_id(recs)
    assert r[0].finish_s == COLD_FULL_SSD
    assert r[1].cold is cold, r[1]
    # cold: the checkpoint is in host DRAM by now, 2 GB over PCIe at 2 GB/s
    assert r[1].ttft_s == pytest.approx(START + 1.0 + INIT + PREFILL if cold else PREFILL, rel=1e-12)
    assert total(sim, "loads") == (2 if cold else 1)


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_keepalive_restarts_from_the_last_request(fidelity):
    # ttl 10: r0 finishes at 7.125; r1 at 12 is warm and finishes at 12.125, so the instance is
    # kept until 22.125. r2 at 22.125 - 1e-9 is warm; r3 at 22.125 + 20 (long after) is cold.
    ttl = 10.0
    t1 = 12.0
    end1 = t1 + PREFILL
    reqs = [req(0.0, 0), req(t1, 1), req(end1 + ttl - 1e-9, 2), req(end1 + 2 * ttl + 5.0, 3)]
    _, recs, _ = run_sim(reqs, fidelity=fidelity, keepalive=f"fixed[ttl={ttl}]")
    r = by_id(recs)
    assert [r[i].cold for i in range(4)] == [True, False, False, True]


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_keepalive_expires_ttl_after_the_last_request_not_the_first(fidelity):
    # r1 (warm, at 12) resets the clock: the instance must go at 12.125 + 10 = 22.125, not at
    # 7.125 + 10 + 10 or later. r2 at 22.125 + 1 must be cold.
    ttl = 10.0
    reqs = [req(0.0, 0), req(12.0, 1), req(12.0 + PREFILL + ttl + 1.0, 2)]
    _, recs, sim = run_sim(reqs, fidelity=fidelity, keepalive=f"fixed[ttl={ttl}]")
    r = by_id(recs)
    assert not r[1].cold
    assert r[2].cold, "kept alive past ttl after its last request"
    assert total(sim, "loads") == 2


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_memory_held_until_ttl_after_the_last_request(fidelity):
    # ttl 10, 3 GB per instance. r0 cold (0 -> 7.125), r1 warm at 12 (-> 12.125): held until
    # 22.125, idle 7.125..12 and 12.125..22.125. r2 at 40 is cold (from DRAM, 6.125 s) and the
    # run ends when it finishes at 46.125 (the keep-alive after the last request is not counted).
    ttl = 10.0
    reqs = [req(0.0, 0), req(12.0, 1), req(40.0, 2)]
    row, recs, _ = run_sim(reqs, fidelity=fidelity, keepalive=f"fixed[ttl={ttl}]")
    assert [r.cold for r in sorted(recs, key=lambda r: r.request_id)] == [True, False, True]
    held_s = row["gpu_mem_gb_hours"] * 3600 / 3.0
    idle_s = row["gpu_idle_gb_hours"] * 3600 / 3.0
    assert held_s == pytest.approx(22.125 + 6.125, rel=1e-9)
    assert idle_s == pytest.approx((12.0 - 7.125) + ttl, rel=1e-9)


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_no_keepalive_second_request_is_cold(fidelity):
    _, recs, sim = run_sim([req(0.0, 0), req(COLD_FULL_SSD + 1e-6, 1)], fidelity=fidelity, keepalive="none")
    r = by_id(recs)
    assert r[1].cold
    # the checkpoint is now cached in host DRAM: 2 GB over PCIe at 2 GB/s
    assert r[1].ttft_s == pytest.approx(START + 1.0 + INIT + PREFILL, rel=1e-9)
    assert total(sim, "loads") == 2 and total(sim, "evictions") == 2


def test_two_tier_wakes_from_host_dram():
    # gpu 1 s, then dram 100 s. r0 finishes at 7.125; demoted at 8.125. r1 at 20 wakes the
    # sleeping process: 0.5 s wake + 2 GB over PCIe at 2 GB/s + prefill.
    _, recs, sim = run_sim([req(0.0, 0), req(20.0, 1), req(20.0 + 1.625 + 0.5, 2)],
                           keepalive="two_tier[gpu=1,dram=100]")
    r = by_id(recs)
    assert r[1].cold and r[1].ttft_s == pytest.approx(0.5 + 1.0 + PREFILL, rel=1e-12)
    assert not r[2].cold
    assert total(sim, "wakes") == 1 and total(sim, "loads") == 1


def test_two_tier_expires_from_dram_then_cold():
    _, recs, sim = run_sim([req(0.0, 0), req(200.0, 1)], keepalive="two_tier[gpu=1,dram=100]")
    r = by_id(recs)
    assert r[1].cold and r[1].ttft_s == pytest.approx(START + 1.0 + INIT + PREFILL, rel=1e-12)
    assert total(sim, "loads") == 2 and total(sim, "wakes") == 0


# ---------------------------------------------------------------------------------------------
# placement, memory queue, rejection


@pytest.mark.parametrize(("fidelity", "sharing", "prefills"), [
    ("request", "none", (1, 1, 1)),
    ("iteration", "none", (1, 1, 1)),
    # three prefills at once on one GPU: processor sharing ends all three after 3 prefills
    ("iteration", "time_slice", (3, 3, 3)),
    # the closed form cannot slow down requests it has scheduled: a run whose GPUs can be
    # shared serves on events at request fidelity too, so it is exact
    ("request", "time_slice", (3, 3, 3)),
])
def test_three_instances_fit_a_fourth_waits_for_an_eviction(fidelity, sharing, prefills):
    # 10 GB GPU, 3 GB per instance: m0..m2 load at once (sharing the SSD link), m3 waits until
    # one of them is idle and evictable. With keepalive none, m0..m2 are evicted when idle.
    reqs = [req(0.0, i, model=f"m{i}") for i in range(4)]
    _, recs, sim = run_sim(reqs, keepalive="fixed[ttl=100]", fidelity=fidelity, compute_sharing=sharing)
    r = by_id(recs)
    # three 2 GB loads share the 2 GB/s SSD: each runs at 2/3 GB/s (below its 1 GB/s cap) -> 3 s
    for i in range(3):
        assert r[i].ttft_s == pytest.approx(START + 3.0 + INIT + prefills[i] * PREFILL, rel=1e-12)
        assert r[i].gpu == 0
    assert r[3].cold and r[3].ttft_s > r[0].ttft_s
    assert total(sim, "evictions") >= 1


def test_model_larger_than_any_gpu_is_rejected_with_a_reason():
    _, recs, _ = run_sim([req(0.0, 0, model="huge"), req(1.0, 1)])
    r = by_id(recs)
    assert r[0].rejected and "GB" in r[0].reason and math.isnan(r[0].ttft_s)
    assert not r[1].rejected


def test_max_queue_sheds_when_requests_wait():
    reqs = [req(0.0, i) for i in range(4)]
    row, recs, _ = run_sim(reqs, admission="max_queue[depth=2]")
    r = by_id(recs)
    # r0 starts the load (waits: 1), r1 waits (2), r2 and r3 find 2 waiting and are shed
    assert [r[i].rejected for i in range(4)] == [False, False, True, True]
    assert "queue full" in r[2].reason
    assert row["rejected"] == 2


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_batch_capacity_queues_for_the_batch(fidelity):
    # `big` (6.4 GB) fits once on the 10 GB GPU, max_batch 4; five warm requests of 3 tokens
    # at t=20 (handled one after another, so the first one's step has begun when the others
    # come). r1's prefill step ends at +0.125; r2..r4 join then: their prefill and r1's decode
    # end at +0.3125; one decode step (+0.375) finishes r1 and frees a place, so r5 joins:
    # its prefill and the others' decode end at +0.5625, its first token. It cannot scale out
    # (no room, nothing idle to evict).
    warm = 20.0
    reqs = [req(0.0, 0, model="big")] + [req(warm, i + 1, model="big", out=3) for i in range(5)]
    _, recs, sim = run_sim(reqs, keepalive="fixed[ttl=100]", fidelity=fidelity)
    r = by_id(recs)
    ttfts = [r[i].ttft_s for i in range(1, 6)]
    t2 = PREFILL + PREFILL + DECODE
    assert ttfts == pytest.approx([PREFILL, t2, t2, t2, t2 + DECODE + PREFILL + DECODE], rel=1e-12)
    assert not any(r[i].cold for i in range(1, 6)) and total(sim, "loads") == 1


def test_full_instance_scales_out_when_there_is_room():
    # `small` fits three times: the fifth simultaneous request starts a second instance
    # (a cold start from host DRAM) rather than queueing behind a full batch.
    reqs = [req(0.0, 0)] + [req(20.0, i + 1, out=3) for i in range(5)]
    _, recs, sim = run_sim(reqs, keepalive="fixed[ttl=100]")
    r = by_id(recs)
    assert sum(r[i].cold for i in range(1, 6)) == 1 and total(sim, "loads") == 2


def test_requests_out_of_order_are_an_error():
    with pytest.raises(TraceOrderError, match="before the previous one"):
        run_sim([req(5.0, 0), req(1.0, 1)])


def test_small_profile_is_what_the_docstring_says():
    m = SMALL.model("small")
    assert m.weight_bytes == 2 * GB
    assert SMALL.model("nope") is SMALL.models[0]


# ---------------------------------------------------------------------------------------------
# sleep levels


def test_dram_then_process_tier_drops_the_weights():
    # gpu 1 s, dram 5 s, then process 100 s: at 7.125 + 1 the weights go to host DRAM (level 1),
    # at 7.125 + 6 they are dropped (level 2): DRAM is no longer pinned, and a wake must load
    # the weights again (from the DRAM page cache over PCIe, 1 s) and re-allocate the KV cache.
    ka = SleepTiers(gpu=1.0, dram=5.0, process=100.0)
    t = COLD_FULL_SSD + 1.0 + 5.0 + 10.0
    _, recs, sim = run_sim([req(0.0, 0), req(t, 1)], keepalive=ka)
    r = by_id(recs)
    assert r[1].cold
    assert r[1].ttft_s == pytest.approx(0.5 + 1.0 + 0.5 + PREFILL, rel=1e-12)
    assert total(sim, "wakes") == 1 and total(sim, "loads") == 1


def test_process_tier_after_dram_unpins_host_memory():
    # The run ends at 7.125 + 50 + 6.125 (m1's cold start), while `small` sleeps in its process
    # tier (from 7.125 + 6 to 7.125 + 106): its weights must no longer be pinned in host DRAM.
    ka = SleepTiers(gpu=1.0, dram=5.0, process=100.0)
    reqs = [req(0.0, 0), req(COLD_FULL_SSD + 3.0, 1, model="m1"), req(COLD_FULL_SSD + 50.0, 2, model="m1")]
    _, _, sim = run_sim(reqs, keepalive=ka)
    (sleeper,) = [i for i in sim.instances.values() if i.model == "small"]
    assert sleeper.state == "sleeping" and sleeper.sleep_level == 2
    assert sim.nodes[0].dram.pinned == 0


def test_sleeper_that_cannot_wake_is_not_orphaned():
    # One 10 GB GPU holds three 3 GB instances. `small` sleeps in DRAM (two_tier gpu=1, dram=50)
    # while m1..m3 fill the GPU and stay busy; a request for `small` then finds its sleeper
    # unable to wake and no room for a new instance, so it waits. When m1..m3 go idle, the
    # request gets an instance. The old sleeper must still be evicted when its DRAM time is up.
    reqs = [req(0.0, 0)]
    t = COLD_FULL_SSD + 2.0
    reqs += [req(t, 1 + i, model=f"m{i + 1}", out=200) for i in range(3)]
    reqs += [req(t + 1.0, 4)]
    reqs += [req(400.0, 5, model="m1")]  # long after every keep-alive has run out
    _, recs, sim = run_sim(reqs, keepalive="two_tier[gpu=1,dram=50]")
    r = by_id(recs)
    assert not any(x.rejected for x in recs)
    assert r[4].cold
    small = [i for i in sim.instances.values() if i.model == "small"]
    assert all(i.state != "sleeping" for i in small), [(i.id, i.state) for i in small]
    assert sim.nodes[0].dram.pinned == 0


# ---------------------------------------------------------------------------------------------
# latency tables


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_a_falling_last_table_segment_never_gives_negative_times(fidelity):
    # A measured table may fall at its end (noise). Extrapolating that slope made a 4000-token
    # prefill take -0.2 s: TTFT below the cold start, and "Negative delay" at iteration fidelity.
    d = small_profile_dict()
    d["models"][0]["prefill"] = {"x": [1, 1000], "seconds": [0.2, 0.1]}
    prof = profile_from_dict(d, "falling")
    assert prof.models[0].prefill(4000) >= 0
    _, recs, _ = run_sim([req(0.0, 0, prompt=4000, out=2)], profile=prof, fidelity=fidelity)
    (rec,) = recs
    assert rec.ttft_s >= START + 2.0 + INIT


def test_pipelined_first_token_is_the_same_at_both_fidelities():
    got = {}
    for fidelity in ("request", "iteration"):
        _, recs, _ = run_sim([req(0.0, 0)], fidelity=fidelity, staging="pipelined", keepalive="none")
        got[fidelity] = recs[0].ttft_s
    assert got["iteration"] == pytest.approx(got["request"], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# a policy that fails stops the run with its label, hook and simulated time


class _Raise:
    def __init__(self, *a, **kw):
        pass

    def _boom(self, *a, **kw):
        raise RuntimeError("boom")


def _failing(kind: str):
    from policies import (
        AdmissionPolicy,
        PlacementPolicy,
        PrewarmPolicy,
        RouterPolicy,
        StagingPolicy,
    )

    base, hook = {
        "staging": (StagingPolicy, "plan"),
        "keepalive": (KeepAlivePolicy, "on_idle"),
        "prewarm": (PrewarmPolicy, "on_tick"),
        "placement": (PlacementPolicy, "place"),
        "router": (RouterPolicy, "route"),
        "admission": (AdmissionPolicy, "admit"),
    }[kind]
    cls = type(f"Failing{kind.title()}", (base,), {"name": f"failing_{kind}", "interval_s": 5.0,
                                                     hook: _Raise._boom})
    return cls(), hook


@pytest.mark.parametrize("kind", ["staging", "keepalive", "prewarm", "placement", "router", "admission"])
def test_failing_policy_is_named_with_hook_and_time(kind):
    policy, hook = _failing(kind)
    reqs = [req(0.0, 0), req(1.0, 1), req(12.5, 2)]
    with pytest.raises(PolicyError) as e:
        run_sim(reqs, **{kind: policy})
    msg = str(e.value)
    assert f"policy failing_{kind} failed in {hook}() at t=" in msg and "RuntimeError: boom" in msg
    t = float(msg.split("at t=")[1].split(" s")[0])
    expected = {"keepalive": COLD_FULL_SSD, "prewarm": 5.0, "router": 1.0}.get(kind, 0.0)
    assert t == pytest.approx(expected, abs=1e-3)


def test_placement_on_a_missing_gpu_is_a_policy_error():
    from policies import PlacementPolicy

    class Nowhere(PlacementPolicy):
        name = "nowhere"

        def place(self, model, cluster):
            return Place(3, 0)

    with pytest.raises(PolicyError, match=r"policy nowhere failed in place\(\) at t=0.000 s: GPU \(3, 0\) does not exist"):
        run_sim([req(0.0, 0)], placement=Nowhere())


def test_staging_plan_of_the_wrong_size_is_a_policy_error():
    from policies import StagingPolicy

    class Short(StagingPolicy):
        name = "short"

        def plan(self, model):
            return StagePlan("short", 2, ((0, 1),), 0)

    with pytest.raises(PolicyError, match=r"policy short failed in plan\(\).*2 layers, model 4"):
        run_sim([req(0.0, 0)], staging=Short())


def test_prewarmed_sleeper_that_cannot_wake_does_not_livelock():
    # Found by the property tests (it hung the suite): one GPU that fits one instance, process
    # prewarms, ttl 5. A prewarmed process's keep-alive marks it idle, which retries the memory
    # queue; the queued request was routed to the sleeper, bumped its use count, failed to wake
    # it (GPU full) and failed to start another instance; the keeper saw the use count change
    # and marked it idle again, at the same simulated time, forever.
    from test_sim_properties import SHIPPED, check_records

    ts = [(0.0, "a"), (700.0, "a"), (700.0, "c"), (707.0, "a"), (709.0, "b"), (739.0, "a"), (739.0, "b"),
          (739.001, "a"), (769.001, "b"), (769.002, "b"), (889.002, "b"), (889.252, "a"), (896.252, "c"),
          (903.252, "b"), (905.252, "a"), (912.252, "c")]
    reqs = [Request(t, m, 100, 20, i) for i, (t, m) in enumerate(ts)]
    row, recs, _ = run_sim(reqs, SHIPPED, keepalive="fixed[ttl=5]",
                           prewarm="popular[window=300,min_requests=2,interval=20,tier=process]")
    check_records(reqs, recs, "full")
    assert row["served"] == len(reqs)
