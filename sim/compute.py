"""A GPU's compute, shared by the instances placed on it.

Without MPS or MIG, kernels from different processes on one GPU do not run side by side:
the GPU time-slices between their contexts. Two instances packed on one GPU that both
have a batch step to run therefore each progress at about half speed. This module
models that as processor sharing: every step in flight on a GPU gets an equal share of
it, so a step of `w` seconds (its time alone on the GPU) takes `n * w` while `n` steps
run for the whole of it. A device that runs `k` steps side by side at full speed (the
profile's `hardware.compute_slots`: a CPU with k cores for k single-threaded engines, or a
GPU under MPS) gives each of `n` steps `min(1, k / n)`. Shares are recomputed whenever a step starts or ends; between
those moments every step progresses at a constant rate, so finish times are exact.

This is what makes packing models onto fewer GPUs cost latency in the simulator, as it
does on hardware; `SimConfig(compute_sharing="none")` turns it off (each instance at
full speed: the GPU is partitioned, e.g. by MIG, or the workload is too small to notice).
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

_EPS_S = 1e-12  # a step within a picosecond of its end has ended (float drift)


@dataclass(eq=False)
class _Step:
    remaining: float  # seconds of work left at full speed (a plain step: its whole work)
    event: simpy.Event  # what the step's process waits on now
    end: float = 0.0  # a plain step's end: it runs at full speed until then
    managed: bool = False  # ended by this server's rescheduled timeouts (it has shared the GPU)
    finished: bool = False
    generation: int = 0


class GpuCompute:
    """Processor sharing of one GPU between the batch steps in flight on it.

    While no more steps are in flight than the GPU has slots, nobody is slowed down and a
    step is one plain timeout (the common case: one instance per GPU costs little extra).
    When one step too many arrives, every step in flight becomes *managed*: it gets a
    fresh event that this server fires at its recomputed end; its process, woken early by
    the stale timeout, sees the step unfinished and waits again. So a step is waited for as

        yield from compute.work(seconds)
    """

    def __init__(self, env: simpy.Environment, slots: float = 1.0):
        if not slots >= 1:
            raise ValueError(f"compute slots must be >= 1, got {slots}")
        self.env = env
        self.slots = float(slots)  # steps that run side by side at full speed
        self.steps: list[_Step] = []
        self.work_done_s = 0.0  # full-speed seconds of work completed: busy time of the GPU
        self._last = env.now

    def work(self, work_s: float):
        """Generator: run a step needing `work_s` seconds of the whole GPU, until it ends.

        A step without work still yields once (a zero timeout), as an unshared step does,
        so that events at the same instant interleave alike with and without sharing."""
        step = self.start(work_s)
        if step.finished:
            yield self.env.timeout(0)
        while not step.finished:
            yield step.event

    def start(self, work_s: float) -> _Step:
        """Start a step; wait on `.event` until `.finished` (or use `work`)."""
        env = self.env
        if not work_s > 0:
            return _Step(0.0, env.event(), finished=True)
        steps = self.steps
        if len(steps) + 1 <= self.slots:
            # every step keeps the whole speed it has: nothing to advance or reschedule
            ev = env.timeout(work_s)
            step = _Step(float(work_s), ev, end=env.now + work_s)
            ev.callbacks.append(self._finisher(step, 0))
            steps.append(step)
            return step
        self._advance()
        now = env.now
        for s in steps:
            if not s.managed:  # its timeout assumed the whole GPU: replace it
                left = s.end - now
                self.work_done_s += s.remaining - left  # worked at full speed so far
                s.remaining = left
                s.managed = True
                s.generation += 1
                s.event = env.event()
        steps.append(_Step(float(work_s), env.event(), managed=True))
        self._reschedule()
        return steps[-1]

    @property
    def share(self) -> float:
        """The speed of each step in flight now, as a fraction of its speed alone."""
        return min(1.0, self.slots / len(self.steps)) if self.steps else 1.0

    def _advance(self) -> None:
        """Move managed steps on to now at the share in effect since the last change."""
        now = self.env.now
        dt = now - self._last
        self._last = now
        if dt > 0:
            each = dt * self.share
            for s in self.steps:
                if s.managed:
                    s.remaining -= each
                    self.work_done_s += each

    def _reschedule(self) -> None:
        share = self.share
        for s in self.steps:
            if not s.managed:
                continue  # a plain timeout: at full speed, which it still has
            s.generation += 1
            ev = self.env.timeout(max(s.remaining, 0.0) / share)
            ev.callbacks.append(self._finisher(s, s.generation))

    def _finisher(self, step: _Step, generation: int):
        def finish(_event) -> None:
            if step.generation != generation or step.finished:
                return  # shares changed since this end was scheduled
            if not step.managed:
                # a plain step: no share changed while it ran (else it would be managed)
                self.steps.remove(step)
                self.work_done_s += step.remaining
                step.finished = True
                return  # its event is this very timeout: its process wakes next
            self._advance()
            now = self.env.now
            # Not done yet only if what is left is real work and the clock can still show
            # it: late in a long run, float drift leaves slivers that `now + sliver` rounds
            # away, and rescheduling those would loop at one instant forever.
            if step.remaining > _EPS_S and now + step.remaining / self.share > now:
                self._reschedule()
                return
            self.steps.remove(step)
            self.work_done_s += step.remaining  # the sliver (or the drift below zero)
            step.finished = True
            self._reschedule()
            step.event.succeed()

        return finish
