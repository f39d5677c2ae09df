"""The published cold-start policies (issue 15): keep-alive and eviction (`hybrid_histogram`,
`greedy_dual`, `tiered`) and pre-warming (`histogram`).

Each is checked three ways: its label parses back; its decisions on hand-made views; and, on a
trace, the behaviour its paper reports, as an ordering (never a tuned number). The numbers these
runs gave when the tests were written are in the comments, for orientation only.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from policies import Keep, Place, Prewarm
from policies.idle_histogram import HybridRule, IdleHistogram, IdleLedger
from policies.keepalive import HybridHistogram, Tiered, TwoTier
from policies.placement import GreedyDual
from policies.prewarm import HistogramPrewarm
from policies.registry import PolicySpecError, load_policy
from sim.config import SimConfig
from sim.metrics import RunMetrics
from sim.policyset import PolicySet
from sim.profile import load_profile
from sim.simulator import Simulator
from traces import open_trace
from traces.request import Request

AZURE_SAMPLE = Path("/work/shared/traces/azure_functions_2019")
DAY = 86400.0


def simulate(requests, horizon_s: float, config: SimConfig | None = None, **specs):
    """One run of fresh policies; the summary row and the simulator (for its per-model ledger).

    The router is `least_loaded` unless a test names another: these claims are about keep-alive,
    prewarm and eviction, compared with the router held fixed at the one that prefers waking a
    sleeper to a cold start (`expected_wait`, the run default, scales out instead when the queue
    is predicted to miss the SLO, which changes the wake counts the sleep-tier claim rests on).
    """
    specs.setdefault("router", "least_loaded")
    policies = PolicySet.from_specs(**specs)
    sim = Simulator(load_profile(), policies, config or SimConfig(), RunMetrics(policies.label, 5.0))
    return sim.run(requests, horizon_s=horizon_s), sim


def default_trace(duration_s: float, **options) -> list[Request]:
    """The default trace: the calibrated synthetic Azure Functions trace (never real files found in a cache)."""
    trace = open_trace("azure_functions", duration_s=duration_s, **options)
    if not trace.synthetic:
        trace = open_trace("synthetic", duration_s=duration_s, **options)
    return list(trace)


# ---------------------------------------------------------------------------------------------
# specs and labels


@pytest.mark.parametrize("kind, spec", [
    ("keepalive", "tiered"),
    ("keepalive", "tiered[gpu=60,dram=0,process=600]"),
    ("keepalive", "two_tier[gpu=60,dram=300]"),
    ("keepalive", "hybrid_histogram"),
    ("keepalive", "hybrid_histogram[head=5,tail=99,margin=0.1]"),
    ("keepalive", "hybrid_histogram[head=1,tail=95,margin=0,bin_s=30,range_s=7200,cv=1.5,oob=0.4,min_samples=3,"
                  "fallback=inf,forecast_margin=0.2]"),
    ("keepalive", "greedy_dual"),
    ("keepalive", "greedy_dual[ttl=3600]"),
    ("prewarm", "histogram"),
    ("prewarm", "histogram[interval=5,tier=process]"),
    ("placement", "greedy_dual"),
])
def test_labels_parse_back(kind, spec):
    p = load_policy(kind, spec)
    again = load_policy(kind, p.label)
    assert type(again) is type(p) and again.label == p.label and vars(again) == vars(p)


def test_parameters_reach_the_policy():
    p = load_policy("keepalive", "hybrid_histogram[head=5,tail=99,margin=0.1,min_samples=3]")
    assert (p.head, p.tail, p.margin, p.min_samples) == (5.0, 99.0, 0.1, 3) and isinstance(p.min_samples, int)
    assert p.label.startswith("hybrid_histogram[head=5.0,tail=99.0,margin=0.1,")
    assert load_policy("keepalive", "greedy_dual").label == "greedy_dual[ttl=inf]"
    assert load_policy("keepalive", "greedy_dual").ttl == math.inf
    assert load_policy("keepalive", "tiered[gpu=1,dram=2,process=3]").label == "tiered[gpu=1.0,dram=2.0,process=3.0]"


@pytest.mark.parametrize("kind, spec, words", [
    ("keepalive", "hybrid_histogram[head=150]", ["head", "[0, 100]"]),
    ("keepalive", "hybrid_histogram[head=50,tail=10]", ["tail"]),
    ("keepalive", "hybrid_histogram[margin=1]", ["margin"]),
    ("keepalive", "hybrid_histogram[margin=nan]", ["margin"]),
    ("keepalive", "hybrid_histogram[bin_s=0]", ["bin_s"]),
    ("keepalive", "hybrid_histogram[range_s=10]", ["range_s"]),
    ("keepalive", "hybrid_histogram[bin_s=1e-6]", ["bins"]),
    ("keepalive", "hybrid_histogram[oob=0]", ["oob"]),
    ("keepalive", "hybrid_histogram[min_samples=0]", ["min_samples"]),
    ("keepalive", "hybrid_histogram[min_samples=2.5]", ["min_samples", "int"]),
    ("keepalive", "hybrid_histogram[fallback=-1]", ["fallback"]),
    ("keepalive", "tiered[process=-1]", ["process", ">= 0"]),
    ("keepalive", "two_tier[dram=nan]", ["dram"]),
    ("keepalive", "greedy_dual[ttl=-5]", ["ttl"]),
    ("prewarm", "histogram[interval=0]", ["interval"]),
    ("prewarm", "histogram[tier=disk]", ["tier", "gpu", "process"]),
    ("placement", "greedy_dual[clock=1]", ["unknown parameter", "clock"]),
])
def test_bad_parameters_are_spec_errors(kind, spec, words):
    with pytest.raises(PolicySpecError) as e:
        load_policy(kind, spec)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


# ---------------------------------------------------------------------------------------------
# tiered sleep (vLLM sleep levels 1 and 2)


def test_tiered_decisions_and_two_tier_is_one_case():
    assert Tiered(60, 300, 900).on_idle(None, 0.0) == [Keep("gpu", 60.0), Keep("dram", 300.0), Keep("process", 900.0)]
    # a zero-second DRAM tier before a process tier is skipped: no copy out only to drop the weights
    assert Tiered(60, 0, 900).on_idle(None, 0.0) == [Keep("gpu", 60.0), Keep("process", 900.0)]
    assert Tiered(0, 0, 0).on_idle(None, 0.0) == [Keep("gpu", 0.0), Keep("dram", 0.0)]
    for gpu, dram in [(120.0, 1800.0), (0.0, 5.0), (30.0, 0.0)]:
        two = TwoTier(gpu, dram)
        assert isinstance(two, Tiered) and two.label == f"two_tier[gpu={gpu},dram={dram}]"
        assert two.on_idle(None, 0.0) == Tiered(gpu, dram, 0.0).on_idle(None, 0.0) == [
            Keep("gpu", gpu), Keep("dram", dram)]


@pytest.fixture(scope="module")
def default_day():
    return default_trace(DAY)


def test_two_tier_runs_exactly_as_tiered_without_a_process_tier(default_day):
    a, _ = simulate(default_day, DAY, keepalive="two_tier[gpu=120,dram=1800]")
    b, _ = simulate(default_day, DAY, keepalive="tiered[gpu=120,dram=1800,process=0]")
    assert {k: v for k, v in a.items() if k != "policy"} == {k: v for k, v in b.items() if k != "policy"}


def test_sleep_tiers_wait_less_than_evicting_at_no_more_gpu_memory(default_day):
    """vLLM sleep mode: waking a sleeping process is cheaper than a cold start, and a sleeper holds
    no GPU memory. After the same two minutes on the GPU, sleeping (levels 1, then 2) instead of
    evicting cuts the mean load wait and does not hold more GPU memory.
    (Measured: fixed[ttl=120] 2.35 s mean load wait, 1978 GB-h; tiered 1.04 s, 1927 GB-h; two_tier
    0.70 s, 1915 GB-h. tiered waits longer than two_tier here: a level-2 sleeper stays on its GPU for
    an hour, first_fit fills that GPU meanwhile, and its wake then fails into a cold start elsewhere.)"""
    fixed, _ = simulate(default_day, DAY, keepalive="fixed[ttl=120]")
    for spec in ("tiered[gpu=120,dram=1800,process=3600]", "tiered[gpu=120,dram=0,process=3600]"):
        tiered, sim = simulate(default_day, DAY, keepalive=spec)
        assert sum(r["wakes"] for r in sim.usage.rows(sim.label)) > 0
        assert tiered["load_wait_mean_s"] < fixed["load_wait_mean_s"], spec
        assert tiered["gpu_mem_gb_hours"] <= fixed["gpu_mem_gb_hours"], spec


# ---------------------------------------------------------------------------------------------
# the idle-time histogram and the ATC'20 rule


def test_histogram_counts_percentiles_and_cv():
    h = IdleHistogram(bin_s=60.0, range_s=600.0)
    assert len(h.bins) == 10 and h.samples == 0 and h.cv() == 0.0 and h.oob_rate == 0.0
    for x in [0.0, 59.9, 60.0, 125.0, 125.0, 599.0, 600.0, 5000.0]:
        h.add(x)
    assert h.bins == [2, 1, 2, 0, 0, 0, 0, 0, 0, 1] and h.in_range == 6 and h.oob == 2 and h.samples == 8
    assert h.oob_rate == 0.25
    assert h.percentile_bin(5) == 0 and h.percentile_bin(50) == 1 and h.percentile_bin(99) == 9
    mean = 6 / 10
    sd = math.sqrt(sum((c - mean) ** 2 for c in h.bins) / 9)
    assert h.cv() == pytest.approx(sd / mean)


def test_rule_falls_back_forecasts_or_reads_the_histogram():
    rule = HybridRule(min_samples=5, fallback=600.0)
    h = rule.histogram()
    for _ in range(4):
        h.add(1800.0)
    assert rule.windows(h).source == "fallback"  # too few samples
    h.add(1810.0)
    w = rule.windows(h)  # concentrated in bin 30: representative
    assert w.source == "histogram"
    assert w.prewarm_s == pytest.approx(30 * 60 * 0.9) and w.keepalive_s == pytest.approx(31 * 60 * 1.1)
    flat = rule.histogram()
    for i in range(240):  # one idle time in every bin: a flat histogram predicts nothing
        flat.add(i * 60.0 + 1)
    assert flat.cv() < 2 and rule.windows(flat) == rule.windows(rule.histogram())
    assert rule.windows(flat).keepalive_s == 600.0 and rule.windows(flat).prewarm_s == 0.0
    far = rule.histogram()
    for _ in range(6):  # beyond the 4-hour range: the time series sets the windows
        far.add(5 * 3600.0)
    w = rule.windows(far)
    assert w.source == "forecast"
    assert w.prewarm_s == pytest.approx(5 * 3600 * 0.85) and w.keepalive_s == pytest.approx(5 * 3600 * 1.15)


def test_ledger_samples_the_gap_from_idle_to_the_next_use():
    ledger = IdleLedger(HybridRule(min_samples=1))
    ledger.observe("m", 10.0, 5.0)  # first idle moment: nothing to measure yet
    assert ledger.record("m").hist.samples == 0
    ledger.observe("m", 400.0, 310.0)  # used at 310 after going idle at 10: 300 s idle
    rec = ledger.record("m")
    assert list(rec.hist.recent) == [300.0] and rec.idle_start == 400.0
    ledger.observe("m", 420.0, 390.0)  # another instance's earlier work ends: no new gap
    assert rec.hist.samples == 1 and rec.idle_start == 420.0


# ---------------------------------------------------------------------------------------------
# hybrid_histogram and histogram: the pair on hand-made views


class Inst:
    """A hand-made instance view that, like the simulator's, takes weak references."""

    def __init__(self, iid: int, last_used: float, model: str = "m", state: str = "full"):
        self.id, self.model, self.last_used, self.state = iid, model, last_used, state
        self.node, self.gpu = 0, 0


