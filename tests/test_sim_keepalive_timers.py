"""Keep-alive as a callback state machine (sim/keeper.py `Keeper`, issue 16): its instants,
and what it costs in events.

The rules it must keep: an idle period starts at the last request's finish; each `Keep` tier
is applied and waited out in turn, then the instance is evicted; a request ends the wait at
once and the next idle period starts at its finish; a wake starts keep-alive again. Timers
whose wait a request ended are reused, so a request alone on a warm instance costs one
event (its idle check) instead of four.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_sim_properties import SMALL, Recorder, run_sim, small_profile_dict  # noqa: E402

from policies import load_policy  # noqa: E402
from sim.config import SimConfig  # noqa: E402
from sim.policyset import PolicySet  # noqa: E402
from sim.profile import profile_from_dict  # noqa: E402
from sim.simulator import Simulator  # noqa: E402
from traces.request import Request  # noqa: E402


class Logged(Simulator):
    """Records when each instance was demoted and evicted, and counts events."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.log: list[tuple[str, int, float]] = []
        self.events = 0
        step = self.env.step

        def counted() -> None:
            self.events += 1
            step()

        self.env.step = counted

    def demote(self, inst, level):
        self.log.append((f"sleep{level}", inst.id, self.env.now))
        super().demote(inst, level)

    def evict(self, inst):
        if inst.state != "evicted":
            self.log.append(("evict", inst.id, self.env.now))
        super().evict(inst)


def run_logged(reqs, keepalive: str, fidelity: str = "request", horizon_s: float | None = None):
    policies = PolicySet(staging=load_policy("staging", "full"), keepalive=load_policy("keepalive", keepalive),
                         prewarm=load_policy("prewarm", "none"), placement=load_policy("placement", "first_fit"),
                         router=load_policy("router", "least_loaded"), admission=load_policy("admission", "always"))
    metrics = Recorder(policies.label)
    sim = Logged(SMALL, policies, SimConfig(nodes=1, gpus_per_node=1, fidelity=fidelity, compute_sharing="none"),
                 metrics)
    sim.run(reqs, horizon_s=horizon_s)
    return sim, {r.request_id: r for r in metrics.records}


def small(t: float, i: int, out: int = 9) -> Request:
    return Request(arrival_s=t, model="small", prompt_tokens=100, output_tokens=out, request_id=i)


def test_a_request_alone_on_a_warm_instance_costs_one_event():
    n = 300
    reqs = [small(10.0 * i, i) for i in range(n)]  # each finishes (0.625 s) long before the next
    sim, recs = run_logged(reqs, "fixed")
    assert sum(not r.cold for r in recs.values()) == n - 1
    # the cold start's own events are a handful; the process version took four per request
    assert sim.events <= n + 20, sim.events


def test_a_request_ends_the_wait_and_the_next_idle_period_starts_at_its_finish():
    # ttl 5: the request at 9 s and the one at 13 s each end a wait; eviction 5 s after the last finish
    reqs = [small(0.0, 0), small(9.0, 1), small(13.0, 2)]
    for fidelity in ("request", "iteration"):
        sim, recs = run_logged(reqs, "fixed[ttl=5]", fidelity, horizon_s=60.0)
        assert [r.cold for r in recs.values()] == [True, False, False]
        assert sim.log == [("evict", 0, recs[2].finish_s + 5.0)], fidelity


def test_tiers_are_waited_out_in_turn_and_a_wake_starts_them_again():
    # GPU 3 s, then asleep with the weights in DRAM for 40 s; the request at 20 s wakes it
    reqs = [small(0.0, 0), small(20.0, 1), small(200.0, 2)]
    logs = {}
    for fidelity in ("request", "iteration"):
        sim, recs = run_logged(reqs, "two_tier[gpu=3,dram=40]", fidelity)
        f0, f1 = recs[0].finish_s, recs[1].finish_s
        assert recs[1].cold and recs[1].woke  # it waited for the wake
        assert sim.log[:3] == [("sleep1", 0, f0 + 3.0), ("sleep1", 0, f1 + 3.0), ("evict", 0, f1 + 43.0)]
        assert recs[2].cold and not recs[2].woke  # evicted by then: a cold start from scratch
        logs[fidelity] = sim.log
    assert logs["request"] == logs["iteration"]


def test_the_fidelities_agree_on_an_eviction_at_the_run_end():
    """A request alone, keep-alive `none`: the idle check runs at exactly its finish, where the
    batch loop computing it would end, so both fidelities evict it before the run ends. (When
    the check ran at `start + (finish - start)`, a float above the finish here, request
    fidelity ended the run before it and counted no eviction: found by the differential
    suite at SIM_PROPERTY_SCALE=6.)"""
    d = small_profile_dict(process_start_s=0.0, cuda_context_s=0.5, kv_cache_alloc_s=0.0, graph_capture_s=0.0)
    model = d["models"][0]
    model.update(name="a", layer_bytes=250_000_000, max_batch=1, max_tokens_in_flight=4096,
                 prefill={"x": [1, 1024, 4096], "seconds": [0.015625, 1.015625, 1.046875]},
                 decode={"x": [1, 8], "seconds": [0.0625, 0.0625]})
    profile = profile_from_dict(d, "keepalive-timers")
    reqs = [Request(arrival_s=0.0, model="a", prompt_tokens=1305, output_tokens=49, request_id=0)]
    runs = {f: run_sim(reqs, profile, fidelity=f, keepalive="none") for f in ("request", "iteration")}
    (row_r, rec_r, sim_r), (row_i, rec_i, sim_i) = runs["request"], runs["iteration"]
    assert rec_r[0].finish_s == rec_i[0].finish_s
    assert sim_r.usage.models["a"].evictions == sim_i.usage.models["a"].evictions == 1
    assert row_r["gpu_mem_gb_hours"] == row_i["gpu_mem_gb_hours"]
