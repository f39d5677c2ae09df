"""The simulator: arrivals meet admission, routing, placement; instances live as processes.

Per-request work stays off the event queue: the arrival loop advances SimPy's clock to each
arrival and handles the request inline; only lifecycles (loads, stages, keep-alive timers,
evictions, batch steps at iteration fidelity) are events.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Hashable, Iterable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import simpy

from contracts.request import Request
from sim.cluster import TIER_LINKS, build_cluster
from sim.compute import GpuCompute
from sim.config import SimConfig
from sim.deployment import Deployment
from sim.errors import BadRequestError, TraceOrderError, UnknownModelError
from sim.flows import FlowNetwork
from sim.instance import Instance, InstanceState, Pending
from sim.lifecycle import wake
from sim.memory import MemoryLedger
from sim.metrics import RunMetrics
from sim.placing import prewarm_loop, start_instance
from sim.policyset import PolicyError, PolicySet, policy_error
from sim.profile import Profile
from sim.records import RequestRecord
from sim.routing_rows import RoutingRows
from sim.serving import finalize, gates_changed, serve
from sim.usage import UsageLedger
from sim.watchdog import HookWatchdog

if TYPE_CHECKING:  # a type only: the module needs numba, imported where the run asks for it
    from sim.compiled_batch import CompiledBatches

S = InstanceState


_TIERS = tuple(TIER_LINKS)  # "dram", "ssd", "remote": fastest first
_TIER_RANK = {t: i for i, t in enumerate(_TIERS)}

# Arrivals beyond this many simulated seconds (about 31.7 years) are refused: far beyond any
# trace, and where a float clock could no longer tell a prefill from the time it starts.
MAX_ARRIVAL_S = 1e9
_INF = float("inf")


def move_clock(env: simpy.Environment, t: float) -> None:
    """Move SimPy's clock forward to `t` with no event due before it.

    Performance: an arrival needs no event of its own, and scheduling one just to move the
    clock costs a heap push and pop per request. SimPy keeps its clock in `_now` (pinned in
    pyproject; tests/test_sim_core.py fails if a SimPy release changes that).
    """
    queue = env._queue  # what `env.peek()` reads, without its call (once per arrival)
    if queue and queue[0][0] < t:
        raise RuntimeError(f"move_clock: an event is due at {queue[0][0]} before {t}")
    env._now = t


def compiled_batches(rows: RoutingRows) -> CompiledBatches | None:
    """The run's compiled batches, or None (Python batch loops, the same results) where numba
    cannot be imported, or cannot compile or cache here; said once per process."""
    global _NO_NUMBA_SAID
    try:
        from sim.compiled_batch import CompiledBatches, ready

        ready()
    except Exception as e:  # numba missing (ImportError), or unable to compile or cache here
        if not _NO_NUMBA_SAID:
            _NO_NUMBA_SAID = True
            warnings.warn(f"compiled batches are unavailable ({type(e).__name__}: {e}); the batch loops run "
                          f"in Python (the same results, slower)", RuntimeWarning, stacklevel=3)
        return None
    return CompiledBatches(rows)


_NO_NUMBA_SAID = False


def gpus_can_be_shared(profile: Profile, config: SimConfig) -> bool:
    """Whether one GPU can hold more instances than it has compute slots in this run.

    Then co-located instances slow each other down while they run, and a step's rate changes
    whenever another instance's step starts or ends: such runs step literally at both fidelities.
    """
    if config.compute_sharing != "time_slice":
        return False
    hw = profile.hardware
    usable = hw.usable_gpu_bytes
    smallest = min(m.footprint_bytes for m in profile.models)
    # After the first, an instance whose shared base is on its GPU holds only its own part.
    own = min(m.footprint_bytes - (m.shared_base.bytes if m.shared_base and m.shared_base.share_gpu_memory else 0)
              for m in profile.models)
    if smallest <= 0 or own <= 0 or smallest > usable:
        return False
    return 1 + (usable - smallest) // own > hw.compute_slots


class Simulator:
    """One run of one policy combination over one trace (implements `ClusterView`).

    The lifecycle, serving and placing modules drive it through the public methods below
    (`SimCore` in sim/core.py lists them); policies see it as a `ClusterView`.
    """

    def __init__(self, profile: Profile, policies: PolicySet, config: SimConfig, metrics: RunMetrics,
                 rng: np.random.Generator | None = None):
        self.env = simpy.Environment()
        self.profile = profile
        self.policies = policies
        self.config = config
        self.metrics = metrics
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.label = metrics.label
        self.emit = metrics.on_request
        self.net = FlowNetwork(self.env, on_bytes=metrics.on_bytes)
        self.nodes = build_cluster(profile.hardware, config.nodes, config.gpus_per_node)
        self._gpus = [g for n in self.nodes for g in n.gpus]
        self._largest_gpu_bytes = max(g.capacity_bytes for g in self._gpus)
        shared = gpus_can_be_shared(profile, config)
        if shared:  # a GPU that never holds more instances than compute slots needs no sharing server
            for gpu in self._gpus:
                gpu.compute = GpuCompute(self.env, profile.hardware.compute_slots)
        self.usage = UsageLedger()
        self.memory = MemoryLedger(self.usage, metrics)
        self.instances: dict[int, Instance] = {}
        self.by_model: dict[str, list[Instance]] = {}
        self.routing_rows = RoutingRows()  # what routers read of each instance (sim/routing_rows.py)
        # The closed form is exact only where an instance computes alone (see gpus_can_be_shared).
        self.iteration = config.fidelity == "iteration" or shared
        self.fidelity = "iteration" if self.iteration else "request"
        # request fidelity's batches as arrays (sim/compiled_batch.py), or Python loops (None)
        self.batches = (compiled_batches(self.routing_rows) if config.batches == "compiled" and not self.iteration
                        else None)
        self._slot_lists: dict[str, tuple[list[Instance], np.ndarray]] = {}  # `routing_slots`' last answer per model
        self.deployments: dict[str, Deployment] = {}
        self._arrivals: dict[str, deque] = {}
        self._unplaced: dict[str, int] = {}  # per model: requests in the memory queue
        self.pending_total = 0  # requests waiting on instances that cannot serve yet
        self.outstanding = 0  # requests in batch loops not yet finished
        self.events_processed = 0  # a solo request knows whether any event ran since it started
        self.memory_queue: deque[Pending] = deque()
        self.max_finish = 0.0
        self.arrivals_done = False
        self._next_id = 0
        self._retrying = False
        self._no_room: tuple[int, Hashable] | None = None
        self._degraded: set[str] = set()  # models admission last said `degrade` for
        self.defaulted_models: list[str] = []  # names that took the default model's shape
        metrics.fidelity = self.fidelity

    # --- ClusterView ------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return self.env.now

    @property
    def gpus(self):
        return self._gpus

    def instances_of(self, model: str) -> list[Instance]:
        return list(self.by_model.get(model, ()))

    def model(self, name: str) -> Deployment:
        return self.deployment(name)

    @property
    def models_seen(self) -> list[str]:
        return list(self.deployments)

    def routing_view(self) -> np.ndarray:
        """Every instance's routing row (sim/routing_rows.py), for a compiled router walk."""
        return self.routing_rows.view()

    def routing_slots(self, model: str, candidates: list[Instance]) -> np.ndarray:
        """The rows of `candidates` in `routing_view()`, in their order (-1 for an evicted one).

        Routers are handed a copy of the model's instance list on each arrival, so the answer
        for that list is kept until the list changes (an instance started or evicted).
        """
        kept = self._slot_lists.get(model)
        if kept is not None and kept[0] == candidates:  # the same instances, compared by identity
            return kept[1]
        slots = np.fromiter((c.routing_slot for c in candidates), dtype=np.int64, count=len(candidates))
        if candidates == self.by_model.get(model):
            self._slot_lists[model] = (list(candidates), slots)
        return slots

    def waiting(self, model: str) -> int:
        """Admitted requests of `model` not yet started: unplaced, pending a load, or queued."""
        return self._unplaced.get(model, 0) + sum(i.waiting for i in self.by_model.get(model, ()))

    def arrivals(self, model: str) -> list[float]:
        return list(self._arrivals.get(model, ()))

    def checkpoint_tier(self, model: str, node: int) -> str:
        """Where a load of `model` onto `node` would read from now: "dram", "ssd" or "remote"
        (for a model with a shared base, the slower of where its two parts sit)."""
        n = self.nodes[node]
        dep = self.deployments.get(model)
        if dep is None or dep.base is None:
            return n.tier_of(model)
        return _TIERS[max(_TIER_RANK[n.tier_of(key)] for key, _ in dep.checkpoint_parts)]

    def checkpoint_tiers(self, model: str) -> frozenset[str]:
        dep = self.deployments.get(model)
        if dep is not None and dep.base is not None:
            return frozenset(self.checkpoint_tier(model, n.index) for n in self.nodes)
        tiers = set()
        for n in self.nodes:
            tiers.add(n.tier_of(model))
            if len(tiers) == 3:
                break
        return frozenset(tiers)

    @property
    def memory_epoch(self) -> int:
        return self.memory.epoch

    def loads_in_flight(self, node: int, gpu: int) -> int:
        """Transfers now crossing the node's SSD or network link or the GPU's PCIe link."""
        n = self.nodes[node]
        return len(n.ssd_link.transfers | n.net_link.transfers | n.gpus[gpu].pcie.transfers)

    # --- bookkeeping ----------------------------------------------------------------------------
    def deployment(self, name: str) -> Deployment:
        dep = self.deployments.get(name)
        if dep is None:
            shape, rule = self.profile.resolve(name)
            if rule == "default":
                if self.config.unknown_models == "error":
                    known = ", ".join(m.name for m in self.profile.models)
                    raise UnknownModelError(
                        f"model {name!r} is not in profile {self.profile.name} ({known}) nor named "
                        f"<model>-<suffix> after one; --unknown-models default gives it {shape.name}'s shape")
                self.defaulted_models.append(name)
            dep = Deployment(name, shape, self.profile.hardware, self.profile.engine)
            self.deployments[name] = dep
            self._arrivals[name] = deque(maxlen=256)
            if self.config.storage == "ssd":
                for node in self.nodes:
                    for key, nbytes in dep.checkpoint_parts:
                        node.ssd.add(key, nbytes)
        return dep

    def policy_failure(self, policy, hook: str, err) -> PolicyError:
        return policy_error(policy, hook, self.env.now, err)

    def _unplace(self, model: str, n: int) -> None:
        self._unplaced[model] = self._unplaced.get(model, 0) + n

    def mark_busy(self, inst: Instance, finish: float) -> None:
        inst.busy_at_least_until(finish)
        if finish > self.max_finish:
            self.max_finish = finish

    def set_idle(self, inst: Instance, idle: bool) -> None:
        if idle and inst.idle_since is None:
            now = self.env.now
            inst.idle_since = now
            if inst.can_serve:
                self.memory.set_idle(inst, True, now)
            else:
                self.memory.touch()
            if self.memory_queue:
                self.retry_memory_queue()
        elif not idle and inst.idle_since is not None:
            inst.idle_since = None
            self.memory.set_idle(inst, False, self.env.now)

    # --- placement's memory of "no room" ---------------------------------------------------------
    def no_room_known(self, key: Hashable) -> bool:
        """Placement said "no room" for a model of this key (its footprint, and its shared base
        if it has one) and memory has not changed since."""
        return self._no_room == (self.memory.epoch, key)

    def remember_no_room(self, key: Hashable) -> None:
        self._no_room = (self.memory.epoch, key)

    @contextmanager
    def retries_held(self):
        """Memory freed inside the block is its caller's: no queued request may take it first."""
        retrying, self._retrying = self._retrying, True
        try:
            yield
        finally:
            self._retrying = retrying

    def register(self, dep: Deployment, gpu, plan) -> Instance:
        """A new instance of `dep` on `gpu`, known to routing; the caller reserves and starts it."""
        inst = Instance(self._next_id, dep, self.nodes[gpu.node], gpu, plan, self)
        self._next_id += 1
        self.instances[inst.id] = inst
        self.by_model.setdefault(dep.name, []).append(inst)
        self.memory.touch()
        return inst

    def reserve(self, inst: Instance) -> None:
        self.memory.reserve(inst, self.env.now)

    # --- the arrival path -----------------------------------------------------------------------
    def on_arrival(self, req: Request) -> None:
        model = req.model
        dep = self.deployments.get(model)  # Performance: `deployment` only for a model not seen yet
        if dep is None:
            dep = self.deployment(model)
        self._arrivals[model].append(req.arrival_s)
        self.usage.of(model).requests += 1
        adm = self.policies.admission
        try:
            decision = adm.admit(req, self)
            action = decision.action
        except Exception as e:
            raise self.policy_failure(adm, "admit", e) from e
        if action != "serve" or self._degraded:
            if action == "reject":
                self.reject(req, decision.reason or "rejected by admission")
                return
            if action == "degrade" or model in self._degraded:
                self._degrade(model, action == "degrade")
        if dep.footprint_bytes > self._largest_gpu_bytes:
            self.reject(req, f"model needs {dep.footprint_bytes / 1e9:.1f} GB, more than any GPU has")
            return
        need = req.prompt_tokens + req.output_tokens
        if need > dep.max_tokens_in_flight:
            # As vLLM refuses a prompt plus max_tokens beyond its context: no batch could hold it.
            self.reject(req, f"needs {need} tokens of KV cache, the model's instance holds "
                             f"{dep.max_tokens_in_flight}")
            return
        if not self._try_place(req, req.arrival_s, True):
            self.memory_queue.append(Pending(req, req.arrival_s))
            self._unplace(req.model, 1)

    def _degrade(self, model: str, on: bool) -> None:
        """Admission said `degrade` (on) or `serve` (off) for `model`: its fully loaded
        progressive instances serve at their first serving stage, or at every layer again."""
        if on:
            self._degraded.add(model)
        else:
            self._degraded.discard(model)
        now = self.env.now
        for inst in self.by_model.get(model, ()):
            if inst.set_degraded(on, now):
                gates_changed(self, inst)

    def reject(self, req: Request, reason: str) -> None:
        self.emit(RequestRecord.rejection(
            policy=self.label, request_id=req.request_id, model=req.model, function=req.function,
            arrival_s=req.arrival_s, prompt_tokens=req.prompt_tokens, output_tokens=req.output_tokens,
            reason=reason, tenant=req.tenant,
        ))

    def _try_place(self, req: Request, arrival: float, fallback: bool) -> bool:
        """Route to an instance, or start one; False when neither is possible now.

        With no room for a new instance, the request joins the instance owing the fewest
        requests (join-the-shortest-queue; `active` counts running, queued and pending).
        """
        cands = self.by_model.get(req.model)
        if cands:
            router = self.policies.router
            try:
                iid = router.route(req, cands[:], self)  # a copy: a router may not change the run's list
            except Exception as e:
                raise self.policy_failure(router, "route", e) from e
            if iid is not None:
                inst = self.instances.get(iid) if isinstance(iid, int) else None
                if inst is None or inst.model != req.model:
                    raise self.policy_failure(router, "route", f"returned {iid!r}, not one of the candidates")
                return self.assign(inst, req, arrival)
        inst = start_instance(self, self.deployment(req.model))
        if inst is not None:
            return self.assign(inst, req, arrival)
        if fallback and cands:
            best = min(cands, key=lambda i: (not i.can_serve, i.active, i.id))
            return self.assign(best, req, arrival)
        return False

    def assign(self, inst: Instance, req: Request, arrival: float) -> bool:
        now = self.env.now
        if inst.state is S.SLEEPING and not self._wake(inst):
            # Its GPU has filled up while it slept: a cold start elsewhere beats waiting. The
            # sleeper is left alone, so that its keep-alive still ends its sleep in time.
            inst = start_instance(self, self.deployment(req.model))
            if inst is None:
                return False
        inst.uses += 1
        inst.last_used = now
        if inst.idle_since is not None:  # `set_idle(inst, False)`, which has nothing to do otherwise
            self.set_idle(inst, False)
        if inst.can_serve:
            waited = now - arrival
            cold = waited > 0  # it waited for memory and a load: a cold start
            if cold:
                self.usage.of(req.model).cold += 1
            serve(self, inst, req, cold, waited)
        else:
            inst.add_pending(Pending(req, arrival))
            self.pending_total += 1
        if inst.used_signal:  # keep-alive reacts at once, to the request in place (sim/keeper.py)
            inst.used_signal.fire()
        return True

    # --- lifecycle hooks ------------------------------------------------------------------------
    def became_ready(self, inst: Instance, pipelined: bool) -> None:
        now = self.env.now
        inst.move_to(S.FULL if inst.bound_layers >= inst.num_layers else S.READY)
        pending = inst.take_pending()
        self.pending_total -= len(pending)
        # Execute-while-load: a pending prompt's prefill ran layer by layer as layers arrived;
        # only the last layer's share is left once the last layer lands.
        fraction = 1.0 / inst.num_layers if pipelined else 1.0
        self.usage.of(inst.model).cold += len(pending)
        woke = inst.woken
        for p in pending:
            serve(self, inst, p.req, True, now - p.arrival_s, fraction, woke)

    def _wake(self, inst: Instance) -> bool:
        """Bring a sleeping instance back onto its GPU; False if its GPU has no room now."""
        gpu = inst.gpu_ref
        if gpu.free_bytes < gpu.need_bytes(inst.dep):
            return False
        inst.move_to(S.LOADING)
        inst.woken = True
        self.reserve(inst)
        self.env.process(wake(self, inst))
        return True

    def wake_with_pending(self, inst: Instance) -> bool:
        """A prewarmed process that collected requests while starting: wake it, or requeue them."""
        if self._wake(inst):
            return True
        pending = inst.take_pending()
        self.pending_total -= len(pending)
        for p in pending:
            self._unplace(p.req.model, 1)
        self.memory_queue.extendleft(reversed(pending))  # they are older than anything queued
        return False

    def demote(self, inst: Instance, level: int) -> None:
        """Keep-alive put the process to sleep and freed its GPU memory.

        Level 1 keeps the weights in host DRAM (copied out over PCIe); if the node's DRAM
        cannot hold them beside the other sleepers, it falls back to level 2 (dropped).
        """
        self.memory.release(inst, self.env.now)
        inst.move_to(S.SLEEPING)
        dram = inst.node_ref.dram
        if level == 1 and dram.pin(inst.shape.weight_bytes):
            self.metrics.on_bytes("pcie_d2h", inst.shape.weight_bytes)  # weights copied out to host DRAM
            inst.sleep_level = 1
        else:
            inst.sleep_level = 2
        self.retry_memory_queue()

    def evict(self, inst: Instance) -> None:
        if inst.state is S.EVICTED:
            return
        finalize(self, inst)
        self.usage.of(inst.model).evictions += 1
        if inst.state is S.SLEEPING:
            if inst.sleep_level == 1:
                inst.node_ref.dram.unpin(inst.shape.weight_bytes)
        elif self.memory.holds(inst):
            self.memory.release(inst, self.env.now)
        inst.move_to(S.EVICTED)
        del self.instances[inst.id]
        self.by_model[inst.model].remove(inst)
        self.memory.touch()
        self.retry_memory_queue()

    def retry_memory_queue(self) -> None:
        """Requests that found no memory try again, oldest first, until one still cannot."""
        if self._retrying or not self.memory_queue:
            return
        self._retrying = True
        try:
            while self.memory_queue:
                p = self.memory_queue[0]
                if not self._try_place(p.req, p.arrival_s, fallback=False):
                    break
                self.memory_queue.popleft()
                self._unplace(p.req.model, -1)
        finally:
            self._retrying = False

    def _never_placed_reason(self, req: Request) -> str:
        """Why a request left in the memory queue at the end was never placed: say what happened."""
        need = self.deployment(req.model).footprint_bytes
        if any(g.free_bytes >= need for g in self._gpus):
            return (f"never placed: placement {self.policies.placement.label} chose no GPU although one "
                    f"had {need / 1e9:.1f} GB free")
        return "never placed: no GPU memory became free"

    # --- the run ---------------------------------------------------------------------------------
    def _step(self) -> None:
        """Process the next event, counted (serving reads the count); `_advance_to` does the same inline.

        With compiled batches, the next is whichever of a batch loop's events and SimPy's is due
        first, the loops' first at a tie (sim/batch_kernel.py says why).
        """
        batches = self.batches
        if batches is not None:
            simpy_due = self.env.peek()
            if batches.next_time() <= simpy_due:
                self._run_batches(simpy_due)  # every loop event up to SimPy's next (or a drain)
                return
        self.events_processed += 1
        self.env.step()

    def _next_due(self) -> float:
        """When the next event of the run is due: SimPy's, or a compiled batch loop's."""
        due = self.env.peek()
        batches = self.batches
        return due if batches is None else min(due, batches.next_time())

    def _run_batches(self, limit: float) -> None:
        """The compiled batch loops' events due by `limit` (no SimPy event is due before it);
        a loop that ran out of work tells keep-alive at that instant."""
        drained = self.batches.run(self, limit)
        self.events_processed += 1
        if drained is not None:
            inst, t = drained
            if t > self.env._now:
                move_clock(self.env, t)
            inst.idle_signal.fire()  # keep-alive waits for this

    def _advance_to(self, t: float) -> None:
        """Process every event due by `t`, then move the clock to `t` (`move_clock`).

        Performance: this runs once per arrival, so it reads SimPy's event queue directly (as
        `move_clock` does, pinned SimPy) rather than through `peek`, and steps inline.
        """
        env = self.env
        queue = env._queue
        batches = self.batches
        if batches is not None:
            # the compiled loops' events and SimPy's, in time order, the loops' first at a tie
            while True:
                due = batches.next_time()
                simpy_due = queue[0][0] if queue else _INF
                if due <= simpy_due:
                    if due > t:
                        break
                    self._run_batches(simpy_due if simpy_due < t else t)
                elif simpy_due <= t:
                    self.events_processed += 1
                    env.step()
                else:
                    break
        elif queue and queue[0][0] <= t:
            step = env.step
            while True:
                self.events_processed += 1
                step()
                if not queue or queue[0][0] > t:
                    break
        # The literal batch loop would have run a process started at this instant by now,
        # before the arrival is handled: a `Solo` started before this point has begun its
        # first step.
        self.events_processed += 1
        if t > env._now:
            move_clock(env, t)

    def _has_work(self) -> bool:
        return bool(self.memory_queue) or self.pending_total > 0 or self.outstanding > 0

    def run(self, requests: Iterable[Request], on_progress=None, horizon_s: float | None = None) -> dict:
        """Replay `requests` (ordered by arrival) and return the summary row.

        Memory is charged until each instance is evicted or the horizon ends, whichever
        comes first: `horizon_s` (the replayed duration), or the last arrival when None.
        The run lasts until the horizon or the last finish, whichever is later.

        Performance: the cyclic garbage collector runs a young collection every 10,000 net
        allocations during the run instead of every 700 (Python's default). A run allocates
        a few objects per request and keeps many alive (queued requests, batches, a
        materialised trace), and the older generations' walks over them took a fifth of a
        full-volume run's time; it changes no result, only when unreachable cycles (evicted
        instances and their processes) are freed. The process's thresholds come back at the
        end, unless something else changed them meanwhile.
        """
        import gc  # here: the one method that touches the collector

        before = gc.get_threshold()
        relaxed = (max(before[0], 10_000), *before[1:])
        gc.set_threshold(*relaxed)
        try:
            p = self.policies
            with HookWatchdog((p.staging, p.keepalive, p.prewarm, p.placement, p.router, p.admission),
                              self.config.hook_timeout_s):
                return self._run(requests, on_progress, horizon_s)
        finally:
            if gc.get_threshold() == relaxed:
                gc.set_threshold(*before)

    def _run(self, requests: Iterable[Request], on_progress, horizon_s: float | None) -> dict:
        env = self.env
        env.process(prewarm_loop(self))
        advance, arrive = self._advance_to, self.on_arrival
        n = 0
        last = 0.0
        for req in requests:
            t = req.arrival_s
            if t < last:
                raise TraceOrderError(f"request {req.request_id} arrives at {t} s, before the previous one at {last} s")
            if not t <= MAX_ARRIVAL_S:
                raise BadRequestError(f"request {req.request_id} arrives at {t} s, beyond the {MAX_ARRIVAL_S:g} s "
                                      f"a run can simulate")
            last = t
            advance(t)
            arrive(req)
            n += 1
            if on_progress is not None and not n & 4095:
                on_progress(n)
        self.arrivals_done = True
        while self._has_work() and self._next_due() < _INF:
            self._step()
        horizon = last if horizon_s is None else max(float(horizon_s), last)
        if horizon > env.now:
            self._advance_to(horizon)  # keep-alive timers that end before the horizon still run
        end = max(env.now, self.max_finish, horizon)
        self._advance_to(end)
        for inst in list(self.instances.values()):
            finalize(self, inst)
        for p in list(self.memory_queue):
            self.reject(p.req, self._never_placed_reason(p.req))
        for inst in list(self.instances.values()):
            for p in inst.pending:
                self.reject(p.req, "instance never became ready")
        if on_progress is not None:
            on_progress(n)
        self.memory.close(self.instances.values(), end)
        return self.metrics.finish(end)
