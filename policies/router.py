"""Built-in routers: which instance of a model gets a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policies.base import RouterPolicy
from policies.ttft import _STARTING, TtftEstimator
from policies.views import ClusterView, InstanceView

if TYPE_CHECKING:  # a type only: importing traces here would load its readers
    from contracts.request import Request


class LeastLoaded(RouterPolicy):
    """The serving instance with the fewest requests in flight, if it has a free slot.

    Otherwise join an instance that is still loading (it will be ready sooner than a new
    one), then wake a sleeping one, and only then ask for a new instance (scale out).
    """

    name = "least_loaded"

    def route(self, request: Request, candidates: list[InstanceView], cluster: ClusterView) -> int | None:
        # Performance: each view property is read once per candidate (`active` is computed).
        best = None
        loading = None
        sleeping = None
        best_active = loading_active = 0
        for inst in candidates:
            if inst.can_serve:
                active = inst.active
                if active < inst.capacity and (best is None or active < best_active):
                    best, best_active = inst, active
                continue
            state = inst.state
            if state in _STARTING:
                active = inst.active
                if active < inst.capacity and (loading is None or active < loading_active):
                    loading, loading_active = inst, active
            elif state == "sleeping" and sleeping is None:
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
        # Performance: the cold-start estimate (the checkpoint's tiers over every node) is
        # asked only where the decision depends on it: when the best instance is neither
        # sooner than a cold start from the fastest tier nor later than one from the slowest
        # (`cold_start_bounds`), and never over the SLO with no room for a new instance.
        est = self._est
        est.observe(request, cluster)
        best, best_t = est.best(request, candidates, cluster)
        if best is not None:
            model = cluster.model(request.model)
            own = est.prefill_s(request, model)
            bounds = est.cold_start_bounds(model)
            if best_t <= self.slo:
                if bounds is not None and best_t <= bounds[0] + own:
                    return best.id  # best_t <= min(slo, cold_t)
                cold_t = est.cold_start_estimate(model, cluster) + own
                if best_t <= min(self.slo, cold_t) or not est.room_for(model, cluster):
                    return best.id
                sooner = best_t <= cold_t
            elif not est.room_for(model, cluster):
                return best.id
            elif bounds is not None and best_t <= bounds[0] + own:
                sooner = True
            elif bounds is not None and best_t > bounds[1] + own:
                sooner = False
            else:
                sooner = best_t <= est.cold_start_estimate(model, cluster) + own
            if sooner:
                # Over the SLO but sooner than a cold start: add capacity, one start at a time.
                if sum(1 for i in candidates if i.state in _STARTING) >= self.max_starting:
                    return best.id
        est.asked_for_new(request.model, cluster.now)
        return None