class Cluster:
    """A hand-made cluster view of one model; one object is one run (it takes weak references)."""

    def __init__(self, now: float = 0.0, instances=(), arrivals=(), cold_s: float = 30.0):
        self.gpus = [SimpleNamespace(node=0, index=0)]
        self.models_seen = ["m"]
        self.cold_s = cold_s
        self.at(now, instances, arrivals)

    def at(self, now: float, instances=(), arrivals=None) -> Cluster:
        self.now, self.instances = now, list(instances)
        if arrivals is not None:
            self.arrival_times = list(arrivals)
        return self

    def instances_of(self, model):
        return list(self.instances)

    def arrivals(self, model):
        return list(self.arrival_times)

    def model(self, name):
        return SimpleNamespace(cold_start_s=lambda tier="ssd": self.cold_s)

    def checkpoint_tier(self, model, node):
        return "ssd"


def test_keepalive_alone_keeps_and_paired_unloads_then_the_prewarm_loads_back():
    ka = HybridHistogram(min_samples=3)
    pw = HistogramPrewarm(interval=10.0)
    idle = 0.0
    inst = Inst(0, 0.0)
    assert ka.on_idle(inst, idle) == [Keep("gpu", 600.0)]  # nothing known: the fixed fallback
    for _ in range(3):  # a request 600 s after each idle moment, served in 5 s
        inst.last_used = idle + 600.0
        idle = inst.last_used + 5.0
        out = ka.on_idle(inst, idle)
    # 600 s idle times fall in bin 10: pre-warm 10 x 60 x 0.9, keep-alive 11 x 60 x 1.1; still kept
    assert len(out) == 1 and out[0].tier == "gpu" and out[0].seconds == pytest.approx(11 * 60 * 1.1)
    c = Cluster()
    assert pw.on_tick(c.at(idle + 1.0, [inst])) == []  # pairs with the keep-alive's ledger
    inst.last_used = idle + 600.0
    idle = inst.last_used + 5.0
    assert ka.on_idle(inst, idle) == []  # paired, pre-warm 540 s > load 30 s + tick 10 s: unload
    start = idle + 540.0 - 30.0  # the load must begin by then
    assert pw.on_tick(c.at(start - 11.0)) == []
    assert pw.on_tick(c.at(start - 9.0)) == [Prewarm("m", "gpu")]
    assert pw.on_tick(c.at(start + 1.0)) == []  # once per idle period
    reloaded = Inst(1, start - 9.0)  # created by that reload: last used at its creation
    # loaded and unused: kept to the end of the keep-alive window, not taken for a new idle period
    [keep] = ka.on_idle(reloaded, start + 25.0)
    assert keep.tier == "gpu" and keep.seconds == pytest.approx(idle + 11 * 66 - start - 25.0)
    assert ka.ledger(start + 25.0).record("m").hist.samples == 4
    reloaded.last_used = idle + 600.0  # then used: a sample and a new decision
    assert ka.on_idle(reloaded, idle + 605.0) == []
    assert ka.ledger(idle + 605.0).record("m").hist.samples == 5


