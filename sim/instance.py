"""Model instances: one serving process for one model on one GPU, and what policies see of it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from contracts.plan import StagePlan
from contracts.request import Request
from sim.cluster import Gpu, Node
from sim.deployment import Deployment
from sim.routing_rows import RUNNING, SOLO_FINISH, STATE, STATE_CODES, WAITING, WIDTH
from sim.stepclock import steps_begun, timeout_at


class InstanceState(StrEnum):
    """Where an instance is in its life. A `str`, so policies may compare it with plain names.

    The allowed moves are `TRANSITIONS`; `Instance.move_to` is the only writer and refuses
    any other, so a lifecycle bug shows as an error at the move, not as a wrong figure later.
    """

    STARTING = "starting"  # process start and CUDA context
    LOADING = "loading"  # weights on their way (a cold start or a wake)
    READY = "ready"  # serving at a partial stage
    FULL = "full"  # serving with every layer bound
    SLEEPING = "sleeping"  # process kept, no GPU memory held (vLLM sleep level 1 or 2)
    EVICTED = "evicted"  # gone


_S = InstanceState
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    _S.STARTING: frozenset({_S.LOADING, _S.SLEEPING, _S.EVICTED}),
    _S.LOADING: frozenset({_S.READY, _S.FULL, _S.EVICTED}),
    _S.READY: frozenset({_S.FULL, _S.SLEEPING, _S.EVICTED}),
    _S.FULL: frozenset({_S.SLEEPING, _S.EVICTED}),
    _S.SLEEPING: frozenset({_S.LOADING, _S.EVICTED}),
    _S.EVICTED: frozenset(),
}
SERVING = frozenset({_S.READY, _S.FULL})
_NO_SOLO = float("-inf")


class IllegalTransition(RuntimeError):
    """An instance was moved along an edge its life does not have (a simulator bug)."""


@dataclass(slots=True)
class Pending:
    """A request admitted to an instance that cannot serve it yet (loading or waking)."""

    req: Request
    arrival_s: float


@dataclass(slots=True, eq=False)
class Live:
    """A request in (or queued for) an instance's batch.

    Every batch step gives every running request one token, so a request's tokens and their
    summed quality are the instance's step count and quality integral since it joined
    (`Instance.steps`, `Instance.q_integral`): nothing per request changes at a step.
    """

    req: Request
    cold: bool
    load_wait_s: float
    prefill_fraction: float = 1.0  # < 1 when execute-while-load already ran part of the prefill
    first_token_s: float = -1.0
    stage: int = -1
    join_step: int = 0  # the instance's `steps` before the step it joined in
    q_at_join: float = 0.0  # the instance's `q_integral` then
    woke: bool = False  # it waited for the instance to wake from sleep


@dataclass(slots=True, eq=False)
class Solo:
    """A request alone on an instance at request fidelity: its times, known without events.

    `step_s` is its decode step (a batch of one); it stays final unless another request
    joins before `finish_s` (then it becomes a `Live` in the batch loop).
    """

    req: Request
    cold: bool
    load_wait_s: float
    first_token_s: float
    finish_s: float
    step_s: float
    stage: int
    quality: float
    start_s: float  # when its prefill step began
    epoch: int  # the simulator's events_processed then
    woke: bool = False  # it waited for the instance to wake from sleep


class DecodeRun:
    """A run of identical decode steps the batch loop waits out as one event.

    It begins with one `head` step, which may be of another length (the step in which
    requests joined, or a refill) and ends at `start`; `steps` decode steps of `step` seconds
    follow. A request that arrives during the head joins at its end, as in the literal loop,
    so the head and the decode steps after it need one event between them, not two.
    `cut(now)` ends the run at the first step boundary after `now` (a request arrived, or a
    stage bound): the loop's process is moved from the run's timeout to one at that
    boundary. Moving a waiting process uses two SimPy internals (`Process._target`, the
    `_resume` callback; SimPy is pinned to 4.1.x and tests/test_sim_core.py checks them)
    because SimPy's public way, `interrupt()`, costs an extra event and a Condition per cut,
    on the hottest path of request fidelity.
    """

    __slots__ = ("env", "process", "start", "step", "steps", "timeout")

    def __init__(self, env, process, start: float, step: float, steps: int, timeout):
        self.env = env
        self.process = process
        self.start = start  # when the decode steps begin (the head's end)
        self.step = step
        self.steps = steps  # how many decode steps it lasts (fewer once cut)
        self.timeout = timeout

    def cut(self, now: float) -> None:
        step = self.step
        start = self.start
        if step <= 0 or now >= start + self.steps * step:
            return
        k = 0 if now < start else steps_begun(start, step, now)
        if k >= self.steps:
            return
        self.steps = k
        boundary = timeout_at(self.env, start + k * step)
        resume = self.process._resume
        self.timeout.callbacks.remove(resume)
        boundary.callbacks.append(resume)
        self.process._target = boundary
        self.timeout = boundary


class Signal:
    """Callbacks to run at the next `fire()`, once each, at that moment.

    Keep-alive (sim/keeper.py) listens for a request given to an instance and for its
    batch loop running out of work. Performance: callbacks, not SimPy events, because both
    happen on every request's warm path and an event costs a heap push and pop.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list = []

    def add(self, callback) -> None:
        self._waiting.append(callback)

    def fire(self) -> None:
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()

    def __bool__(self) -> bool:
        return bool(self._waiting)


