"""Property tests for the simulator's invariants (issue 2): every request is recorded once,
GPU memory is never over-committed, links never carry more than their bandwidth, longer
keep-alive never adds cold starts on an uncontended cluster, runs are deterministic, and
every served record is self-consistent.

Workloads are small and random (bursts and gaps, 1-6 models), clusters 1-2 nodes x 1-2
GPUs, both fidelities, every staging policy. Two profiles: the shipped one (one model per
GPU) and `SMALL`, a round-number profile where three instances fit on one GPU, so that
placement, eviction and the memory queue are exercised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading

import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import Keep, KeepAlivePolicy, load_policy
from sim.config import SimConfig
from sim.flows import FlowNetwork, Link
from sim.metrics import RunMetrics
from sim.policyset import PolicySet
from sim.profile import load_profile, profile_from_dict
from sim.simulator import Simulator
from traces.request import Request

GB = 1e9

# ---------------------------------------------------------------------------------------------
# profiles


def small_profile_dict(**engine) -> dict:
    """A profile with round numbers: GPU 10 GB; model `small` has 4 layers of 0.4 GB plus
    0.2 GB embedding and 0.2 GB head (2 GB of weights) and a 1 GB KV cache, so three
    instances (3 GB each) fit on one GPU. `big` (6 GB) fits once; `huge` has weights that
    fit but a KV cache that does not, so its requests must be rejected.

    Loads from SSD run at loader_efficiency 0.5 x 2 GB/s = 1 GB/s (2 s for `small`), from
    host DRAM at 0.5 x 4 GB/s = 2 GB/s, from remote at 0.5 x 1 GB/s. Every phase and the
    prefill are dyadic numbers, so the oracle's sums are exact in binary floating point.
    """
    eng = {
        "process_start_s": 1.0,
        "cuda_context_s": 2.0,
        "kv_cache_alloc_s": 0.5,
        "graph_capture_s": 1.5,
        "bind_s_per_layer": 0.0,
        "loader_efficiency": 0.5,
        "wake_from_sleep_s": 0.5,
    }
    eng.update(engine)

    def model(name, layers, layer_bytes, kv_tokens, stages):
        return {
            "name": name,
            "num_layers": layers,
            "layer_bytes": layer_bytes,
            "embedding_bytes": 200_000_000,
            "head_bytes": 200_000_000,
            "kv_bytes_per_token": 1000,
            "max_batch": 4,
            "max_tokens_in_flight": kv_tokens,
            "prefill": {"x": [1, 4096], "seconds": [0.125, 0.125]},
            "decode": {"x": [1, 64], "seconds": [0.0625, 0.0625]},
            "stages": stages,
        }

    return {
        "schema_version": 1,
        "name": "small-test",
        "provenance": {"kind": "published", "source": "tests"},
        "hardware": {
            "gpu_name": "TestGPU",
            "gpu_memory_gb": 10.0,
            "gpu_reserved_gb": 0.0,
            "h2d_gbps": 4.0,
            "h2d_pageable_gbps": 2.0,
            "d2h_gbps": 4.0,
            "pcie_limit_gbps": 4.0,
            "ssd_read_gbps": 2.0,
            "ssd_warm_gbps": 2.0,
            "network_gbps": 1.0,
            "host_dram_gb": 100.0,
            "ssd_gb": 1000.0,
        },
        "engine": eng,
        "models": [
            model("small", 4, 400_000_000, 1_000_000, [{"name": "s1", "num_layers": 3, "quality": 0.5}]),
            model("big", 8, 700_000_000, 400_000, [{"name": "s1", "num_layers": 6, "quality": 0.25}]),
            model("huge", 8, 1_000_000_000, 2_000_000, []),
        ],
    }


SHIPPED = load_profile()
SMALL = profile_from_dict(small_profile_dict(), "small-test")
_two_slots = small_profile_dict()
_two_slots["hardware"]["compute_slots"] = 2
SMALL_TWO_SLOTS = profile_from_dict(_two_slots, "small-test-2-slots")  # e.g. a 2-core CPU "device"

# ---------------------------------------------------------------------------------------------
# an instrumented run


class Recorder(RunMetrics):
    """RunMetrics that also keeps every record."""

    def __init__(self, label: str, slo: float = 5.0):
        super().__init__(label, slo)
        self.records = []

    def on_request(self, rec) -> None:
        self.records.append(rec)
        super().on_request(rec)


class CheckedSimulator(Simulator):
    """Checks the memory and link invariants at every change."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.memory_checks = 0
        self.link_checks = 0
        realloc = self.net._reallocate

        def checked_realloc():
            realloc()
            check_link_rates(self.net)
            self.link_checks += 1

        self.net._reallocate = checked_realloc

        changed = self.memory._changed

        def checked_changed(now):
            self.check_memory()
            changed(now)

        self.memory._changed = checked_changed

    def check_memory(self) -> None:
        """The memory ledger agrees with the GPUs and the instances on them."""
        self.memory_checks += 1
        total = 0
        for g in self._gpus:
            assert 0 <= g.used_bytes <= g.capacity_bytes, f"GPU {g.node}.{g.index}: {g.used_bytes} > {g.capacity_bytes}"
            assert g.used_bytes == sum(i.memory_bytes for i in g.instances) + sum(r.nbytes for r in g.bases.values())
            assert all(i.state not in ("evicted", "sleeping") for i in g.instances)
            for name, r in g.bases.items():  # a shared base's copy is there exactly while instances use it
                users = [i for i in g.instances if i.dep.gpu_base == name]
                assert r.holders == {i.id for i in users}
                assert r.idle_holders == sum(self.memory.counts_idle(i) for i in users)
                assert r.idle == (r.idle_holders == len(r.holders))
            total += g.used_bytes
        assert self.memory.used_bytes == total
        assert 0 <= self.memory.idle_bytes <= self.memory.used_bytes


