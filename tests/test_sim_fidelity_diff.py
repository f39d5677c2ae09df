"""Differential tests (issue 13): `request` fidelity against `iteration` fidelity, same input.

Both fidelities compute one serving model (continuous batching, sim/serving.py): iteration
fidelity one event per batch step, request fidelity without events for a request alone and
one event per run of identical decode steps otherwise. So they must agree exactly: the
same TTFT, first token, finish and TPOT per request (to 1e-6 s), the same cold flag, load
wait, instance, GPU and stage at first token, the same GPU memory and idle GB-hours (to 1e-9
relative), the same quality per request (to 1e-9) and the same loads, wakes, evictions and
refills per model. That holds even for a stage that binds exactly at a step boundary: both
sides compute a run's boundaries as the same float (`origin + n * step`, sim/stepclock.py),
so they meet the same ties. (Before that rule a bug hunt, `SIM_PROPERTY_SCALE=25`, found a
bind within float rounding of a boundary counted a step apart three times in a few thousand
examples; `test_a_bind_exactly_at_a_boundary_of_a_run` keeps such a case.)

Small random clusters (1-2 nodes x 1-3 GPUs of 10 GB), profiles from `small_profile_dict`
with random dyadic numbers (so that both sides' sums are exact in binary floating point and
meet the same ties: the hardest case for an event-light reimplementation) and
batch-dependent decode tables, batch sizes 1-8, KV caches that do and do not bind, traces of
up to 30 requests to up to four deployments with gaps from 0 to 700 s, every staging
(progressive with and without refills included), keep-alive, prewarm, placement, router,
admission (`degrade` included: gates closed and opened mid-batch) and storage. A run whose GPUs can be shared steps literally at both fidelities
(`gpus_can_be_shared`), so those draws use `compute_sharing="none"` to compare something.

Every run goes through `run_sim` (its `time_limit` turns a livelock into a failure).
SIM_PROPERTY_SCALE=15 runs a bug hunt fifteen times as long.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_properties import SleepTiers, examples, run_sim, small_profile_dict

from policies.base import StagingPolicy
from policies.plan import progressive_plan
from sim.profile import profile_from_dict
from traces.request import Request

GB = 1e9

# ---------------------------------------------------------------------------------------------
# strategies: profiles with simple (dyadic) numbers, so both fidelities' sums are exact

HALF = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])


@st.composite
def tables(draw, xs, lo, steps):
    """A non-decreasing table over `xs`: dyadic seconds from `lo`, growing by draws from `steps`."""
    seconds = [draw(lo)]
    for _ in xs[1:]:
        seconds.append(seconds[-1] + draw(steps))
    return {"x": list(xs), "seconds": seconds}


@st.composite
def model_dicts(draw, name, max_batch, alone=False):
    if alone:  # 5.4..7.4 GB of weights: one instance per 10 GB GPU
        layers = 8
        layer_bytes = draw(st.sampled_from([625_000_000, 750_000_000, 875_000_000]))
    else:  # 0.25..1 GB per layer
        layers = draw(st.sampled_from([2, 4, 8]))
        layer_bytes = draw(st.sampled_from([250_000_000, 500_000_000, 750_000_000, 1_000_000_000]))
    # 0.4 GB embedding and head; KV cache 0.004..2 GB (1000 bytes/token)
    kv_tokens = draw(st.sampled_from([4096, 16384, 1_000_000, 2_000_000]))
    stage_layers = draw(st.integers(1, layers - 1))
    return {
        "name": name,
        "num_layers": layers,
        "layer_bytes": layer_bytes,
        "embedding_bytes": 200_000_000,
        "head_bytes": 200_000_000,
        "kv_bytes_per_token": 1000,
        "max_batch": draw(max_batch),
        "max_tokens_in_flight": kv_tokens,
        "prefill": draw(tables([1, 1024, 4096], st.sampled_from([1 / 64, 1 / 32, 1 / 8]),
                               st.sampled_from([0.0, 1 / 32, 1 / 8, 1 / 4, 1.0]))),
        # batch-dependent decode: a larger batch takes longer per step (but less per token)
        "decode": draw(tables([1, 2, 4, 8], st.sampled_from([1 / 64, 1 / 32, 1 / 16]),
                              st.sampled_from([0.0, 1 / 128, 1 / 64, 1 / 16]))),
        # a partial stage as fast as the whole model, or faster (its skipped layers' compute saved)
        "stages": [{"name": "s1", "num_layers": stage_layers, "quality": draw(st.sampled_from([0.25, 0.5])),
                    "latency_scale": draw(st.sampled_from([1.0, 1.0, 0.5]))}],
    }


ONE = st.just(1)


@st.composite
def profiles(draw, max_batch=ONE, alone=False):
    d = small_profile_dict(
        process_start_s=draw(HALF),
        cuda_context_s=draw(st.sampled_from([0.5, 2.0])),
        kv_cache_alloc_s=draw(st.sampled_from([0.0, 0.5])),
        graph_capture_s=draw(st.sampled_from([0.0, 1.5])),
        bind_s_per_layer=draw(st.sampled_from([0.0, 0.0, 0.125])),
        init_overlaps_load=draw(st.booleans()),
    )
    d["models"] = [draw(model_dicts(n, max_batch, alone)) for n in ("a", "b", "c")]
    share = draw(st.sampled_from([None, None, "gpu", "storage"]))
    if share is not None:  # `a` and `d` (a deployment of `a`) are task models over one base
        a = d["models"][0]
        a["shared_base"] = {"name": "base", "bytes": a["num_layers"] * a["layer_bytes"] // 2,
                            "share_gpu_memory": share == "gpu"}
    return profile_from_dict(d, "fidelity-diff")


GAPS = st.sampled_from([0.0, 0.0, 1 / 1024, 0.25, 2.0, 7.0, 30.0, 120.0, 700.0])


@st.composite
def traces(draw, max_n=30, gaps=GAPS):
    """Requests to a few models: `a`, `b`, `c` of the profile and `d`, another deployment of `a`'s shape."""
    models = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, max_n))
    t = 0.0
    out = []
    for i in range(n):
        t += draw(gaps)
        out.append(Request(arrival_s=t, model=draw(st.sampled_from(models)),
                           prompt_tokens=draw(st.integers(1, 3000)), output_tokens=draw(st.integers(1, 80)),
                           request_id=i))
    return out


