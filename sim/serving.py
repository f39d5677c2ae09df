"""Serving: continuous batching, computed two ways that agree.

The model (one for both fidelities): an instance runs batch steps back to back. At each
step boundary waiting requests join the batch (up to the batch size and the KV tokens in
flight); the step takes the prefill of the joining prompts plus one decode step of the
running batch (a prefill over the context instead, for the running requests, when a
progressive stage bound since the last step: a refill); then every running request gains
a token at the quality of the stage the instance was at when the step began.

`iteration` fidelity computes it literally: one event per batch step, for replay against
hardware. `request` fidelity computes the same steps with far fewer events:
- a request alone on a fully loaded, idle instance needs none: its first token comes one
  prefill after it arrives and its others one batch-of-one decode step apart (`Solo`);
- as soon as a second request meets it, the solo request joins the batch loop at the step
  boundary the literal loop would have reached, and the loop jumps over a step and the run
  of identical decode steps after it (same batch, no join, no stage change) in one event,
  cut short at the next boundary when a request arrives or a stage binds.
Both compute the boundaries of a run of identical steps as `origin + n * step`
(`sim/stepclock.py`), so they reach the same floats: the two fidelities give the same
per-request times and qualities; tests check it.

Instances packed on one GPU share its compute (`sim/compute.py`): each batch step is a job
on the GPU's processor-sharing server. A run whose GPUs can hold more instances than compute
slots therefore steps literally at both fidelities (the Simulator decides; the summary's
`fidelity` column says so).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from contracts.request import Request
from sim.instance import DecodeRun, Instance, InstanceState, Live, Solo
from sim.records import RequestRecord
from sim.stepclock import steps_begun, timeout_at

if TYPE_CHECKING:  # the interface only: importing the simulator here would be circular
    from sim.core import SimCore


_NAN = float("nan")

def served_record(sim: SimCore, inst: Instance, req: Request, first_token_s: float, finish_s: float, tpot_s: float,
                  cold: bool, load_wait_s: float, stage: int, quality: float, woke: bool = False) -> RequestRecord:
    """The record of a request `inst` served: the one place a served record is built.

    Performance: positional arguments here and to the record (a keyword call of its 22 fields
    costs about three times as much, once per request).
    """
    arrival = req.arrival_s
    out = req.output_tokens
    return RequestRecord(
        sim.label, req.request_id, req.model, req.function, arrival, first_token_s, finish_s,
        first_token_s - arrival, tpot_s if out > 1 else _NAN, req.prompt_tokens, out, cold, load_wait_s,
        stage, quality, False, "", inst.id, inst.node_ref.index, inst.gpu_ref.index, req.tenant, woke,
    )


def serve(sim: SimCore, inst: Instance, req: Request, cold: bool, load_wait_s: float,
          prefill_fraction: float = 1.0, woke: bool = False) -> None:
    """Give `req` to `inst`, which can serve, at the run's fidelity (`woke`: it waited for a wake)."""
    if sim.iteration:
        enqueue_iteration(sim, inst, req, cold, load_wait_s, prefill_fraction, woke)
        return
    now = sim.env.now
    solo = inst.solo
    if solo is not None:
        if solo.finish_s <= now:
            flush_solo(sim, inst)
            solo = None
        elif solo.start_s == now and solo.epoch == sim.events_processed:
            # It started this instant and no event has run since: the literal loop would not have
            # begun its first step yet (its process starts on the next event): both share it.
            inst.set_solo(None)
            enqueue_iteration(sim, inst, solo.req, solo.cold, solo.load_wait_s, woke=solo.woke)
            solo = None
    if solo is None:
        if inst.state is InstanceState.FULL and not inst.loop_running and prefill_fraction == 1.0:
            scale = inst.latency_scale
            shape = inst.shape
            first = now + shape.prefill(req.prompt_tokens) * scale  # tables remember their answers
            step = shape.decode(1) * scale
            finish = first + (req.output_tokens - 1) * step
            inst.set_solo(Solo(req, cold, load_wait_s, first, finish, step, inst.stage, inst.quality, now,
                               sim.events_processed, woke))
            sim.mark_busy(inst, finish)
            return
    else:
        _solo_joins_the_batch(sim, inst, now)
    enqueue_iteration(sim, inst, req, cold, load_wait_s, prefill_fraction, woke)


