"""`CompiledBatches`: the owner of every instance's batch at request fidelity, compiled.

At request fidelity on GPUs that are not shared (`Simulator.batches`; `SimConfig.batches`
"compiled"), no batch loop is a SimPy process: each instance's queue, running requests,
counters and loop state are rows of the arrays this class holds, and `sim/batch_kernel.py`
computes the loop (the same steps, the same floats as `sim.serving.batch_loop`). The
simulator asks `run(limit)` before it handles anything at `limit` (an arrival, or a SimPy
event due then), so the batches are up to date whenever Python looks at them; what a loop
finishes becomes records here, and a loop that runs out of work fires its instance's
`idle_signal` at the instant it does, as the Python loop's end does.

The instance stays the one writer of what it owns (its state in its routing row, its view:
stage, quality and speed, `Instance._set_view`); this class is the one writer of the batch.
Each instance's slot is its routing row's slot (`sim/routing_rows.py`), so both tables grow
and are reused together.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sim import batch_kernel as k
from sim.routing_rows import RoutingRows
from sim.serving import served_record

if TYPE_CHECKING:  # types only: the simulator imports this module
    from contracts.request import Request
    from sim.core import SimCore
    from sim.instance import Instance
    from sim.table import Table

_DONE_BUFFER = 8192  # records a `run_until` call may leave before Python takes them
_INF = math.inf


class CompiledBatches:
    """Every instance's batch as arrays; see the module's docstring."""

    def __init__(self, rows: RoutingRows, requests: int = 1024):
        self._rows = rows
        slots = rows.slots
        self.si = np.zeros((slots, k.SI_WIDTH), dtype=np.int64)
        self.sf = np.zeros((slots, k.SF_WIDTH))
        self._width = 1  # the largest batch an instance of the run holds
        self.hd = np.zeros((slots, 1), dtype=np.int64)
        self.ho = np.zeros((slots, 1), dtype=np.int64)
        self.hr = np.zeros((slots, 1), dtype=np.int64)
        self.joiners = np.zeros((slots, 1), dtype=np.int64)
        self.ri = np.zeros((requests, k.RI_WIDTH), dtype=np.int64)
        self.rf = np.zeros((requests, k.RF_WIDTH))
        self._req: list[tuple | None] = [None] * requests  # (request, instance, cold, load wait, woke)
        self._free = list(range(requests - 1, -1, -1))
        self.ht = np.zeros(256)
        self.hq = np.zeros(256, dtype=np.int64)
        self.hs = np.zeros(256, dtype=np.int64)
        self.g = np.zeros(k.G_WIDTH, dtype=np.int64)
        self.gf = np.zeros(k.GF_WIDTH)
        # what the loops finished since Python last looked: (request slot, stage) and
        # (first token, finish, TPOT, quality) per request, in the order they finished
        self.done = np.zeros((_DONE_BUFFER, 2), dtype=np.int64)
        self.donef = np.zeros((_DONE_BUFFER, 4))
        self._tables: dict[int, int] = {}  # id(Table) -> its index in tx/ty
        self._table_refs: list[Table] = []  # kept alive, so that an id is never reused
        self.tx = np.zeros(0)
        self.ty = np.zeros(0)
        self.toff = np.zeros(0, dtype=np.int64)
        self.tlen = np.zeros(0, dtype=np.int64)
        self._owner: list[Instance | None] = [None] * slots

    # --- instances ---------------------------------------------------------------------------
    def acquire(self, inst: Instance) -> None:
        """A new instance in its routing slot: an empty batch, its limits, tables and view."""
        slot = inst.routing_slot
        if slot >= len(self.si):
            self._grow_slots(self._rows.slots)
        shape = inst.shape
        if inst.capacity > self._width:
            self._grow_width(inst.capacity)
        si, sf = self.si, self.sf
        si[slot] = 0
        sf[slot] = 0.0
        si[slot, k.I_STEPPED] = -1
        si[slot, k.I_EVSEQ] = -1
        si[slot, k.I_QHEAD] = si[slot, k.I_QTAIL] = -1
        si[slot, k.I_RES_R] = -1
        si[slot, k.I_CAP] = inst.capacity
        si[slot, k.I_CAPTOK] = shape.max_tokens_in_flight
        si[slot, k.I_PTAB] = self._table(shape.prefill)
        si[slot, k.I_DTAB] = self._table(shape.decode)
        si[slot, k.I_REFILL] = 1 if inst.plan.refill else 0
        sf[slot, k.F_LAST_END] = -1.0
        self._owner[slot] = inst
        self.view_changed(inst, None)

    def view_changed(self, inst: Instance, now: float | None) -> None:
        """Copy the instance's view (`Instance._set_view` wrote it); a run under way ends at its
        next boundary (`now`; None for a new instance)."""
        slot = inst.routing_slot
        si, sf = self.si, self.sf
        stage, q, scale = inst.stage, inst.quality, inst.latency_scale
        pstage, pq, pscale = inst.prev_view
        si[slot, k.I_STAGE], sf[slot, k.F_Q], sf[slot, k.F_SCALE] = stage, q, scale
        si[slot, k.I_PSTAGE], sf[slot, k.F_PQ], sf[slot, k.F_PSCALE] = pstage, pq, pscale
        sf[slot, k.F_BOUND] = inst.bound_at
        if now is not None:
            self._heap_room()
            k.cut(si, sf, self.ht, self.hq, self.hs, self.g, slot, now)  # the run ends at its next boundary

    def busy_until(self, inst: Instance) -> float:
        """The end of the last step its loop began (as `Simulator.mark_busy` records for Python loops)."""
        return float(self.sf[inst.routing_slot, k.F_BUSY])

    # --- requests ----------------------------------------------------------------------------
    def enqueue(self, inst: Instance, req: Request, cold: bool, load_wait_s: float, prefill_fraction: float,
                woke: bool, now: float, start: bool) -> None:
        """Queue `req` for the instance's batch; `start`: its loop was not running (it starts now)."""
        r = self._request_slot(req, inst, cold, load_wait_s, woke, prefill_fraction)
        self._heap_room()
        k.enqueue(self.si, self.sf, self.ri, self._rows.view(), self.ht, self.hq, self.hs, self.g, inst.routing_slot,
                  r, now, start)

    def resume(self, inst: Instance, req: Request, cold: bool, load_wait_s: float, woke: bool, first_token_s: float,
               stage: int, boundary: float, tokens: int, quality: float, now: float) -> None:
        """A solo request met another: its loop starts now with it, at `boundary` with `tokens`
        tokens of quality `quality` so far (`serving._solo_joins_the_batch`)."""
        r = self._request_slot(req, inst, cold, load_wait_s, woke, 1.0)
        slot = inst.routing_slot
        si, sf = self.si, self.sf
        self.ri[r, k.R_STAGE] = stage
        self.rf[r, k.R_FIRST] = first_token_s
        si[slot, k.I_TOKENS] += req.prompt_tokens + req.output_tokens
        si[slot, k.I_RES_TOK] = tokens
        sf[slot, k.F_RES_BOUND] = boundary
        sf[slot, k.F_RES_Q] = quality
        self._heap_room()
        k.begin(si, sf, self.ht, self.hq, self.hs, self.g, slot, now, r)

    @property
    def events(self) -> int:
        """Batch loop events processed so far (what would have been SimPy events)."""
        return int(self.g[k.G_EVENTS])

    # --- time --------------------------------------------------------------------------------
    def next_time(self) -> float:
        """When the next loop event is due (infinity when none is)."""
        return float(self.ht[0]) if self.g[k.G_HSIZE] else _INF

    def run(self, sim: SimCore, limit: float) -> tuple[Instance, float] | None:
        """Process the loops' events due by `limit`: their records go to `sim.emit`. The first
        loop that runs out of work ends the call: its instance and the instant, for the caller
        to fire its `idle_signal` then (and to look again: keep-alive may schedule events)."""
        g = self.g
        room = self._width + 1
        rows = self._rows.view()
        while True:
            before = g[k.G_EVENTS]
            code = k.run_until(limit, room, self.si, self.sf, self.ri, self.rf, self.hd, self.ho, self.hr,
                               self.joiners, rows, self.tx, self.ty, self.toff, self.tlen, self.ht, self.hq, self.hs,
                               g, self.gf, self.done, self.donef)
            sim.events_processed += int(g[k.G_EVENTS] - before)
            self._records(sim)
            if code != k.DONE_FULL:
                break
        if self.gf[k.GF_MAXF] > sim.max_finish:
            sim.max_finish = float(self.gf[k.GF_MAXF])
        if code == k.DRAINED:
            slot = int(g[k.G_DRAIN])
            inst = self._owner[slot]
            refills = int(self.si[slot, k.I_REFILLS])
            if refills:
                sim.usage.of(inst.model).refills += refills
                self.si[slot, k.I_REFILLS] = 0
            inst.loop_running = False
            return inst, float(self.gf[k.GF_DRAIN_T])
        return None

    def _records(self, sim: SimCore) -> None:
        """The records of the requests the loops finished (in the order they finished)."""
        g = self.g
        n = int(g[k.G_NDONE])
        if not n:
            return
        g[k.G_NDONE] = 0
        emit = sim.emit
        reqs, free = self._req, self._free
        for (r, stage), (first, finish, tpot, quality) in zip(
                self.done[:n].tolist(), self.donef[:n].tolist(), strict=True):
            req, inst, cold, load_wait_s, woke = reqs[r]
            reqs[r] = None
            free.append(r)
            emit(served_record(sim, inst, req, first, finish, tpot, cold, load_wait_s, stage, quality, woke))
        sim.outstanding -= n

    # --- storage -----------------------------------------------------------------------------
    def _request_slot(self, req: Request, inst: Instance, cold: bool, load_wait_s: float, woke: bool,
                      prefill_fraction: float) -> int:
        """A request slot holding `req`: its sizes for the kernel, the rest for its record."""
        free = self._free
        if not free:
            self._grow_requests()
        r = free.pop()
        self._req[r] = (req, inst, cold, load_wait_s, woke)
        self.ri[r, k.R_PROMPT] = req.prompt_tokens
        self.ri[r, k.R_OUT] = req.output_tokens
        self.rf[r, k.R_FRAC] = prefill_fraction
        return r

    def _table(self, table: Table) -> int:
        key = id(table)
        index = self._tables.get(key)
        if index is None:
            index = len(self._table_refs)
            self._tables[key] = index
            self._table_refs.append(table)
            self.toff = np.append(self.toff, len(self.tx))
            self.tlen = np.append(self.tlen, len(table.x))
            self.tx = np.append(self.tx, np.asarray(table.x, dtype=np.float64))
            self.ty = np.append(self.ty, np.asarray(table.seconds, dtype=np.float64))
        return index

    def _heap_room(self) -> None:
        if self.g[k.G_HSIZE] + 1 >= len(self.ht):
            n = 2 * len(self.ht)
            self.ht = np.resize(self.ht, n)
            self.hq = np.resize(self.hq, n)
            self.hs = np.resize(self.hs, n)

    def _grow_requests(self) -> None:
        old = len(self.ri)
        self.ri = np.concatenate([self.ri, np.zeros_like(self.ri)])
        self.rf = np.concatenate([self.rf, np.zeros_like(self.rf)])
        self._req.extend([None] * old)
        self._free.extend(range(2 * old - 1, old - 1, -1))

    def _grow_slots(self, slots: int) -> None:
        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros((slots, *a.shape[1:]), dtype=a.dtype)
            out[:len(a)] = a
            return out

        self.si, self.sf = grown(self.si), grown(self.sf)
        self.hd, self.ho, self.hr, self.joiners = grown(self.hd), grown(self.ho), grown(self.hr), grown(self.joiners)
        self._owner.extend([None] * (slots - len(self._owner)))

    def _grow_width(self, width: int) -> None:
        def wider(a: np.ndarray) -> np.ndarray:
            out = np.zeros((len(a), width), dtype=a.dtype)
            out[:, :a.shape[1]] = a
            return out

        self.hd, self.ho, self.hr, self.joiners = wider(self.hd), wider(self.ho), wider(self.hr), wider(self.joiners)
        self._width = width


_ready = False


def ready() -> None:
    """Compile the kernel (or load it from numba's cache) now, once per process, on throwaway
    arrays: a machine where numba cannot compile or cache finds out before a run, which then
    runs the Python loops (`sim.simulator.compiled_batches`), not in the middle of it."""
    global _ready
    if _ready:
        return
    b = CompiledBatches(RoutingRows(1), requests=1)
    rows = b._rows.view()
    k.run_until(0.0, 1, b.si, b.sf, b.ri, b.rf, b.hd, b.ho, b.hr, b.joiners, rows, b.tx, b.ty, b.toff, b.tlen,
                b.ht, b.hq, b.hs, b.g, b.gf, b.done, b.donef)
    k.enqueue(b.si, b.sf, b.ri, rows, b.ht, b.hq, b.hs, b.g, 0, 0, 0.0, False)
    k.begin(b.si, b.sf, b.ht, b.hq, b.hs, b.g, 0, 0.0, -1)
    k.cut(b.si, b.sf, b.ht, b.hq, b.hs, b.g, 0, 0.0)
    _ready = True

