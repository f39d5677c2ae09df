"""Serving at two fidelities.

`request`: closed form. An instance has `capacity` slots; a request takes the earliest
free slot (a heap of finish times is an exact FCFS multi-server queue), its first token
comes one prefill later, and every later token one decode step at the concurrency it
found. No event is scheduled: a warm request costs a few heap operations.

`iteration`: continuous batching. One event per batch step: waiting requests join the
batch (up to the batch size and the KV tokens in flight), the step takes the prefill of
the new prompts plus one decode step of the running batch, then every running request
gains a token at the quality of the stage the instance was at when the step began.

Instances packed on one GPU share its compute (`sim/compute.py`): each batch step is a
job on the GPU's processor-sharing server. The closed form cannot slow down requests it has
already scheduled, so a run whose GPUs can hold more instances than compute slots serves
at iteration fidelity throughout (the Simulator decides, and the summary says so).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from contracts.request import Request
from sim.instance import Instance, InstanceState, Live, Partial
from sim.records import RequestRecord

if TYPE_CHECKING:  # the interface only: importing the simulator here would be circular
    from sim.core import SimCore


def served_record(sim: SimCore, inst: Instance, req: Request, *, first_token_s: float, finish_s: float, tpot_s: float,
                  cold: bool, load_wait_s: float, stage: int, quality: float) -> RequestRecord:
    """The record of a request `inst` served: the one place a served record is built."""
    return RequestRecord(
        policy=sim.label, request_id=req.request_id, model=req.model, function=req.function,
        arrival_s=req.arrival_s, first_token_s=first_token_s, finish_s=finish_s,
        ttft_s=first_token_s - req.arrival_s, tpot_s=tpot_s if req.output_tokens > 1 else float("nan"),
        prompt_tokens=req.prompt_tokens, output_tokens=req.output_tokens, cold=cold, load_wait_s=load_wait_s,
        stage_at_first_token=stage, quality=quality, rejected=False, reason="", instance_id=inst.id,
        node=inst.node_ref.index, gpu=inst.gpu_ref.index,
    )


def serve_closed_form(sim: SimCore, inst: Instance, req: Request, cold: bool, load_wait_s: float,
                      prefill_fraction: float = 1.0) -> None:
    """Serve `req` on `inst` now (request fidelity) and record it, or park it as partial.

    Only used where the instance computes alone: a run whose GPUs can be shared by more
    instances than they have compute slots serves at iteration fidelity (`Simulator`).
    """
    now = sim.env.now
    slots = inst.slots
    while slots and slots[0] <= now:
        heapq.heappop(slots)
    if len(slots) >= inst.capacity:
        start = heapq.heappop(slots)
        heapq.heappush(inst.queued, start)  # it waits for that slot: routing and admission see it
    else:
        start = now
    shape = inst.shape
    scale = inst.latency_scale
    tpot = shape.decode(len(slots) + 1) * scale
    first = start + shape.prefill(req.prompt_tokens) * scale * prefill_fraction
    finish = first + (req.output_tokens - 1) * tpot
    heapq.heappush(slots, finish)
    heapq.heappush(inst.owed, finish)
    sim.mark_busy(inst, finish)
    if inst.state is InstanceState.FULL:
        sim.emit(served_record(sim, inst, req, first_token_s=first, finish_s=finish, tpot_s=tpot, cold=cold,
                               load_wait_s=load_wait_s, stage=inst.stage, quality=1.0))
    else:
        inst.partials.append(Partial(req, cold, load_wait_s, first, finish, tpot, inst.stage))


def finalize_partials(sim: SimCore, inst: Instance, everything: bool) -> None:
    """Record partial-stage requests whose stage history is now known up to their finish."""
    now = sim.env.now
    keep = []
    for p in inst.partials:
        if not everything and p.finish_s > now:
            keep.append(p)
            continue
        q = inst.quality_of(p.first_token_s, p.tpot_s, p.req.output_tokens)
        sim.emit(served_record(sim, inst, p.req, first_token_s=p.first_token_s, finish_s=p.finish_s,
                               tpot_s=p.tpot_s, cold=p.cold, load_wait_s=p.load_wait_s, stage=p.stage, quality=q))
    inst.partials = keep


def enqueue_iteration(sim: SimCore, inst: Instance, req: Request, cold: bool, load_wait_s: float,
                      prefill_fraction: float = 1.0) -> None:
    """Add a request to the instance's batch queue and make sure its batch loop runs."""
    inst.queue.append(Live(req, cold, load_wait_s, prefill_fraction))
    sim.outstanding += 1
    if not inst.loop_running and inst.can_serve:
        inst.loop_running = True
        sim.env.process(batch_loop(sim, inst))


