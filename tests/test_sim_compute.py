"""A GPU's compute shared by co-located instances (sim/compute.py): processor sharing,
checked against an independent exact calculation, and its effect on a run."""

from __future__ import annotations

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim_properties import SMALL, examples, run_sim, time_limit

from sim.compute import GpuCompute
from sim.config import SimConfig
from traces.request import Request


def processor_sharing(jobs: list[tuple[float, float]], slots: int = 1) -> list[float]:
    """Exact finish times of (arrival, work) jobs on a server that runs `slots` jobs at full
    speed and shares itself equally among more (no simpy)."""
    order = sorted(range(len(jobs)), key=lambda i: jobs[i][0])
    finish = [0.0] * len(jobs)
    active: dict[int, float] = {}  # job -> work left
    t = 0.0
    k = 0
    while k < len(order) or active:
        next_arrival = jobs[order[k]][0] if k < len(order) else float("inf")
        if active:
            rate = min(1.0, slots / len(active))
            least = min(active.values())
            t_end = t + least / rate
            if t_end <= next_arrival:
                for i in list(active):
                    active[i] -= least
                    if active[i] <= 1e-12:
                        finish[i] = t_end
                        del active[i]
                t = t_end
                continue
            for i in active:
                active[i] -= (next_arrival - t) * rate
        t = next_arrival
        while k < len(order) and jobs[order[k]][0] == t:
            active[order[k]] = jobs[order[k]][1]
            k += 1
    return finish


def run_compute(jobs: list[tuple[float, float]], slots: int = 1,
                t0: float = 0.0) -> tuple[list[float], GpuCompute, simpy.Environment]:
    """Finish times (from `t0`) of (start, work) jobs on one GpuCompute."""
    env = simpy.Environment(initial_time=t0)
    gpu = GpuCompute(env, slots)
    done = [0.0] * len(jobs)

    def job(i, start, work):
        yield env.timeout(start)
        yield from gpu.work(work)
        done[i] = env.now - t0

    for i, (start, work) in enumerate(jobs):
        env.process(job(i, start, work))
    with time_limit(10.0):
        env.run()
    return done, gpu, env


def test_two_equal_steps_take_twice_as_long():
    done, gpu, _ = run_compute([(0.0, 1.0), (0.0, 1.0)])
    assert done == [2.0, 2.0]
    assert gpu.work_done_s == pytest.approx(2.0)


def test_a_late_step_slows_the_first_only_while_they_overlap():
    # job 0 works alone for 1 s (1 s of work left), then both at half speed: job 1 (0.5 s
    # of work) ends at 2; job 0 has 0.5 s left and ends at 2.5 alone.
    done, _, _ = run_compute([(0.0, 2.0), (1.0, 0.5)])
    assert done == pytest.approx([2.5, 2.0], abs=1e-12)


def test_two_slots_run_two_steps_at_full_speed_and_share_among_three():
    env = simpy.Environment()
    gpu = GpuCompute(env, slots=2)
    done = {}

    def job(i, work):
        yield from gpu.work(work)
        done[i] = env.now

    for i, w in enumerate([1.0, 1.0, 1.0]):
        env.process(job(i, w))
    env.run()
    # three steps on two slots: each at 2/3 speed, all end at 1.5
    assert [done[i] for i in range(3)] == pytest.approx([1.5, 1.5, 1.5], abs=1e-12)
    assert gpu.work_done_s == pytest.approx(3.0)
    done.clear()
    for i, w in enumerate([1.0, 0.5]):
        env.process(job(i, w))
    env.run()
    assert done == {0: pytest.approx(2.5), 1: pytest.approx(2.0)}  # two fit: no slowdown
    with pytest.raises(ValueError, match="slots"):
        GpuCompute(env, slots=0.5)


def test_zero_work_ends_at_once():
    done, gpu, _ = run_compute([(1.5, 0.0)])
    assert done == [1.5] and gpu.work_done_s == 0.0


JOBS = st.lists(
    st.tuples(st.sampled_from([0.0, 0.0, 0.1, 0.25, 1.0, 1.3, 4.0]),
              st.sampled_from([1e-4, 0.01, 0.0625, 0.3, 1.0, 2.5])),
    min_size=1, max_size=12,
)


