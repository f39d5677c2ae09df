"""Request fidelity's batch loop, compiled (numba): the arithmetic of `sim.serving.batch_loop`.

At full volume a request costs about 1.6 ends of batch steps or runs and 0.9 handlings of
finishes, each a SimPy event running Python (half of a full-volume run's time, issue
"Scale"). Here every instance's batch lives in arrays: its queue (a linked list through the
request slots), its running requests (a heap by the step at which each is done, then by
join order, as `Instance.running`), its counters (`steps`, `q_integral`, ...), and the state of
its loop (which wait it is in and until when). One heap of "the loop of slot s resumes at t"
orders the loops' events; `run_until` processes them in time order without returning to
Python, until a loop runs out of work (keep-alive must hear it then) or the time asked for.

Each function mirrors `batch_loop`'s request-fidelity branches statement by statement, with
the same expressions in the same order, so the floats are the same and
`tests/test_sim_compiled_batch.py` can ask for equal records, request by request. The
Python owner of these arrays is `sim.compiled_batch.CompiledBatches`; this module holds no
state of its own.

Ties at one instant: the loops' events due at `t` are processed before SimPy's events due at
`t` (the simulator asks `run_until(t)` before it steps SimPy at `t`), and among themselves in
the order they were scheduled. A loop's first pass is at the instant it starts, as a SimPy
process's initialisation, which runs before any other event of that instant.
"""

from __future__ import annotations

import math

from numba import njit

from contracts.routing_row import RUNNING, STATE, STATE_CODES, WAITING
from sim.table import interpolate as table_rule

# --- int64 columns of an instance slot (`si`) ---------------------------------------------
(I_STEPS, I_JOINED, I_PROMPT, I_JSUM, I_TOKENS, I_NRUN, I_QHEAD, I_QTAIL, I_QLEN, I_STEPPED,
 I_PHASE, I_CAP, I_CAPTOK, I_PTAB, I_DTAB, I_REFILL, I_STAGE, I_PSTAGE, I_RUNK, I_EVSEQ, I_NJOIN,
 I_REFILLS, I_RES_R, I_RES_TOK, I_STEPSTAGE) = range(25)
SI_WIDTH = 25
# --- float64 columns of an instance slot (`sf`) -------------------------------------------
(F_QINT, F_Q, F_SCALE, F_PQ, F_PSCALE, F_BOUND, F_LAST_END, F_BUSY, F_RUN_START, F_RUN_STEP,
 F_HEAD_END, F_STEPQ, F_RES_BOUND, F_RES_Q, F_STEPSCALE) = range(15)
SF_WIDTH = 15
# --- a request slot: int64 (`ri`) and float64 (`rf`) columns --------------------------------
R_PROMPT, R_OUT, R_NEXT, R_JOIN, R_STAGE = range(5)
RI_WIDTH = 5
R_FRAC, R_QJOIN, R_FIRST = range(3)
RF_WIDTH = 3
# --- globals: int64 (`g`) and float64 (`gf`) ----------------------------------------------
G_HSIZE, G_SEQ, G_NDONE, G_DRAIN, G_EVENTS = range(5)
G_WIDTH = 5
GF_MAXF, GF_DRAIN_T = range(2)
GF_WIDTH = 2

# where a loop is (`I_PHASE`): idle; started, its first pass due; waiting out a solo request's
# step it resumed; a run of decode steps (a `DecodeRun` without a head); one step; a step and
# the run of decode steps after it
P_IDLE, P_INIT, P_RESUME, P_RUN, P_SINGLE, P_HEADRUN = range(6)
# what `run_until` stopped at
REACHED, DRAINED, DONE_FULL = range(3)

_READY = float(STATE_CODES["ready"])
_FULL = float(STATE_CODES["full"])
_NAN = math.nan


# the profile's table rule, compiled: the same function `sim.table.Table` calls
interpolate = njit(cache=True)(table_rule)


@njit(cache=True)
def steps_begun(start, step, now):
    """`sim.stepclock.steps_begun`, the same comparisons."""
    k = int(math.floor((now - start) / step))
    while k > 0 and start + k * step > now:
        k -= 1
    while start + (k + 1) * step <= now:
        k += 1
    return k + 1


