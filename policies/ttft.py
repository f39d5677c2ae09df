"""Expected TTFT: what `expected_wait` routes by, and what `deadline` and `goodput` admit by.

`TtftEstimator` scores each instance of a model by the time until it would give a new
request its first token (the time until it serves, its queue at the profile's prefill and
decode speed, the request's own prefill), learning request lengths and a saturated batch
size from the arrivals; its walk over a model's instances runs compiled where it can
(`policies/ttft_kernel.py`). It lives apart from the routers that use it because admission
policies (`policies/admission.py`) ask it too.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from policies.views import ClusterView, InstanceView, ModelView

if TYPE_CHECKING:  # a type only: importing traces here would load its readers
    from contracts.request import Request


_STARTING = ("starting", "loading")
_TIERS = ("dram", "ssd", "remote")  # every tier a checkpoint can be read from (`ClusterView.checkpoint_tier`)
_INF = float("inf")
_NAN = float("nan")
_NO_EXTRA = np.zeros(0)


class _Context(NamedTuple):
    """What an estimate works out alike for every candidate instance of one request."""

    model: ModelView
    now: float
    own_prefill_s: float  # the request's own prefill
    service: dict  # batch -> `service_s` of the model at that batch (filled as asked)
    name: str  # the model's name
    seen: dict  # instance id -> what `_track` keeps of it, for this model


def room_for(model: ModelView, cluster: ClusterView) -> bool:
    """Whether some GPU could take a new instance now: free memory, or free after evicting idle
    serving instances (what the built-in placements may do). A placement may still say no."""
    need = model.footprint_bytes
    for gpu in cluster.gpus:
        free = gpu.free_bytes
        if free >= need:
            return True
        free += sum(i.memory_bytes for i in gpu.instances if i.idle_since is not None and i.state in ("ready", "full"))
        if free >= need:
            return True
    return False


def cold_start_estimate(model: ModelView, cluster: ClusterView) -> float:
    """Seconds until a new instance serves: a cold start from the best tier any node holds the checkpoint in."""
    return fastest_cold_start(model, cluster.checkpoint_tiers(model.name))


def fastest_cold_start(model: ModelView, tiers) -> float:
    """The fastest of `model`'s cold starts from `tiers` (where nodes hold its checkpoint)."""
    return min(model.cold_start_s(t) for t in tiers)


