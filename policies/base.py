"""The six policy interfaces. Each returns decisions; none touches the simulator.

A policy's constructor takes its parameters as keyword arguments and stores each under
an attribute of the same name, so that its label (`fixed[ttl=600.0]`) is printed in
results and parses back into the same policy (see `policies.registry`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from contracts.decisions import SERVE, Admit, Keep, Place, Prewarm
from contracts.plan import StagePlan
from policies.views import ClusterView, InstanceView, ModelView

if TYPE_CHECKING:  # a type only: importing traces here would load its readers
    from contracts.request import Request


class Policy(ABC):  # noqa: B024 - a shared base; each kind declares its abstract hook
    """Common base: a registered `name` and a label built from the constructor's parameters."""

    name: str = ""

    @property
    def label(self) -> str:
        params = [
            p for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        name = self.name or type(self).__name__
        if not params:
            return name
        args = ",".join(f"{p.name}={getattr(self, p.name)!r}".replace("'", "") for p in params)
        return f"{name}[{args}]"

    def __repr__(self) -> str:
        return self.label


class StagingPolicy(Policy):
    """How a model's weights are loaded: which layers in which stage, and when serving starts."""

    @abstractmethod
    def plan(self, model: ModelView) -> StagePlan: ...


class KeepAlivePolicy(Policy):
    """What happens to an instance that has just become idle."""

    @abstractmethod
    def on_idle(self, inst: InstanceView, now: float) -> list[Keep]:
        """Return the tiers to keep it in, in order (empty: evict now)."""


class PrewarmPolicy(Policy):
    """Start instances ahead of demand. Called every `interval_s` of simulated time."""

    interval_s: float = 60.0

    @abstractmethod
    def on_tick(self, cluster: ClusterView) -> list[Prewarm]: ...


class PlacementPolicy(Policy):
    """Which GPU gets a new instance, and which idle instances to evict to make room."""

    @abstractmethod
    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        """Return where to start it, or None if it cannot start now (it waits for memory).

        The simulator asks again only after GPU memory or an instance's idleness changed: a
        None stands until then, so the answer should depend on that state, not on time.
        """


class RouterPolicy(Policy):
    """Which instance of the model gets a request."""

    @abstractmethod
    def route(self, request: Request, candidates: list[InstanceView], cluster: ClusterView) -> int | None:
        """Return an instance id from `candidates`, or None to start a new instance."""


class AdmissionPolicy(Policy):
    """Let a request in, or shed it under overload."""

    def admit(self, request: Request, cluster: ClusterView) -> Admit:
        return SERVE


__all__ = [
    "Policy", "StagingPolicy", "KeepAlivePolicy", "PrewarmPolicy", "PlacementPolicy",
    "RouterPolicy", "AdmissionPolicy",
]
