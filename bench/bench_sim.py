"""Simulator speed: simulated requests per second at both fidelities, and events per request.

Targets (issue "Scale"): >= 1M simulated requests/s per core at `request` fidelity on
warm-dominated traffic, end to end from the generator to the summary with records off, and
>= 300k/s end to end on the default trace; memory flat in the number of requests; >= 50k
requests/s at `iteration` fidelity (Vidur does ~420 here). The end-to-end figures are printed
as ratios to the target and to two baselines run in the same process: the same M/M/8 queue in
raw SimPy (one process per customer) and as a bare Python heap. The in-loop figures (a list of
requests built beforehand, `--rate`) show the simulator alone. Times are process CPU time, the
best of `--repeat` runs (the development machines are shared: wall time is noise). The last
line is machine-readable key=value pairs. Run:
    python bench/bench_sim.py [--requests N] [--iteration-requests N] [--rate R] [--repeat K] [--router R]
                              [--e2e-scale X] [--baseline-customers N]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import time
from collections import deque

import numpy as np
import simpy
from figures import print_figures
from rss import current_rss_mb, peak_rss_mb

from contracts.request import Request
from sim.config import SimConfig
from sim.metrics import RunMetrics
from sim.policyset import PolicySet
from sim.profile import load_profile
from sim.simulator import Simulator
from traces.registry import open_trace

VIDUR_REQ_PER_S = 420.0  # docs/design.md: Vidur on these machines
TARGET_REQUEST_FIDELITY = 1_000_000.0
TARGET_ITERATION_FIDELITY = 50_000.0
TARGET_DEFAULT_TRACE = 300_000.0


def workload(n: int, models: int, rate: float, seed: int) -> list[Request]:
    """Poisson arrivals, Zipf-like model popularity, LLM-like token lengths."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    times = np.cumsum(gaps)
    weights = 1.0 / np.arange(1, models + 1)
    which = rng.choice(models, size=n, p=weights / weights.sum())
    prompts = rng.lognormal(6.0, 1.0, n).astype(int).clip(1, 8000)
    outputs = rng.lognormal(4.5, 0.8, n).astype(int).clip(1, 2000)
    return [Request(float(t), f"model-{m}", int(p), int(o), i)
            for i, (t, m, p, o) in enumerate(zip(times, which, prompts, outputs, strict=True))]


def run(reqs: list[Request], fidelity: str, staging: str, sharing: str = "time_slice",
        repeat: int = 1, router: str = "least_loaded", batches: str = "compiled") -> tuple[float, dict, int]:
    """(CPU seconds of the fastest of `repeat` runs, its summary row, events it processed: SimPy's
    and, with compiled batches, the batch loops' events the kernel processed)."""
    best = None
    for _ in range(repeat):
        profile = load_profile()
        policies = PolicySet.from_specs(staging=staging, keepalive="fixed", router=router)
        metrics = RunMetrics(policies.label, 5.0)
        sim = Simulator(profile, policies, SimConfig(nodes=2, gpus_per_node=4, fidelity=fidelity,
                                                     compute_sharing=sharing, batches=batches), metrics)
        steps = [0]
        step = sim.env.step

        def counted(step=step, steps=steps) -> None:
            steps[0] += 1
            step()

        sim.env.step = counted  # type: ignore[method-assign]
        t0 = time.process_time()
        row = sim.run(iter(reqs))
        dt = time.process_time() - t0
        if sim.batches is not None:
            steps[0] += sim.batches.events
        if best is None or dt < best[0]:
            best = (dt, row, steps[0])
    return best


def mmc_draws(n: int, servers: int, utilisation: float, seed: int) -> tuple[list[float], list[float]]:
    """Interarrival gaps and service times of an M/M/c queue at `utilisation` (mean service 1 s)."""
    rng = np.random.default_rng(seed)
    return rng.exponential(1.0 / (utilisation * servers), n).tolist(), rng.exponential(1.0, n).tolist()


def mmc_simpy(gaps: list[float], service: list[float], servers: int) -> tuple[float, float]:
    """(customers per CPU second, mean wait in queue) of the M/M/c queue in raw SimPy: one
    process per customer."""
    env = simpy.Environment()
    desk = simpy.Resource(env, capacity=servers)
    waited = [0.0]

    def customer(s: float):
        arrived = env.now
        with desk.request() as turn:
            yield turn
            waited[0] += env.now - arrived
            yield env.timeout(s)

    def source():
        for g, s in zip(gaps, service, strict=True):
            yield env.timeout(g)
            env.process(customer(s))

    env.process(source())
    t0 = time.process_time()
    env.run()
    return len(gaps) / (time.process_time() - t0), waited[0] / len(gaps)