def check_link_rates(net: FlowNetwork) -> None:
    links = {lk for t in net.active for lk in t.path}
    for lk in links:
        assert lk.rate_in_use <= lk.capacity * (1 + 1e-9), f"{lk.name}: {lk.rate_in_use} > {lk.capacity}"
    for t in net.active:
        assert t.rate <= t.cap * (1 + 1e-9)


class SleepTiers(KeepAlivePolicy):
    """A keep-alive that walks every tier: GPU, then asleep with weights in DRAM, then asleep
    without weights (vLLM sleep levels 1 and 2)."""

    name = "test_sleep_tiers"

    def __init__(self, gpu: float = 2.0, dram: float = 20.0, process: float = 200.0):
        self.gpu, self.dram, self.process = float(gpu), float(dram), float(process)

    def on_idle(self, inst, now):
        return [k for k in (Keep("gpu", self.gpu), Keep("dram", self.dram), Keep("process", self.process))
                if k.seconds > 0]


def run_sim(requests, profile=SMALL, nodes=1, gpus=1, fidelity="request", storage="ssd", seed=0,
            compute_sharing="none", batches=SimConfig.batches, **specs):
    """One instrumented run; a policy is a spec string or an instance."""
    chosen = dict(staging="full", keepalive="fixed", prewarm="none", placement="first_fit",
                  router="least_loaded", admission="always")
    chosen.update(specs)
    policies = PolicySet(**{k: load_policy(k, v) if isinstance(v, str) else v for k, v in chosen.items()})
    metrics = Recorder(policies.label)
    config = SimConfig(nodes=nodes, gpus_per_node=gpus, fidelity=fidelity, storage=storage, seed=seed,
                       compute_sharing=compute_sharing, batches=batches)
    sim = CheckedSimulator(profile, policies, config, metrics)
    with time_limit(RUN_LIMIT_S):
        row = sim.run(list(requests))
    return row, metrics.records, sim


RUN_LIMIT_S = 20.0  # a few small runs take milliseconds; a livelock must fail, not hang the suite