def test_prewarm_alone_learns_from_arrivals():
    pw = HistogramPrewarm(interval=10.0)
    arrivals = [i * 1800.0 for i in range(6)]  # a timer every 30 minutes
    c = Cluster(arrivals[-1] + 1000.0, [Inst(0, arrivals[-1])], arrivals)
    assert pw.on_tick(c) == []  # an instance is there
    start = arrivals[-1] + 30 * 60 * 0.9 - 30.0
    assert pw.on_tick(c.at(start - 11.0)) == []
    assert pw.on_tick(c.at(start - 5.0)) == [Prewarm("m", "gpu")]
    # a new run (another cluster object) starts from nothing: two arrivals are too few to predict
    assert pw.on_tick(Cluster(start - 4.0, [], arrivals[:2])) == []


def test_a_reused_keepalive_starts_a_new_ledger_when_time_goes_back():
    ka = HybridHistogram(min_samples=1)
    first = ka.ledger(100.0)
    assert ka.ledger(200.0) is first and ka.ledger(5.0) is not first


# ---------------------------------------------------------------------------------------------
# hybrid_histogram + histogram on traces: the ATC'20 headline


def _hybrid_vs_fixed(requests, horizon_s):
    fixed, _ = simulate(requests, horizon_s, keepalive="fixed[ttl=600]")
    hybrid, sim = simulate(requests, horizon_s, keepalive="hybrid_histogram[head=5,tail=99,margin=0.1]",
                           prewarm="histogram")
    return fixed, hybrid, sim