KEEPALIVE = st.sampled_from(["none", "fixed[ttl=5]", "fixed[ttl=60]", "fixed", "two_tier[gpu=3,dram=40]",
                             SleepTiers(), SleepTiers(0, 0, 30)])
PREWARM = st.sampled_from(["none", "none", "popular[window=300,min_requests=1,interval=5]",
                           "popular[window=300,min_requests=2,interval=20,tier=process]"])
STAGING = st.sampled_from(["full", "pipelined"])
PLACEMENT = st.sampled_from(["first_fit", "best_fit", "spread"])
ROUTER = st.sampled_from(["least_loaded", "prefer_full"])
STORAGE = st.sampled_from(["ssd", "remote"])


class ProgressiveNoRefill(StagingPolicy):
    """The seed's progressive plan with `refill=False`: a stage that binds mid-request costs
    no prefill over the context, so the closed form's times are exact again."""

    name = "test_progressive_no_refill"

    def plan(self, model):
        return dataclasses.replace(progressive_plan(model.num_layers), refill=False)


# ---------------------------------------------------------------------------------------------
# running both fidelities


def packable(profile) -> bool:
    """Whether a GPU can hold two instances of some model (then time slicing could share it);
    a second instance over a shared base on the GPU holds only its own part."""
    def own(m):
        b = m.shared_base
        return m.footprint_bytes - (b.bytes if b is not None and b.share_gpu_memory else 0)
    return any(m.footprint_bytes + own(m) <= profile.hardware.usable_gpu_bytes for m in profile.models)


