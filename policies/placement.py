"""Built-in placement policies: which GPU gets a new instance, evicting idle ones if needed."""

from __future__ import annotations

from contracts.decisions import Place
from policies.base import PlacementPolicy
from policies.views import ClusterView, GpuView, ModelView


def _evictable(gpu: GpuView) -> list:
    """Idle instances on the GPU, least recently used first (safe to evict now)."""
    idle = [i for i in gpu.instances if i.idle_since is not None and i.state in ("ready", "full")]
    return sorted(idle, key=lambda i: (i.last_used, i.id))


def _plan_on(gpu: GpuView, need: int) -> Place | None:
    free = gpu.free_bytes
    if free >= need:
        return Place(gpu.node, gpu.index)
    victims = []
    for inst in _evictable(gpu):
        victims.append(inst.id)
        free += inst.memory_bytes
        if free >= need:
            return Place(gpu.node, gpu.index, tuple(victims))
    return None


class FirstFit(PlacementPolicy):
    """The first GPU with room; else the first where evicting idle LRU instances makes room."""

    name = "first_fit"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        need = model.footprint_bytes
        for gpu in cluster.gpus:
            if gpu.free_bytes >= need:
                return Place(gpu.node, gpu.index)
        for gpu in cluster.gpus:
            p = _plan_on(gpu, need)
            if p is not None:
                return p
        return None


class BestFit(PlacementPolicy):
    """The GPU that leaves the least free memory (packs models tightly), evicting only if needed."""

    name = "best_fit"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        need = model.footprint_bytes
        fits = [g for g in cluster.gpus if g.free_bytes >= need]
        if fits:
            g = min(fits, key=lambda g: (g.free_bytes, g.node, g.index))
            return Place(g.node, g.index)
        return FirstFit().place(model, cluster)


class Spread(PlacementPolicy):
    """The GPU with the most free memory (spreads load; leaves room for bursts)."""

    name = "spread"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        need = model.footprint_bytes
        g = max(cluster.gpus, key=lambda g: (g.free_bytes, -g.node, -g.index))
        if g.free_bytes >= need:
            return Place(g.node, g.index)
        return FirstFit().place(model, cluster)
