"""An instance's life as SimPy processes: cold start stage by stage, prewarm, wake.

Once a start or a wake ends, keep-alive takes the instance over (sim/keeper.py).

A cold start has phases (docs/design.md, Cold-start phases): process start and CUDA context, then the weights of
each stage over the links their checkpoint's tier decides, a bind per layer, and the
engine's KV-cache allocation and graph capture before the first request can run (after
the weights, as vLLM does, unless the profile says the engine overlaps them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.cluster import load_path
from sim.instance import Instance, InstanceState
from sim.keeper import keep_alive

if TYPE_CHECKING:  # the interface only: importing the simulator here would be circular
    from sim.core import SimCore

S = InstanceState


def cold_start(sim: SimCore, inst: Instance):
    """A new process: start, CUDA context, then the weights stage by stage and engine init."""
    env = sim.env
    eng = sim.profile.engine
    sim.usage.of(inst.model).loads += 1
    yield env.timeout(eng.process_start_s + eng.cuda_context_s)
    init_s = eng.kv_cache_alloc_s + eng.graph_capture_s
    yield from load_weights(sim, inst, init_s)
    if inst.state is not S.EVICTED:
        keep_alive(sim, inst)


def load_weights(sim: SimCore, inst: Instance, init_s: float):
    """Load every stage of the instance's plan; serve once stage `serve_from` is bound.

    `init_s` (KV-cache allocation and graph capture) runs after the serving stage's weights,
    as in vLLM, or alongside the loads when the profile's engine overlaps them (the alpha
    gates keep the graph valid before any weight arrives), or when the plan asks for it
    (`StagePlan.overlap_init`). A pipelined plan always overlaps them: computing layer i
    while layer i+1 loads needs the KV cache before the first layer.
    """
    env = sim.env
    eng = sim.profile.engine
    shape = inst.shape
    plan = inst.plan
    overlapped = eng.init_overlaps_load or plan.pipelined or plan.overlap_init
    init_done = env.timeout(init_s) if overlapped else None
    if inst.state is S.EVICTED:
        return
    if inst.state is not S.LOADING:  # a level-2 wake is loading already
        inst.move_to(S.LOADING)
    inst.bound_layers = 0
    inst.stage = -1
    dep = inst.dep
    node = inst.node_ref
    residency = inst.base_residency
    base_on_gpu = residency is not None and inst.base_was_resident
    sources: dict[str, str] = {}  # checkpoint part -> the tier it was read from
    last = len(plan.stages) - 1
    for j, layers in enumerate(plan.stages):
        if inst.state is S.EVICTED:
            return
        nbytes = len(layers) * shape.layer_bytes + (shape.embedding_bytes + shape.head_bytes if j == 0 else 0)
        if dep.base is None:
            yield _read(sim, inst, inst.model, nbytes, j, sources)
        else:
            nbytes = yield from _load_parts(sim, inst, nbytes, j, base_on_gpu, sources)
            if base_on_gpu:  # its layers bind once the GPU's copy of the base is complete
                yield from _base_loaded(sim, residency)
            elif residency is not None and j == last:
                _base_now_loaded(residency)
        sim.usage.of(inst.model).bytes_loaded += nbytes
        if eng.bind_s_per_layer > 0:
            yield env.timeout(eng.bind_s_per_layer * len(layers))
        inst.bind_stage(j, len(layers), env.now)
        if j == plan.serve_from:
            if init_done is None:
                yield env.timeout(init_s)
            else:
                yield init_done
            sim.became_ready(inst, pipelined=plan.pipelined)
    # The checkpoint passed through host DRAM (page cache) and, from remote, landed on the SSD.
    for key, nbytes in dep.checkpoint_parts:
        if key in sources:
            node.dram.add(key, nbytes)
            if sources[key] == "remote":
                node.ssd.add(key, nbytes)
    if base_on_gpu:
        _count_base_saved(sim, inst, dep.base_bytes)


def _read(sim: SimCore, inst: Instance, key: str, nbytes: float, stage: int, sources: dict[str, str]):
    """Move `nbytes` of checkpoint part `key` (its stage `stage`) onto the instance's GPU from
    the tier that holds it on the node; the event fires when the last byte lands.

    Reads share the page cache (`EngineProfile.shares_reads`): where another load on the node
    is reading the same bytes from storage now, this one waits for that read and copies them
    from host DRAM over its PCIe link, as buffered reads of one file do.
    """
    node, gpu = inst.node_ref, inst.gpu_ref
    path, src = load_path(node, gpu, key)
    sources.setdefault(key, src)
    net, engine = sim.net, sim.profile.engine
    eff = engine.loader_efficiency_from(src)
    if src == "dram" or not engine.shares_reads:
        return net.transfer(path, nbytes, eff)
    tag = (key, stage, nbytes)
    leader = node.reads.get(tag)
    if leader is not None:  # its bytes come from the page cache: the loader's host-DRAM share
        return sim.env.all_of([leader, net.transfer((gpu.pcie,), nbytes, engine.loader_efficiency_from("dram"))])
    done = net.transfer(path, nbytes, eff)
    node.reads[tag] = done

    def over(_event) -> None:
        if node.reads.get(tag) is done:
            del node.reads[tag]

    done.callbacks.append(over)
    return done


def _load_parts(sim: SimCore, inst: Instance, nbytes: int, stage: int, base_on_gpu: bool, sources: dict[str, str]):
    """Load a stage's `nbytes` of a model with a shared base: the base's share (spread over the
    layers in proportion to their bytes), then the task's, each from the tier that holds that
    part on the node (one loader reads one file after the other); the base's not at all where
    its copy is on the GPU. Returns the bytes moved."""
    dep = inst.dep
    base_part = nbytes * dep.base_bytes / dep.weight_bytes
    for key, part in ((dep.checkpoint_parts[0][0], base_part), (inst.model, nbytes - base_part)):
        if part <= 0 or (base_on_gpu and key != inst.model):
            continue
        yield _read(sim, inst, key, part, stage, sources)
    return nbytes - base_part if base_on_gpu else nbytes


def _base_loaded(sim: SimCore, residency):
    """Wait until the GPU's copy of a shared base has been loaded by the instance that brought it."""
    if not residency.loaded:
        done = sim.env.event()
        residency.waiters.append(done)
        yield done


