"""A model deployment: a named model with a profile model's shape, and the estimates policies plan with."""

from __future__ import annotations

from sim.cluster import TIER_LINKS, base_key
from sim.profile import EngineProfile, HardwareProfile, ModelProfile


class Deployment:
    """A named model deployment with the shape of a profile model (implements `ModelView`).

    With the run's hardware and engine profiles it also answers the estimates policies plan
    with (a cold start from each tier, prefill and decode times): the profile's numbers for
    an uncontended link, never a measurement of the run itself.
    """

    __slots__ = ("name", "shape", "footprint_bytes", "max_tokens_in_flight", "hardware", "engine",
                 "base", "base_bytes", "gpu_base", "checkpoint_parts")

    def __init__(self, name: str, shape: ModelProfile, hardware: HardwareProfile | None = None,
                 engine: EngineProfile | None = None):
        self.name = name
        self.shape = shape
        self.footprint_bytes = shape.footprint_bytes  # kept: read on every placement
        self.max_tokens_in_flight = shape.max_tokens_in_flight  # kept: read on every arrival
        self.hardware = hardware
        self.engine = engine
        b = shape.shared_base
        self.base = None if b is None else b.name
        self.base_bytes = 0 if b is None else b.bytes
        # The base one copy of which on a GPU serves every instance there that shares it.
        self.gpu_base = None if b is None or not b.share_gpu_memory else b.name
        # What its checkpoint is, as the storage tiers cache it: (key, bytes) per part.
        self.checkpoint_parts: tuple[tuple[str, int], ...] = (
            ((name, shape.weight_bytes),) if b is None
            else ((base_key(b.name), b.bytes), (name, shape.weight_bytes - b.bytes)))

    @property
    def own_bytes(self) -> int:
        """GPU bytes an instance holds itself when its base is resident (task weights and KV cache)."""
        return self.footprint_bytes - self.base_bytes if self.gpu_base else self.footprint_bytes

    @property
    def max_batch(self) -> int:
        return self.shape.max_batch

    def prefill_s(self, prompt_tokens: int) -> float:
        """Seconds to prefill one prompt with every layer bound."""
        return self.shape.prefill(prompt_tokens)

    def decode_s(self, batch: int) -> float:
        """Seconds of one decode step at this batch size, every layer bound."""
        return self.shape.decode(batch)

    def cold_start_s(self, tier: str = "ssd", base_resident: bool = False) -> float:
        """A full cold start with its checkpoint in `tier` ("dram", "ssd" or "remote") on idle links.

        Process start, CUDA context, the weights at the loader's share of the slowest link on
        the path, a bind per layer, then KV-cache allocation and graph capture (unless the
        engine overlaps them with the load, when the longer of the two counts).
        `base_resident`: on a GPU that holds its shared base already, only the task part loads.
        """
        hw, eng = self.hardware, self.engine
        if hw is None or eng is None:
            raise ValueError(f"deployment {self.name}: no hardware/engine profile to estimate a cold start")
        nbytes = self.shape.weight_bytes - (self.base_bytes if base_resident and self.gpu_base else 0)
        load = nbytes / (min(self._links(tier)) * 1e9 * eng.loader_efficiency_from(tier))
        load += eng.bind_s_per_layer * self.shape.num_layers
        init = eng.kv_cache_alloc_s + eng.graph_capture_s
        body = max(load, init) if eng.init_overlaps_load else load + init
        return eng.process_start_s + eng.cuda_context_s + body

    def wake_s(self, level: int, tier: str = "dram") -> float:
        """Waking a sleeping instance on idle links: the engine's wake, then at level 1 its
        weights back from host DRAM over PCIe; at level 2 a load from `tier` with a bind per
        layer and the KV cache allocated again (process, context and graphs are kept)."""
        hw, eng = self.hardware, self.engine
        if hw is None or eng is None:
            raise ValueError(f"deployment {self.name}: no hardware/engine profile to estimate a wake")
        if level == 1:
            return eng.wake_from_sleep_s + self.shape.weight_bytes / (hw.h2d_gbps * 1e9 * eng.loader_efficiency)
        load = self.shape.weight_bytes / (min(self._links(tier)) * 1e9 * eng.loader_efficiency_from(tier))
        return eng.wake_from_sleep_s + load + eng.bind_s_per_layer * self.shape.num_layers + eng.kv_cache_alloc_s

    def layer_load_s(self, tier: str = "ssd") -> float:
        """Seconds to load and bind one decoder layer from `tier` on idle links (the loader's
        share of the slowest link on the path, plus the bind)."""
        hw, eng = self.hardware, self.engine
        if hw is None or eng is None:
            raise ValueError(f"deployment {self.name}: no hardware/engine profile to estimate a load")
        rate = min(self._links(tier)) * 1e9 * eng.loader_efficiency_from(tier)
        return self.shape.layer_bytes / rate + eng.bind_s_per_layer

    @property
    def profile_model(self) -> str:
        """The name of the profile model whose shape this deployment has."""
        return self.shape.name

    @property
    def partial_stages(self) -> tuple[tuple[str, int, float | None], ...]:
        """(name, layers, measured quality or None) of each stage with fewer layers than the
        model, as the profile lists them; a layer count listed twice counts once (the first)."""
        shape = self.shape
        out, seen = [], set()
        for st in shape.stages:
            if st.num_layers < shape.num_layers and st.num_layers not in seen:
                seen.add(st.num_layers)
                out.append((st.name, st.num_layers, None if st.quality is None else float(st.quality)))
        return tuple(out)

    def _links(self, tier: str) -> tuple[float, ...]:
        """The bandwidths (GB/s) on the path from a checkpoint tier to the GPU."""
        hw = self.hardware
        if tier not in TIER_LINKS:
            raise ValueError(f"tier must be one of {sorted(TIER_LINKS)}, got {tier!r}")
        rates = {"pcie": hw.h2d_gbps, "ssd": hw.ssd_read_gbps, "network": hw.network_gbps}
        return tuple(rates[kind] for kind in TIER_LINKS[tier])

    @property
    def num_layers(self) -> int:
        return self.shape.num_layers

    @property
    def weight_bytes(self) -> int:
        return self.shape.weight_bytes

    @property
    def layer_importance(self) -> tuple[float, ...] | None:
        return self.shape.layer_importance