class SimulationHang(AssertionError):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise SimulationHang if the block runs longer than `seconds` (main thread, POSIX only)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise SimulationHang(f"simulation still running after {seconds} s (a livelock?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def same_row(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# strategies

GAPS = st.sampled_from([0.0, 0.0, 1e-3, 0.25, 2.0, 7.0, 30.0, 120.0, 700.0, 2500.0])


@st.composite
def workloads(draw, models=None, max_n=24):
    if models is None:
        names = ["small", "big", "huge", "m3", "m4", "m5"]
        k = draw(st.integers(1, 6))
        models = draw(st.permutations(names))[:k]
    n = draw(st.integers(1, max_n))
    t = 0.0
    out = []
    for i in range(n):
        t += draw(GAPS)
        out.append(Request(
            arrival_s=t,
            model=draw(st.sampled_from(models)),
            prompt_tokens=draw(st.integers(1, 3000)),
            output_tokens=draw(st.integers(1, 80)),
            request_id=i,
        ))
    return out


KEEPALIVE = st.sampled_from(["none", "fixed[ttl=5]", "fixed[ttl=60]", "fixed", "two_tier[gpu=3,dram=40]",
                             "two_tier", SleepTiers(), SleepTiers(0, 0, 30), SleepTiers(1, 0, 600)])
PREWARM = st.sampled_from(["none", "none", "popular[window=300,min_requests=1,interval=5]",
                           "popular[window=300,min_requests=2,interval=20,tier=process]"])
STAGING = st.sampled_from(["full", "pipelined", "progressive"])
ADMISSION = st.sampled_from(["always", "always", "max_queue[depth=2]", "max_queue[depth=1]"])
PLACEMENT = st.sampled_from(["first_fit", "best_fit", "spread"])
ROUTER = st.sampled_from(["least_loaded", "prefer_full"])
FIDELITY = st.sampled_from(["request", "iteration"])

# SIM_PROPERTY_SCALE=20 runs twenty times the examples (a bug hunt, not CI).
SCALE = int(os.environ.get("SIM_PROPERTY_SCALE", "1"))


def examples(n: int) -> int:
    return n * SCALE


FAST = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_records(requests, records, staging: str) -> None:
    ids = [r.request_id for r in records]
    assert sorted(ids) == sorted(r.request_id for r in requests), "every request exactly once"
    assert len(set(ids)) == len(ids)
    by_id = {r.request_id: r for r in requests}
    for rec in records:
        req = by_id[rec.request_id]
        assert rec.model == req.model and rec.arrival_s == req.arrival_s
        if rec.rejected:
            assert rec.reason, rec
            assert math.isnan(rec.ttft_s)
            continue
        assert not rec.reason
        assert rec.ttft_s >= 0, rec
        assert rec.first_token_s >= rec.arrival_s
        assert rec.first_token_s <= rec.finish_s, rec
        assert rec.ttft_s == rec.first_token_s - rec.arrival_s
        assert 0.0 <= rec.quality <= 1.0, rec
        assert rec.load_wait_s >= 0
        if rec.load_wait_s > 0:
            assert rec.cold, rec
        if staging == "full":
            assert rec.quality == 1.0, rec
        assert rec.instance_id >= 0 and rec.node >= 0 and rec.gpu >= 0


# ---------------------------------------------------------------------------------------------
# (a) (b) (f): every request once; memory never over-committed; records consistent


@FAST
@given(reqs=workloads(), nodes=st.integers(1, 2), gpus=st.integers(1, 2), fidelity=FIDELITY,
       staging=STAGING, keepalive=KEEPALIVE, admission=ADMISSION, placement=PLACEMENT, router=ROUTER,
       prewarm=PREWARM, storage=st.sampled_from(["ssd", "remote"]), sharing=st.sampled_from(["time_slice", "none"]),
       profile=st.sampled_from([SMALL, SMALL, SMALL_TWO_SLOTS]))
def test_small_profile_invariants(reqs, nodes, gpus, fidelity, staging, keepalive, admission, placement, router,
                                  prewarm, storage, sharing, profile):
    row, records, sim = run_sim(reqs, profile, nodes, gpus, fidelity, storage, compute_sharing=sharing,
                                staging=staging, keepalive=keepalive, admission=admission, placement=placement,
                                router=router, prewarm=prewarm)
    check_records(reqs, records, staging)
    assert row["requests"] == len(reqs) == row["served"] + row["rejected"]
    for rec in records:
        if not rec.rejected and staging != "progressive":
            # full serves after its one stage; pipelined after its last (one layer per stage)
            last = SMALL.model(rec.model).num_layers - 1
            assert rec.stage_at_first_token == (0 if staging == "full" else last), rec
    assert sim.memory_checks > 0 or row["served"] == 0
    for rec in records:
        if rec.model == "huge":
            assert rec.rejected  # by admission, or because its KV cache does not fit any GPU
    # after the run nothing is left waiting
    assert sim.pending_total == 0 and not sim.memory_queue and sim.outstanding == 0
    assert all(sim.waiting(m) == 0 for m in sim.models_seen)
    check_compute(sim)
    check_ledger(row, records, sim)


def check_compute(sim) -> None:
    """A GPU's compute is never over-used: no step is left running, and no GPU did more
    full-speed work than its slots times the time that passed."""
    for g in sim._gpus:
        if g.compute is None:
            continue
        assert not g.compute.steps, f"GPU {g.node}.{g.index}: steps left running"
        assert g.compute.work_done_s <= g.compute.slots * sim.env.now * (1 + 1e-9) + 1e-12


def check_ledger(row, records, sim) -> None:
    """The per-model ledger and the summary row are two accountings of one run: they agree."""
    models = sim.usage.models
    # a row per deployment seen, and one per shared base that held GPU memory
    bases = {f"base:{d.gpu_base}" for d in sim.deployments.values() if d.gpu_base is not None}
    assert set(models) <= set(sim.models_seen) | bases, sorted(map(str, models))
    assert sum(u.requests for u in models.values()) == row["requests"]
    for name, u in models.items():
        mine = [r for r in records if r.model == name]
        assert u.requests == len(mine), name
        assert u.cold == sum(r.cold for r in mine), name
    # every eviction ends an instance (a full one, or a prewarmed process)
    assert sum(u.evictions for u in models.values()) <= sim._next_id
    assert math.isclose(sum(u.mem_byte_s for u in models.values()) / (GB * 3600), row["gpu_mem_gb_hours"],
                        rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(sum(u.idle_byte_s for u in models.values()) / (GB * 3600), row["gpu_idle_gb_hours"],
                        rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=examples(40), deadline=None)
@given(reqs=workloads(models=["a", "b", "c"]), nodes=st.integers(1, 2), gpus=st.integers(1, 2),
       fidelity=FIDELITY, staging=STAGING, keepalive=KEEPALIVE, admission=ADMISSION, prewarm=PREWARM)
def test_shipped_profile_invariants(reqs, nodes, gpus, fidelity, staging, keepalive, admission, prewarm):
    row, records, sim = run_sim(reqs, SHIPPED, nodes, gpus, fidelity, staging=staging, keepalive=keepalive,
                                admission=admission, prewarm=prewarm)
    check_records(reqs, records, staging)
    assert row["requests"] == len(reqs)
    check_ledger(row, records, sim)


# ---------------------------------------------------------------------------------------------
# (c) links: rates within capacity at every event, max-min fair, bytes conserved


@st.composite
def transfer_sets(draw):
    n_links = draw(st.integers(1, 4))
    caps = [draw(st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.0, 24.0])) * GB for _ in range(n_links)]
    kinds = ["network", "ssd", "pcie"]
    links = [Link(f"l{i}", kinds[i % 3], c) for i, c in enumerate(caps)]
    n = draw(st.integers(1, 8))
    transfers = []
    for _ in range(n):
        idx = draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=n_links, unique=True))
        transfers.append((
            draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.3])),  # start
            tuple(links[i] for i in idx),
            draw(st.integers(1, 20)) * 0.25 * GB,
            draw(st.sampled_from([1.0, 1.0, 0.9, 0.5, 0.255])),
        ))
    return links, transfers