class Instance:
    """State of one instance; the simulator drives it, policies read it through its properties."""

    def __init__(self, iid: int, dep: Deployment, node: Node, gpu: Gpu, plan: StagePlan, sim):
        self.id = iid
        self.dep = dep
        self.model = dep.name
        self.shape = dep.shape
        self.node_ref = node
        self.gpu_ref = gpu
        self.plan = plan
        self._sim = sim
        self._state = InstanceState.STARTING
        self.bound_layers = 0
        self.stage = -1  # last finished stage (0-based)
        self.quality = 0.0
        self.latency_scale = 1.0
        self.degraded = False  # serving at its first stage although fully loaded (admission `degrade`)
        self.bound_at = -1.0  # when the last stage bound or the gates changed (step_view)
        self.prev_view: tuple[int, float, float] = (-1, 0.0, 1.0)
        self.capacity = dep.shape.max_batch
        self.memory_bytes = dep.own_bytes  # its shared base, if any, is the GPU's (sim/memory.py)
        self.base_residency = None  # the copy of its shared base it uses on its GPU, while it holds memory
        self.base_was_resident = False  # at its last reservation: it loads only its task part
        self._busy_until = 0.0  # raised by `busy_at_least_until`; see `busy_until`
        self.pending: deque[Pending] = deque()
        self.solo: Solo | None = None  # request fidelity: a request alone, computed without events
        self.idle_since: float | None = None
        self.last_used = sim.env.now
        self.uses = 0  # bumped on every request: a keep-alive timer compares it
        # iteration fidelity
        self.queue: deque[Live] = deque()
        # the batch: a heap of (step count at which it is done, order, request)
        self.running: list[tuple[int, int, Live]] = []
        self.steps = 0  # batch steps completed (each gave every running request a token)
        self.q_integral = 0.0  # the sum of those steps' quality
        self.prompt_in_batch = 0  # prompt tokens of the running requests (a refill's work)
        self.join_steps_sum = 0  # the sum of their join steps (their tokens: n x steps - this)
        self.joined = 0  # requests that ever joined: the heap's tie-break
        self.tokens_in_flight = 0
        self.loop_running = False
        self.loop_process = None  # the batch loop's SimPy process, while it runs
        self.stepped_stage = -1  # the stage the last batch step computed with
        self.keeper = 0
        self.sleep_level = 0  # 1: weights in host DRAM, 2: weights dropped
        self.woken = False  # its weights are (being) loaded by a wake, not a cold start
        self.idle_signal = Signal()  # the batch loop ran out of work
        self.used_signal = Signal()  # it was given a request (ends a keep-alive wait)
        self.keeper_state = None  # its keep-alive (sim/keeper.py's Keeper), once one started
        self.segment: DecodeRun | None = None  # request fidelity: the run of decode steps under way
        # What routers read of it, as a row of `sim.routing_rows` (sim/routing_rows.py): this
        # instance is the row's one writer, at every change of its pending requests, queue,
        # batch, solo request or state (the methods below and `move_to`).
        self._rows = sim.routing_rows
        self._row = self._rows.acquire(iid, self._state.value, self.capacity)
        # Request fidelity's compiled batches (sim/compiled_batch.py), when the run has them:
        # then its queue and batch live there, not in `queue` and `running`.
        self._batches = sim.batches
        if self._batches is not None:
            self._batches.acquire(self)

    # --- InstanceView -------------------------------------------------------------------
    @property
    def state(self) -> InstanceState:
        return self._state

    @property
    def node(self) -> int:
        return self.node_ref.index

    @property
    def gpu(self) -> int:
        return self.gpu_ref.index

    @property
    def num_layers(self) -> int:
        return self.shape.num_layers

    @property
    def can_serve(self) -> bool:
        return self._state in SERVING

    @property
    def active(self) -> int:
        """Every request this instance owes: running, queued for the batch, or pending its load."""
        solo = self.solo
        alone = 1 if solo is not None and solo.finish_s > self._sim.env.now else 0
        if self._batches is not None and self._state is not InstanceState.EVICTED:  # compiled: the row counts it
            values, row = self._rows.values, self._row
            return alone + int(values[row + WAITING]) + int(values[row + RUNNING])
        return alone + len(self.pending) + len(self.queue) + len(self.running)

    @property
    def waiting(self) -> int:
        """Requests given to this instance that have not started: pending its load or queued."""
        if self._batches is not None and self._state is not InstanceState.EVICTED:  # compiled: the row counts it
            return int(self._rows.values[self._row + WAITING])
        return len(self.pending) + len(self.queue)

    def busy_at_least_until(self, finish: float) -> None:
        """Work it was given ends no earlier than `finish` (`Simulator.mark_busy`: Python loops, solos)."""
        if finish > self._busy_until:
            self._busy_until = finish

    @property
    def busy_until(self) -> float:
        """When the work it has been given so far ends, as far as is known now: the latest
        end of a step its batch began, or of its solo request."""
        if self._batches is not None and self._state is not InstanceState.EVICTED:
            return max(self._busy_until, self._batches.busy_until(self))
        return self._busy_until  # (an evicted instance's compiled part was kept at its eviction)

    @property
    def routing_slot(self) -> int:
        """Its row in `sim.routing_rows` (sim/routing_rows.py), -1 once evicted (the slot is reused)."""
        return -1 if self._state is InstanceState.EVICTED else self._row // WIDTH

    # --- what it owes, with its routing row (sim/routing_rows.py) --------------------------
    def add_pending(self, pending: Pending) -> None:
        """A request waits for this instance to finish loading or waking."""
        self.pending.append(pending)
        self._rows.values[self._row + WAITING] += 1.0

    def take_pending(self) -> deque[Pending]:
        """Every pending request, removed (it can serve them now, or they go elsewhere)."""
        pending, self.pending = self.pending, deque()
        self._rows.values[self._row + WAITING] -= len(pending)
        return pending

    def enqueue(self, live: Live) -> None:
        """A request queues for the batch."""
        self.queue.append(live)
        self._rows.values[self._row + WAITING] += 1.0

    def dequeue(self) -> Live:
        """The request at the head of the queue leaves it to join the batch (`running_started`)."""
        self._rows.values[self._row + WAITING] -= 1.0
        return self.queue.popleft()

    def running_changed(self, by: int) -> None:
        """`by` requests joined (> 0) or left (< 0) the batch, `running`."""
        self._rows.values[self._row + RUNNING] += by

    def set_solo(self, solo: Solo | None) -> None:
        """The request alone on it at request fidelity, or None."""
        self.solo = solo
        self._rows.values[self._row + SOLO_FINISH] = _NO_SOLO if solo is None else solo.finish_s

    # --- transitions ----------------------------------------------------------------------
    def move_to(self, new: InstanceState) -> None:
        """The one way to change `state`: refuses a move its life does not have."""
        if new not in TRANSITIONS[self._state]:
            raise IllegalTransition(f"instance {self.id} ({self.model}): {self._state.value} -> {new.value}")
        if new is InstanceState.EVICTED:
            if self._batches is not None:  # its slot may be reused: keep what it says of this one
                self._busy_until = self.busy_until
            self._state = new
            self._rows.release(self._row)
            return
        self._state = new
        self._rows.values[self._row + STATE] = STATE_CODES[new.value]

    def step_view(self, now: float, continuing: bool) -> tuple[int, float, float]:
        """(stage, quality, latency scale) a batch step starting at `now` computes with.

        A stage that binds at the very instant one step ends and the next begins counts
        from the step after, whichever of the two the event queue happens to handle first:
        both ways of computing the batch (sim/serving.py) then break that tie alike. A
        batch that starts afresh uses what is bound (serving may start on that very bind).
        """
        if continuing and self.bound_at == now:
            return self.prev_view
        return self.stage, self.quality, self.latency_scale

    def bind_stage(self, stage: int, layers: int, now: float) -> None:
        """Record that `stage` finished: its layers are bound, quality and speed change."""
        self.bound_layers += layers
        self._set_view(stage, self.bound_layers, now)
        if self.bound_layers >= self.shape.num_layers and self._state is InstanceState.READY:
            self.move_to(InstanceState.FULL)

    @property
    def can_degrade(self) -> bool:
        """Whether it could serve with fewer layers than it has bound: fully loaded, and its plan
        has a serving stage before the last."""
        return self._state is InstanceState.FULL and self.plan.serve_from < len(self.plan.stages) - 1

    def set_degraded(self, on: bool, now: float) -> bool:
        """Serve at the plan's first serving stage (the later stages' gates closed) or with every
        bound layer again; True when that changed what its steps compute."""
        if on == self.degraded or not self.can_degrade:
            return False
        self.degraded = on
        if on:
            first = self.plan.serve_from
            self._set_view(first, sum(len(s) for s in self.plan.stages[:first + 1]), now)
        else:
            self._set_view(len(self.plan.stages) - 1, self.bound_layers, now)
        return True

    def _set_view(self, stage: int, layers: int, now: float) -> None:
        """Steps from the next boundary compute with `layers` layers (stage `stage`): the one
        writer of what `step_view` answers."""
        if self.bound_at != now:
            self.prev_view = (self.stage, self.quality, self.latency_scale)
        self.bound_at = now
        self.stage = stage
        self.quality = self.shape.quality_at(layers)
        self.latency_scale = self.shape.latency_scale_at(layers)
        if self._batches is not None:
            self._batches.view_changed(self, now)  # a compiled run ends at its next boundary
        elif self.segment is not None:
            self.segment.cut(now)  # the run of decode steps ends at its next boundary
