"""Play a request segment on the real engine in wall-clock time: real loads, evictions, generation.

The server mirrors what the simulator models for one GPU with the `least_loaded` router
(which the replay names on the simulator's command line; its default is `expected_wait`):
a request goes to a serving instance of its model with a free slot, else joins a loading
one with a free slot, else a new instance is started (a cold start: engine construction,
then staged loading), evicting idle instances least recently used first when memory would
overflow. An instance serves `slots` requests at once (1 by default; more
with `--replay-batch`, through the engine's continuous batching, and the replay profile
says the same batch), and is kept for the keep-alive TTL after it goes
idle ("none": evicted at once). A request that finds no memory for a new instance joins the
least-loaded instance of its model, or, where its model has none, waits for memory, oldest
first, as the simulator's memory queue does: it is placed when an instance goes idle or is
evicted. (The first GPU replay started such an instance beyond the memory cap instead, so
the real side had a fifth engine that the simulator, rightly, did not.) A model's first load reads its checkpoint with the page cache dropped, the
simulator's "from SSD"; later loads find it in the page cache, the simulator's "from
host DRAM". All model names share one checkpoint folder, so the cache is dropped
explicitly rather than left to chance.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.plan import StagePlan
from validate.coldstart import EngineSpec, make_engine, release
from validate.probes import drop_file_cache


@dataclass(frozen=True)
class ServerSpec:
    """The device and keep-alive the replay runs with; `footprint_bytes` per instance as the simulator counts it."""

    engine: EngineSpec
    files: tuple[Path, ...]
    keepalive: str  # "none" or "fixed"
    ttl_s: float
    capacity_bytes: float
    footprint_bytes: float
    vocab_size: int
    seed: int = 0
    slots: int = 1  # requests an instance serves at once: the engine's batch (continuous batching if > 1)


@dataclass(eq=False)
class _Instance:
    model: str
    iid: int
    inbox: queue.Queue = field(default_factory=queue.Queue)
    ready: bool = False
    evicted: bool = False
    active: int = 0  # requests assigned and not finished
    last_used: float = 0.0
    thread: threading.Thread | None = None


class ReplayServer:
    """The wall-clock server; `run(segment)` returns one row per request."""

    def __init__(self, spec: ServerSpec, plan: StagePlan):
        self.spec = spec
        self.plan = plan
        self.lock = threading.Lock()
        self.instances: list[_Instance] = []
        self.loaded_once: set[str] = set()
        self.rows: list[dict] = []
        self.counters = {"loads": 0, "evictions": 0, "queued_on_busy": 0, "waited_for_memory": 0}
        self.waiting: list[tuple] = []  # requests that found no memory, oldest first (lock held)
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.t0 = 0.0

    # -- arrivals ---------------------------------------------------------------------------------
    def submit(
        self, request_id: int, model: str, arrival: float, prompt: list[int], output_tokens: int
    ) -> None:
        with self.lock:
            item = (request_id, model, arrival, prompt, output_tokens)
            inst = self._route(model, fallback=True)
            if inst is None:
                self.waiting.append(item)
                self.counters["waited_for_memory"] += 1
            else:
                self._assign(inst, item, waited=False)

    def _assign(self, inst: _Instance, item: tuple, waited: bool) -> None:
        """Hand a request to an instance (lock held): cold if it waits for a load or waited for memory."""
        request_id, _model, arrival, prompt, output_tokens = item
        inst.active += 1
        inst.inbox.put((request_id, arrival, waited or not inst.ready, prompt, output_tokens))

    def _place_waiting(self) -> None:
        """Requests that found no memory try again, oldest first, until one still cannot (lock held)."""
        while self.waiting:
            inst = self._route(self.waiting[0][1], fallback=False)
            if inst is None:
                return
            self._assign(inst, self.waiting.pop(0), waited=True)

    def _route(self, model: str, fallback: bool) -> _Instance | None:
        """The simulator's least_loaded router (lock held): serving, then loading, then a new instance.

        With no memory for one: the least-loaded instance of the model (`fallback`, an arrival),
        else None, and the request waits for memory."""
        mine = [i for i in self.instances if i.model == model]
        serving = [i for i in mine if i.ready and i.active < self.spec.slots]
        if serving:
            return min(serving, key=lambda i: (i.active, i.iid))
        loading = [i for i in mine if not i.ready and i.active < self.spec.slots]
        if loading:
            return min(loading, key=lambda i: (i.active, i.iid))
        inst = self._start_instance(model)
        if inst is None and fallback and mine:  # no memory, nothing idle to evict: join the shortest queue
            self.counters["queued_on_busy"] += 1
            return min(mine, key=lambda i: (not i.ready, i.active, i.iid))
        return inst

    def _start_instance(self, model: str) -> _Instance | None:
        """A new instance (lock held), evicting idle instances LRU first; None if it cannot fit."""
        need = self.spec.footprint_bytes
        used = need * len(self.instances)
        idle = sorted((i for i in self.instances if i.active == 0 and i.ready), key=lambda i: i.last_used)
        victims = []
        while used + need > self.spec.capacity_bytes and idle:
            victims.append(idle.pop(0))
            used -= need
        if used + need > self.spec.capacity_bytes:
            return None
        for victim in victims:
            victim.evicted = True
            victim.inbox.put(None)  # wakes its worker, which unloads
            self.instances.remove(victim)
        inst = _Instance(model, self.counters["loads"])
        first_load = model not in self.loaded_once
        self.loaded_once.add(model)
        self.instances.append(inst)
        self.counters["loads"] += 1
        inst.thread = threading.Thread(target=self._worker, args=(inst, first_load), daemon=True)
        inst.thread.start()
        self.threads.append(inst.thread)
        return inst

    # -- one instance's life ------------------------------------------------------------------------
    def _worker(self, inst: _Instance, first_load: bool) -> None:
        engine = None
        serving: list[threading.Thread] = []
        try:
            if first_load:
                drop_file_cache(list(self.spec.files))
            engine = make_engine(self.spec.engine, self.plan)
            engine.start()
            engine.wait_for_stage(self.plan.serve_from)
            with self.lock:
                inst.ready = True
            while True:
                timeout = self.spec.ttl_s if self.spec.keepalive == "fixed" else 0.0
                busy = inst.active > 0  # batched requests still in flight: not idle yet
                try:
                    if busy:
                        item = inst.inbox.get(timeout=0.005)
                    else:
                        item = inst.inbox.get(timeout=timeout) if timeout > 0 else inst.inbox.get_nowait()
                except queue.Empty:
                    if busy:  # a poll while requests were in flight: idleness starts now, not then
                        continue
                    with self.lock:
                        if inst.inbox.empty() and inst.active == 0:
                            inst.evicted = True
                            if inst in self.instances:
                                self.instances.remove(inst)
                            self.counters["evictions"] += 1
                            self._place_waiting()  # its memory is free
                            return
                    continue
                if item is None:
                    with self.lock:
                        self.counters["evictions"] += 1
                    return
                if self.spec.slots == 1:
                    self._serve(engine, inst, *item)
                else:  # the engine batches concurrent calls: each request in its own thread
                    t = threading.Thread(
                        target=self._serve_or_record, args=(engine, inst, *item), daemon=True
                    )
                    t.start()
                    serving.append(t)
        except BaseException as e:  # surfaced by run(); a worker must never die silently
            self.errors.append(e)
            with self.lock:
                inst.evicted = True
                if inst in self.instances:
                    self.instances.remove(inst)
        finally:
            for t in serving:  # batched requests finish before their engine goes
                t.join()
            if engine is not None:
                release(engine)

    def _serve_or_record(self, engine, inst: _Instance, *item) -> None:
        try:
            self._serve(engine, inst, *item)
        except BaseException as e:  # surfaced by run()
            self.errors.append(e)

    def _serve(
        self, engine, inst: _Instance, request_id: int, arrival: float, cold: bool, prompt, out_tokens
    ) -> None:
        t_call = time.perf_counter()
        result = engine.generate(prompt, int(out_tokens))
        first = t_call + result.ttft_s
        done = time.perf_counter()
        with self.lock:
            self.rows.append(
                {
                    "request_id": request_id,
                    "model": inst.model,
                    "arrival_s": arrival - self.t0,
                    "first_token_s": first - self.t0,
                    "finish_s": done - self.t0,
                    "ttft_s": first - arrival,
                    "cold": cold,
                    "stage_at_first_token": int(result.stage_at_first_token),
                    "refills": int(result.refills),
                    "instance_id": inst.iid,
                }
            )
            inst.last_used = done
            inst.active -= 1
            if inst.active == 0 and self.waiting:
                self._place_waiting()  # an idle instance can be evicted for a waiting request

    # -- the whole segment ---------------------------------------------------------------------------
    def run(self, segment: pd.DataFrame, progress=None) -> pd.DataFrame:
        """Submit each request at its arrival time (relative to now); wait for all; one row each."""
        rng = np.random.default_rng(self.spec.seed)
        self.t0 = time.perf_counter()
        for rid, row in enumerate(segment.itertuples(index=False)):
            wait = self.t0 + float(row.arrival_s) - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            prompt = rng.integers(0, self.spec.vocab_size, int(row.prompt_tokens)).tolist()
            self.submit(rid, str(row.model), time.perf_counter(), prompt, int(row.output_tokens))
            if progress is not None:
                progress.update()
            if self.errors:
                break
        while len(self.rows) < len(segment) and not self.errors:
            time.sleep(0.01)
        with self.lock:
            for inst in self.instances:
                inst.evicted = True
                inst.inbox.put(None)
            self.instances.clear()
        for t in self.threads:  # every engine unloaded before the next policy starts
            t.join()
        if self.errors:
            raise RuntimeError(f"replay failed: {self.errors[0]!r}") from self.errors[0]
        return pd.DataFrame(self.rows).sort_values("request_id").reset_index(drop=True)