# --- the loops' event heap: (time, sequence) -> slot ----------------------------------------
@njit(cache=True)
def _push_event(ht, hq, hs, g, si, slot, t):
    seq = g[G_SEQ]
    g[G_SEQ] = seq + 1
    si[slot, I_EVSEQ] = seq
    i = g[G_HSIZE]
    g[G_HSIZE] = i + 1
    while i > 0:
        p = (i - 1) >> 1
        if ht[p] < t or (ht[p] == t and hq[p] < seq):
            break
        ht[i], hq[i], hs[i] = ht[p], hq[p], hs[p]
        i = p
    ht[i], hq[i], hs[i] = t, seq, slot


@njit(cache=True)
def _pop_event(ht, hq, hs, g):
    n = g[G_HSIZE] - 1
    g[G_HSIZE] = n
    t, q, s = ht[n], hq[n], hs[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (ht[c + 1] < ht[c] or (ht[c + 1] == ht[c] and hq[c + 1] < hq[c])):
            c += 1
        if t < ht[c] or (t == ht[c] and q < hq[c]):
            break
        ht[i], hq[i], hs[i] = ht[c], hq[c], hs[c]
        i = c
    if n > 0:
        ht[i], hq[i], hs[i] = t, q, s


# --- a slot's running requests: a heap by (done step, join order) ---------------------------
@njit(cache=True)
def _run_push(hd, ho, hr, slot, n, done, order, r):
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if hd[slot, p] < done or (hd[slot, p] == done and ho[slot, p] < order):
            break
        hd[slot, i], ho[slot, i], hr[slot, i] = hd[slot, p], ho[slot, p], hr[slot, p]
        i = p
    hd[slot, i], ho[slot, i], hr[slot, i] = done, order, r


@njit(cache=True)
def _run_pop(hd, ho, hr, slot, n):
    """Remove the top of a heap of `n`; its request slot."""
    top = hr[slot, 0]
    n -= 1
    d, o, r = hd[slot, n], ho[slot, n], hr[slot, n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (hd[slot, c + 1] < hd[slot, c] or (hd[slot, c + 1] == hd[slot, c]
                                                            and ho[slot, c + 1] < ho[slot, c])):
            c += 1
        if d < hd[slot, c] or (d == hd[slot, c] and o < ho[slot, c]):
            break
        hd[slot, i], ho[slot, i], hr[slot, i] = hd[slot, c], ho[slot, c], hr[slot, c]
        i = c
    if n > 0:
        hd[slot, i], ho[slot, i], hr[slot, i] = d, o, r
    return top


# --- the loop's body ------------------------------------------------------------------------
@njit(cache=True)
def _mark_busy(sf, gf, slot, t):
    if t > sf[slot, F_BUSY]:
        sf[slot, F_BUSY] = t
    if t > gf[GF_MAXF]:
        gf[GF_MAXF] = t


@njit(cache=True)
def _join(si, sf, ri, rf, hd, ho, hr, rows, slot, r, join_step, q_at_join):
    ri[r, R_JOIN] = join_step
    rf[r, R_QJOIN] = q_at_join
    si[slot, I_JOINED] += 1
    n = si[slot, I_NRUN]
    _run_push(hd, ho, hr, slot, n, join_step + ri[r, R_OUT], si[slot, I_JOINED], r)
    si[slot, I_NRUN] = n + 1
    rows[slot, RUNNING] += 1.0
    si[slot, I_PROMPT] += ri[r, R_PROMPT]
    si[slot, I_JSUM] += join_step


@njit(cache=True)
def _finish_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, slot, now):
    """`serving._finish_done`: record the running requests the steps so far finished."""
    steps = si[slot, I_STEPS]
    n = si[slot, I_NRUN]
    left = n
    while n and hd[slot, 0] <= steps:
        r = _run_pop(hd, ho, hr, slot, n)
        n -= 1
        prompt = ri[r, R_PROMPT]
        out = ri[r, R_OUT]
        si[slot, I_PROMPT] -= prompt
        si[slot, I_JSUM] -= ri[r, R_JOIN]
        si[slot, I_TOKENS] -= prompt + out
        first = rf[r, R_FIRST]
        quality = (sf[slot, F_QINT] - rf[r, R_QJOIN]) / out
        if quality == quality:
            quality = (quality if quality < 1.0 else 1.0) if quality > 0.0 else 0.0
        i = g[G_NDONE]
        done[i, 0] = r
        done[i, 1] = ri[r, R_STAGE]
        donef[i, 0] = first
        donef[i, 1] = now
        donef[i, 2] = (now - first) / (out - 1) if out > 1 else _NAN
        donef[i, 3] = quality
        g[G_NDONE] = i + 1
    si[slot, I_NRUN] = n
    rows[slot, RUNNING] += n - left


@njit(cache=True)
def _steps_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, joiners, slot, steps, q, stage, with_joiners, at, now):
    """`serving._steps_done`: `steps` steps ended (at `at` for the joiners' first token)."""
    si[slot, I_STEPS] += steps
    sf[slot, F_QINT] += q * steps
    if with_joiners:
        for j in range(si[slot, I_NJOIN]):
            r = joiners[slot, j]
            rf[r, R_FIRST] = at
            ri[r, R_STAGE] = stage
    if si[slot, I_NRUN] and hd[slot, 0] <= si[slot, I_STEPS]:
        _finish_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, slot, now)