def flush_solo(sim: SimCore, inst: Instance) -> None:
    """Record the instance's solo request (its times are final once nobody joined it)."""
    s = inst.solo
    if s is None:
        return
    inst.set_solo(None)
    sim.emit(served_record(sim, inst, s.req, s.first_token_s, s.finish_s, s.step_s, s.cold, s.load_wait_s,
                           s.stage, s.quality, s.woke))


def _solo_joins_the_batch(sim: SimCore, inst: Instance, now: float) -> None:
    """A second request met the solo one: hand it to the batch loop at the next step boundary.

    Its prefill step ends at its first token; its decode steps end `step_s` apart after it.
    A step that ends exactly now has been followed by the next one already (the literal
    loop starts it before a request arriving at that instant is handled).
    """
    s = inst.solo
    inst.set_solo(None)
    out = s.req.output_tokens
    if now < s.first_token_s:
        boundary, tokens = s.first_token_s, 1
    else:
        m = steps_begun(s.first_token_s, s.step_s, now) if s.step_s > 0 else out
        tokens = min(out, 1 + m)
        boundary = s.finish_s if tokens >= out else s.first_token_s + m * s.step_s
    sim.outstanding += 1
    inst.loop_running = True
    batches = sim.batches
    if batches is not None:
        batches.resume(inst, s.req, s.cold, s.load_wait_s, s.woke, s.first_token_s, s.stage, boundary, tokens,
                       s.quality, now)
        return
    live = Live(s.req, s.cold, s.load_wait_s, first_token_s=s.first_token_s, stage=s.stage, woke=s.woke)
    inst.tokens_in_flight += s.req.prompt_tokens + out
    inst.loop_process = sim.env.process(batch_loop(sim, inst, resume=(live, boundary, tokens, s.quality)))


def gates_changed(sim: SimCore, inst: Instance) -> None:
    """What the instance's steps compute changed now (`Instance.set_degraded`): a solo
    request's later steps are no longer the ones its closed form assumed, so it joins the
    batch loop at its next step boundary (a run under way was cut by the change itself)."""
    s = inst.solo
    if s is None:
        return
    if s.finish_s <= sim.env.now:
        flush_solo(sim, inst)
    else:
        _solo_joins_the_batch(sim, inst, sim.env.now)


def finalize(sim: SimCore, inst: Instance) -> None:
    """Record whatever the instance has served but not recorded (the run ends or it is evicted)."""
    flush_solo(sim, inst)


def enqueue_iteration(sim: SimCore, inst: Instance, req: Request, cold: bool, load_wait_s: float,
                      prefill_fraction: float = 1.0, woke: bool = False) -> None:
    """Add a request to the instance's batch queue and make sure its batch loop runs."""
    batches = sim.batches
    if batches is not None:  # request fidelity's batches are compiled (sim/compiled_batch.py)
        start = not inst.loop_running and inst.can_serve
        if start:
            inst.loop_running = True
        sim.outstanding += 1
        batches.enqueue(inst, req, cold, load_wait_s, prefill_fraction, woke, sim.env.now, start)
        return
    queue = inst.queue
    # `woke` by keyword only where it is set: a keyword call costs more (once per request)
    inst.enqueue(Live(req, cold, load_wait_s, prefill_fraction, woke=True) if woke
                 else Live(req, cold, load_wait_s, prefill_fraction))
    sim.outstanding += 1
    if not inst.loop_running and inst.can_serve:
        inst.loop_running = True
        inst.loop_process = sim.env.process(batch_loop(sim, inst))
    elif inst.segment is not None and len(queue) == 1 and _fits(inst, req):
        inst.segment.cut(sim.env.now)  # the run ends at its next boundary, where this request joins


def _fits(inst: Instance, req: Request) -> bool:
    """Whether `req`, first in the queue, joins the running batch at its next step (the rule
    of `batch_loop`'s join; until the batch's first finish nothing else frees a place)."""
    if len(inst.running) >= inst.capacity:
        return False
    need = req.prompt_tokens + req.output_tokens
    return inst.tokens_in_flight + need <= inst.shape.max_tokens_in_flight or not inst.running


