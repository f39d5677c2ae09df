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


def both_batches(requests, profile, nodes=1, gpus=1, **specs):
    """{batches: (summary row, {request_id: record}, simulator)} for the Python and compiled loops."""
    out = {}
    for batches in ("python", "compiled"):
        row, records, sim = run_sim(requests, profile, nodes, gpus, "request", compute_sharing="none",
                                    batches=batches, **specs)
        assert len(records) == len(requests)
        out[batches] = (row, {r.request_id: r for r in records}, sim)
    return out


def same_float(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def check_equal(runs) -> None:
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
        if isinstance(x, float):
            # sums over records taken in another order at an instant shared by several
            # instances may differ in the last bits
            assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12) or same_float(x, y), (key, x, y)
        else:
            assert x == y, (key, x, y)
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


def test_without_numba_the_loops_run_in_python(monkeypatch):
    """A machine where numba cannot be imported runs the Python loops (the same records) and says so."""
    import sys

    import sim.simulator as simulator

    monkeypatch.setitem(sys.modules, "sim.compiled_batch", None)  # `import` raises ImportError
    monkeypatch.setattr(simulator, "_NO_NUMBA_SAID", False)
    reqs = [Request(arrival_s=0.1 * i, model="small", prompt_tokens=8, output_tokens=40, request_id=i)
            for i in range(20)]
    with pytest.warns(RuntimeWarning, match="compiled batches are unavailable"):
        _, records, sim = run_sim(reqs, batches="compiled")
    assert sim.batches is None
    monkeypatch.undo()
    _, compiled, sim_c = run_sim(reqs, batches="compiled")
    assert sim_c.batches is not None
    assert sorted(records, key=lambda r: r.request_id) == sorted(compiled, key=lambda r: r.request_id)


def test_where_numba_cannot_compile_the_python_loops_serve_and_say_so(monkeypatch):
    import sim.compiled_batch as compiled_batch
    import sim.simulator as simulator

    def broken():
        raise RuntimeError("no locator available")  # what numba raises where it cannot cache

    monkeypatch.setattr(compiled_batch, "ready", broken)
    monkeypatch.setattr(simulator, "_NO_NUMBA_SAID", False)
    reqs = [Request(arrival_s=0.05 * i, model="small", prompt_tokens=8, output_tokens=40, request_id=i)
            for i in range(30)]
    with pytest.warns(RuntimeWarning, match="unavailable.*no locator"):
        _, records, sim = run_sim(reqs, batches="compiled")
    assert sim.batches is None
    _, python, _ = run_sim(reqs, batches="python")
    assert sorted(records, key=lambda r: r.request_id) == sorted(python, key=lambda r: r.request_id)

