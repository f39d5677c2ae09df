"""Built-in placement policies: which GPU gets a new instance, evicting idle ones if needed."""

from __future__ import annotations

import bisect
import weakref

from contracts.decisions import Place
from policies.base import PlacementPolicy
from policies.views import ClusterView, GpuView, ModelView


def need_on(model: ModelView, gpu: GpuView) -> int:
    """Bytes a new instance of `model` takes on `gpu`: its footprint, less its shared base where
    the GPU holds a copy (`GpuView.need_bytes` owns the rule; a model without one needs no ask)."""
    return gpu.need_bytes(model) if getattr(model, "gpu_base", None) else model.footprint_bytes


def base_first(model: ModelView, gpus) -> list:
    """The GPUs, those holding the model's shared base first (a start there loads and holds only
    its task part), each group in the given order."""
    base = getattr(model, "gpu_base", None)
    if base is None:
        return gpus
    return sorted(gpus, key=lambda g: not g.holds_base(base))


def _evictable(gpu: GpuView) -> list:
    """Idle instances on the GPU, least recently used first (safe to evict now)."""
    idle = [i for i in gpu.instances if i.idle_since is not None and i.state in ("ready", "full")]
    return sorted(idle, key=lambda i: (i.last_used, i.id))


def _plan_on(gpu: GpuView, model: ModelView) -> Place | None:
    """Room for `model` on `gpu`, evicting idle instances least recently used first if need be."""
    if gpu.free_bytes >= need_on(model, gpu):
        return Place(gpu.node, gpu.index)
    victims, chosen = [], []
    for inst in _evictable(gpu):
        victims.append(inst.id)
        chosen.append(inst)
        free, need = _room_after(gpu, model, chosen, victims)
        if free >= need:
            return Place(gpu.node, gpu.index, tuple(victims))
    return None


def _room_after(gpu: GpuView, model: ModelView, chosen: list, victims: list[int]) -> tuple[int, int]:
    """(free bytes, bytes `model` needs) on `gpu` once the instances `chosen` (ids `victims`) are
    evicted: evicting the last user of a shared base frees its copy, or takes it from `model`."""
    if getattr(model, "gpu_base", None) is not None or getattr(gpu, "bases", None):
        return gpu.free_bytes + gpu.freed_by(chosen), gpu.need_bytes(model, victims)
    return gpu.free_bytes + sum(i.memory_bytes for i in chosen), model.footprint_bytes


class FirstFit(PlacementPolicy):
    """The first GPU with room; else the first where evicting idle LRU instances makes room.

    A model with a shared base (`ModelView.gpu_base`) looks at the GPUs that hold a copy of it
    first, where it needs only its own bytes (as every built-in placement does).
    """

    name = "first_fit"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        gpus = base_first(model, cluster.gpus)
        for gpu in gpus:
            if gpu.free_bytes >= need_on(model, gpu):
                return Place(gpu.node, gpu.index)
        for gpu in gpus:
            p = _plan_on(gpu, model)
            if p is not None:
                return p
        return None


class BestFit(PlacementPolicy):
    """The GPU that leaves the least free memory (packs models tightly), evicting only if needed;
    a GPU holding the model's shared base first."""

    name = "best_fit"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        fits = [g for g in base_first(model, cluster.gpus) if g.free_bytes >= need_on(model, g)]
        if fits:
            base = getattr(model, "gpu_base", None)
            g = min(fits, key=lambda g: (base is not None and not g.holds_base(base), g.free_bytes, g.node, g.index))
            return Place(g.node, g.index)
        return FirstFit().place(model, cluster)


class Spread(PlacementPolicy):
    """The GPU with the most free memory (spreads load; leaves room for bursts); a GPU holding the
    model's shared base first (spreading a task model would copy its base)."""

    name = "spread"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        base = getattr(model, "gpu_base", None)
        if base is not None:  # a GPU holding its base first: spreading it would copy the base
            fits = [g for g in cluster.gpus if g.holds_base(base) and g.free_bytes >= need_on(model, g)]
            if fits:
                g = max(fits, key=lambda g: (g.free_bytes, -g.node, -g.index))
                return Place(g.node, g.index)
        g = max(cluster.gpus, key=lambda g: (g.free_bytes, -g.node, -g.index))
        if g.free_bytes >= need_on(model, g):
            return Place(g.node, g.index)
        return FirstFit().place(model, cluster)