@settings(max_examples=examples(200), deadline=None)
@given(jobs=JOBS, slots=st.sampled_from([1, 1, 2, 3]))
def test_matches_exact_processor_sharing(jobs, slots):
    done, gpu, env = run_compute(jobs, slots)
    expect = processor_sharing(jobs, slots)
    assert done == pytest.approx(expect, rel=1e-9, abs=1e-9)
    # work is conserved, and the GPU never did more than one second of work per second
    assert gpu.work_done_s == pytest.approx(sum(w for _, w in jobs), rel=1e-9)
    assert not gpu.steps
    for (start, work), end in zip(jobs, done, strict=True):
        assert end >= start + work - 1e-12


@settings(max_examples=examples(100), deadline=None)
@given(jobs=JOBS, slots=st.sampled_from([1, 2, 3]), t0=st.sampled_from([2.0**14, 1e5, 172_800.0, 3e6]))
def test_late_in_a_long_run_float_drift_cannot_stall_the_clock(jobs, slots, t0):
    # Regression: at ~1e5 s, rounding left slivers of work that `now + sliver` rounded
    # away; the step was rescheduled at the same instant forever.
    done, gpu, _ = run_compute(jobs, slots, t0)
    assert done == pytest.approx(processor_sharing(jobs, slots), rel=1e-6, abs=1e-6)
    assert not gpu.steps


def test_a_day_into_the_trace_co_located_instances_still_finish():
    reqs = [Request(arrival_s=a, model=m, prompt_tokens=p, output_tokens=o, request_id=i)
            for i, (a, m, p, o) in enumerate([(100000.75382687227, "m1", 228, 51),
                                              (100002.07598652216, "m0", 32, 40),
                                              (100002.92537053702, "m2", 128, 59)])]
    _, recs, _ = run_sim(reqs, SMALL, fidelity="iteration", keepalive="fixed[ttl=100]")
    assert sorted(r.request_id for r in recs) == [0, 1, 2]


def _two_models_at_once(fidelity: str, sharing: str):
    reqs = [Request(arrival_s=0.0, model=m, prompt_tokens=100, output_tokens=20, request_id=i)
            for i, m in enumerate(["m0", "m1"])]
    _, recs, sim = run_sim(reqs, SMALL, fidelity=fidelity, compute_sharing=sharing, keepalive="fixed[ttl=100]")
    return {r.request_id: r for r in recs}, sim


@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_packing_two_models_on_one_gpu_slows_both_down(fidelity):
    shared, sim = _two_models_at_once(fidelity, "time_slice")
    alone, _ = _two_models_at_once(fidelity, "none")
    assert shared[0].gpu == shared[1].gpu == 0
    # the same cold start; the same start of compute; slower tokens when the GPU is shared
    assert shared[1].finish_s > alone[1].finish_s
    # A GPU that can hold two instances makes request fidelity serve on events (the closed
    # form cannot slow down what it has scheduled), so both fidelities are exact here.
    assert sim.fidelity == "iteration"
    assert shared[0].finish_s > alone[0].finish_s
    # both decode in lockstep at half speed: twice the time per output token
    for i in (0, 1):
        assert shared[i].tpot_s == pytest.approx(2 * alone[i].tpot_s, rel=1e-9)
    assert sim.gpus[0].compute.work_done_s == pytest.approx(
        sum(alone[i].finish_s - alone[i].first_token_s + 0.125 for i in (0, 1)), rel=1e-9)


def test_one_instance_per_gpu_is_unaffected():
    reqs = [Request(arrival_s=float(t), model="m0", prompt_tokens=100, output_tokens=8, request_id=t)
            for t in range(5)]
    for fidelity in ("request", "iteration"):
        a = run_sim(reqs, SMALL, fidelity=fidelity, compute_sharing="time_slice")[1]
        b = run_sim(reqs, SMALL, fidelity=fidelity, compute_sharing="none")[1]
        # time_slice on a GPU that can hold two instances steps literally; none uses the
        # event-light form at request fidelity: the same times up to float rounding
        assert [x for r in a for x in (r.ttft_s, r.finish_s)] == pytest.approx(
            [x for r in b for x in (r.ttft_s, r.finish_s)], rel=1e-12)


def test_bad_sharing_name_is_refused():
    with pytest.raises(ValueError, match="compute_sharing"):
        SimConfig(compute_sharing="mps")