def batch_loop(sim: SimCore, inst: Instance, resume: tuple[Live, float, int, float] | None = None):
    """Continuous batching on one instance until it has nothing left to do.

    `resume`: a solo request handed over mid-flight, with the step boundary it runs to, its
    tokens by then and their quality. At request fidelity (`sim.iteration` false) a step
    and the run of identical decode steps after it are one event. A step costs work for the requests that join or finish
    only: the others' tokens are the instance's step count since they joined.

    Performance: what stays fixed while the loop runs (the instance's queue, batch, capacity,
    GPU and tables) is read once into locals; this body runs once per event at request fidelity.
    """
    env = sim.env
    shape = inst.shape
    cap_tokens = shape.max_tokens_in_flight
    refill = inst.plan.refill
    literal = sim.iteration
    running = inst.running
    queue = inst.queue
    capacity = inst.capacity
    compute = inst.gpu_ref.compute  # set when the run starts, if co-located instances share the GPU
    mark_busy = sim.mark_busy
    prefill, decode = shape.prefill, shape.decode  # tables remember their answers (sim/table.py)
    last_end = -1.0  # when this loop's previous step ended (a step starting then continues the batch)
    run_kind, run_origin, run_steps = None, 0.0, 0  # iteration fidelity: the run of identical steps
    try:
        if resume is not None:
            live, boundary, tokens, quality = resume  # counts as of the boundary
            inst.stepped_stage = live.stage  # what its steps so far computed with
            _join(inst, live, inst.steps - tokens, inst.q_integral - quality * tokens)
            if boundary > env.now:
                yield timeout_at(env, boundary)
            last_end = env.now
            _finish_done(sim, inst)
        while (queue or running) and inst.can_serve:
            now = env.now
            decoding = len(running)
            prompt_tokens = 0
            prefill_work = 0.0  # prompt tokens still to compute (pipelined loads did the rest)
            continuing = last_end == now
            stage, q, scale = inst.step_view(now, continuing)
            # A stage bound at this very boundary: this step computes with the view before it,
            # the steps after it with the new one, so at request fidelity it runs alone.
            stale = continuing and inst.bound_at == now
            if refill and decoding and stage > inst.stepped_stage:
                # A stage bound (or gates opened) since the last step: its layers have no K/V
                # for the tokens so far, so every running request re-runs the prefill over its
                # context (as the engine does) instead of a decode step. Closing gates needs none.
                context = inst.prompt_in_batch + decoding * inst.steps - inst.join_steps_sum
                prompt_tokens = prefill_work = context
                decoding = 0
                sim.usage.of(inst.model).refills += len(running)
            inst.stepped_stage = stage
            # New requests join the batch before the step, so that nothing in flight is ever
            # invisible to keep-alive or eviction.
            joiners = ()
            if queue and len(running) < capacity:
                joiners = []
                join_step, q_at_join = inst.steps, inst.q_integral
                in_flight = inst.tokens_in_flight
                while queue and len(running) < capacity:
                    live = queue[0]
                    req = live.req
                    prompt = req.prompt_tokens
                    need = prompt + req.output_tokens
                    if in_flight + need > cap_tokens and running:
                        break
                    inst.dequeue()
                    in_flight += need
                    prompt_tokens += prompt
                    prefill_work += prompt * live.prefill_fraction
                    _join(inst, live, join_step, q_at_join)
                    joiners.append(live)
                inst.tokens_in_flight = in_flight
            # The step computes with the layers bound when it starts (`q`, `scale`): its tokens
            # have that stage's quality even if a later stage binds while it runs.
            step = 0.0
            if prompt_tokens:
                step += prefill(prompt_tokens) * scale * (prefill_work / prompt_tokens)
            if decoding:
                step += decode(decoding) * scale
            if compute is not None:  # a shared GPU: the step's length depends on its neighbours
                mark_busy(inst, now + step)
                yield from compute.work(step)
                mark_busy(inst, env.now)  # later than planned if the GPU was shared
                last_end = env.now
                _steps_done(sim, inst, 1, q, stage, joiners)
                continue
            if literal:
                # A run of identical decode steps ends its n-th step at `origin + n * step`,
                # as request fidelity computes it (sim/stepclock.py), not by adding steps.
                run = (decoding, stage, q, scale) if not prompt_tokens else None
                if run is not None and run == run_kind and last_end == now:
                    run_steps += 1
                else:
                    run_kind, run_origin, run_steps = run, now, 1
                end = run_origin + run_steps * step
                mark_busy(inst, end)
                yield timeout_at(env, end)
                last_end = env.now
                _steps_done(sim, inst, 1, q, stage, joiners)
                continue
            if not prompt_tokens:
                # A run of identical decode steps up to the first finish, as one event; a
                # request that can join, or a stage that binds, cuts it at the next boundary.
                k = 1 if stale else running[0][0] - inst.steps
                # Busy as the literal loop says it: to the end of the step under way (the run
                # may be cut short, and keep-alive and the run's end read this).
                mark_busy(inst, now + step)
                timeout = timeout_at(env, now + k * step)
                run = inst.segment = DecodeRun(env, inst.loop_process, now, step, k, timeout)
                yield timeout
                inst.segment = None
                last_end = env.now
                mark_busy(inst, last_end)
                _steps_done(sim, inst, run.steps, q, stage, ())
                continue
            end = now + step
            mark_busy(inst, end)
            k = running[0][0] - inst.steps - 1
            if k <= 0 or stale:
                yield env.timeout(step)
                last_end = env.now
                _steps_done(sim, inst, 1, q, stage, joiners)
                continue
            # The step, then the k identical decode steps after it up to the first finish,
            # as one event (the run's origin is the step's end, as in the literal loop).
            decode_step = decode(len(running)) * scale
            timeout = timeout_at(env, end + k * decode_step)
            run = inst.segment = DecodeRun(env, inst.loop_process, end, decode_step, k, timeout)
            yield timeout
            inst.segment = None
            _steps_done(sim, inst, 1, q, stage, joiners, end)
            if run.steps:
                mark_busy(inst, env.now)
                _steps_done(sim, inst, run.steps, q, stage, ())
            last_end = env.now
    finally:
        inst.loop_running = False
    inst.idle_signal.fire()  # keep-alive waits for this


