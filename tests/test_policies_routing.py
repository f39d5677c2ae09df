"""Locality placement, the expected-wait router and deadline/goodput admission: labels that
parse back, choices on hand-made views, and on small simulated runs the ordering each source
reports (never a tuned number).

Runs use `small_profile_dict()` (test_sim_properties): `small` loads 2 GB from SSD at 1 GB/s,
from host DRAM at 2 GB/s, from remote at 0.5 GB/s, plus 3 s of start and 2 s of init
(cold starts of 6, 7 and 9 s); prefill 0.125 s, decode 0.0625 s a step, batch 4.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from test_sim_properties import SMALL, run_sim, small_profile_dict

from contracts.decisions import Place
from policies.admission import Deadline, Goodput
from policies.placement import Locality
from policies.registry import PolicySpecError, load_policy
from policies.router import ExpectedWait
from sim.deployment import Deployment
from sim.profile import profile_from_dict
from traces.request import Request

GB = 10**9
EPOCHS = itertools.count()


def req(t, i=0, model="small", prompt=100, out=16):
    return Request(arrival_s=float(t), model=model, prompt_tokens=prompt, output_tokens=out, request_id=i)


# ---------------------------------------------------------------------------------------------
# labels and parameters


@pytest.mark.parametrize("kind, spec, label", [
    ("placement", "locality", "locality"),
    ("router", "expected_wait", "expected_wait[slo=5.0,max_starting=1]"),
    ("router", "expected_wait[slo=2.5,max_starting=3]", "expected_wait[slo=2.5,max_starting=3]"),
    ("admission", "deadline", "deadline[factor=1.0,slo=5.0]"),
    ("admission", "deadline[factor=1.5,slo=2]", "deadline[factor=1.5,slo=2.0]"),
    ("admission", "goodput", "goodput[slo=5.0,increase=1.0,decrease=0.5,interval=1.0]"),
    ("admission", "goodput[slo=3,increase=2,decrease=0.7,interval=0.5]",
     "goodput[slo=3.0,increase=2.0,decrease=0.7,interval=0.5]"),
])
def test_label_parses_back(kind, spec, label):
    p = load_policy(kind, spec)
    assert p.label == label
    assert load_policy(kind, p.label).label == label


@pytest.mark.parametrize("kind, spec, word", [
    ("router", "expected_wait[slo=0]", "slo"),
    ("router", "expected_wait[max_starting=0]", "max_starting"),
    ("admission", "deadline[factor=-1]", "factor"),
    ("admission", "goodput[decrease=1.5]", "decrease"),
    ("admission", "goodput[interval=0]", "interval"),
])
def test_bad_parameters_are_refused_by_name(kind, spec, word):
    with pytest.raises(PolicySpecError, match=word):
        load_policy(kind, spec)


# ---------------------------------------------------------------------------------------------
# hand-made views

DEP = Deployment("small", SMALL.model("small"), SMALL.hardware, SMALL.engine)  # cold 6/7/9 s


def gpu(node, index, free, instances=()):
    return SimpleNamespace(node=node, index=index, free_bytes=free, capacity_bytes=10 * GB,
                           used_bytes=10 * GB - free, instances=list(instances))


def cluster(gpus, tiers, in_flight=None, now=0.0, instances=()):
    in_flight = in_flight or {}
    return SimpleNamespace(
        now=now, gpus=gpus, model=lambda name: DEP, instances_of=lambda m: list(instances),
        checkpoint_tier=lambda model, node: tiers[node],
        checkpoint_tiers=lambda model: frozenset(tiers[g.node] for g in gpus),
        memory_epoch=next(EPOCHS),  # each hand-made cluster is a new state of memory
        loads_in_flight=lambda node, g: in_flight.get((node, g), 0),
    )


def test_locality_starts_where_the_checkpoint_is_closest():
    gpus = [gpu(0, 0, 10 * GB), gpu(1, 0, 10 * GB), gpu(2, 0, 10 * GB)]
    assert Locality().place(DEP, cluster(gpus, {0: "remote", 1: "ssd", 2: "dram"})) == Place(2, 0)
    assert Locality().place(DEP, cluster(gpus, {0: "remote", 1: "ssd", 2: "remote"})) == Place(1, 0)


def test_locality_counts_loads_in_flight_on_the_links():
    # SSD: 6 + (7 - 6) x (1 + 3) = 10 s with three loads in flight, against 9 s from remote on idle links
    gpus = [gpu(0, 0, 10 * GB), gpu(1, 0, 10 * GB)]
    c = cluster(gpus, {0: "ssd", 1: "remote"}, in_flight={(0, 0): 3})
    assert Locality().place(DEP, c) == Place(1, 0)
    c = cluster(gpus, {0: "ssd", 1: "remote"}, in_flight={(0, 0): 1})  # 8 s: the SSD still wins
    assert Locality().place(DEP, c) == Place(0, 0)


def test_locality_evicts_only_when_no_gpu_has_room_and_then_where_it_starts_fastest():
    idle = SimpleNamespace(id=7, idle_since=1.0, state="full", last_used=1.0, memory_bytes=5 * GB)
    idle2 = SimpleNamespace(id=8, idle_since=1.0, state="full", last_used=1.0, memory_bytes=5 * GB)
    tiers = {0: "dram", 1: "remote"}
    # a free GPU on the remote node beats evicting on the node that holds it in DRAM
    gpus = [gpu(0, 0, 0, [idle]), gpu(1, 0, 10 * GB)]
    assert Locality().place(DEP, cluster(gpus, tiers)) == Place(1, 0)
    # with no free GPU, the eviction goes where the start is fastest
    gpus = [gpu(1, 0, 0, [idle2]), gpu(0, 0, 0, [idle])]
    assert Locality().place(DEP, cluster(gpus, tiers)) == Place(0, 0, (7,))
    assert Locality().place(DEP, cluster([gpu(0, 0, 1 * GB)], tiers)) is None


def inst(iid, state="full", active=0, waiting=0, capacity=4, node=0):
    return SimpleNamespace(id=iid, model="small", node=node, gpu=0, state=state, active=active,
                           waiting=waiting, capacity=capacity, can_serve=state in ("ready", "full"),
                           idle_since=None, memory_bytes=3 * GB)


def test_expected_wait_prefers_a_free_slot_and_joins_a_nearly_loaded_instance():
    router = ExpectedWait()
    c = cluster([gpu(0, 0, 0)], {0: "ssd"})
    busy, free = inst(0, active=6, waiting=2), inst(1, active=3)
    assert router.route(req(0), [busy, free], c) == 1
    # a busy instance (3 slot releases of 1.06 s / 4 slots ahead) against one that serves in 7 s
    loading = inst(2, state="loading", active=0)
    assert ExpectedWait().route(req(0), [inst(0, active=6, waiting=2), loading], c) == 0


def test_expected_wait_scales_out_past_the_slo_or_the_cold_start_if_a_gpu_has_room():
    deep = inst(0, active=24, waiting=20)  # 21 x 1.06 s / 4 = 5.6 s of queue: over the 5 s SLO
    room = cluster([gpu(0, 0, 10 * GB)], {0: "ssd"})
    full = cluster([gpu(0, 0, 0)], {0: "ssd"})
    assert ExpectedWait().route(req(0), [deep], room) is None
    assert ExpectedWait().route(req(0), [deep], full) == 0  # no room: a start would fail
    assert ExpectedWait(slo=10).route(req(0), [deep], room) == 0  # under this SLO and the cold start
    # one SLO-driven start at a time: a second waits while the first loads
    assert ExpectedWait().route(req(0), [deep, inst(1, state="loading", active=4, waiting=4)], room) == 0
    # sooner than its queue, a cold start is asked for even while another loads
    deeper = inst(0, active=44, waiting=40)  # 10.9 s of queue against a 7 s cold start
    assert ExpectedWait().route(req(0), [deeper, inst(1, state="loading", active=4, waiting=40)], room) is None


def test_deadline_sheds_only_a_predicted_miss_that_no_new_instance_could_absorb():
    deep = inst(0, active=24, waiting=20)  # 5.7 s expected
    full = cluster([gpu(0, 0, 0)], {0: "ssd"}, instances=[deep])
    verdict = Deadline().admit(req(0), full)
    assert verdict.action == "reject" and "predicted TTFT 5.7 s > 5 s" in verdict.reason
    assert Deadline(factor=1.2).admit(req(0), full).action == "serve"
    assert Deadline().admit(req(0), cluster([gpu(0, 0, 10 * GB)], {0: "ssd"}, instances=[deep])).action == "serve"
    assert Deadline().admit(req(0), cluster([gpu(0, 0, 0)], {0: "ssd"})).action == "serve"  # no instance yet


def test_goodput_halves_its_rate_while_the_queue_lasts_and_adds_back_when_it_clears():
    g = Goodput(increase=1.0, decrease=0.5, interval=1.0)
    deep = inst(0, active=24, waiting=20)
    clear = inst(0, active=0, waiting=0)

    def second(s, instance):  # 10 arrivals in second s; how many got in
        c = cluster([gpu(0, 0, 0)], {0: "ssd"}, instances=[instance])
        admitted = 0
        for k in range(10):
            c.now = s + k / 10
            admitted += g.admit(req(c.now), c).action == "serve"
        return admitted

    congested = [second(s, deep) for s in range(4)]
    assert congested[0] == 10  # no limit until the first congested step
    assert congested[0] > congested[1] > congested[2] > congested[3] >= 1  # multiplicative decrease
    recovering = [second(s, clear) for s in range(4, 30)]
    assert recovering == sorted(recovering) and recovering[0] < 10  # additive increase
    assert recovering[-1] == 10  # lifted once above twice the arrival rate


# ---------------------------------------------------------------------------------------------
# locality, as ServerlessLLM reports: startup-time-aware placement starts models sooner than
# placement that ignores where checkpoints are cached


def zipf_trace(seed: int, models: int = 12, rate: float = 0.5, duration: float = 2000.0) -> list[Request]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.sqrt(np.arange(1, models + 1))
    weights /= weights.sum()
    out, t = [], 0.0
    while True:
        t += rng.exponential(1.0 / rate)
        if t >= duration:
            return out
        out.append(req(t, len(out), model=f"m{rng.choice(models, p=weights)}", out=8))


def cold_ttft(records) -> float:
    return float(np.mean([r.ttft_s for r in records if r.cold and not r.rejected]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_locality_beats_first_fit_on_cold_start_ttft_with_remote_checkpoints(seed):
    # Checkpoints start remote and are cached where they were loaded (host DRAM holds 3 models,
    # the SSD 4): 12 models churn through 2 nodes x 2 GPUs with a 10 s keep-alive.
    d = small_profile_dict()
    d["hardware"]["host_dram_gb"], d["hardware"]["ssd_gb"] = 6.0, 8.0
    profile = profile_from_dict(d, "small-caches")
    reqs = zipf_trace(seed)
    runs = {p: run_sim(reqs, profile=profile, nodes=2, gpus=2, storage="remote", placement=p,
                       keepalive="fixed[ttl=10]")
            for p in ("first_fit", "locality")}
    ff_row, ff_recs, _ = runs["first_fit"]
    loc_row, loc_recs, _ = runs["locality"]
    assert cold_ttft(loc_recs) < cold_ttft(ff_recs)
    assert loc_row["gb_network"] < ff_row["gb_network"]  # it fetches from remote storage less


# ---------------------------------------------------------------------------------------------
# expected_wait: a router that sees queues and costs scales out before its users wait longer than
# a cold start or the SLO; one that waits for full batches does not (the Azure LLM 2023 symptom)


def kv_limited_profile():
    """`small` with a batch of 64 whose KV cache holds only four requests of 116 tokens."""
    d = small_profile_dict()
    for m in d["models"]:
        m["max_batch"] = 64
        if m["name"] == "small":
            m["max_tokens_in_flight"] = 4 * 116
    return profile_from_dict(d, "small-kv-limited")


def poisson(seed: int, rate: float, duration: float = 120.0) -> list[Request]:
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    while True:
        t += rng.exponential(1.0 / rate)
        if t >= duration:
            return out
        out.append(req(t, len(out)))


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_wait_meets_the_slo_more_often_than_least_loaded_under_load(seed):
    profile = kv_limited_profile()
    reqs = poisson(seed, rate=8.0)  # about twice what one instance serves
    rows = {r: run_sim(reqs, profile=profile, fidelity="iteration", router=r, keepalive="fixed[ttl=600]")[0]
            for r in ("least_loaded", "expected_wait")}
    assert rows["expected_wait"]["slo_attainment_pct"] > rows["least_loaded"]["slo_attainment_pct"]
    assert rows["expected_wait"]["ttft_p50_s"] < rows["least_loaded"]["ttft_p50_s"]


def test_expected_wait_starts_no_extra_instance_under_light_load():
    profile = kv_limited_profile()
    reqs = poisson(0, rate=1.0)
    loads = {}
    for r in ("least_loaded", "expected_wait"):
        row, _, sim = run_sim(reqs, profile=profile, fidelity="iteration", router=r, keepalive="fixed[ttl=600]")
        loads[r] = sim.usage.of("small").loads
    assert loads["expected_wait"] == loads["least_loaded"] == 1



def test_a_wake_costs_the_engine_wake_and_the_copy_not_a_cold_start():
    # level 1: 0.5 s wake + 2 GB over PCIe at 0.5 x 4 GB/s; level 2 from SSD: 0.5 s wake +
    # 2 GB at 1 GB/s + 0.5 s of KV allocation (no process start, context or graph capture)
    assert DEP.wake_s(1) == pytest.approx(1.5)
    assert DEP.wake_s(2, "ssd") == pytest.approx(3.0)
    assert DEP.wake_s(1) < DEP.cold_start_s("dram") == pytest.approx(6.0)


def test_expected_wait_wakes_a_sleeper_rather_than_start_a_new_instance():
    # a sleeper on node 0, and room for a cold start from host DRAM (6 s) on node 1: waking it
    # (1.5 s) is under the SLO; priced as a cold start (6 s) it would ask for a new instance
    sleeper = inst(0, state="sleeping", node=0)
    sleeper.sleep_level = 1
    c = cluster([gpu(0, 0, 0), gpu(1, 0, 10 * GB)], {0: "dram", 1: "dram"})
    assert ExpectedWait().route(req(0), [sleeper], c) == 0
    _, t = ExpectedWait()._est.best(req(0), [sleeper], c)
    assert t == pytest.approx(1.5 + DEP.prefill_s(100))


# ---------------------------------------------------------------------------------------------
# admission under a 2x overload burst (TopFull's goal: requests served within the SLO)


def burst(seed: int) -> list[Request]:
    """`big` (one instance per GPU; 4 slots of ~1.06 s, ~3.8 req/s) at 1 req/s, then 7.5 req/s
    for 60 s, then 1 req/s again."""
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for rate, end in ((1.0, 40.0), (7.5, 100.0), (1.0, 160.0)):
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= end:
                t = end
                break
            out.append(req(t, len(out), model="big"))
    return out


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
@pytest.mark.parametrize("seed", [0, 1])
def test_deadline_and_goodput_serve_more_within_the_slo_than_always_and_max_queue(fidelity, seed):
    reqs = burst(seed)
    within = {}
    for a in ("always", "max_queue", "deadline", "goodput"):
        row, recs, _ = run_sim(reqs, fidelity=fidelity, admission=a, keepalive="fixed[ttl=600]")
        within[a] = sum(1 for r in recs if not r.rejected and r.ttft_s <= 5.0)
        if a in ("deadline", "goodput"):
            assert row["rejected"] > 0
    for shedder in ("deadline", "goodput"):
        assert within[shedder] > max(within["always"], within["max_queue"]), within


def test_admission_never_sheds_a_model_without_an_instance_or_with_room_to_grow():
    # the first request of a model with a cold start longer than the SLO, and any while a GPU has room
    reqs = [req(0.0, 0), req(0.5, 1), req(1.0, 2)]
    for a in ("deadline[slo=1]", "goodput[slo=1]"):
        row, _, _ = run_sim(reqs, admission=a, keepalive="fixed[ttl=600]")
        assert row["rejected"] == 0


def _skippable_big():
    """`big` whose first stage (6 of 8 layers) runs at 0.6 of the full model's step time at
    quality 0.25 (test numbers: what a profile would measure with the later layers' gates shut)."""
    d = small_profile_dict()
    big = next(m for m in d["models"] if m["name"] == "big")
    big["stages"] = [{"name": "s1", "num_layers": 6, "quality": 0.25, "latency_scale": 0.6}]
    return profile_from_dict(d, "skippable-big")


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
@pytest.mark.parametrize("seed", [0, 1])
def test_degrade_trades_quality_for_latency_under_overload(fidelity, seed):
    """The 2x burst on one GPU with progressive staging: closing the later stages' gates
    while overloaded serves faster steps, so the TTFT tail falls and quality with it."""
    rows = {a: run_sim(burst(seed), _skippable_big(), fidelity=fidelity, staging="progressive", admission=a,
                       keepalive="fixed[ttl=600]")[0]
            for a in ("always", "degrade")}
    assert rows["degrade"]["ttft_p99_s"] < rows["always"]["ttft_p99_s"]
    assert rows["degrade"]["slo_attainment_pct"] > rows["always"]["slo_attainment_pct"]
    assert rows["degrade"]["quality_mean"] < rows["always"]["quality_mean"]
    assert rows["degrade"]["rejected"] == 0


def test_degrade_changes_nothing_without_a_partial_stage_or_overload():
    reqs = burst(0)
    for staging in ("full", "pipelined"):  # one stage: no gate to close
        a = run_sim(reqs, _skippable_big(), staging=staging, admission="always", keepalive="fixed[ttl=600]")[0]
        d = run_sim(reqs, _skippable_big(), staging=staging, admission="degrade", keepalive="fixed[ttl=600]")[0]
        same = {k: (v if v == v else "nan") for k, v in a.items() if k != "policy"}
        assert same == {k: (v if v == v else "nan") for k, v in d.items() if k != "policy"}
    light = [req(10.0 * i, i, model="big") for i in range(10)]  # never overloaded
    a = run_sim(light, _skippable_big(), staging="progressive", admission="always", keepalive="fixed[ttl=600]")[0]
    d = run_sim(light, _skippable_big(), staging="progressive", admission="degrade", keepalive="fixed[ttl=600]")[0]
    assert a["quality_mean"] == d["quality_mean"] and a["ttft_p99_s"] == d["ttft_p99_s"]


def test_the_public_cold_start_estimate_and_the_estimators_agree():
    # `cold_start_estimate` is the library's rule for policy writers; the router's estimator
    # remembers it per set of tiers: both answer the fastest tier any node holds.
    from policies.ttft import TtftEstimator, cold_start_estimate

    dep = Deployment("small", SMALL.model("small"), SMALL.hardware, SMALL.engine)
    for tiers in ({"ssd"}, {"dram", "remote"}, {"remote"}):
        cluster = SimpleNamespace(checkpoint_tiers=lambda name, tiers=frozenset(tiers): tiers)
        want = min(dep.cold_start_s(t) for t in tiers)
        assert cold_start_estimate(dep, cluster) == want
        assert TtftEstimator().cold_start_estimate(dep, cluster) == want
    assert cold_start_estimate(dep, SimpleNamespace(checkpoint_tiers=lambda name: frozenset({"dram"}))) \
        < cold_start_estimate(dep, SimpleNamespace(checkpoint_tiers=lambda name: frozenset({"remote"})))


def test_a_saturated_queue_is_priced_at_a_typical_requests_slot_time_at_its_own_batch():
    # An instance whose queue outlasted a typical request's time in a slot runs `running`
    # requests at once: this request starts after `waiting + 1` slot releases, each a
    # `running`-th of a typical request's time in a slot at that batch (its prefill plus its
    # decode steps after the first token), computed once per request for all candidates.
    from policies.ttft import TtftEstimator

    model = SimpleNamespace(name="m", prefill_s=lambda n: 0.001 * n, decode_s=lambda b: 0.01 + 0.0005 * b)
    cluster = SimpleNamespace(model=lambda name: model, now=0.0)

    def view(iid, running, waiting):
        return SimpleNamespace(id=iid, model="m", node=0, state="full", can_serve=True, capacity=64,
                               active=running + waiting, waiting=waiting, sleep_level=0)

    est = TtftEstimator()
    first = req(0, model="m", prompt=300, out=41)
    est.observe(first, cluster)  # the typical request: 300 prompt tokens, 41 output tokens
    views = [view(0, 8, 5), view(1, 20, 3)]
    for v in views:
        est.ttft(first, v, cluster)  # their queues are seen from t = 0
    cluster.now = 100.0  # far longer than a slot time: both saturated at what they run
    later = req(100, model="m", prompt=300, out=41)
    for v, running, waiting in ((views[0], 8, 5), (views[1], 20, 3)):
        slot = 0.001 * 300 + 40 * (0.01 + 0.0005 * running)
        assert est.service_s(model, running) == pytest.approx(slot, rel=1e-12)
        want = (waiting + 1) * slot / running + 0.001 * 300
        assert est.ttft(later, v, cluster) == pytest.approx(want, rel=1e-12)
    best, best_t = est.best(later, views, cluster)
    assert best is views[1] and best_t == pytest.approx(4 * (0.3 + 40 * 0.02) / 20 + 0.3, rel=1e-12)