def mmc_heap(gaps: list[float], service: list[float], servers: int) -> tuple[float, float]:
    """(customers per CPU second, mean wait in queue) of the same queue as a bare heap of
    departures and a FIFO of the customers waiting (their arrival and service time)."""
    t0 = time.process_time()
    departures: list[float] = []
    waiting: deque[tuple[float, float]] = deque()
    free = servers
    now = 0.0
    waited = 0.0
    # A last arrival at infinity (service None) lets everyone still there leave and counts their waits.
    for g, s in itertools.chain(zip(gaps, service, strict=True), ((math.inf, None),)):
        now += g
        while departures and departures[0] <= now:  # everyone due by this arrival leaves
            t = heapq.heappop(departures)
            if waiting:
                arrived, s_next = waiting.popleft()
                waited += t - arrived
                heapq.heappush(departures, t + s_next)
            else:
                free += 1
        if s is None:
            break
        if free:
            free -= 1
            heapq.heappush(departures, now + s)
        else:
            waiting.append((now, s))
    return len(gaps) / (time.process_time() - t0), waited / len(gaps)


def end_to_end(trace_spec: str, duration_s: float, options: dict) -> tuple[float, dict, list[float]]:
    """(requests per CPU second, summary, RSS every 2^16 requests) of a run as `python -m sim`
    makes it: the trace opened and streamed, the default cluster and router, records off."""
    t0 = time.process_time()
    trace = open_trace(trace_spec, duration_s=duration_s, seed=0, **options)
    policies = PolicySet.from_specs(staging="full", keepalive="fixed")
    sim = Simulator(load_profile(), policies, SimConfig(), RunMetrics(policies.label, 5.0))
    samples: list[float] = []

    def progress(n: int) -> None:
        if not n % (1 << 16):
            samples.append(round(current_rss_mb(), 1))

    row = sim.run(iter(trace), on_progress=progress, horizon_s=duration_s)
    return row["requests"] / (time.process_time() - t0), row, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--iteration-requests", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=20.0,
                    help="arrivals per second at request fidelity (default 20: busy, not overloaded; at 200 "
                         "the 8 GPUs cannot keep up and queues grow without bound; at 1 most requests "
                         "meet a warm instance)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure; the fastest counts (default 1)")
    ap.add_argument("--e2e-scale", type=float, default=20.0,
                    help="end to end, warm-dominated: the generator's 8 functions for a day at this multiple of "
                         "their rates (default 20: about 215k requests)")
    ap.add_argument("--e2e-hours", type=float, default=24.0,
                    help="end to end on the default trace: hours of it (default 24)")
    ap.add_argument("--baseline-customers", type=int, default=200_000,
                    help="customers of the M/M/8 baselines (default 200,000)")
    ap.add_argument("--router", default="least_loaded",
                    help="router spec (default least_loaded: the router of the figures published before "
                         "expected_wait became the run's default)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    print(f"{'fidelity':10s} {'staging':16s} {'requests':>9s} {'seconds':>8s} {'req/s':>9s} {'events/req':>10s}  ratio"
          f"  (TTFT p50 / p99)")
    reqs = workload(args.requests, models=8, rate=args.rate, seed=1)
    figures = {}
    for staging in ("full", "progressive"):
        rates = {}
        # compiled batch loops (the default) and the Python loops (--batches python): the same records
        for batches in ("compiled", "python"):
            dt, row, events = run(reqs, "request", staging, repeat=args.repeat, router=args.router, batches=batches)
            rate = rates[batches] = row["requests"] / dt
            key = f"request_{staging}" + ("" if batches == "compiled" else "_python_batches")
            figures[f"{key}_req_per_s"] = round(rate)
            figures[f"{key}_events_per_req"] = round(events / row["requests"], 3)
            label = staging if batches == "compiled" else f"{staging} (py)"
            print(f"{'request':10s} {label:16s} {row['requests']:9d} {dt:8.2f} {rate:9.0f} "
                  f"{events / row['requests']:10.3f}  {rate / TARGET_REQUEST_FIDELITY:.3f} x the 1M/s target"
                  f"  ({row['ttft_p50_s']:.3f} / {row['ttft_p99_s']:.3f} s)")
        figures[f"request_{staging}_compiled_batches_speedup"] = round(rates["compiled"] / rates["python"], 3)
        print(f"{'':27s} compiled batch loops: {rates['compiled'] / rates['python']:.2f} x the Python loops' "
              f"requests per CPU second")
    reqs = workload(args.iteration_requests, models=8, rate=20.0, seed=2)
    for staging in ("full", "progressive"):
        # "none" shows what sharing a GPU's compute costs the simulator (one more event per step)
        for sharing in ("time_slice", "none"):
            dt, row, events = run(reqs, "iteration", staging, sharing, repeat=args.repeat, router=args.router)
            rate = row["requests"] / dt
            name = f"iteration{'' if sharing == 'time_slice' else '*'}"
            figures[f"iteration_{staging}_{sharing}_req_per_s"] = round(rate)
            figures[f"iteration_{staging}_{sharing}_events_per_req"] = round(events / row["requests"], 3)
            print(f"{name:10s} {staging:16s} {row['requests']:9d} {dt:8.2f} {rate:9.0f} {events / row['requests']:10.3f}"
                  f"  {rate / TARGET_ITERATION_FIDELITY:.2f} x the 50k/s target, {rate / VIDUR_REQ_PER_S:.0f} x Vidur"
                  f" ({events / dt:,.0f} events/s)")
    print("iteration*: --compute-sharing none (each instance at full speed)")

    # End to end, and the two baselines in this process.
    gaps, service = mmc_draws(args.baseline_customers, 8, 0.8, seed=3)
    simpy_rate = max(mmc_simpy(gaps, service, 8)[0] for _ in range(args.repeat))
    heap_rate = max(mmc_heap(gaps, service, 8)[0] for _ in range(args.repeat))
    print(f"\nbaselines, M/M/8 at utilisation 0.8, {args.baseline_customers} customers: raw SimPy "
          f"{simpy_rate:,.0f}/s, bare heap {heap_rate:,.0f}/s")
    figures.update(mm8_simpy_customers_per_s=round(simpy_rate), mm8_heap_customers_per_s=round(heap_rate))
    cases = (("warm", "synthetic", 86400.0, {"rate_scale": args.e2e_scale}, TARGET_REQUEST_FIDELITY,
              f"the generator's 8 functions, 1 day x{args.e2e_scale:g} (warm-dominated)"),
             ("default", "azure_functions", args.e2e_hours * 3600.0, {}, TARGET_DEFAULT_TRACE,
              f"the default trace, {args.e2e_hours:g} h"))
    print(f"{'end to end':10s} {'requests':>9s} {'req/s':>9s} {'target':>7s} {'x SimPy':>8s} {'x heap':>7s} "
          f"{'cold %':>7s} {'RSS MB first/last':>18s}  workload")
    for key, spec, duration, options, target, what in cases:
        rate, row, rss = end_to_end(spec, duration, options)
        for _ in range(args.repeat - 1):
            rate = max(rate, end_to_end(spec, duration, options)[0])
        first_last = f"{rss[0]:.0f}/{rss[-1]:.0f}" if rss else "-"
        print(f"{key:10s} {row['requests']:9d} {rate:9.0f} {rate / target:6.3f}x {rate / simpy_rate:7.2f}x "
              f"{rate / heap_rate:6.3f}x {row['cold_start_pct']:7.2f} {first_last:>18s}  {what}")
        figures.update({f"request_e2e_{key}_req_per_s": round(rate), f"request_e2e_{key}_requests": row["requests"],
                        f"request_e2e_{key}_ratio_to_target": round(rate / target, 4),
                        f"request_e2e_{key}_ratio_to_simpy": round(rate / simpy_rate, 3),
                        f"request_e2e_{key}_ratio_to_heap": round(rate / heap_rate, 4)})
        if rss:
            figures[f"request_e2e_{key}_rss_growth_mb"] = round(rss[-1] - rss[0], 1)
    print(f"targets: warm-dominated {TARGET_REQUEST_FIDELITY:,.0f}/s, default trace {TARGET_DEFAULT_TRACE:,.0f}/s "
          f"(end to end, one core); RSS sampled every 65,536 requests")
    figures["peak_mem_mb"] = round(peak_rss_mb())
    print_figures(figures)


if __name__ == "__main__":
    main()