def both(requests, profile, nodes=1, gpus=1, compute_sharing="none", **specs):
    """Both fidelities on the same input: {fidelity: (summary row, {request_id: record}, simulator)}."""
    out = {}
    for fidelity in ("request", "iteration"):
        row, records, sim = run_sim(requests, profile, nodes, gpus, fidelity, compute_sharing=compute_sharing,
                                    **specs)
        assert len(records) == len(requests)
        out[fidelity] = (row, {r.request_id: r for r in records}, sim)
    # a run whose GPUs can be shared serves at iteration fidelity: then there is nothing to compare
    assert out["request"][0]["fidelity"] == "request"
    return out


def close(x: float, y: float, tol: float = 1e-6) -> bool:
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol


def check_exact(runs, quality: bool = True) -> None:
    """Per request and per run, the fidelities agree (times to 1e-6 s)."""
    (row_r, req, sim_r), (row_i, it, sim_i) = runs["request"], runs["iteration"]
    for k, a in req.items():
        b = it[k]
        assert (a.rejected, a.reason) == (b.rejected, b.reason), (a, b)
        if a.rejected:
            continue
        assert (a.cold, a.woke, a.instance_id, a.node, a.gpu) == (b.cold, b.woke, b.instance_id, b.node, b.gpu), (a, b)
        for field in ("ttft_s", "first_token_s", "finish_s", "tpot_s", "load_wait_s"):
            assert close(getattr(a, field), getattr(b, field)), (field, a, b)
        if quality:
            assert a.stage_at_first_token == b.stage_at_first_token, (a, b)
            assert close(a.quality, b.quality, 1e-9), (a, b)
    for key in ("served", "rejected", "cold_start_pct", "wake_pct"):
        assert row_r[key] == row_i[key], key
    for key in ("gpu_mem_gb_hours", "gpu_idle_gb_hours"):
        assert math.isclose(row_r[key], row_i[key], rel_tol=1e-9, abs_tol=1e-12), (key, row_r[key], row_i[key])
    ur, ui = sim_r.usage.models, sim_i.usage.models
    assert ur.keys() == ui.keys()
    for m in ur:
        for field in ("requests", "cold", "loads", "wakes", "evictions"):
            assert getattr(ur[m], field) == getattr(ui[m], field), (m, field)


def check_stage_dating(runs, profile) -> None:
    """Progressive without refills: quality differs by at most two tokens per stage change."""
    req, it, sim = runs["request"][1], runs["iteration"][1], runs["request"][2]
    for k, a in req.items():
        b = it[k]
        if a.rejected:
            continue
        plan = sim.policies.staging.plan(sim.deployment(a.model))
        first = profile.model(a.model).quality_at(len(plan.stages[0]))
        assert abs(a.quality - b.quality) * a.output_tokens <= 2 * (1 - first) + 1e-9, (first, a, b)
        assert a.stage_at_first_token <= b.stage_at_first_token, (a, b)


def sharing_for(profile, draw) -> str:
    """`time_slice` only where no GPU can hold two instances (else the run would fall back to iteration)."""
    return "none" if packable(profile) else draw(st.sampled_from(["time_slice", "none"]))


