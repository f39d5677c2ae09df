"""Read-only views of simulator state that policies see.

Policies must not reach into the simulator (they could not be tested in isolation, and a
policy that mutated state would make runs depend on call order). The simulator hands
them these protocols; its own objects implement them with read-only properties. Views
are live: they show the state at the moment of the call, so a policy should not keep
them between calls.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # a type only
    import numpy as np


class InstanceView(Protocol):
    """One model instance (a serving process for one model on one GPU)."""

    @property
    def id(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def node(self) -> int: ...
    @property
    def gpu(self) -> int: ...
    @property
    def state(self) -> str:
        """One of "starting", "loading", "ready", "full", "sleeping", "evicted".

        "ready" serves at a partial stage; "full" has every layer bound.
        """
        ...
    @property
    def bound_layers(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def quality(self) -> float: ...
    @property
    def active(self) -> int:
        """Requests in flight (running or queued on this instance) now."""
        ...
    @property
    def waiting(self) -> int:
        """Requests given to it that have not started (queued behind a busy slot, or pending its load)."""
        ...
    @property
    def capacity(self) -> int:
        """How many requests it runs at once (the profile's max batch)."""
        ...
    @property
    def busy_until(self) -> float:
        """When the work it has been given so far ends, as far as is known now."""
        ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def idle_since(self) -> float | None:
        """When it last became idle, or None while it has work."""
        ...
    @property
    def last_used(self) -> float: ...
    @property
    def can_serve(self) -> bool: ...
    @property
    def sleep_level(self) -> int:
        """While sleeping: 1 with its weights in host DRAM, 2 with only the process kept; else 0."""
        ...


class GpuView(Protocol):
    @property
    def node(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def capacity_bytes(self) -> int: ...
    @property
    def used_bytes(self) -> int: ...
    @property
    def free_bytes(self) -> int: ...
    @property
    def instances(self) -> list[InstanceView]: ...
    def holds_base(self, name: str | None) -> bool:
        """Whether a copy of shared base `name` is on this GPU (resident or being loaded)."""
        ...
    def need_bytes(self, model: ModelView, evict: Collection[int] = ()) -> int:
        """Bytes a new instance of `model` would reserve here once instances `evict` are gone:
        its footprint, less its shared base (`ModelView.gpu_base`) where a copy stays here."""
        ...
    def freed_by(self, evict: Collection[InstanceView]) -> int:
        """Bytes evicting these instances of this GPU frees, shared bases left unused included."""
        ...


class ModelView(Protocol):
    """The shape of a model as the profile gives it."""

    @property
    def name(self) -> str: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def weight_bytes(self) -> int: ...
    @property
    def footprint_bytes(self) -> int:
        """Weights plus the KV cache the instance preallocates."""
        ...
    @property
    def layer_importance(self) -> tuple[float, ...] | None: ...
    @property
    def max_batch(self) -> int: ...
    def prefill_s(self, prompt_tokens: int) -> float:
        """Seconds to prefill one prompt with every layer bound (the profile's table)."""
        ...
    def decode_s(self, batch: int) -> float:
        """Seconds of one decode step at this batch size (the profile's table)."""
        ...
    def cold_start_s(self, tier: str = "ssd", base_resident: bool = False) -> float:
        """A full cold start from "dram", "ssd" or "remote" on idle links (profile estimate);
        `base_resident`: on a GPU holding its shared base, whose start loads the task part only."""
        ...
    @property
    def base(self) -> str | None:
        """The shared base its weights include (the profile's `shared_base`), or None."""
        ...
    @property
    def gpu_base(self) -> str | None:
        """That base when one copy of it on a GPU serves every instance there that shares it."""
        ...
    @property
    def base_bytes(self) -> int:
        """The shared base's bytes (0 without one)."""
        ...
    def wake_s(self, level: int, tier: str = "dram") -> float:
        """Waking a sleeping instance of it (sleep level 1 or 2, weights from `tier` at level 2)."""
        ...
    def layer_load_s(self, tier: str = "ssd") -> float:
        """Seconds to load and bind one decoder layer from `tier` on idle links (profile estimate)."""
        ...
    @property
    def profile_model(self) -> str:
        """The name of the profile model whose shape it has."""
        ...
    @property
    def partial_stages(self) -> tuple[tuple[str, int, float | None], ...]:
        """(name, layers, measured quality or None: not measured) of each stage of fewer layers
        than the model that the profile lists."""
        ...


class ClusterView(Protocol):
    @property
    def now(self) -> float: ...
    @property
    def gpus(self) -> list[GpuView]: ...
    def instances_of(self, model: str) -> list[InstanceView]: ...
    def model(self, name: str) -> ModelView: ...
    @property
    def models_seen(self) -> list[str]:
        """Every model name that has had a request so far, in first-seen order."""
        ...
    def waiting(self, model: str) -> int:
        """Requests of the model admitted but not yet started (queued for a load or a slot)."""
        ...
    def arrivals(self, model: str) -> list[float]:
        """The arrival times of the model's most recent requests (at most 256), oldest first."""
        ...
    def checkpoint_tier(self, model: str, node: int) -> str:
        """Where a load of the model onto that node would read from now: "dram", "ssd" or "remote"."""
        ...
    def loads_in_flight(self, node: int, gpu: int) -> int:
        """Transfers now crossing the node's SSD or network link or that GPU's PCIe link."""
        ...
    def checkpoint_tiers(self, model: str) -> frozenset[str]:
        """The tiers a new instance of the model could load from now, over all nodes (each
        node's `checkpoint_tier`): what a cold start anywhere could cost, in one call."""
        ...
    @property
    def memory_epoch(self) -> int:
        """A number that changes whenever GPU memory or an instance's idleness changes: a
        policy may cache what it derives from `gpus` (room for a new instance) until then."""
        ...


class RoutingRowsView(Protocol):
    """What a cluster may offer beside `ClusterView` for compiled routing (the simulator does).

    Optional: a policy checks for it (`hasattr(cluster, "routing_slots")`) and walks the views
    otherwise. The rows are laid out as `contracts/routing_row.py` says; each says, at the
    moment of the call, what its instance's `state`, `capacity`, `waiting` and `active` say.
    """

    def routing_view(self) -> np.ndarray:
        """Every instance's routing row, as one (rows, `WIDTH`) float64 array (read only)."""
        ...

    def routing_slots(self, model: str, candidates: list[InstanceView]) -> np.ndarray:
        """The rows of `candidates` (instances of `model`) in `routing_view()`, in their order;
        -1 for an evicted one."""
        ...
