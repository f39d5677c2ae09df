"""Built-in routers: which instance of a model gets a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policies.base import RouterPolicy
from policies.views import ClusterView, InstanceView, ModelView

if TYPE_CHECKING:  # a type only: importing traces here would load its readers
    from contracts.request import Request


class LeastLoaded(RouterPolicy):
    """The serving instance with the fewest requests in flight, if it has a free slot.

    Otherwise join an instance that is still loading (it will be ready sooner than a new
    one), then wake a sleeping one, and only then ask for a new instance (scale out).
    """

    name = "least_loaded"

    def route(self, request: Request, candidates: list[InstanceView], cluster: ClusterView) -> int | None:
        best = None
        loading = None
        sleeping = None
        for inst in candidates:
            if inst.can_serve:
                if inst.active < inst.capacity and (best is None or inst.active < best.active):
                    best = inst
            elif inst.state in ("starting", "loading") and inst.active < inst.capacity:
                if loading is None or inst.active < loading.active:
                    loading = inst
            elif inst.state == "sleeping" and sleeping is None:
                sleeping = inst
        if best is not None:
            return best.id
        if loading is not None:
            return loading.id
        if sleeping is not None:  # waking from host DRAM beats a cold start
            return sleeping.id
        return None


class PreferFull(RouterPolicy):
    """Like least_loaded, but a fully loaded instance wins over a partial one (quality first)."""

    name = "prefer_full"

    def route(self, request: Request, candidates: list[InstanceView], cluster: ClusterView) -> int | None:
        open_ = [i for i in candidates if i.can_serve and i.active < i.capacity]
        if open_:
            return min(open_, key=lambda i: (i.state != "full", i.active, i.id)).id
        return LeastLoaded().route(request, candidates, cluster)



# ---------------------------------------------------------------------------------------------
# Expected TTFT: what `expected_wait` routes by, and what `deadline` and `goodput` admit by.

_STARTING = ("starting", "loading")


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
    return min(model.cold_start_s(t) for t in cluster.checkpoint_tiers(model.name))


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

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha
        self._clear()

    def __eq__(self, other: object) -> bool:  # equal state: a policy's label round trip compares vars()
        return type(other) is type(self) and vars(other) == vars(self)

    def _clear(self) -> None:
        self._tokens: dict[str, list[float]] = {}  # model -> [mean prompt, mean output]
        self._slots: dict[str, float] = {}  # model -> requests an instance runs at once when saturated
        # model -> instance id -> [loading?, in that phase since, queue seen since (None: no queue)]
        self._seen: dict[str, dict[int, list]] = {}
        self._asked: dict[str, float] = {}  # model -> when the caller last asked for a new instance
        self._now = float("-inf")
        self._room_key: tuple[int, int] | None = None  # (memory epoch, bytes) `_room` answers for
        self._room = False

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

    def _track(self, inst: InstanceView, now: float, queued: bool) -> list:
        """[loading?, since when, queue since when] for the instance, as far as seen."""
        loading = inst.state in _STARTING
        seen = self._seen.setdefault(inst.model, {})
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

    def service_s(self, model: ModelView, batch: int) -> float:
        """A typical request's time in a slot: its prefill plus its decode steps at `batch`."""
        prompt, output = self._tokens.get(model.name, (1.0, 1.0))
        return model.prefill_s(max(1, round(prompt))) + max(0.0, output - 1.0) * model.decode_s(max(1, batch))

    def ttft(self, request: Request, inst: InstanceView, cluster: ClusterView) -> float:
        """Expected TTFT of `request` if it joined `inst` now (inf for an evicted instance)."""
        state = inst.state
        if state == "evicted":
            return float("inf")
        name = request.model
        model = cluster.model(name)
        now = cluster.now
        slots = float(max(1, inst.capacity))
        if name in self._slots:
            slots = min(slots, max(1.0, self._slots[name]))
        ahead = inst.waiting
        running = max(0, inst.active - ahead)
        rec = self._track(inst, now, ahead > 0 and inst.can_serve)
        if inst.can_serve:
            ready_in = 0.0
            if rec[2] is not None and running > 0:
                prompt = self._tokens.get(name, (1.0, 1.0))[0]
                step = model.prefill_s(max(1, round(prompt * ahead))) + model.decode_s(running)
                # A queue that outlasts the step that would take it in (or a typical request's
                # whole time in a slot) is not waiting for a step: it is saturated at `running`.
                if now - rec[2] > min(2.0 * step, self.service_s(model, running)):
                    seen = self._slots.get(name)
                    self._slots[name] = running if seen is None else seen + 0.1 * (running - seen)
                    slots = float(running)
        elif state in _STARTING:
            tier = cluster.checkpoint_tier(name, inst.node)
            ready_in = max(0.0, model.cold_start_s(tier) - (now - rec[1]))
        else:  # sleeping: a wake, its weights from host DRAM (level 1) or reloaded (level 2)
            ready_in = model.wake_s(inst.sleep_level or 1, cluster.checkpoint_tier(name, inst.node))
        starts = running + ahead + 1 - slots  # slot releases needed before this request starts
        wait = 0.0 if starts <= 0 else starts * self.service_s(model, int(slots)) / slots
        return ready_in + wait + model.prefill_s(request.prompt_tokens)

    def best(self, request: Request, candidates: list[InstanceView], cluster: ClusterView):
        """(instance, expected TTFT) of the fastest candidate, ties to the earliest; (None, inf) if none."""
        best, best_t = None, float("inf")
        for inst in candidates:
            t = self.ttft(request, inst, cluster)
            if t < best_t:
                best, best_t = inst, t
        seen = self._seen.get(request.model)
        if seen and len(seen) > len(candidates):  # forget instances that are gone
            live = {i.id for i in candidates}
            for iid in [iid for iid in seen if iid not in live]:
                del seen[iid]
        return best, best_t


