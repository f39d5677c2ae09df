"""Starting instances: placement's decision checked and applied, staging's plan, prewarm.

Placement and staging policies answer; these functions check the answer (a GPU that exists,
evictions of idle instances only, enough memory after them) and apply it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.decisions import Place, Prewarm
from contracts.plan import StagePlan
from sim.deployment import Deployment
from sim.errors import UnknownModelError
from sim.instance import Instance
from sim.lifecycle import cold_start, prewarm_process

if TYPE_CHECKING:  # the interface only: importing the simulator here would be circular
    from sim.core import SimCore


def start_instance(sim: SimCore, dep: Deployment) -> Instance | None:
    """A cold start of `dep` where placement says, or None when there is no room now.

    A "no room" answer is remembered until GPU memory or idleness changes (see
    `PlacementPolicy.place`): under overload this spares a placement call per arrival.
    """
    # The answer depends on the footprint and, for a model sharing a base, where that base is.
    key = dep.footprint_bytes if dep.gpu_base is None else (dep.footprint_bytes, dep.gpu_base)
    if sim.no_room_known(key):
        return None
    decided = ask_placement(sim, dep)
    if decided is None:
        sim.remember_no_room(key)
        return None
    place, gpu = decided
    # Memory freed by these evictions is this instance's: no waiting request may take it first.
    with sim.retries_held():
        for iid in place.evict:
            sim.evict(sim.instances[iid])
        inst = new_instance(sim, dep, gpu)
        sim.reserve(inst)
    sim.env.process(cold_start(sim, inst))
    if place.evict:
        sim.retry_memory_queue()
    return inst


def ask_placement(sim: SimCore, dep: Deployment):
    """Placement's answer for `dep` as (decision, GPU), checked; None when it finds no room."""
    placement = sim.policies.placement
    try:
        place = placement.place(dep, sim)
    except Exception as e:
        raise sim.policy_failure(placement, "place", e) from e
    if place is None:
        return None
    if not isinstance(place, Place):
        raise sim.policy_failure(placement, "place", f"returned {place!r}, not a Place or None")
    return place, check_place(sim, place, dep)


def new_instance(sim: SimCore, dep: Deployment, gpu) -> Instance:
    """Register an instance with the staging policy's plan; the caller starts its process."""
    staging = sim.policies.staging
    try:
        plan = staging.plan(dep)
    except Exception as e:
        raise sim.policy_failure(staging, "plan", e) from e
    if not isinstance(plan, StagePlan):
        raise sim.policy_failure(staging, "plan", f"returned {type(plan).__name__} {plan!r:.80}, not a StagePlan")
    if plan.num_layers != dep.num_layers:
        raise sim.policy_failure(staging, "plan", f"plan has {plan.num_layers} layers, model {dep.num_layers}")
    return sim.register(dep, gpu, plan)


def check_place(sim: SimCore, place: Place, dep: Deployment):
    """The GPU a placement names, after checking that the decision can be applied as given."""
    p = sim.policies.placement
    if not (0 <= place.node < len(sim.nodes) and 0 <= place.gpu < len(sim.nodes[place.node].gpus)):
        raise sim.policy_failure(p, "place", f"GPU ({place.node}, {place.gpu}) does not exist")
    gpu = sim.nodes[place.node].gpus[place.gpu]
    victims = []
    for iid in place.evict:
        inst = sim.instances.get(iid)
        if inst is None or inst.gpu_ref is not gpu or inst.idle_since is None or not inst.can_serve:
            raise sim.policy_failure(p, "place", f"instance {iid} is not an idle instance on that GPU")
        victims.append(inst)
    free = gpu.free_bytes + gpu.freed_by(victims)
    need = gpu.need_bytes(dep, place.evict)
    if free < need:
        raise sim.policy_failure(
            p, "place", f"GPU ({place.node}, {place.gpu}) has {free / 1e9:.1f} GB free "
            f"after evictions; the model needs {need / 1e9:.1f} GB")
    return gpu


def prewarm_loop(sim: SimCore):
    """Ask the prewarm policy every `interval_s` while arrivals last, and start what it asks for."""
    pw = sim.policies.prewarm
    interval = float(getattr(pw, "interval_s", 0.0) or 0.0)
    if interval <= 0:
        return
    while not sim.arrivals_done:
        yield sim.env.timeout(interval)
        try:
            decisions = pw.on_tick(sim)
        except Exception as e:
            raise sim.policy_failure(pw, "on_tick", e) from e
        for d in decisions:
            if not isinstance(d, Prewarm):
                raise sim.policy_failure(pw, "on_tick", f"returned {d!r}, not a Prewarm")
            if sim.by_model.get(d.model):
                continue
            try:
                dep = sim.deployment(d.model)
            except UnknownModelError as e:
                raise sim.policy_failure(pw, "on_tick", str(e)) from e
            if d.tier == "gpu":
                start_instance(sim, dep)
            else:
                start_process(sim, dep)


def start_process(sim: SimCore, dep: Deployment) -> Instance | None:
    """Prewarm a process without weights (vLLM sleep level 2): no GPU memory is held.

    It goes on the GPU placement would choose now, without evicting anything for it.
    """
    decided = ask_placement(sim, dep)
    if decided is None:
        return None
    inst = new_instance(sim, dep, decided[1])
    sim.env.process(prewarm_process(sim, inst))
    return inst