@njit(cache=True)
def _wait_run(si, sf, ht, hq, hs, g, slot, phase, start, step, k):
    """Wait out `k` decode steps of `step` seconds from `start` (a `DecodeRun`: `cut` may end it sooner)."""
    sf[slot, F_RUN_START] = start
    sf[slot, F_RUN_STEP] = step
    si[slot, I_RUNK] = k
    si[slot, I_PHASE] = phase
    _push_event(ht, hq, hs, g, si, slot, start + k * step)


@njit(cache=True)
def _iterate(si, sf, ri, rf, hd, ho, hr, joiners, rows, tx, ty, toff, tlen, ht, hq, hs, g, gf, slot, now):
    """One pass of `batch_loop`'s `while` at `now`: form the next step and schedule its end;
    True when the loop has run out of work (or the instance cannot serve)."""
    nrun = si[slot, I_NRUN]
    state = rows[slot, STATE]
    if (si[slot, I_QLEN] == 0 and nrun == 0) or not (state == _READY or state == _FULL):
        si[slot, I_PHASE] = P_IDLE
        return True
    decoding = nrun
    prompt_tokens = 0
    prefill_work = 0.0
    continuing = sf[slot, F_LAST_END] == now
    stale = continuing and sf[slot, F_BOUND] == now
    if stale:
        stage, q, scale = si[slot, I_PSTAGE], sf[slot, F_PQ], sf[slot, F_PSCALE]
    else:
        stage, q, scale = si[slot, I_STAGE], sf[slot, F_Q], sf[slot, F_SCALE]
    if si[slot, I_REFILL] and decoding and stage > si[slot, I_STEPPED]:
        context = si[slot, I_PROMPT] + decoding * si[slot, I_STEPS] - si[slot, I_JSUM]
        prompt_tokens = context
        prefill_work = float(context)
        decoding = 0
        si[slot, I_REFILLS] += nrun
    si[slot, I_STEPPED] = stage
    njoin = 0
    cap = si[slot, I_CAP]
    if si[slot, I_QLEN] and nrun < cap:
        join_step, q_at_join = si[slot, I_STEPS], sf[slot, F_QINT]
        in_flight = si[slot, I_TOKENS]
        captok = si[slot, I_CAPTOK]
        while si[slot, I_QLEN] and si[slot, I_NRUN] < cap:
            r = si[slot, I_QHEAD]
            prompt = ri[r, R_PROMPT]
            need = prompt + ri[r, R_OUT]
            if in_flight + need > captok and si[slot, I_NRUN]:
                break
            si[slot, I_QHEAD] = ri[r, R_NEXT]
            si[slot, I_QLEN] -= 1
            rows[slot, WAITING] -= 1.0
            in_flight += need
            prompt_tokens += prompt
            prefill_work += prompt * rf[r, R_FRAC]
            _join(si, sf, ri, rf, hd, ho, hr, rows, slot, r, join_step, q_at_join)
            joiners[slot, njoin] = r
            njoin += 1
        si[slot, I_TOKENS] = in_flight
    si[slot, I_NJOIN] = njoin
    sf[slot, F_STEPQ] = q
    sf[slot, F_STEPSCALE] = scale
    si[slot, I_STEPSTAGE] = stage
    step = 0.0
    if prompt_tokens:
        ptab = si[slot, I_PTAB]
        step += interpolate(tx, ty, toff[ptab], tlen[ptab], float(prompt_tokens)) * scale * (prefill_work / prompt_tokens)
    if decoding:
        dtab = si[slot, I_DTAB]
        step += interpolate(tx, ty, toff[dtab], tlen[dtab], float(decoding)) * scale
    if not prompt_tokens:  # a run of identical decode steps up to the first finish
        k = 1 if stale else hd[slot, 0] - si[slot, I_STEPS]
        _mark_busy(sf, gf, slot, now + step)
        _wait_run(si, sf, ht, hq, hs, g, slot, P_RUN, now, step, k)
        return False
    end = now + step
    _mark_busy(sf, gf, slot, end)
    k = hd[slot, 0] - si[slot, I_STEPS] - 1
    if k <= 0 or stale:
        si[slot, I_PHASE] = P_SINGLE
        _push_event(ht, hq, hs, g, si, slot, now + step)
        return False
    dtab = si[slot, I_DTAB]
    decode_step = interpolate(tx, ty, toff[dtab], tlen[dtab], float(si[slot, I_NRUN])) * scale
    sf[slot, F_HEAD_END] = end
    _wait_run(si, sf, ht, hq, hs, g, slot, P_HEADRUN, end, decode_step, k)
    return False


