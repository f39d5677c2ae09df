"""Keep-alive: after a start or a wake, when an instance is idle, what keeps it and for how long.

`Keeper` applies the keep-alive policy's tiers (GPU, host DRAM, process only) to one
instance and evicts it after the last; the simulator's lifecycle (sim/lifecycle.py) starts
it, and the simulator's `assign` and the batch loop's end reach it through the instance's
signals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.decisions import Keep
from sim.instance import Instance, InstanceState
from sim.serving import finalize
from sim.stepclock import timeout_at

if TYPE_CHECKING:  # the interface only: importing the simulator here would be circular
    from sim.core import SimCore

S = InstanceState


def keep_alive(sim: SimCore, inst: Instance) -> None:
    """Start (or restart, after a wake) the instance's keep-alive; see `Keeper`."""
    keeper = inst.keeper_state
    if keeper is None:
        keeper = inst.keeper_state = Keeper(sim, inst)
    keeper.start()


# What a keeper is doing: stopped, working synchronously, waiting for `busy_until`, waiting
# for the batch loop to run out of work, or waiting out a tier of the policy's decision.
_DEAD, _WORKING, _BUSY, _IDLE, _TIER = range(5)


class Keeper:
    """Keep-alive for one instance: wait for idleness, ask the policy, apply its tiers in order, evict.

    The rules (docs/design.md, Keep-alive): an idle period starts when the instance has no
    request running, queued or pending and its last one has finished (`busy_until`); the
    policy's `on_idle` then returns `Keep` tiers, each applied (GPU, DRAM or process only)
    and waited out in turn, and the instance is evicted after the last. A request ends the
    wait at once: the next idle period, and its timer, start when that request finishes. A
    wake starts the keeper again (`start`), which ends whatever the previous run waited for.

    Performance: this is a state machine driven by callbacks, not a SimPy process, because
    keep-alive sits on the warm path of every request. A request and the batch loop's end
    reach it through the instance's `Signal`s synchronously (no event); the only events are
    timers, and at most one is scheduled per wait: a timer whose wait ended early is not
    cancelled but kept, and reused for any later wait that ends no earlier than it (when it
    fires before the current wait's end it is re-armed once at that end). So an idle period
    ended by a request costs no event of its own, and a request alone on a warm instance
    costs one (the idle check at its finish).
    The idle check of a request alone runs at exactly its finish (`busy_until`), where the
    batch loop computing the same request would end; a tier ends at `now + seconds`.
    """

    __slots__ = ("sim", "inst", "env", "phase", "want", "timers", "decisions", "tier", "uses",
                 "hears_use", "hears_idle", "_on_timer", "_on_use", "_on_loop_idle")

    def __init__(self, sim: SimCore, inst: Instance):
        self.sim = sim
        self.inst = inst
        self.env = sim.env
        self.phase = _DEAD
        self.want: float | None = None  # when the current wait ends (busy or tier)
        self.timers: list[float] = []  # instants of this keeper's timers still in the event queue
        self.decisions: list[Keep] = []
        self.tier = 0
        self.uses = 0  # the instance's `uses` when the idle period began
        self.hears_use = False  # registered with `inst.used_signal`
        self.hears_idle = False  # registered with `inst.idle_signal`
        self._on_timer = self.timer  # bound once: registered on every timer
        self._on_use = self.used
        self._on_loop_idle = self.loop_idle

    def start(self) -> None:
        self.inst.keeper += 1
        self.phase = _WORKING
        self.want = None
        self.check()

    def stop(self) -> None:
        self.phase = _DEAD
        self.want = None

    # --- waiting -----------------------------------------------------------------------------
    def wait_until(self, t: float) -> None:
        """Run the wait's end at `t`: reuse a timer due no later, else schedule one."""
        self.want = t
        for x in self.timers:
            if x <= t:
                return
        self.schedule(t)

    def schedule(self, t: float) -> None:
        """A timer at exactly `t` (`timeout_at`: the one rule for an event at a given instant)."""
        timeout_at(self.env, t).callbacks.append(self._on_timer)
        self.timers.append(t)

    def timer(self, _event) -> None:
        now = self.env.now
        timers = self.timers
        timers.remove(now)
        want = self.want
        if want is None:
            return  # stale: the wait it was for has ended
        if now < want:  # a reused timer, due before the wait's end: re-arm once, at that end
            for x in timers:
                if x <= want:
                    return
            self.schedule(want)
            return
        self.want = None
        if self.phase == _BUSY:
            self.check()
        elif self.phase == _TIER:
            self.tier_over()

    def used(self) -> None:
        """The instance was given a request (`Simulator.assign`, once it is in place)."""
        self.hears_use = False
        if self.phase != _TIER:
            return
        inst = self.inst
        state = inst.state
        if state is S.EVICTED or state is S.SLEEPING or state is S.LOADING:
            self.stop()  # a wake process owns the instance now (or it is gone)
        elif inst.loop_running or inst.busy_until > self.env.now or inst.running or inst.queue or inst.pending:
            self.check()  # only schedules the next wait: no idle work inside `assign`
        else:
            self.phase = _BUSY  # finished already: the idle check runs after this arrival
            self.wait_until(self.env.now)

    def loop_idle(self) -> None:
        """The batch loop ran out of work (`batch_loop`'s end)."""
        self.hears_idle = False
        if self.phase == _IDLE:
            self.check()

    # --- the idle period ---------------------------------------------------------------------
    def check(self) -> None:
        """Wait while the instance works; once idle, record, ask the policy, begin the tiers."""
        sim, inst = self.sim, self.inst
        while True:
            state = inst.state
            if state is S.EVICTED or state is S.LOADING:  # gone, or a wake's process takes over
                self.stop()
                return
            now = self.env.now
            # A running batch loop tells when it runs out of work, and it is busy until then:
            # waiting for its end, not for each step's `busy_until`, takes no event per step.
            if inst.busy_until > now and not inst.loop_running:
                self.phase = _BUSY
                self.wait_until(inst.busy_until)  # exactly then: a batch loop would end there too
                return
            if inst.loop_running or inst.running or inst.queue or inst.pending:
                self.phase = _IDLE
                self.want = None
                if not self.hears_idle:
                    self.hears_idle = True
                    inst.idle_signal.add(self._on_loop_idle)
                return
            self.phase = _WORKING
            self.want = None
            finalize(sim, inst)  # a solo request has finished by now: record it
            uses = inst.uses
            sim.set_idle(inst, True)  # may hand it a request waiting for memory
            if inst.uses != uses:
                continue
            try:
                decisions = sim.policies.keepalive.on_idle(inst, now)
                decisions = [d if isinstance(d, Keep) else Keep(*d) for d in decisions]
            except Exception as e:
                raise sim.policy_failure(sim.policies.keepalive, "on_idle", e) from e
            self.decisions = decisions
            self.tier = 0
            self.uses = uses
            self.begin_tier()
            return

    def begin_tier(self) -> None:
        """Apply the current tier and wait it out; after the last, evict."""
        sim, inst = self.sim, self.inst
        if self.tier >= len(self.decisions):
            self.stop()
            if inst.state is not S.EVICTED:
                sim.evict(inst)
            return
        keep = self.decisions[self.tier]
        self.phase = _WORKING  # a request given to it while the tier is applied does not end the wait
        if keep.tier in ("dram", "process") and inst.can_serve:
            sim.demote(inst, 1 if keep.tier == "dram" else 2)
        elif keep.tier == "process" and inst.state is S.SLEEPING and inst.sleep_level == 1:
            # from DRAM to level 2: the weights kept in host DRAM are dropped
            inst.node_ref.dram.unpin(inst.shape.weight_bytes)
            inst.sleep_level = 2
        # A request ends the wait at once: the next idle period, and its timer, start when
        # that request finishes, not when this timer would have run out.
        self.phase = _TIER
        self.wait_until(self.env.now + keep.seconds)
        if not self.hears_use:
            self.hears_use = True
            inst.used_signal.add(self._on_use)

    def tier_over(self) -> None:
        inst = self.inst
        if inst.uses != self.uses or inst.state is S.EVICTED:
            # used while the tier was applied, or evicted by placement meanwhile
            state = inst.state
            if state is S.EVICTED or state is S.SLEEPING or state is S.LOADING:
                self.stop()
            else:
                self.check()
            return
        self.tier += 1
        self.begin_tier()