def test_hybrid_beats_fixed_on_the_default_trace(default_day):
    """ATC'20: the hybrid policy has fewer cold starts than a 10-minute fixed keep-alive while
    holding no more idle memory. Default trace, one day (the histograms need idle times to learn
    from). Measured: fixed 3.18 % cold, 3221 idle GB-h; hybrid 1.22 %, 3119 GB-h. On seeds 1-4 the
    cold starts fall on each, the idle memory on 3 of the 4 (seed 4: 3677 against 3548 GB-h)."""
    fixed, hybrid, sim = _hybrid_vs_fixed(default_day, DAY)
    assert hybrid["cold_start_pct"] < fixed["cold_start_pct"]
    assert hybrid["gpu_idle_gb_hours"] <= fixed["gpu_idle_gb_hours"]
    # the pre-warm window was used: some model was unloaded and loaded back ahead of its requests
    assert any(r["loads"] > r["cold"] for r in sim.usage.rows(sim.label))


@pytest.mark.skipif(not AZURE_SAMPLE.is_dir(), reason=f"no Azure Functions 2019 sample at {AZURE_SAMPLE}")
def test_hybrid_beats_fixed_on_the_azure_functions_sample():
    """The real Azure Functions 2019 sample (8 of its 9 functions, day 1). Measured: fixed 4.00 %
    cold, 1777 idle GB-h; hybrid 3.62 %, 1002 GB-h (two functions called every 5 minutes are
    unloaded between calls and loaded back in time)."""
    requests = list(open_trace(str(AZURE_SAMPLE), duration_s=DAY))
    fixed, hybrid, _ = _hybrid_vs_fixed(requests, DAY)
    assert hybrid["cold_start_pct"] < fixed["cold_start_pct"]
    assert hybrid["gpu_idle_gb_hours"] <= fixed["gpu_idle_gb_hours"]