class GreedyDual(PlacementPolicy):
    """FaaSCache (Fuerst and Sharma, "FaasCache: Keeping Serverless Computing Alive with Greedy-Dual
    Caching", ASPLOS'21): keep-alive as caching, the victim chosen by Greedy-Dual-Size-Frequency.

    A new instance goes to the first GPU with room. Where none has room, idle instances are evicted
    lowest priority first, `priority = clock + frequency x cost / size`: `cost` is the model's cold
    start from where its checkpoint sits on that node (`ModelView.cold_start_s`, profile estimate),
    `size` its footprint in GB, `frequency` its requests since it was last brought onto a GPU, and
    `clock` the clock when the instance was last used. The GPU chosen is the one whose victims'
    highest priority is lowest; the clock then rises to that priority, so that instances not used
    since age against those used after. Pair it with the `greedy_dual` keep-alive (instances stay
    until their memory is needed).

    Simplified: `frequency` counts the model's arrivals in the window `ClusterView.arrivals` keeps
    (its last 256), so it saturates for busy models; it is counted per model (shared by its
    instances); it starts again when the policy places a model that has no instance. A prewarm
    that starts a process where placement points evicts nothing, yet the clock still rises then.
    """

    name = "greedy_dual"

    def __init__(self):
        self._run = None  # a weak reference to the cluster of the run under way (its identity only)
        self._clock = 0.0
        self._times: list[float] = [float("-inf")]  # the clock's history: value _values[i] from _times[i]
        self._values: list[float] = [0.0]
        self._entered: dict[str, float] = {}  # model -> when it was last brought onto a GPU with no instance
        self._absent: set[str] = set()  # models placed while they had no instance, not yet seen running

    def _start_run(self, cluster: ClusterView) -> None:
        """Forget the last run when `cluster` is another one (a hand-made view counts as one run)."""
        try:
            ref = weakref.ref(cluster)
        except TypeError:
            ref = None
        if self._run is not None and (ref is None or self._run() is cluster):
            return
        self._run = ref if ref is not None else (lambda: None)
        self._clock, self._times, self._values = 0.0, [float("-inf")], [0.0]
        self._entered, self._absent = {}, set()

    def clock_at(self, t: float) -> float:
        """The clock's value at time `t` (it changes only when this policy evicts)."""
        return self._values[bisect.bisect_right(self._times, t) - 1]

    def frequency(self, model: str, cluster: ClusterView) -> int:
        since = self._entered.get(model, float("-inf"))
        return sum(1 for t in cluster.arrivals(model) if t >= since)

    def priority(self, inst, cluster: ClusterView, freq: dict[str, int]) -> float:
        view = cluster.model(inst.model)
        cost = view.cold_start_s(cluster.checkpoint_tier(inst.model, inst.node))
        size_gb = max(view.footprint_bytes, 1) / 1e9
        return self.clock_at(inst.last_used) + freq[inst.model] * cost / size_gb

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        self._start_run(cluster)
        now = cluster.now
        # a model placed with no instance is "absent" until an instance of it is seen
        self._absent = {m for m in self._absent if not cluster.instances_of(m)}
        if not cluster.instances_of(model.name) and model.name not in self._absent:
            # it enters the cache: its frequency starts again
            self._entered[model.name] = now
            self._absent.add(model.name)
        gpus = base_first(model, cluster.gpus)
        for gpu in gpus:
            if gpu.free_bytes >= need_on(model, gpu):
                return Place(gpu.node, gpu.index)
        freq: dict[str, int] = {}
        best = None
        for gpu in gpus:
            idle = _evictable(gpu)
            for inst in idle:
                if inst.model not in freq:
                    freq[inst.model] = self.frequency(inst.model, cluster)
            ranked = sorted(((self.priority(i, cluster, freq), i.last_used, i.id, i) for i in idle),
                            key=lambda r: r[:3])
            free, victims, chosen, top = gpu.free_bytes, [], [], 0.0
            need = need_on(model, gpu)
            for prio, _, iid, inst in ranked:
                if free >= need:
                    break
                victims.append(iid)
                chosen.append(inst)
                free, need = _room_after(gpu, model, chosen, victims)
                top = prio
            if free >= need:
                key = (top, len(victims), gpu.node, gpu.index)
                if best is None or key < best[0]:
                    best = (key, Place(gpu.node, gpu.index, tuple(victims)))
        if best is None:
            return None
        top = best[0][0]
        if top > self._clock:
            self._clock = top
            self._times.append(now)
            self._values.append(top)
        return best[1]


class Locality(PlacementPolicy):
    """The GPU where the model would start soonest: ServerlessLLM's startup-time-optimised scheduling.

    ServerlessLLM (Fu et al., OSDI'24) keeps checkpoints in a multi-tier store (host DRAM, local
    SSD, remote) and places a model where its estimated startup time is shortest, counting the
    loads already queued on each server's links. Here: the candidates are the GPUs with free
    memory for the model, or, when none has, the GPUs with room after evicting idle instances
    least recently used first (as `first_fit`). A candidate's estimate is a cold start from the
    tier its node holds the checkpoint in (`ModelView.cold_start_s(tier)`), with the part that
    crosses the node's storage link (its excess over a start from host DRAM) stretched by 1 +
    the loads in flight on that node's links and the GPU's PCIe link
    (`ClusterView.loads_in_flight`); on a GPU holding the model's shared base only the task part
    loads. The smallest estimate wins; ties go to fewer evictions, then node and GPU order.

    Simplified: no live migration of running inference to free a GPU that holds the
    checkpoint (the paper's second mechanism); loads in flight are counted, not their bytes
    left, and each is taken to halve the link (a loader that uses only part of a link is
    slowed less); contention on a start from host DRAM (the GPU's PCIe link) is ignored.
    """

    name = "locality"

    def place(self, model: ModelView, cluster: ClusterView) -> Place | None:
        options = [(g, Place(g.node, g.index)) for g in cluster.gpus if g.free_bytes >= need_on(model, g)]
        if not options:
            options = [(g, p) for g in cluster.gpus if (p := _plan_on(g, model)) is not None]
        if not options:
            return None
        base = getattr(model, "gpu_base", None)
        by_tier: dict[tuple[str, bool], float] = {}

        def estimate(tier: str, resident: bool) -> float:
            if (tier, resident) not in by_tier:
                by_tier[tier, resident] = (model.cold_start_s(tier, base_resident=True) if resident
                                           else model.cold_start_s(tier))
            return by_tier[tier, resident]

        def startup(gpu: GpuView) -> float:
            # a GPU holding the model's shared base loads only the task part
            resident = base is not None and gpu.holds_base(base)
            dram = estimate("dram", resident)
            tier = cluster.checkpoint_tier(model.name, gpu.node)
            return dram + (estimate(tier, resident) - dram) * (1 + cluster.loads_in_flight(gpu.node, gpu.index))

        return min(options, key=lambda o: (startup(o[0]), len(o[1].evict), o[0].node, o[0].index))[1]
