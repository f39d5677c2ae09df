"""Continuous batching: concurrent requests share decode steps and join at step boundaries.

One serving thread runs steps. At each step boundary it admits waiting requests into free
KV slots (each sequence has its own slot: a row of the engine's cache, `slot_views`),
runs each newcomer's prefill (its first token), re-fills any sequence whose stage changed
since its last token (as the batch-1 engine does), and decodes everyone else together in
one `decode_rows` call: linear layers over the batch, attention per sequence over its own
slot. So a sequence's tokens are the ones the batch-1 engine gives it, whoever shares its
steps (tests/test_engine_batching.py), and iteration fidelity's continuous batching has a
real counterpart. A step holds the engine's step lock, so it never mixes stages.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from progressive_serve.kv_cache import KVCache, slot_views

if TYPE_CHECKING:
    from progressive_serve.engine import GenerationResult, ProgressiveEngine


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    max_new: int
    on_token: Callable[[int], None] | None
    t0: float
    wait_s: float
    slot: int = -1
    tokens: list[int] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    version: int = -1
    refills: int = 0
    ttft_s: float = 0.0
    layers_first: int = 0
    result: GenerationResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ContinuousBatcher:
    """Serves `submit`ted requests of one engine together, up to `len(slots)` at once."""

    def __init__(self, engine: ProgressiveEngine, cache: KVCache) -> None:
        self.engine = engine
        self.slots = slot_views(cache)
        self.free = list(range(len(self.slots)))
        self.pending: deque[_Request] = deque()
        self.active: list[_Request] = []
        self.cv = threading.Condition()
        self.closed = False
        self.steps = 0  # decode steps run with more than one sequence (tests, measurements)
        self.max_seen = 0  # the largest batch a decode step had
        self._thread: threading.Thread | None = None

    def submit(
        self,
        prompt: list[int],
        max_new: int,
        on_token: Callable[[int], None] | None,
        t0: float,
        wait_s: float,
    ) -> GenerationResult:
        """Queue a request and block until its last token."""
        req = _Request(prompt, max_new, on_token, t0, wait_s)
        with self.cv:
            if self.closed:
                raise RuntimeError("engine unloaded")
            self.pending.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="progressive-batcher", daemon=True)
                self._thread.start()
            self.cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def close(self) -> None:
        """Stop after the requests in flight; fail those still waiting."""
        with self.cv:
            self.closed = True
            for req in self.pending:
                req.error = RuntimeError("engine unloaded")
                req.done.set()
            self.pending.clear()
            self.cv.notify_all()
        if self._thread is not None:
            self._thread.join()

    # -- the serving thread -------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.pending or self.active or self.closed)
                if self.closed and not self.active:
                    return
                joined = []
                while self.pending and self.free:  # join at this step boundary
                    req = self.pending.popleft()
                    req.slot = self.free.pop(0)
                    joined.append(req)
                self.active.extend(joined)
            try:
                with torch.inference_mode():
                    self._step(set(joined))
            except BaseException as e:  # every request in the step learns of it
                for req in self.active:
                    req.error = e
                    req.done.set()
                self._release(self.active)
                continue
            self._after_step()

    def _step(self, joined: set[_Request]) -> None:
        eng, model = self.engine, self.engine.model
        with eng._step_lock:
            version, stage = model.gate_version, eng.loader.bound_stage
            decode = []
            for req in self.active:
                cache = self.slots[req.slot]
                if req in joined:
                    logits = eng._forward(req.prompt, 0, cache)
                    req.ttft_s = time.perf_counter() - req.t0
                    req.layers_first = sum(model.active)
                    self._append(req, logits, version, stage)
                elif eng.refill_on_stage and req.version != version:
                    logits = eng._forward(req.prompt + req.tokens, 0, cache)
                    req.refills += 1
                    self._append(req, logits, version, stage)
                else:
                    decode.append(req)
            if decode:
                logits = model.decode_rows(
                    [r.tokens[-1] for r in decode],
                    [len(r.prompt) + len(r.tokens) - 1 for r in decode],
                    [self.slots[r.slot] for r in decode],
                )
                for r, row in zip(decode, logits, strict=True):
                    self._append(r, row, version, stage)
                self.max_seen = max(self.max_seen, len(decode))
                if len(decode) > 1:
                    self.steps += 1

    @staticmethod
    def _append(req: _Request, logits: torch.Tensor, version: int, stage: int) -> None:
        req.tokens.append(int(torch.argmax(logits)))
        req.stages.append(stage)
        req.version = version

    def _after_step(self) -> None:
        """Callbacks outside the step lock (a test binds a stage there), then finished requests."""
        from progressive_serve.engine import GenerationResult

        finished = []
        for req in list(self.active):
            if len(req.tokens) >= req.max_new:
                finished.append(req)
            elif req.on_token is not None:
                req.on_token(len(req.tokens) - 1)
        for req in finished:
            req.result = GenerationResult(
                tokens=req.tokens,
                ttft_s=req.ttft_s,
                wait_s=req.wait_s,
                stage_at_first_token=req.stages[0],
                token_stages=req.stages,
                layers_at_first_token=req.layers_first,
                total_s=time.perf_counter() - req.t0,
                refills=req.refills,
            )
        self._release(finished)
        for req in finished:
            req.done.set()

    def _release(self, reqs: list[_Request]) -> None:
        with self.cv:
            for req in list(reqs):
                if req in self.active:
                    self.active.remove(req)
                    self.free.append(req.slot)
            self.free.sort()