def _base_now_loaded(residency) -> None:
    residency.loaded = True
    waiters, residency.waiters = residency.waiters, []
    for done in waiters:
        done.succeed()


def _count_base_saved(sim: SimCore, inst: Instance, nbytes: int) -> None:
    """A load that found its shared base on the GPU skipped `nbytes`: count them, and the seconds
    the profile says they would have taken from the tier the node holds the base in."""
    dep = inst.dep
    node = inst.node_ref
    key = dep.checkpoint_parts[0][0]
    tier = node.tier_of(key)
    usage = sim.usage.of(inst.model)
    usage.base_bytes_saved += nbytes
    usage.base_load_s_saved += dep.cold_start_s(tier) - dep.cold_start_s(tier, base_resident=True)
    sim.metrics.on_bytes("base_saved", nbytes)


def wake(sim: SimCore, inst: Instance):
    """A sleeping process serves again.

    Level 1 (weights kept in host DRAM): copy them back over PCIe. Level 2 (weights dropped,
    process and CUDA context kept): load them like a cold start, stage by stage, but with no
    process start; the KV cache is allocated again, the captured graph is kept.
    """
    env = sim.env
    eng = sim.profile.engine
    sim.usage.of(inst.model).wakes += 1
    level = inst.sleep_level
    inst.sleep_level = 0
    yield env.timeout(eng.wake_from_sleep_s)
    if level == 1:
        inst.node_ref.dram.unpin(inst.shape.weight_bytes)
        residency = inst.base_residency
        base_on_gpu = residency is not None and inst.base_was_resident
        nbytes = inst.shape.weight_bytes
        if base_on_gpu:  # its GPU holds the base: only its own weights go back
            yield from _base_loaded(sim, residency)
            nbytes -= inst.dep.base_bytes
        yield sim.net.transfer((inst.gpu_ref.pcie,), nbytes, eng.loader_efficiency)
        sim.usage.of(inst.model).bytes_loaded += nbytes
        if residency is not None and not base_on_gpu:
            _base_now_loaded(residency)
        if base_on_gpu:
            _count_base_saved(sim, inst, inst.dep.base_bytes)
        sim.became_ready(inst, pipelined=False)
    else:
        yield from load_weights(sim, inst, eng.kv_cache_alloc_s)
    if inst.state is not S.EVICTED:
        keep_alive(sim, inst)


def prewarm_process(sim: SimCore, inst: Instance):
    """Start a process ahead of demand and let it sleep without weights (sleep level 2).

    A request that arrives while it starts waits for it; at the end of the start it loads
    the weights at once if its GPU has room, else the waiting requests go back to the
    memory queue.
    """
    env = sim.env
    eng = sim.profile.engine
    yield env.timeout(eng.process_start_s + eng.cuda_context_s + eng.graph_capture_s)
    if inst.state is S.EVICTED:
        return
    inst.move_to(S.SLEEPING)
    inst.sleep_level = 2
    if inst.pending and sim.wake_with_pending(inst):
        return  # the wake process owns the instance now
    keep_alive(sim, inst)
