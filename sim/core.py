"""What the simulator's collaborators may use of it: the `SimCore` interface.

`lifecycle` (an instance's processes), `serving` (the two fidelities) and `placing`
(starting instances) act on the run through this surface and nothing else. Keeping it
small and typed is what lets each of them be read, and tested, without the whole
`Simulator` in mind; a new need is a new method here, not a reach into private state.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import simpy

    from contracts.plan import StagePlan
    from sim.cluster import Gpu, Node
    from sim.compiled_batch import CompiledBatches
    from sim.deployment import Deployment
    from sim.flows import FlowNetwork
    from sim.instance import Instance
    from sim.metrics import RunMetrics
    from sim.policyset import PolicyError, PolicySet
    from sim.profile import Profile
    from sim.records import RequestRecord
    from sim.routing_rows import RoutingRows
    from sim.usage import UsageLedger


class SimCore(Protocol):
    """The run as lifecycle, serving and placing see it (implemented by `sim.simulator.Simulator`)."""

    # what the run is made of (read-only for collaborators)
    env: simpy.Environment
    profile: Profile
    policies: PolicySet
    net: FlowNetwork
    nodes: list[Node]
    usage: UsageLedger  # per-model counters: loads, wakes, cold starts, refills, bytes
    metrics: RunMetrics  # the run's summary: lifecycle counts bytes by kind there (`on_bytes`)
    label: str
    emit: Callable[[RequestRecord], None]
    instances: dict[int, Instance]
    by_model: dict[str, list[Instance]]
    routing_rows: RoutingRows  # what routers read of each instance; each instance writes its own row
    arrivals_done: bool
    outstanding: int  # requests in batch loops not yet finished (serving counts them)
    events_processed: int  # events the run has processed so far
    iteration: bool  # batch steps one event each (iteration fidelity, or GPUs that can be shared)
    batches: CompiledBatches | None  # request fidelity's batches, compiled (sim/compiled_batch.py), or None
    max_finish: float  # the latest end of a step or request so far

    def deployment(self, name: str) -> Deployment: ...
    def policy_failure(self, policy, hook: str, err) -> PolicyError: ...

    # instance state the run keeps
    def mark_busy(self, inst: Instance, finish: float) -> None: ...
    def set_idle(self, inst: Instance, idle: bool) -> None: ...
    def became_ready(self, inst: Instance, pipelined: bool) -> None: ...
    def demote(self, inst: Instance, level: int) -> None: ...
    def evict(self, inst: Instance) -> None: ...
    def wake_with_pending(self, inst: Instance) -> bool: ...
    def retry_memory_queue(self) -> None: ...

    # starting instances
    def no_room_known(self, key: Hashable) -> bool: ...
    def remember_no_room(self, key: Hashable) -> None: ...
    def retries_held(self) -> AbstractContextManager[None]: ...
    def register(self, dep: Deployment, gpu: Gpu, plan: StagePlan) -> Instance: ...
    def reserve(self, inst: Instance) -> None: ...