def batch_loop(sim: SimCore, inst: Instance):
    """Continuous batching on one instance until it has nothing left to do."""
    env = sim.env
    shape = inst.shape
    cap_tokens = shape.max_tokens_in_flight
    refill = inst.plan.refill
    try:
        while (inst.queue or inst.running) and inst.can_serve:
            running = inst.running
            decoding = len(running)
            prompt_tokens = 0
            prefill_work = 0.0  # prompt tokens still to compute (pipelined loads did the rest)
            stage = inst.stage
            if refill and decoding and stage != inst.stepped_stage:
                # A stage bound since the last step: its layers have no K/V for the tokens
                # so far, so every running request re-runs the prefill over its context
                # (as the engine does) instead of a decode step.
                prompt_tokens = prefill_work = sum(lv.req.prompt_tokens + lv.generated for lv in running)
                decoding = 0
                sim.usage.of(inst.model).refills += len(running)
            inst.stepped_stage = stage
            # New requests join the running list before the step, so that nothing in flight
            # is ever invisible to keep-alive or eviction.
            while inst.queue and len(running) < inst.capacity:
                live = inst.queue[0]
                need = live.req.prompt_tokens + live.req.output_tokens
                if inst.tokens_in_flight + need > cap_tokens and running:
                    break
                inst.queue.popleft()
                inst.tokens_in_flight += need
                prompt_tokens += live.req.prompt_tokens
                prefill_work += live.req.prompt_tokens * live.prefill_fraction
                running.append(live)
            scale = inst.latency_scale
            step = 0.0
            if prompt_tokens:
                step += shape.prefill(prompt_tokens) * scale * (prefill_work / prompt_tokens)
            if decoding:
                step += shape.decode(decoding) * scale
            # The step computes with the layers bound when it starts: its tokens have that
            # stage's quality even if a later stage binds while it runs.
            q = inst.quality
            sim.mark_busy(inst, env.now + step)
            compute = inst.gpu_ref.compute
            if compute is None:
                yield env.timeout(step)
            else:
                yield from compute.work(step)
            sim.mark_busy(inst, env.now)  # later than planned if the GPU was shared
            still = []
            for live in running:
                if live.generated == 0:
                    live.first_token_s = env.now
                    live.stage = stage
                live.generated += 1
                live.quality_sum += q
                if live.generated >= live.req.output_tokens:
                    _finish_live(sim, inst, live)
                else:
                    still.append(live)
            inst.running = still
    finally:
        inst.loop_running = False
    inst.idle_signal.fire()  # keep-alive waits for this


def _finish_live(sim: SimCore, inst: Instance, live: Live) -> None:
    now = sim.env.now
    req = live.req
    out = req.output_tokens
    inst.tokens_in_flight -= req.prompt_tokens + out
    sim.outstanding -= 1
    tpot = (now - live.first_token_s) / (out - 1) if out > 1 else float("nan")
    sim.emit(served_record(sim, inst, req, first_token_s=live.first_token_s, finish_s=now, tpot_s=tpot,
                           cold=live.cold, load_wait_s=live.load_wait_s, stage=live.stage,
                           quality=live.quality_sum / live.generated))