@njit(cache=True)
def _resume(si, sf, ri, rf, hd, ho, hr, joiners, rows, g, gf, done, donef, slot, now):
    """The wait the loop of `slot` was in ended at `now`: the code after its `yield`.
    False when the loop waits again (a resumed request's boundary) without a new pass."""
    phase = si[slot, I_PHASE]
    if phase == P_RUN:
        sf[slot, F_LAST_END] = now
        _mark_busy(sf, gf, slot, now)
        _steps_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, joiners, slot, si[slot, I_RUNK],
                    sf[slot, F_STEPQ], si[slot, I_STEPSTAGE], False, now, now)
    elif phase == P_SINGLE:
        sf[slot, F_LAST_END] = now
        _steps_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, joiners, slot, 1,
                    sf[slot, F_STEPQ], si[slot, I_STEPSTAGE], True, now, now)
    elif phase == P_HEADRUN:
        q, stage = sf[slot, F_STEPQ], si[slot, I_STEPSTAGE]
        _steps_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, joiners, slot, 1, q, stage, True,
                    sf[slot, F_HEAD_END], now)
        if si[slot, I_RUNK]:
            _mark_busy(sf, gf, slot, now)
            _steps_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, joiners, slot, si[slot, I_RUNK], q, stage,
                        False, now, now)
        sf[slot, F_LAST_END] = now
    elif phase == P_INIT:
        r = si[slot, I_RES_R]
        if r >= 0:  # a solo request handed over mid-flight (serving._solo_joins_the_batch)
            tokens = si[slot, I_RES_TOK]
            si[slot, I_STEPPED] = ri[r, R_STAGE]
            _join(si, sf, ri, rf, hd, ho, hr, rows, slot, r, si[slot, I_STEPS] - tokens,
                  sf[slot, F_QINT] - sf[slot, F_RES_Q] * tokens)
            boundary = sf[slot, F_RES_BOUND]
            if boundary > now:
                si[slot, I_PHASE] = P_RESUME
                return False
            sf[slot, F_LAST_END] = now
            _finish_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, slot, now)
    elif phase == P_RESUME:
        sf[slot, F_LAST_END] = now
        _finish_done(si, sf, ri, rf, hd, ho, hr, rows, g, done, donef, slot, now)
    return True