def budget(n: int):
    """n examples (times SIM_PROPERTY_SCALE): the whole file runs in about 20 s on one core.
    Derandomized (the same examples every run, so CI is repeatable) unless SIM_PROPERTY_SCALE
    asks for a bug hunt."""
    import os

    hunt = bool(os.environ.get("SIM_PROPERTY_SCALE"))
    return settings(max_examples=examples(n), deadline=None, derandomize=not hunt,
                    suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# the two fidelities agree


STAGINGS = st.sampled_from(["full", "pipelined", "progressive", ProgressiveNoRefill()])


@budget(120)
@given(data=st.data(), profile=profiles(max_batch=st.integers(1, 8)), reqs=traces(), nodes=st.integers(1, 2),
       gpus=st.integers(1, 3), staging=STAGINGS, keepalive=KEEPALIVE, prewarm=PREWARM, placement=PLACEMENT,
       router=ROUTER, admission=st.sampled_from(["always", "always", "max_queue[depth=2]", "degrade[slo=0.5]"]),
       storage=STORAGE)
def test_the_fidelities_agree_exactly(data, profile, reqs, nodes, gpus, staging, keepalive, prewarm, placement,
                                      router, admission, storage):
    runs = both(reqs, profile, nodes, gpus, sharing_for(profile, data.draw), staging=staging, keepalive=keepalive,
                prewarm=prewarm, placement=placement, router=router, admission=admission, storage=storage)
    check_exact(runs)
    refills = [sum(u.refills for u in runs[f][2].usage.models.values()) for f in ("request", "iteration")]
    assert refills[0] == refills[1]


@budget(40)
@given(data=st.data(), profile=profiles(max_batch=st.integers(2, 8), alone=True), reqs=traces(gaps=st.sampled_from(
    [0.0, 1 / 1024, 1 / 64, 0.25])), staging=STAGINGS)
def test_busy_batches_agree_exactly(data, profile, reqs, staging):
    """Dense arrivals on one GPU that holds one instance: long runs of joins and decode runs cut short."""
    runs = both(reqs, profile, 1, 1, sharing_for(profile, data.draw), staging=staging, keepalive="fixed")
    check_exact(runs)


def test_stage_at_first_token_is_the_stage_of_the_first_token():
    """`big` fits once on the GPU, serves one request at a time from stage 1 (6 of 8 layers).
    Request 1 waits behind request 0; stages 2 and 3 bind at 10.3 s and 11.0 s, its one
    token comes at 11.79 s with quality 1.0 and stage 2 at both fidelities."""
    d = small_profile_dict()
    for m in d["models"]:
        m["max_batch"] = 1
    profile = profile_from_dict(d, "batch-1")
    reqs = [Request(arrival_s=0.0, model="big", prompt_tokens=1, output_tokens=o, request_id=i)
            for i, o in enumerate((32, 1))]
    runs = both(reqs, profile, staging=ProgressiveNoRefill())
    a, b = runs["request"][1][1], runs["iteration"][1][1]
    assert a.first_token_s == b.first_token_s and a.quality == b.quality == 1.0
    assert a.stage_at_first_token == b.stage_at_first_token == 2


def test_a_request_meeting_a_solo_started_in_the_same_instant_by_an_event():
    """Found by a bug hunt: `a`'s instance becomes ready at 4.25 s and serves its pending
    request alone; a burst for `a` arrives at 4.25 s too. The literal loop has begun that
    request's step before the burst is handled, so the burst's first request joins at the
    next boundary (first token 4.28125 s) at both fidelities."""
    d = small_profile_dict(process_start_s=0.25, cuda_context_s=2.0, kv_cache_alloc_s=0.5, graph_capture_s=1.5,
                           bind_s_per_layer=0.0, init_overlaps_load=True)
    for m in d["models"]:
        m.update(num_layers=2, layer_bytes=250_000_000, max_tokens_in_flight=4096,
                 prefill={"x": [1, 4096], "seconds": [1 / 64, 1 / 64]}, decode={"x": [1, 8], "seconds": [1 / 64, 1 / 64]},
                 stages=[{"name": "s1", "num_layers": 1, "quality": 0.25}])
    d["models"][0]["max_batch"] = 2
    profile = profile_from_dict(d, "solo-tie")
    reqs = [Request(arrival_s=t, model=m, prompt_tokens=1, output_tokens=1, request_id=i)
            for i, (t, m) in enumerate([(0.0, "small"), (0.25, "big"), (2.25, "big")] + [(4.25, "small")] * 9)]
    runs = both(reqs, profile, staging="full", keepalive="none")
    check_exact(runs)


def test_a_bind_exactly_at_a_boundary_of_a_run():
    """Found by a bug hunt: `a` (one request at a time) becomes ready at 7.7 s behind `b`'s
    loads, its request's first token comes at 7.825 s, and stage 2 binds at 8.2 s: in real
    numbers exactly the end of its 24th decode step of 1/64 s. Adding 24 steps one by one
    lands a last bit away from 7.825 + 24/64, so the stage counted a step apart (and the
    refill came a step apart: 0.11 s on the finish) until both sides computed the run's
    boundaries as the same float."""
    # (found before loads shared the page cache: `b`'s loads each read from storage, as then)
    d = small_profile_dict(process_start_s=0.0, cuda_context_s=0.5, kv_cache_alloc_s=0.0, graph_capture_s=1.5,
                           shares_reads=False)
    flat = {"x": [1, 8], "seconds": [1 / 64, 1 / 64]}
    a, b = d["models"][0], d["models"][1]
    a.update(name="a", num_layers=8, layer_bytes=250_000_000, max_batch=1, max_tokens_in_flight=4096,
             prefill={"x": [1, 4096], "seconds": [0.125, 0.125]}, decode=flat,
             stages=[{"name": "s1", "num_layers": 1, "quality": 0.25}])
    b.update(name="b", num_layers=2, layer_bytes=750_000_000, max_batch=3, max_tokens_in_flight=4096,
             prefill={"x": [1, 4096], "seconds": [1 / 64, 1 / 64]}, decode=flat,
             stages=[{"name": "s1", "num_layers": 1, "quality": 0.25}])
    d["models"] = [a, b]
    profile = profile_from_dict(d, "bind-at-a-boundary")
    reqs = [Request(arrival_s=0.0, model="a", prompt_tokens=1, output_tokens=27, request_id=0)]
    reqs += [Request(arrival_s=t, model="b", prompt_tokens=1, output_tokens=1, request_id=1 + i)
             for i, t in enumerate([0.0] * 6 + [7.0] * 8)]
    runs = both(reqs, profile, staging="progressive", keepalive="none", placement="first_fit",
                router="least_loaded", storage="remote")
    check_exact(runs)
    first = runs["request"][1][0]
    assert first.first_token_s == 7.825


def test_a_join_step_that_starts_as_a_stage_binds_runs_alone():
    """Found by a bug hunt: the last stage of `c` binds at 11.3 s, exactly when a step begins
    in which a request arriving at 11.25 s joins. That step computes with the stage before the
    bind (the tie rule of `Instance.step_view`), the steps after it with every layer. Request
    fidelity merged the join step with the decode run after it and gave the whole run the old
    stage: the joiner's 2 tokens had quality 0.89 and 0.89 instead of 0.89 and 1.0."""
    d = small_profile_dict(process_start_s=0.5, cuda_context_s=0.5, kv_cache_alloc_s=0.5, graph_capture_s=0.0,
                           bind_s_per_layer=0.125)
    c = d["models"][0]
    c.update(name="c", num_layers=8, layer_bytes=500_000_000, max_batch=3, max_tokens_in_flight=4096,
             prefill={"x": [1, 4096], "seconds": [0.125, 0.125]},
             decode={"x": [1, 2, 4, 8], "seconds": [0.03125, 0.09375, 0.09375, 0.09375]},
             stages=[{"name": "s1", "num_layers": 1, "quality": 0.25}])
    d["models"] = [c]
    profile = profile_from_dict(d, "join-as-a-stage-binds")
    reqs = [Request(arrival_s=t, model="c", prompt_tokens=1, output_tokens=n, request_id=i)
            for i, (t, n) in enumerate([(0.0, 27), (9.25, 23), (11.25, 2)])]
    runs = both(reqs, profile, staging=ProgressiveNoRefill(), keepalive="none", placement="first_fit",
                router="least_loaded", storage="remote")
    check_exact(runs)
    joiner = runs["request"][1][2]
    assert joiner.first_token_s == 11.51875
    assert joiner.quality == pytest.approx((0.25 + 0.75 * 6 / 7 + 1.0) / 2)