class TtftEstimator:
    """Expected time to first token of a request on an instance, from what the views show.

    An instance's expected TTFT is the time until it can serve (0 when serving; when starting
    or loading, the cold-start estimate from the tier its node holds the checkpoint in, less the
    time since it was first seen loading; when sleeping, its wake) plus its queue
    (`running + waiting + 1 - slots` slot releases, each `slots`-th of a typical request's time
    in a slot: its prefill plus its decode steps at that batch) plus this request's own prefill.

    `slots`, how many requests an instance runs at once, is its batch size until a queue says
    otherwise: an instance whose queue has lasted longer than twice the batch step that would
    take it in (at most a typical request's time in a slot) is saturated at what it runs now (its KV cache, not its batch size, being the
    limit), and the model's `slots` becomes a moving average of such counts. A shorter queue
    is taken for requests waiting for the next batch step. The typical prompt and output
    lengths are moving averages over the arrivals it is shown (a real router would learn
    outputs from finished requests). Its state belongs to one run: a clock that goes back
    clears it.
    """

    # A model's walks go compiled (`policies/ttft_kernel.py`) from the first arrival that finds
    # this many instances of it, or any on a cluster of this many GPUs, where the cluster keeps
    # routing rows (the simulator does). The walk's answers are the same either way, so these
    # only say when compiling pays: numba's import and loading the compiled walk take about
    # 0.8 s a process, which a small run would spend for nothing.
    compiled_min_candidates = 4
    compiled_min_gpus = 64

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha
        self._clear()

    def __eq__(self, other: object) -> bool:  # equal state: a policy's label round trip compares vars()
        if type(other) is not type(self):
            return False
        mine, theirs = dict(vars(self)), dict(vars(other))
        seen_rows, other_rows = mine.pop("_seen_rows"), theirs.pop("_seen_rows")
        if (seen_rows is None) != (other_rows is None):
            return False
        if seen_rows is not None and not np.array_equal(seen_rows, other_rows, equal_nan=True):
            return False
        return mine == theirs

    def _clear(self) -> None:
        self._tokens: dict[str, list[float]] = {}  # model -> [mean prompt, mean output]
        # Estimates a model answers from its profile alone, fixed for a run, by the model's id
        # (each with the model, so that no id is reused while its entry exists):
        self._cold: dict[tuple[int, str], tuple[ModelView, float]] = {}  # (model, tier) -> cold start
        self._cold_any: dict[tuple[int, frozenset], tuple[ModelView, float]] = {}  # (model, tiers) -> fastest
        self._bounds: dict[int, tuple[ModelView, tuple[float, float] | None]] = {}  # model -> cold start range
        self._own: tuple | None = None  # (request, model, its prefill) of the last `best`
        self._slots: dict[str, float] = {}  # model -> requests an instance runs at once when saturated
        # model -> instance id -> [loading?, in that phase since, queue seen since (None: no queue)]
        self._seen: dict[str, dict[int, list]] = {}
        self._asked: dict[str, float] = {}  # model -> when the caller last asked for a new instance
        self._now = float("-inf")
        self._room_key: tuple[int, int] | None = None  # (memory epoch, bytes) `_room` answers for
        self._room = False
        # Models whose walks are compiled (`_best_compiled`; None: the cluster cannot), and what
        # `_track` keeps of their instances: a row per routing slot (policies/ttft_kernel.py's `seen`).
        self._compiled: dict[str, _CompiledModel | None] = {}
        self._seen_rows: np.ndarray | None = None

    def observe(self, request: Request, cluster: ClusterView) -> None:
        """Learn from one arrival (once per request, before `ttft`)."""
        now = cluster.now
        if now < self._now:
            self._clear()
        self._now = now
        tok = self._tokens.get(request.model)
        if tok is None:
            self._tokens[request.model] = [float(request.prompt_tokens), float(request.output_tokens)]
        else:
            tok[0] += self.alpha * (request.prompt_tokens - tok[0])
            tok[1] += self.alpha * (request.output_tokens - tok[1])

    def asked_for_new(self, model: str, now: float) -> None:
        """The caller answered None (start a new instance) now: that instance's load starts now."""
        self._asked[model] = now

    def _track(self, seen: dict, inst: InstanceView, loading: bool, now: float, queued: bool) -> list:
        """[loading?, since when, queue since when] for the instance, as far as seen (`loading`:
        its state is starting or loading; `seen`: the model's table, `_Context.seen`)."""
        rec = seen.get(inst.id)
        if rec is None or rec[0] != loading:
            since = now
            if rec is None and loading:  # one this caller asked for began loading then, not now
                since = self._asked.pop(inst.model, now)
            rec = seen[inst.id] = [loading, since, None]
        if not queued:
            rec[2] = None
        elif rec[2] is None:
            rec[2] = now
        return rec

    def room_for(self, model: ModelView, cluster: ClusterView) -> bool:
        """`room_for`, remembered until GPU memory or idleness changes (`memory_epoch`): under
        overload every arrival asks, and the answer is a walk over every GPU."""
        key = (cluster.memory_epoch, model.footprint_bytes)
        if key != self._room_key:
            self._room_key, self._room = key, room_for(model, cluster)
        return self._room

    def cold_start_s(self, model: ModelView, tier: str) -> float:
        """`model.cold_start_s(tier)`, remembered: a profile estimate, asked per loading candidate."""
        entry = self._cold.get((id(model), tier))
        if entry is None:
            entry = self._cold[(id(model), tier)] = (model, model.cold_start_s(tier))
        return entry[1]

    def cold_start_estimate(self, model: ModelView, cluster: ClusterView) -> float:
        """`cold_start_estimate`, remembered for each set of tiers the cluster answers."""
        tiers = cluster.checkpoint_tiers(model.name)
        entry = self._cold_any.get((id(model), tiers))
        if entry is None:
            entry = self._cold_any[(id(model), tiers)] = (model, fastest_cold_start(model, tiers))
        return entry[1]

    def cold_start_bounds(self, model: ModelView) -> tuple[float, float] | None:
        """(fastest, slowest) cold start of `model` over every tier a checkpoint can be read
        from: `cold_start_estimate` lies between them, whatever the nodes hold. None if the
        model cannot estimate each of them."""
        entry = self._bounds.get(id(model))
        if entry is None:
            try:
                times = [self.cold_start_s(model, tier) for tier in _TIERS]
            except ValueError:
                entry = self._bounds[id(model)] = (model, None)
            else:
                entry = self._bounds[id(model)] = (model, (min(times), max(times)))
        return entry[1]

    def prefill_s(self, request: Request, model: ModelView) -> float:
        """`model.prefill_s(request.prompt_tokens)`, kept from the last `best` for its caller."""
        own = self._own
        if own is not None and own[0] is request and own[1] is model:
            return own[2]
        return model.prefill_s(request.prompt_tokens)

    def service_s(self, model: ModelView, batch: int) -> float:
        """A typical request's time in a slot: its prefill plus its decode steps at `batch`."""
        prompt, output = self._tokens.get(model.name, (1.0, 1.0))
        return model.prefill_s(max(1, round(prompt))) + max(0.0, output - 1.0) * model.decode_s(max(1, batch))

    def _service(self, model: ModelView, batch: int, ctx: _Context) -> float:
        """`service_s(model, batch)`, remembered for the request of `ctx` (see `best`)."""
        v = ctx.service.get(batch)
        if v is None:
            v = ctx.service[batch] = self.service_s(model, batch)
        return v

    def _context(self, request: Request, cluster: ClusterView) -> _Context:
        """What `ttft` works out alike for every candidate of `request`."""
        name = request.model
        model = cluster.model(name)
        own = model.prefill_s(request.prompt_tokens)
        self._own = (request, model, own)
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = {}
        return _Context(model, cluster.now, own, {}, name, seen)

    def ttft(self, request: Request, inst: InstanceView, cluster: ClusterView) -> float:
        """Expected TTFT of `request` if it joined `inst` now (inf for an evicted instance)."""
        compiled = self._compiled.get(request.model)
        if compiled is not None:
            return self._best_compiled(compiled, request, [inst], cluster)[1]
        state = inst.state
        if state == "evicted":
            return _INF
        return self._ttft(request, inst, state, cluster, self._context(request, cluster))

    def _ttft(self, request: Request, inst: InstanceView, state: str, cluster: ClusterView, ctx: _Context) -> float:
        """`ttft` of an instance in `state` (not evicted); `ctx` holds what is the same for
        every candidate of one request (`_context`)."""
        model, now, name = ctx.model, ctx.now, ctx.name
        slots = float(max(1, inst.capacity))
        learned = self._slots.get(name)
        if learned is not None:
            slots = min(slots, max(1.0, learned))
        ahead = inst.waiting
        running = max(0, inst.active - ahead)
        can_serve = inst.can_serve
        rec = self._track(ctx.seen, inst, state in _STARTING, now, ahead > 0 and can_serve)
        if can_serve:
            ready_in = 0.0
            if rec[2] is not None and running > 0:
                # A queue that outlasts the step that would take it in (or a typical request's
                # whole time in a slot) is not waiting for a step: it is saturated at `running`.
                # Performance: `queued_for > min(2 * step, service)` is `queued_for > service
                # or queued_for > 2 * step`, so the step is worked out only for a queue younger
                # than a typical request's time in a slot; under overload nearly none is.
                queued_for = now - rec[2]
                saturated = queued_for > self._service(model, running, ctx)
                if not saturated:
                    prompt = self._tokens.get(name, (1.0, 1.0))[0]
                    step = model.prefill_s(max(1, round(prompt * ahead))) + model.decode_s(running)
                    saturated = queued_for > 2.0 * step
                if saturated:
                    seen = self._slots.get(name)
                    self._slots[name] = running if seen is None else seen + 0.1 * (running - seen)
                    slots = float(running)
        elif state in _STARTING:
            tier = cluster.checkpoint_tier(name, inst.node)
            ready_in = max(0.0, self.cold_start_s(model, tier) - (now - rec[1]))
        else:  # sleeping: a wake, its weights from host DRAM (level 1) or reloaded (level 2)
            ready_in = model.wake_s(inst.sleep_level or 1, cluster.checkpoint_tier(name, inst.node))
        starts = running + ahead + 1 - slots  # slot releases needed before this request starts
        wait = 0.0 if starts <= 0 else starts * self._service(model, int(slots), ctx) / slots
        return ready_in + wait + ctx.own_prefill_s

    def best(self, request: Request, candidates: list[InstanceView], cluster: ClusterView):
        """(instance, expected TTFT) of the fastest candidate, ties to the earliest; (None, inf) if none.

        Performance: what `ttft` would work out again for each candidate (the model, its
        prefill of this prompt, a typical request's time in a slot) is worked out once.
        """
        name = request.model
        compiled = self._compiled.get(name, False)
        if (compiled is False and candidates and hasattr(cluster, "routing_slots")  # rows: `RoutingRowsView`
                and (len(candidates) >= self.compiled_min_candidates or len(cluster.gpus) >= self.compiled_min_gpus)):
            compiled = self._compile(name, candidates, cluster)
        if compiled:
            return self._best_compiled(compiled, request, candidates, cluster)
        best, best_t = None, _INF
        ctx = None
        for inst in candidates:
            state = inst.state
            if state == "evicted":
                continue  # inf: never better than the best so far
            if ctx is None:
                ctx = self._context(request, cluster)
            t = self._ttft(request, inst, state, cluster, ctx)
            if t < best_t:
                best, best_t = inst, t
        seen = None if ctx is None else ctx.seen
        if seen and len(seen) > len(candidates):  # forget instances that are gone
            live = {i.id for i in candidates}
            for iid in [iid for iid in seen if iid not in live]:
                del seen[iid]
        return best, best_t

    def _compile(self, name: str, candidates: list[InstanceView], cluster: ClusterView) -> _CompiledModel | None:
        """From now on walk `name`'s instances compiled, on a cluster that keeps routing rows
        (`policies.views.RoutingRowsView`), if numba imports (else None, remembered): what
        `_track` kept of them moves to `_seen_rows`."""
        compiled = None
        try:
            from policies import ttft_kernel

            ttft_kernel.ready()
        except ImportError:  # numba missing: the Python walk gives the same answers
            ttft_kernel = None
        except Exception as e:  # numba there but unable to compile or cache here: say so once
            warnings.warn(f"the compiled router walk is unavailable ({type(e).__name__}: {e}); "
                          f"the Python walk runs instead (the same results, slower)", RuntimeWarning, stacklevel=2)
            ttft_kernel = None
        if ttft_kernel is not None:
            compiled = _CompiledModel(cluster.model(name), ttft_kernel, candidates)
            slots = cluster.routing_slots(name, candidates)
            seen = self._seen_rows_for(cluster.routing_view())
            kept = self._seen.pop(name, {})
            for inst, slot in zip(candidates, slots, strict=True):
                rec = kept.get(inst.id)
                if rec is not None and slot >= 0:
                    seen[slot] = (inst.id, float(rec[0]), rec[1], _NAN if rec[2] is None else rec[2])
        self._compiled[name] = compiled
        return compiled

    def _seen_rows_for(self, rows: np.ndarray) -> np.ndarray:
        """`_seen_rows`, with a row for every routing slot of `rows` (new rows: nothing seen)."""
        seen = self._seen_rows
        if seen is None or len(seen) < len(rows):
            grown = np.full((len(rows), 4), _NAN)
            grown[:, 0] = -1.0
            if seen is not None:
                grown[:len(seen)] = seen
            seen = self._seen_rows = grown
        return seen

    def _best_compiled(self, compiled: _CompiledModel, request: Request, candidates: list[InstanceView],
                       cluster: ClusterView):
        """`best`, walked by policies/ttft_kernel.py: the same answer and the same state after it."""
        name = request.model
        model = cluster.model(name)
        if model is not compiled.model:  # another run's model of that name: its tables, not these
            compiled = self._compiled[name] = _CompiledModel(model, compiled.kernel, candidates)
        rows = cluster.routing_view()
        slots = cluster.routing_slots(name, candidates)
        seen = self._seen_rows_for(rows)
        own = model.prefill_s(request.prompt_tokens)
        self._own = (request, model, own)
        prompt, output = self._tokens.get(name, (1.0, 1.0))
        prefill_typ = model.prefill_s(max(1, round(prompt)))
        learned = self._slots.get(name, _NAN)
        asked = self._asked.get(name, _NAN)
        extra, has_extra = _NO_EXTRA, False
        call_n, call_v, asked_for = compiled.call_n, compiled.call_v, 0  # prefill times this walk asked for
        kernel = compiled.kernel
        # Each question answered lets the walk past one more candidate (or answers them all).
        for _ in range(3 * len(candidates) + 3):
            code, pos, best_t, now_learned, asked_used, need = kernel.walk(
                rows, slots, seen, extra, has_extra, compiled.prefill_n, compiled.prefill_v, call_n, call_v,
                compiled.decode, cluster.now, own, learned, asked, prefill_typ, prompt, output)
            if asked_used:  # `_track` took the start the caller asked for, as the Python walk pops it
                del self._asked[name]
                asked = _NAN
            if code == kernel.DONE:
                break
            if code == kernel.NEED_EXTRA:  # when each starting or sleeping candidate would serve
                extra, has_extra = self._ready_in(name, model, candidates, cluster), True
            elif code == kernel.NEED_PREFILL:
                value = compiled.know_prefill(need)
                if asked_for == len(call_n):
                    call_n, call_v = compiled.more_call_room()
                call_n[asked_for], call_v[asked_for] = need, value
                asked_for += 1
            else:  # NEED_DECODE
                compiled.decode_up_to(need)
        else:
            raise RuntimeError(f"the compiled walk over {name}'s {len(candidates)} instances did not finish")
        if asked_for:
            call_n[:asked_for] = -1
        if now_learned == now_learned:
            self._slots[name] = now_learned
        return (None, _INF) if pos < 0 else (candidates[pos], best_t)

    def _ready_in(self, name: str, model: ModelView, candidates: list[InstanceView],
                  cluster: ClusterView) -> np.ndarray:
        """Per candidate: the cold start of a starting one, the wake of a sleeping one (as `_ttft`)."""
        extra = np.zeros(len(candidates))
        for p, inst in enumerate(candidates):
            state = inst.state
            if state in _STARTING:
                extra[p] = self.cold_start_s(model, cluster.checkpoint_tier(name, inst.node))
            elif state == "sleeping":
                extra[p] = model.wake_s(inst.sleep_level or 1, cluster.checkpoint_tier(name, inst.node))
        return extra


