"""An instance's life as SimPy processes: cold start stage by stage, keep-alive, wake, evict.

A cold start has phases (docs/design.md, Cold-start phases): process start and CUDA context, then the weights of
each stage over the links their checkpoint's tier decides, a bind per layer, and the
engine's KV-cache allocation and graph capture before the first request can run (after
the weights, as vLLM does, unless the profile says the engine overlaps them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.decisions import Keep
from sim.cluster import load_path
from sim.instance import Instance, InstanceState
from sim.serving import finalize

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
        yield from keep_alive(sim, inst)


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
    source = None
    for j, layers in enumerate(plan.stages):
        if inst.state is S.EVICTED:
            return
        nbytes = len(layers) * shape.layer_bytes + (shape.embedding_bytes + shape.head_bytes if j == 0 else 0)
        path, src = load_path(inst.node_ref, inst.gpu_ref, inst.model)
        source = source or src
        yield sim.net.transfer(path, nbytes, eng.loader_efficiency)
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
    node = inst.node_ref
    # The checkpoint passed through host DRAM (page cache) and, from remote, landed on the SSD.
    node.dram.add(inst.model, shape.weight_bytes)
    if source == "remote":
        node.ssd.add(inst.model, shape.weight_bytes)


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
        yield sim.net.transfer((inst.gpu_ref.pcie,), inst.shape.weight_bytes, eng.loader_efficiency)
        sim.usage.of(inst.model).bytes_loaded += inst.shape.weight_bytes
        sim.became_ready(inst, pipelined=False)
    else:
        yield from load_weights(sim, inst, eng.kv_cache_alloc_s)
    if inst.state is not S.EVICTED:
        yield from keep_alive(sim, inst)


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
    yield from keep_alive(sim, inst)


def keep_alive(sim: SimCore, inst: Instance):
    """Wait for idleness, ask the keep-alive policy, apply its tiers in order, then evict."""
    env = sim.env
    inst.keeper += 1
    mine = inst.keeper  # a wake starts a new keeper; this one must then stop
    while True:
        if inst.state is S.EVICTED or inst.keeper != mine:
            return
        if inst.state is S.LOADING:  # a wake is under way; its process takes over
            return
        if inst.busy_until > env.now:
            yield env.timeout(inst.busy_until - env.now)
            continue
        if inst.running or inst.queue or inst.pending:
            yield inst.idle_signal.wait()
            continue
        finalize(sim, inst)  # a solo request has finished by now: record it
        uses = inst.uses
        sim.set_idle(inst, True)  # may hand it a request waiting for memory
        if inst.uses != uses:
            continue
        try:
            decisions = sim.policies.keepalive.on_idle(inst, env.now)
            decisions = [d if isinstance(d, Keep) else Keep(*d) for d in decisions]
        except Exception as e:
            raise sim.policy_failure(sim.policies.keepalive, "on_idle", e) from e
        used_again = False
        for keep in decisions:
            if keep.tier in ("dram", "process") and inst.can_serve:
                sim.demote(inst, 1 if keep.tier == "dram" else 2)
            elif keep.tier == "process" and inst.state is S.SLEEPING and inst.sleep_level == 1:
                # from DRAM to level 2: the weights kept in host DRAM are dropped
                inst.node_ref.dram.unpin(inst.shape.weight_bytes)
                inst.sleep_level = 2
            # A request ends the wait at once: the next idle period, and its timer, start when
            # that request finishes, not when this timer would have run out.
            yield env.timeout(keep.seconds) | inst.used_signal.wait()
            if inst.uses != uses or inst.state is S.EVICTED:
                used_again = True
                break
        if inst.state is S.EVICTED or inst.keeper != mine:
            return
        if used_again:
            if inst.state in (S.SLEEPING, S.LOADING):
                return  # the wake process owns the instance now
            continue
        sim.evict(inst)
        return
