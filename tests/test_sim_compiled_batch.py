"""Compiled batches (`SimConfig.batches="compiled"`, sim/compiled_batch.py, sim/batch_kernel.py)
against the Python batch loop (sim/serving.py), the same input: every record equal, field by
field (the kernel computes the same floats in the same order, so not "close": equal), and
the same summary row and per-model usage.

The inputs are the fidelity suite's (tests/test_sim_fidelity_diff.py): small random clusters,
dyadic profiles (sums exact in binary floating point, so arrivals, binds and step boundaries
meet at the same instant: the ties the tie rules are about), every staging with and without
refills, every keep-alive, prewarm, placement, router and admission (`degrade` closes and
opens gates mid-batch), plus larger random runs and the published default combinations.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sim_fidelity_diff import (
    KEEPALIVE,
    PLACEMENT,
    PREWARM,
    ROUTER,
    STAGINGS,
    STORAGE,
    budget,
    profiles,
    traces,
)
from test_sim_properties import SMALL, run_sim

from sim.config import SimConfig
from traces.request import Request


def both_batches(requests, profile, nodes=1, gpus=1, same_order=True, **specs):
    """{batches: (summary row, {request_id: record}, simulator)} for the Python and compiled loops.

    `same_order`: the records leave in the same order too (so the metrics add them up in the
    same order and the summary rows are equal to the last bit)."""
    out, order = {}, {}
    for batches in ("python", "compiled"):
        row, records, sim = run_sim(requests, profile, nodes, gpus, "request", compute_sharing="none",
                                    batches=batches, **specs)
        assert len(records) == len(requests)
        out[batches] = (row, {r.request_id: r for r in records}, sim)
        order[batches] = [r.request_id for r in records]
    if same_order:
        assert order["python"] == order["compiled"]
    return out


def same_float(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def check_equal(runs, same_order: bool = True) -> None:
    (row_p, rec_p, sim_p), (row_c, rec_c, sim_c) = runs["python"], runs["compiled"]
    assert sim_c.batches is not None and sim_p.batches is None
    for key, a in rec_p.items():
        b = rec_c[key]
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            field = f.name
            if isinstance(x, float):
                assert same_float(x, y), (field, a, b)
            else:
                assert x == y, (field, a, b)
    assert row_p.keys() == row_c.keys()
    for key, x in row_p.items():
        y = row_c[key]
        if isinstance(x, float) and not same_order:  # sums taken in another order: the last bits
            assert same_float(x, y) or math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12), (key, x, y)
        else:
            assert same_float(x, y) if isinstance(x, float) else x == y, (key, x, y)
    up, uc = sim_p.usage.models, sim_c.usage.models
    assert up.keys() == uc.keys()
    for m in up:
        assert up[m] == uc[m], (m, up[m], uc[m])
    assert sim_c.outstanding == 0 and sim_c.batches.next_time() == math.inf


@budget(120)
@given(profile=profiles(max_batch=st.integers(1, 8)), reqs=traces(), nodes=st.integers(1, 2),
       gpus=st.integers(1, 3), staging=STAGINGS, keepalive=KEEPALIVE, prewarm=PREWARM, placement=PLACEMENT,
       router=ROUTER, admission=st.sampled_from(["always", "always", "max_queue[depth=2]", "degrade[slo=0.5]"]),
       storage=STORAGE)
def test_compiled_batches_give_the_python_loops_records(profile, reqs, nodes, gpus, staging, keepalive, prewarm,
                                                        placement, router, admission, storage):
    runs = both_batches(reqs, profile, nodes, gpus, staging=staging, keepalive=keepalive, prewarm=prewarm,
                        placement=placement, router=router, admission=admission, storage=storage)
    check_equal(runs)


@budget(40)
@given(profile=profiles(max_batch=st.integers(2, 8), alone=True),
       reqs=traces(gaps=st.sampled_from([0.0, 1 / 1024, 1 / 64, 0.25])), staging=STAGINGS)
def test_busy_compiled_batches_agree(profile, reqs, staging):
    """Dense arrivals on one instance: long runs of joins and decode runs cut short."""
    check_equal(both_batches(reqs, profile, staging=staging, keepalive="fixed"))


@pytest.mark.parametrize("combo", [dict(staging="full", keepalive="fixed"),
                                   dict(staging="progressive", keepalive="hybrid_histogram",
                                        router="expected_wait"),
                                   dict(staging="pipelined", keepalive="fixed[ttl=5]", admission="degrade[slo=0.5]")])
def test_thousands_of_random_requests_agree(combo):
    """Random (not dyadic) times on four GPUs: thousands of joins, cuts, finishes and drains."""
    rng = np.random.default_rng(7)
    t = 0.0
    reqs = []
    for i in range(4000):
        t += float(rng.exponential(0.04))
        reqs.append(Request(arrival_s=t, model=("big", "small")[int(rng.integers(2))],
                            prompt_tokens=int(rng.integers(1, 2000)), output_tokens=int(rng.integers(1, 300)),
                            request_id=i))
    check_equal(both_batches(reqs, SMALL, 2, 2, **combo))


def test_iteration_fidelity_has_no_compiled_batches():
    """Iteration fidelity steps literally: the setting does not apply there."""
    _, _, sim = run_sim([Request(arrival_s=0.0, model="small", prompt_tokens=8, output_tokens=4, request_id=0)],
                        fidelity="iteration", batches="compiled")
    assert sim.batches is None


def test_a_bad_batches_setting_is_refused():
    with pytest.raises(ValueError, match="batches must be one of"):
        SimConfig(batches="fast")


@pytest.mark.parametrize(("how", "says"), [("missing", "unavailable.*ModuleNotFoundError"),
                                           ("no cache", "unavailable.*no locator")])
def test_where_numba_cannot_run_the_python_loops_serve_and_say_so(how, says, monkeypatch):
    """A machine where numba cannot be imported, or cannot compile or cache, runs the Python
    loops (the same records) and says so."""
    import sys

    import sim.compiled_batch as compiled_batch
    import sim.simulator as simulator

    def broken():
        raise RuntimeError("no locator available")  # what numba raises where it cannot cache

    if how == "missing":
        monkeypatch.setitem(sys.modules, "sim.compiled_batch", None)  # `import` raises ImportError
    else:
        monkeypatch.setattr(compiled_batch, "ready", broken)
    monkeypatch.setattr(simulator, "_NO_NUMBA_SAID", False)
    reqs = [Request(arrival_s=0.05 * i, model="small", prompt_tokens=8, output_tokens=40, request_id=i)
            for i in range(30)]
    with pytest.warns(RuntimeWarning, match=says):
        _, records, sim = run_sim(reqs, batches="compiled")
    assert sim.batches is None
    monkeypatch.undo()
    _, compiled, sim_c = run_sim(reqs, batches="compiled")
    assert sim_c.batches is not None
    assert sorted(records, key=lambda r: r.request_id) == sorted(compiled, key=lambda r: r.request_id)


ZERO_OR_DYADIC = st.sampled_from([0.0, 0.0, 1 / 64, 1 / 8])


@budget(60)
@given(data=st.data(), reqs=traces(max_n=20, gaps=st.sampled_from([0.0, 0.0, 1 / 64, 0.5, 3.0])),
       staging=STAGINGS, keepalive=st.sampled_from(["none", "fixed[ttl=5]", "fixed"]))
def test_steps_that_take_no_time_agree(data, reqs, staging, keepalive):
    """Profiles whose tables say 0 seconds (allowed: `seconds >= 0`): steps that end where they
    begin, so a stage that binds at an instant meets a loop continuing at that same instant.
    Every record is the same; they may leave in another order, since a whole batch's life can
    fall on one instant, where the compiled loops' events run before SimPy's (docs/design.md)."""
    from test_sim_properties import small_profile_dict

    from sim.profile import profile_from_dict

    d = small_profile_dict(process_start_s=0.0, cuda_context_s=0.5, kv_cache_alloc_s=0.0, graph_capture_s=0.0,
                           bind_s_per_layer=data.draw(st.sampled_from([0.0, 0.125])))
    for m in d["models"]:
        m["max_batch"] = data.draw(st.integers(1, 4))
        m["prefill"] = {"x": [1, 4096], "seconds": [data.draw(ZERO_OR_DYADIC), data.draw(ZERO_OR_DYADIC)]}
        m["decode"] = {"x": [1, 8], "seconds": [data.draw(ZERO_OR_DYADIC), data.draw(ZERO_OR_DYADIC)]}
    names = [m["name"] for m in d["models"]]
    index = {"a": 0, "b": 1, "c": 2, "d": 0}  # the trace's model names onto the profile's
    reqs = [dataclasses.replace(r, model=names[index[r.model] % len(names)]) for r in reqs]
    runs = both_batches(reqs, profile_from_dict(d, "zero-steps"), same_order=False, staging=staging,
                        keepalive=keepalive)
    check_equal(runs, same_order=False)


def _warm(profile_dict, reqs):
    """A run on one GPU whose instance of `small` is warm by 100 s (a first request at 0 loads it)."""
    from sim.profile import profile_from_dict

    first = Request(arrival_s=0.0, model="small", prompt_tokens=1, output_tokens=1, request_id=99)
    runs = both_batches([first, *reqs], profile_from_dict(profile_dict, "hand-made"), staging="full",
                        keepalive="fixed", router="least_loaded")
    check_equal(runs)
    return runs["compiled"][1]


def test_a_request_that_fills_the_kv_cache_exactly_joins():
    """`small` holds 100 KV tokens here; three requests of 50 meet it warm at 100 s: the first
    alone, the second joins it at its first token (50 + 50 = 100 fit), the third waits for a
    finish."""
    from test_sim_properties import small_profile_dict

    d = small_profile_dict()
    d["models"][0]["max_tokens_in_flight"] = 100
    reqs = [Request(arrival_s=100.0, model="small", prompt_tokens=20, output_tokens=30, request_id=i)
            for i in range(3)]
    rec = _warm(d, reqs)
    assert rec[1].first_token_s == 100.0 + 0.125 + 0.125 + 0.0625  # the solo's first token, then its step
    assert rec[2].first_token_s > rec[0].finish_s


def test_a_request_arriving_as_a_step_with_joiners_ends_joins_one_step_later():
    """At 100 s request 0 meets the warm instance alone (first token at 100.125); request 1
    arrives during that prefill and joins at 100.125 in a step of prefill plus decode
    (1/8 + 1/16 s), which ends at 100.3125, exactly when request 2 arrives: the step after it has
    begun by then, so request 2 joins at its end, 100.375 (the literal loop's rule)."""
    from test_sim_properties import small_profile_dict

    reqs = [Request(arrival_s=t, model="small", prompt_tokens=4, output_tokens=40, request_id=i)
            for i, t in enumerate([100.0, 100.0625, 100.3125])]
    rec = _warm(small_profile_dict(), reqs)
    assert (rec[0].first_token_s, rec[1].first_token_s) == (100.125, 100.3125)
    assert rec[2].first_token_s == 100.3125 + 0.0625 + 0.125 + 0.0625


def test_a_request_that_fits_exactly_cuts_the_run_it_arrives_in():
    """`small` holds 100 KV tokens: 50 and 30 run from 100.125; one of 20 arriving during their
    decode run fits exactly, so the run ends at its next step boundary, where it joins (it does
    not wait for the first finish)."""
    from test_sim_properties import small_profile_dict

    d = small_profile_dict()
    d["models"][0]["max_tokens_in_flight"] = 100
    reqs = [Request(arrival_s=t, model="small", prompt_tokens=p, output_tokens=o, request_id=i)
            for i, (t, p, o) in enumerate([(100.0, 20, 30), (100.0625, 10, 20), (100.5, 5, 15)])]
    rec = _warm(d, reqs)
    # the step of the joiner ended at 100.3125; decode steps of 1/16 s follow: 100.5 is a
    # boundary, so the next is 100.5625, where request 2 joins (first token a step later)
    assert rec[2].first_token_s == 100.5625 + 0.125 + 0.0625 < rec[1].finish_s
