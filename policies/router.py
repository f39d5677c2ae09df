"""Built-in routers: which instance of a model gets a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policies.base import RouterPolicy
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
