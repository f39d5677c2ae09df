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
    remaining: float  # seconds of work left, at full speed
    done: simpy.Event
    generation: int = 0


class GpuCompute:
    """Processor sharing of one GPU between the batch steps in flight on it."""

    def __init__(self, env: simpy.Environment, slots: float = 1.0):
        if not slots >= 1:
            raise ValueError(f"compute slots must be >= 1, got {slots}")
        self.env = env
        self.slots = float(slots)  # steps that run side by side at full speed
        self.steps: list[_Step] = []
        self.work_done_s = 0.0  # full-speed seconds of work completed: busy time of the GPU
        self._last = env.now

    def run(self, work_s: float) -> simpy.Event:
        """Start a step needing `work_s` seconds of the whole GPU; the event fires when it ends."""
        done = self.env.event()
        if not work_s > 0:
            done.succeed()
            return done
        self._advance()
        self.steps.append(_Step(float(work_s), done))
        self._reschedule()
        return done

    @property
    def share(self) -> float:
        """The speed of each step in flight now, as a fraction of its speed alone."""
        return min(1.0, self.slots / len(self.steps)) if self.steps else 1.0

    def _advance(self) -> None:
        dt = self.env.now - self._last
        if dt > 0 and self.steps:
            each = dt * self.share
            for s in self.steps:
                s.remaining -= each
            self.work_done_s += each * len(self.steps)
        self._last = self.env.now

    def _reschedule(self) -> None:
        share = self.share
        for s in self.steps:
            s.generation += 1
            ev = self.env.timeout(max(s.remaining, 0.0) / share)
            ev.callbacks.append(self._finisher(s, s.generation))

    def _finisher(self, step: _Step, generation: int):
        def finish(_event) -> None:
            if step.generation != generation:
                return  # shares changed since this end was scheduled
            self._advance()
            if step.remaining > _EPS_S:
                self._reschedule()
                return
            self.steps.remove(step)
            self.work_done_s += min(step.remaining, 0.0)  # drift below zero was never worked
            self._reschedule()
            step.done.succeed()

        return finish
