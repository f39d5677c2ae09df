"""Built-in admission policies: serve everything, or shed under overload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.decisions import SERVE, Admit
from policies.base import AdmissionPolicy
from policies.views import ClusterView

if TYPE_CHECKING:  # a type only: importing traces here would load its readers
    from contracts.request import Request


class Always(AdmissionPolicy):
    """Admit every request; overload shows up as queueing delay."""

    name = "always"


class MaxQueue(AdmissionPolicy):
    """Reject a request when `depth` requests of its model are already waiting."""

    name = "max_queue"

    def __init__(self, depth: int = 64):
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1 (0 would reject every request), got {depth}")
        self.depth = int(depth)

    def admit(self, request: Request, cluster: ClusterView) -> Admit:
        if cluster.waiting(request.model) >= self.depth:
            return Admit("reject", f"queue full ({self.depth} waiting)")
        return SERVE
