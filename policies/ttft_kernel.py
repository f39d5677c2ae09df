"""`TtftEstimator.best`'s walk over a model's instances, compiled (numba).

At full volume every arrival of a hot model scores every instance of that model, in order
(the estimator learns from what each arrival sees, so no candidate can be skipped): in
Python that walk costs about 3 us per candidate and was 44 % of a full-volume day. This is
the same walk over arrays: what the run keeps of each instance (a row per instance slot,
laid out as `contracts/routing_row.py` says) and what the estimator keeps of each instance it has seen (`seen`:
a row per slot, [instance id, loading?, in that phase since, queue seen since (NaN: none)]).
Every expression is the Python walk's, in the same order, so the answers are the same
floats; `tests/test_ttft_kernel.py` checks the two against each other, decision by decision.

What the walk needs from Python it cannot compute here, it asks for and the caller asks
again (`TtftEstimator._best_compiled`): the time until each starting or sleeping candidate
serves (`NEED_EXTRA`, before the walk changes anything), a prefill time the profile's table
has to answer (`NEED_PREFILL`) and a decode step past the known batch sizes
(`NEED_DECODE`). A walk cut short by such a question leaves `seen` as a full walk would
leave it for the candidates before (their updates are idempotent) and reports whether it
used the caller's pending start time (`asked`), so the retry gives the same answer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from contracts.routing_row import CAPACITY, INSTANCE_ID, RUNNING, SOLO_FINISH, STATE, WAITING, WIDTH

DONE, NEED_EXTRA, NEED_PREFILL, NEED_DECODE = 0, 1, 2, 3

# `contracts/routing_row.py`'s state codes the walk tells apart
_STARTING, _LOADING, _READY, _FULL, _SLEEPING = 0, 1, 2, 3, 4

# columns of `seen`
SEEN_ID, SEEN_LOADING, SEEN_SINCE, SEEN_QUEUE = 0, 1, 2, 3
SEEN_WIDTH = 4


@njit(cache=True)
def _service(prefill_typ: float, output_mean: float, dec, batch: int) -> float:
    # `TtftEstimator.service_s`: a typical request's prefill plus its decode steps at `batch`
    return prefill_typ + max(0.0, output_mean - 1.0) * dec[batch]


@njit(cache=True)
def walk(rows, slots, seen, extra, has_extra, pre_n, pre_v, call_n, call_v, dec, now, own_prefill, learned,
         asked, prefill_typ, prompt_mean, output_mean):
    """(code, best position or -1, its expected TTFT, learned slots, asked used?, what is needed).

    `slots`: the candidates' rows in candidate order (-1: an evicted candidate). `extra[p]`:
    the cold start (starting or loading) or wake (sleeping) of candidate p, valid when
    `has_extra`. `pre_n`, `pre_v`: prefill times known, the one of n tokens at n % len(pre_n)
    if that entry's `pre_n` is n; `call_n`, `call_v`: those this walk asked for (kept apart, so
    that two sizes sharing a memo entry cannot make the walk ask forever).
    `dec[b]`: the decode step at batch b (`max(1, b)`). `learned`, `asked`: NaN for none.
    """
    n = slots.shape[0]
    if not has_extra:
        for p in range(n):
            s = slots[p]
            if s >= 0:
                st = rows[s, STATE]
                if st == _STARTING or st == _LOADING or st == _SLEEPING:
                    return NEED_EXTRA, -1, math.inf, learned, False, 0
    best = -1
    best_t = math.inf
    asked_used = False
    n_dec = dec.shape[0]
    for p in range(n):
        s = slots[p]
        if s < 0:
            continue
        st = rows[s, STATE]  # never "evicted": an evicted instance's slot is -1 (its row is freed)
        iid = rows[s, INSTANCE_ID]
        slots_f = max(1.0, rows[s, CAPACITY])
        if learned == learned:
            slots_f = min(slots_f, max(1.0, learned))
        ahead = rows[s, WAITING]
        running = rows[s, RUNNING]
        if rows[s, SOLO_FINISH] > now:
            running += 1.0
        can_serve = st == _READY or st == _FULL
        loading = 1.0 if (st == _STARTING or st == _LOADING) else 0.0
        # `TtftEstimator._track`
        if seen[s, SEEN_ID] != iid or seen[s, SEEN_LOADING] != loading:
            since = now
            if seen[s, SEEN_ID] != iid and loading == 1.0 and asked == asked:
                since = asked
                asked = math.nan
                asked_used = True
            seen[s, SEEN_ID] = iid
            seen[s, SEEN_LOADING] = loading
            seen[s, SEEN_SINCE] = since
            seen[s, SEEN_QUEUE] = math.nan
        if not (ahead > 0 and can_serve):
            seen[s, SEEN_QUEUE] = math.nan
        elif seen[s, SEEN_QUEUE] != seen[s, SEEN_QUEUE]:
            seen[s, SEEN_QUEUE] = now
        if can_serve:
            ready_in = 0.0
            queue_since = seen[s, SEEN_QUEUE]
            if queue_since == queue_since and running > 0:
                r = int(running)
                if r >= n_dec:
                    return NEED_DECODE, -1, math.inf, learned, asked_used, r
                queued_for = now - queue_since
                saturated = queued_for > _service(prefill_typ, output_mean, dec, r)
                if not saturated:
                    tokens = max(1, int(np.rint(prompt_mean * ahead)))  # Python's round: half to even
                    k = tokens % pre_n.shape[0]
                    if pre_n[k] == tokens:
                        step = pre_v[k]
                    else:  # this walk's own answers: the memo may have lost one to another size
                        step = -1.0
                        for j in range(call_n.shape[0]):
                            if call_n[j] == tokens:
                                step = call_v[j]
                                break
                        if step < 0.0:
                            return NEED_PREFILL, -1, math.inf, learned, asked_used, tokens
                    step += dec[r]
                    saturated = queued_for > 2.0 * step
                if saturated:
                    learned = running if learned != learned else learned + 0.1 * (running - learned)
                    slots_f = running
        elif loading == 1.0:
            ready_in = max(0.0, extra[p] - (now - seen[s, SEEN_SINCE]))
        else:
            ready_in = extra[p]
        starts = running + ahead + 1.0 - slots_f
        wait = 0.0
        if starts > 0:
            b = int(slots_f)
            if b >= n_dec:
                return NEED_DECODE, -1, math.inf, learned, asked_used, b
            wait = starts * _service(prefill_typ, output_mean, dec, b) / slots_f
        t = ready_in + wait + own_prefill
        if t < best_t:
            best = p
            best_t = t
    return DONE, best, best_t, learned, asked_used, 0


_ready = False


def ready() -> None:
    """Compile the walk (or load it from numba's cache) now, once per process, so that a
    machine where numba cannot compile is found when a model switches, not mid-walk."""
    global _ready
    if not _ready:
        rows = np.zeros((1, WIDTH))
        seen = np.full((1, SEEN_WIDTH), math.nan)
        none = np.zeros(0)
        walk(rows, np.zeros(1, dtype=np.int64), seen, none, False, np.full(1, -1, dtype=np.int64), np.zeros(1),
             np.zeros(0, dtype=np.int64), none, np.ones(2), 0.0, 0.0, math.nan, math.nan, 0.0, 1.0, 1.0)
        _ready = True