@njit(cache=True)
def _drop_stale(ht, hq, hs, g, si):
    """Pop the waits that a cut replaced from the top, so the top is the next event due."""
    while g[G_HSIZE] > 0 and hq[0] != si[hs[0], I_EVSEQ]:
        _pop_event(ht, hq, hs, g)


@njit(cache=True)
def run_until(limit, room, si, sf, ri, rf, hd, ho, hr, joiners, rows, tx, ty, toff, tlen, ht, hq, hs, g, gf,
              done, donef):
    """Process the loops' events due by `limit`, in order; stop after a loop that ran out of
    work (DRAINED: its slot and time in `g`, `gf`), when fewer than `room` places are left in
    `done` (DONE_FULL), or when none is due by `limit` (REACHED). The heap's top is then the
    next event due."""
    cap_done = done.shape[0]
    while True:
        _drop_stale(ht, hq, hs, g, si)
        if g[G_HSIZE] == 0 or ht[0] > limit:
            return REACHED
        if g[G_NDONE] + room > cap_done:
            return DONE_FULL
        t, slot = ht[0], hs[0]
        _pop_event(ht, hq, hs, g)
        g[G_EVENTS] += 1
        if not _resume(si, sf, ri, rf, hd, ho, hr, joiners, rows, g, gf, done, donef, slot, t):
            _push_event(ht, hq, hs, g, si, slot, sf[slot, F_RES_BOUND])
            continue
        if _iterate(si, sf, ri, rf, hd, ho, hr, joiners, rows, tx, ty, toff, tlen, ht, hq, hs, g, gf, slot, t):
            g[G_DRAIN] = slot
            gf[GF_DRAIN_T] = t
            _drop_stale(ht, hq, hs, g, si)
            return DRAINED


@njit(cache=True)
def cut(si, sf, ht, hq, hs, g, slot, now):
    """`DecodeRun.cut`: the run under way ends at its first step boundary after `now`."""
    phase = si[slot, I_PHASE]
    if phase != P_RUN and phase != P_HEADRUN:
        return
    step = sf[slot, F_RUN_STEP]
    start = sf[slot, F_RUN_START]
    steps = si[slot, I_RUNK]
    if step <= 0 or now >= start + steps * step:
        return
    k = 0 if now < start else steps_begun(start, step, now)
    if k >= steps:
        return
    si[slot, I_RUNK] = k
    _push_event(ht, hq, hs, g, si, slot, start + k * step)


@njit(cache=True)
def enqueue(si, sf, ri, rows, ht, hq, hs, g, slot, r, now, start):
    """`serving.enqueue_iteration` for a compiled loop: queue request slot `r`; start the loop
    (its first pass due now) or cut its run where `r` joins at the next boundary."""
    ri[r, R_NEXT] = -1
    if si[slot, I_QLEN] == 0:
        si[slot, I_QHEAD] = r
    else:
        ri[si[slot, I_QTAIL], R_NEXT] = r
    si[slot, I_QTAIL] = r
    si[slot, I_QLEN] += 1
    rows[slot, WAITING] += 1.0
    if start:
        begin(si, sf, ht, hq, hs, g, slot, now, -1)
    elif si[slot, I_QLEN] == 1:
        # `_fits`: `r`, first in the queue, joins the running batch at its next step
        n = si[slot, I_NRUN]
        if n >= si[slot, I_CAP]:
            return
        if si[slot, I_TOKENS] + ri[r, R_PROMPT] + ri[r, R_OUT] <= si[slot, I_CAPTOK] or n == 0:
            cut(si, sf, ht, hq, hs, g, slot, now)


@njit(cache=True)
def begin(si, sf, ht, hq, hs, g, slot, now, resumed):
    """Start the loop of `slot`: its first pass is due now (`resumed`: a solo request slot
    that joins it first, its boundary and counts in `sf`/`si`, or -1)."""
    si[slot, I_PHASE] = P_INIT
    si[slot, I_RES_R] = resumed
    sf[slot, F_LAST_END] = -1.0
    _push_event(ht, hq, hs, g, si, slot, now)