class _CompiledModel:
    """What the compiled walk needs of one model's profile, as arrays it can read.

    `decode[b]` is `decode_s(max(1, b))`; `prefill_v[n % PREFILL_KEPT]` is the prefill time of
    `prefill_n[...] = n` prompt tokens, the last such size asked (a direct-mapped memo: a
    queue's prefill size varies with its length). Every value is the model's own tables'
    answer, so the walk computes nothing the profile would answer otherwise.
    """

    PREFILL_KEPT = 1024
    CALL_ROOM = 8

    def __init__(self, model: ModelView, kernel, candidates: list[InstanceView] = ()):
        self.model = model
        self.kernel = kernel  # policies.ttft_kernel, imported only when a walk is first compiled
        self.decode = np.zeros(0)
        self.decode_up_to(max((i.capacity for i in candidates), default=1))  # every batch they can run
        self.prefill_n = np.full(self.PREFILL_KEPT, -1, dtype=np.int64)
        self.prefill_v = np.zeros(self.PREFILL_KEPT)
        # the prefill times one walk asked for (-1: a free entry), kept apart from the memo so
        # that two sizes sharing a memo entry cannot make the walk ask forever; emptied after it
        self.call_n = np.full(self.CALL_ROOM, -1, dtype=np.int64)
        self.call_v = np.zeros(self.CALL_ROOM)

    def decode_up_to(self, batch: int) -> None:
        n = len(self.decode)
        if batch >= n:
            more = [self.model.decode_s(max(1, b)) for b in range(n, max(batch + 1, 2 * n))]
            self.decode = np.concatenate([self.decode, np.array(more, dtype=np.float64)])

    def know_prefill(self, tokens: int) -> float:
        """The prefill time of `tokens`, now in the memo."""
        k = tokens % self.PREFILL_KEPT
        self.prefill_n[k] = tokens
        value = self.prefill_v[k] = self.model.prefill_s(tokens)
        return value

    def more_call_room(self) -> tuple[np.ndarray, np.ndarray]:
        """`call_n` and `call_v` twice as long (a walk asked for more prefill times than they held)."""
        self.call_n = np.concatenate([self.call_n, np.full(len(self.call_n), -1, dtype=np.int64)])
        self.call_v = np.concatenate([self.call_v, np.zeros(len(self.call_v))])
        return self.call_n, self.call_v