class ExpectedWait(RouterPolicy):
    """The instance with the lowest expected TTFT; a new instance when that is too slow.

    In the spirit of AIBrix (vLLM project, 2025: load- and cost-aware routing with an autoscaler
    beside it): each candidate's expected TTFT (`TtftEstimator`: the time until it serves, its
    queue at the profile's prefill and decode speed, this prompt's prefill). It answers None
    (start a new instance) when the best expected TTFT exceeds a new instance's (a cold start
    from the best tier any node holds the checkpoint in, plus the prefill), or exceeds `slo`
    seconds, which adds capacity for the requests behind this one; an SLO-driven start is
    made only while fewer than `max_starting` instances of the model are starting or loading
    (one start per cold-start time, rather than one per request in a burst). With no room on
    any GPU it routes to the best instance instead of asking for a start that would fail.

    Simplified: no prefix-cache affinity, no engine-reported metrics (queue lengths and the
    profile stand in), no separate autoscaler loop; request lengths are learned from arrivals.
    """

    name = "expected_wait"

    def __init__(self, slo: float = 5.0, max_starting: int = 1):
        if not float(slo) > 0:
            raise ValueError(f"slo must be > 0 seconds, got {slo}")
        if int(max_starting) < 1:
            raise ValueError(f"max_starting must be >= 1, got {max_starting}")
        self.slo = float(slo)
        self.max_starting = int(max_starting)
        self._est = TtftEstimator()

    def route(self, request: Request, candidates: list[InstanceView], cluster: ClusterView) -> int | None:
        est = self._est
        est.observe(request, cluster)
        best, best_t = est.best(request, candidates, cluster)
        model = cluster.model(request.model)
        cold_t = cold_start_estimate(model, cluster) + model.prefill_s(request.prompt_tokens)
        if best is not None and (best_t <= min(self.slo, cold_t) or not est.room_for(model, cluster)):
            return best.id
        if best is not None and best_t <= cold_t:
            # Over the SLO but sooner than a cold start: add capacity, one start at a time.
            if sum(1 for i in candidates if i.state in _STARTING) >= self.max_starting:
                return best.id
        est.asked_for_new(request.model, cluster.now)
        return None