def _join(inst: Instance, live: Live, join_step: int, q_at_join: float) -> None:
    live.join_step = join_step
    live.q_at_join = q_at_join
    inst.joined += 1
    req = live.req
    heapq.heappush(inst.running, (join_step + req.output_tokens, inst.joined, live))
    inst.running_changed(1)
    inst.prompt_in_batch += req.prompt_tokens
    inst.join_steps_sum += join_step


def _steps_done(sim: SimCore, inst: Instance, steps: int, q: float, stage: int, joiners,
                end: float | None = None) -> None:
    """`steps` batch steps ended (now, or at `end` if earlier), computed at stage `stage` with quality `q`."""
    inst.steps += steps
    inst.q_integral += q * steps
    if joiners:
        now = sim.env.now if end is None else end
        for live in joiners:  # their first token
            live.first_token_s = now
            live.stage = stage
    running = inst.running
    if running and running[0][0] <= inst.steps:
        _finish_done(sim, inst)


def _finish_done(sim: SimCore, inst: Instance) -> None:
    """Record the running requests whose last token the steps so far produced.

    A request's quality is a difference of running sums, clamped to [0, 1] against their
    last-bit rounding (NaN, a stage the profile has no measurement for, stays NaN).
    """
    running = inst.running
    steps = inst.steps
    now = sim.env.now
    emit = sim.emit
    left = len(running)
    while running and running[0][0] <= steps:
        live = heapq.heappop(running)[2]
        req = live.req
        prompt = req.prompt_tokens
        out = req.output_tokens
        inst.prompt_in_batch -= prompt
        inst.join_steps_sum -= live.join_step
        inst.tokens_in_flight -= prompt + out
        sim.outstanding -= 1
        first = live.first_token_s
        tpot = (now - first) / (out - 1) if out > 1 else _NAN
        quality = (inst.q_integral - live.q_at_join) / out
        if quality == quality:
            quality = (quality if quality < 1.0 else 1.0) if quality > 0.0 else 0.0
        emit(served_record(sim, inst, req, first, now, tpot, live.cold, live.load_wait_s, live.stage, quality,
                           live.woke))
    inst.running_changed(len(running) - left)
