"""Batch-step boundaries that both ways of computing a batch reach as the same float.

Request fidelity jumps over a run of identical decode steps as `origin + k * step`; if the
literal loop (iteration fidelity) added one step at a time it would reach a boundary that
differs in the last bit, and a stage that binds exactly at a step boundary would count from
one step on one side and from the next on the other. So both compute a run's boundaries as
`origin + n * step` from the same origin (sim/serving.py says which), compare an instant
with a boundary through that same expression (`steps_begun`), and schedule the event at
exactly that float (`timeout_at`: SimPy adds a delay to its clock, and `now + (t - now)`
need not be `t`).
"""

from __future__ import annotations

import math
from heapq import heappush

from simpy.core import NORMAL
from simpy.events import Event


def steps_begun(start: float, step: float, now: float) -> int:
    """How many steps of `step` seconds from `start` have begun by `now` (`step` > 0).

    A step that ends exactly at `now` has been followed by the next one already: the literal
    batch loop starts it before anything else at that instant is handled. So a request that
    arrives, or a stage that binds, at `now` takes effect at the end of the last step counted.
    Boundaries are compared as `start + k * step`, the float both fidelities schedule, not
    through a rounded quotient.
    """
    k = math.floor((now - start) / step)
    while k > 0 and start + k * step > now:
        k -= 1
    while start + (k + 1) * step <= now:
        k += 1
    return k + 1


def timeout_at(env, t: float):
    """A SimPy timeout that fires at exactly `t` (>= now), not at `now + (t - now)` rounded.

    Usually a delay a few ulps from `t - now` reaches `t`. Not always: when `now`'s last bits
    make every sum `now + delay` a tie that rounds to even, the odd neighbours of the binade are
    out of reach (now 1.65, t 5.668483479817708). Then the event is put on SimPy's queue at `t`
    itself, as `Environment.schedule` does with `now + delay` (SimPy is pinned to 4.1.x;
    tests/test_sim_core.py checks the queue's layout).
    """
    now = env.now
    delay = t - now
    if delay < 0:
        raise ValueError(f"timeout_at: {t} is before now ({now})")
    for _ in range(4):
        reached = now + delay
        if reached == t:
            return env.timeout(delay)
        delay = math.nextafter(delay, math.inf if reached < t else -math.inf)
    event = Event(env)
    event._ok = True  # triggered, as a Timeout is when it is made
    event._value = None
    heappush(env._queue, (t, NORMAL, next(env._eid), event))
    return event