def test_histogram_prewarm_alone_warms_a_timer_that_a_fixed_keepalive_misses():
    """A model called every 30 minutes, past a 10-minute keep-alive: every call is a cold start,
    until the prewarm has seen enough of its idle times to load it ahead of the next call."""
    requests = [Request(60.0 + i * 1800.0, "timer", 200, 50, i) for i in range(24)]
    alone, _ = simulate(requests, 24 * 1800.0, keepalive="fixed[ttl=600]")
    with_prewarm, _ = simulate(requests, 24 * 1800.0, keepalive="fixed[ttl=600]", prewarm="histogram")
    assert alone["cold_start_pct"] == 100.0
    assert with_prewarm["cold_start_pct"] < 50.0


# ---------------------------------------------------------------------------------------------
# greedy_dual (FaaSCache)


def _gpu(capacity, instances):
    used = sum(i.memory_bytes for i in instances)
    return SimpleNamespace(node=0, index=0, capacity_bytes=capacity, used_bytes=used, free_bytes=capacity - used,
                           instances=list(instances))


def _idle(iid, model, last_used, memory=10):
    return SimpleNamespace(id=iid, model=model, last_used=last_used, idle_since=last_used + 1, state="full",
                           memory_bytes=memory, node=0, gpu=0)


def test_greedy_dual_evicts_the_lowest_priority_and_raises_the_clock():
    gd = GreedyDual()
    arrivals = {"hot": [1.0, 2.0, 3.0, 4.0], "cold": [1.0], "new": [9.0]}
    models = {m: SimpleNamespace(name=m, footprint_bytes=10, cold_start_s=lambda tier="ssd": 2.0) for m in arrivals}
    hot, cold = _idle(1, "hot", 4.0), _idle(2, "cold", 1.0)
    c = SimpleNamespace(now=9.0, gpus=[_gpu(20, [hot, cold])], models_seen=list(arrivals),
                        instances_of=lambda m: [i for i in (hot, cold) if i.model == m],
                        arrivals=lambda m: arrivals[m], model=lambda m: models[m],
                        checkpoint_tier=lambda m, node: "ssd")
    # priority = clock + frequency x cost / size: hot 4 x 2 / 1e-8 GB, cold 1 x 2 / 1e-8 GB
    assert gd.priority(hot, c, {"hot": 4}) > gd.priority(cold, c, {"cold": 1})
    assert gd.place(models["new"], c) == Place(0, 0, (2,))
    assert gd.clock_at(9.0) == pytest.approx(1 * 2.0 / 1e-8)
    assert gd.clock_at(8.0) == 0.0  # instances used before the eviction keep the old clock
    # room somewhere: no eviction, the first GPU with room
    roomy = SimpleNamespace(**{**vars(c), "gpus": [_gpu(20, [hot]), _gpu(40, [])]})
    assert gd.place(models["new"], roomy) == Place(0, 0)


def test_greedy_dual_has_fewer_cold_starts_than_fixed_when_memory_is_the_bottleneck():
    """FaaSCache: with more models than the cluster's GPUs hold, Greedy-Dual keep-alive (keep until
    memory is needed, evict the lowest clock + frequency x cost / size) has fewer cold starts than a
    fixed keep-alive (which evicts least recently used first when memory is short), on the same
    cluster. 16 models on the default 8 GPUs (one 7B instance per GPU), 4 hours. Measured: fixed
    12.0 % cold, greedy_dual 7.7 %; on seeds 1-4: 22.1 / 10.7, 10.2 / 5.4, 35.5 / 14.9, 12.5 / 6.3."""
    requests = default_trace(14400.0, functions=16)
    fixed, _ = simulate(requests, 14400.0, keepalive="fixed[ttl=600]", placement="first_fit")
    gd, _ = simulate(requests, 14400.0, keepalive="greedy_dual", placement="greedy_dual")
    assert fixed["cold_start_pct"] > 0 and gd["cold_start_pct"] < fixed["cold_start_pct"]
    assert gd["rejected"] == fixed["rejected"] == 0