def check_max_min(net: FlowNetwork) -> None:
    """Max-min fairness: every transfer is at its cap, or has a saturated link on which no
    transfer gets more than it does (its bottleneck)."""
    for t in net.active:
        if t.rate >= t.cap * (1 - 1e-9):
            continue
        bottleneck = [
            lk for lk in t.path
            if lk.rate_in_use >= lk.capacity * (1 - 1e-9)
            and all(o.rate <= t.rate * (1 + 1e-9) for o in lk.transfers)
        ]
        assert bottleneck, f"transfer at {t.rate} below cap {t.cap} has no bottleneck link"


@settings(max_examples=examples(150), deadline=None)
@given(ts=transfer_sets())
def test_flow_network_rates_and_bytes(ts):
    links, transfers = ts
    env = simpy.Environment()
    by_kind: dict[str, float] = {}

    def on_bytes(kind, nbytes):
        by_kind[kind] = by_kind.get(kind, 0.0) + nbytes

    net = FlowNetwork(env, on_bytes=on_bytes)
    realloc = net._reallocate
    checks = [0]

    def checked():
        realloc()
        check_link_rates(net)
        check_max_min(net)
        checks[0] += 1

    net._reallocate = checked
    done = {}

    def proc(i, start, path, nbytes, eff):
        yield env.timeout(start)
        t0 = env.now
        yield net.transfer(path, nbytes, eff)
        done[i] = (t0, env.now)

    for i, (start, path, nbytes, eff) in enumerate(transfers):
        env.process(proc(i, start, path, nbytes, eff))
    env.run()
    assert len(done) == len(transfers) and not net.active
    assert checks[0] >= 2 * len(transfers)
    for i, (_start, path, nbytes, eff) in enumerate(transfers):
        t0, t1 = done[i]
        fastest = nbytes / (eff * min(lk.capacity for lk in path))
        assert t1 - t0 >= fastest * (1 - 1e-9), (i, t1 - t0, fastest)
    for lk in links:
        expected = sum(nb for _s, path, nb, _e in transfers if lk in path)
        assert math.isclose(lk.bytes_carried, expected, rel_tol=1e-9, abs_tol=1.0), (lk.name, lk.bytes_carried, expected)
        assert not lk.transfers
    expected_kind: dict[str, float] = {}
    for _s, path, nb, _e in transfers:
        for lk in path:
            expected_kind[lk.kind] = expected_kind.get(lk.kind, 0.0) + nb
    assert by_kind.keys() == expected_kind.keys()
    for k in by_kind:
        assert math.isclose(by_kind[k], expected_kind[k], rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# (d) keep-alive monotonicity on an uncontended cluster


@settings(max_examples=examples(40), deadline=None)
@given(data=st.data(), nodes=st.integers(1, 2), gpus=st.integers(1, 2), fidelity=FIDELITY, staging=STAGING,
       ttl=st.sampled_from([0.0, 1.0, 10.0, 45.0, 200.0, 1000.0, 5000.0]))
def test_keeping_every_instance_never_adds_cold_starts(data, nodes, gpus, fidelity, staging, ttl):
    """Keep-alive longer than the trace never has more cold starts than a shorter one.

    (A longer TTL is *not* monotone in general: with a 1 s TTL a request can find its
    instance warm, finish at once and let the instance expire before a later burst, which
    with no TTL would have found the cold start of that request still serving. Against a
    TTL that never expires it holds: one model fits a GPU and there are as many GPUs as
    models, so both runs make the same first loads at the same times until the shorter TTL
    first evicts, and after that only the shorter one loads again.)
    """
    n_models = data.draw(st.integers(1, nodes * gpus))
    reqs = data.draw(workloads(models=[f"m{i}" for i in range(n_models)], max_n=20))
    cold = []
    for keep in (ttl, 1e9):
        row, records, _ = run_sim(reqs, SHIPPED, nodes, gpus, fidelity, staging=staging,
                                  keepalive=f"fixed[ttl={keep}]")
        assert row["rejected"] == 0
        cold.append(sum(r.cold for r in records))
    assert cold[1] <= cold[0], f"ttl {ttl}: {cold[0]} cold, never expiring: {cold[1]} cold"


def test_a_longer_ttl_can_add_a_cold_start():
    """The counter-example to plain monotonicity that hypothesis found (kept as a record)."""
    spec = [(0.0, "m0", 1), (0.0, "m1", 1), (2.0, "m0", 1), (32.0, "m1", 21), (62.0, "m0", 1), (62.0, "m0", 1),
            (62.0, "m0", 1), (62.0, "m0", 1), (64.0, "m1", 1), (64.0, "m1", 1)]
    reqs = [Request(arrival_s=a, model=m, prompt_tokens=1, output_tokens=o, request_id=i)
            for i, (a, m, o) in enumerate(spec)]
    # the shipped profile as it was when hypothesis found this (its loads 7 % slower): the
    # counter-example's times are tied to those loads
    then = dataclasses.replace(SHIPPED, engine=dataclasses.replace(SHIPPED.engine, loader_efficiency=0.255))
    cold = [sum(r.cold for r in run_sim(reqs, then, 2, 1, "request", keepalive=f"fixed[ttl={t}]")[1])
            for t in (0.0, 1.0, 1e9)]
    # no TTL: request 3 cold-starts m1 and is still serving when 8 and 9 arrive (warm);
    # 1 s TTL: request 3 is warm, m1 expires at 33.5 s, 8 and 9 are cold
    assert cold == [8, 9, 3]  # never expiring: only the first loads (requests 0, 1, 2)


# ---------------------------------------------------------------------------------------------
# (e) determinism


@settings(max_examples=examples(25), deadline=None)
@given(reqs=workloads(), nodes=st.integers(1, 2), gpus=st.integers(1, 2), fidelity=FIDELITY, staging=STAGING,
       keepalive=KEEPALIVE, prewarm=PREWARM, seed=st.integers(0, 3))
def test_same_inputs_same_results(reqs, nodes, gpus, fidelity, staging, keepalive, prewarm, seed):
    a = run_sim(reqs, SMALL, nodes, gpus, fidelity, seed=seed, staging=staging, keepalive=keepalive,
                prewarm=prewarm)
    b = run_sim(reqs, SMALL, nodes, gpus, fidelity, seed=seed, staging=staging, keepalive=keepalive,
                prewarm=prewarm)
    assert same_row(a[0], b[0])
    assert [repr(r) for r in a[1]] == [repr(r) for r in b[1]]


# ---------------------------------------------------------------------------------------------
# quality: progressive below 1 only while partial; full staging is always 1.0


@settings(max_examples=examples(30), deadline=None)
@given(reqs=workloads(models=["small", "big"]), fidelity=FIDELITY, keepalive=KEEPALIVE)
def test_progressive_quality_bounds(reqs, fidelity, keepalive):
    _, records, _ = run_sim(reqs, SMALL, 1, 2, fidelity, staging="progressive", keepalive=keepalive)
    for rec in records:
        if rec.rejected:
            continue
        # stage 1 of `small` has quality 0.5, of `big` 0.25: no token can be below that
        floor = 0.5 if rec.model == "small" else 0.25
        assert floor - 1e-12 <= rec.quality <= 1.0
        # `small` loads in 2 stages (3 + 1 layers), `big` in 3 (6 + 1 + 1): after the last, all is 1.0
        last = 1 if rec.model == "small" else 2
        assert 0 <= rec.stage_at_first_token <= last
        if rec.stage_at_first_token == last:
            assert rec.quality == 1.0, rec
