"""ProgressiveEngine: serve from the first usable stage while the rest of the model binds.

Lifecycle: construct (allocate zeroed weights and the KV cache; capture the decode graph on
CUDA) -> `start()` (a background thread loads the plan's stages) -> `generate()` (waits for
the plan's `serve_from` stage, then serves at whatever stage is bound at each step) ->
`unload()`. Every generated token carries the stage it was produced at.

A step holds `_step_lock`; the loader opens a stage's gates under the same lock, so one
step never mixes stages. When a stage opens new layers mid-request the engine re-runs the
prefill over the tokens so far (those layers have no K/V for them yet), unless the plan
says `refill=False` (or the engine is built with `refill_on_stage=False`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from progressive_serve.config import LlamaShape
from progressive_serve.kv_cache import KVCache
from progressive_serve.loader import StagedLoader
from progressive_serve.model import AlphaGatedLlama
from progressive_serve.timings import EngineTimings, Stopwatch, process_age_s

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

if TYPE_CHECKING:  # plans are plain data; importing `policies` would pull in its siblings
    from contracts.plan import StagePlan


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}") from None


@dataclass
class GenerationResult:
    """One request's outcome. Stages are 0-based indices into the plan's stages."""

    tokens: list[int]
    ttft_s: float  # generate() call to first token, including any wait for serve_from
    wait_s: float  # of which waiting for the serve_from stage
    stage_at_first_token: int
    token_stages: list[int] = field(default_factory=list)
    layers_at_first_token: int = 0
    total_s: float = 0.0
    refills: int = 0

    @property
    def decode_s_per_token(self) -> float:
        n = len(self.tokens) - 1
        return (self.total_s - self.ttft_s) / n if n > 0 else 0.0


class ProgressiveEngine:
    """An alpha-gated LLaMA engine that loads a checkpoint stage by stage in the background."""

    def __init__(
        self,
        ckpt_dir: str | Path,
        plan: StagePlan,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        use_cuda_graph: bool = False,
        *,
        max_tokens: int = 1024,
        skip_inactive: bool = True,
        refill_on_stage: bool | None = None,
        graph_mode: str = "per_layer",
        use_vmm: bool = False,
    ) -> None:
        self.timings = EngineTimings(process_s=process_age_s())
        self.ckpt_dir = Path(ckpt_dir)
        self.plan = plan
        self.device = torch.device(device)
        self.dtype = as_dtype(dtype)
        self.shape = LlamaShape.from_dir(self.ckpt_dir)
        self.refill_on_stage = plan.refill if refill_on_stage is None else refill_on_stage
        if self.device.type == "cuda":
            with Stopwatch() as sw:
                torch.cuda.init()
                torch.empty(1, device=self.device)
                torch.cuda.synchronize(self.device)
            self.timings.context_s = sw.s
        elif use_cuda_graph or use_vmm:
            raise ValueError("use_cuda_graph and use_vmm need device='cuda'")
        if use_vmm and (not skip_inactive or (use_cuda_graph and graph_mode != "per_layer")):
            raise ValueError("use_vmm needs skip_inactive=True and, with graphs, graph_mode='per_layer'")
        self.arena = None
        with Stopwatch() as sw:
            self.model = AlphaGatedLlama(
                shape=self.shape, device=self.device, dtype=self.dtype, initial_gate=0.0, lazy_layers=use_vmm
            )
            self.model.skip_inactive = skip_inactive
            if use_vmm:
                from progressive_serve.cuda_vmm import LayerArena

                self.arena = LayerArena(self.shape, dtype=self.dtype, device=self.device)
                self.arena.attach(self.model)
            self._sync()
        self.timings.alloc_s = sw.s
        with Stopwatch() as sw:
            self.cache = KVCache.allocate(
                self.shape, batch=1, max_tokens=max_tokens, device=self.device, dtype=self.dtype
            )
            self._sync()
        self.timings.kv_alloc_s = sw.s
        self._step_lock = threading.Lock()
        self._request_lock = threading.Lock()  # batch 1: one request owns the KV cache at a time
        self._stage_cv = threading.Condition()
        self.stage = -1  # the last stage whose gates are open; -1 before stage 0
        self._error: BaseException | None = None
        self.loader = StagedLoader(
            self.ckpt_dir,
            self.model,
            plan,
            self.device,
            gate_lock=self._step_lock,
            prepare_unit=self.arena.map_layer if self.arena is not None else None,
        )
        self.timings.layers = self.loader.records
        self.graph = None
        if use_cuda_graph:
            from progressive_serve.cuda_graph import DecodeGraph

            with Stopwatch() as sw:
                self.graph = DecodeGraph(model=self.model, cache=self.cache, mode=graph_mode)
                self.graph.capture()
            self.timings.capture_s = sw.s
        self._thread: threading.Thread | None = None
        self._t_start = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- loading ---------------------------------------------------------------------------------
    def start(self, background: bool = True) -> ProgressiveEngine:
        """Begin staged loading in a background thread and return at once (or load it all now)."""
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._t_start = time.perf_counter()
        self._thread = threading.Thread(target=self._load, name="progressive-loader", daemon=True)
        self._thread.start()
        if not background:
            self.wait_until_loaded()
        return self

    def _load(self) -> None:
        try:
            self.loader.run(on_stage=self._on_stage)
        except BaseException as e:  # surfaced to waiters, never lost in the thread
            with self._stage_cv:
                self._error = e
                self._stage_cv.notify_all()

    def _on_stage(self, j: int) -> None:
        now = time.perf_counter() - self._t_start
        with self._stage_cv:
            self.stage = j
            self.timings.stage_ready_s.append(now)
            if j == self.plan.serve_from:
                self.timings.serve_ready_s = now
            self._stage_cv.notify_all()

    def bind_stage(self, j: int) -> None:
        """Load and bind stage j now, in the calling thread (instead of `start()`; stages in order)."""
        if self._thread is not None:
            raise RuntimeError("the background loader owns the stages after start()")
        if j != self.loader.bound_stage + 1:
            raise ValueError(f"stage {j} out of order: stage {self.loader.bound_stage} is the last bound")
        if self._t_start == 0.0:
            self._t_start = time.perf_counter()
        self.loader.load_stage(j)
        self._on_stage(j)

    def wait_for_stage(self, j: int, timeout: float | None = None) -> int:
        """Block until stage j (0-based) is bound; returns the stage bound now."""
        if self._thread is None and self.stage < j:
            raise RuntimeError(f"stage {j} is not bound and nothing is loading: call start() or bind_stage()")
        with self._stage_cv:
            ok = self._stage_cv.wait_for(lambda: self.stage >= j or self._error is not None, timeout)
            if self._error is not None:
                raise RuntimeError(f"staged loading failed: {self._error!r}") from self._error
            if not ok:
                raise TimeoutError(f"stage {j} not bound after {timeout} s (now at {self.stage})")
            return self.stage

    def wait_until_loaded(self, timeout: float | None = None) -> None:
        self.wait_for_stage(self.plan.num_stages - 1, timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- serving ---------------------------------------------------------------------------------
    def _forward(self, ids: list[int], start_pos: int) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(start_pos, start_pos + len(ids), device=self.device)
        return self.model(x, positions=pos, cache=self.cache, last_only=True)[0, -1]

    def _decode(self, token: int, pos: int) -> torch.Tensor:
        if self.graph is not None:
            return self.graph.step(token, pos)[0, -1]
        return self._forward([token], pos)

    @torch.inference_mode()
    def generate(
        self, prompt_ids: list[int], max_new_tokens: int, on_token: Callable[[int], None] | None = None
    ) -> GenerationResult:
        """Greedy generation; waits for the plan's serve_from stage first.

        Requests are served one at a time (batch 1; concurrent callers queue, and their wait
        counts in their TTFT). `on_token(i)` runs after token i, outside the step lock (tests
        bind a stage there).
        """
        t0 = time.perf_counter()
        with self._request_lock:
            return self._generate(prompt_ids, max_new_tokens, on_token, t0)

    def _generate(
        self, prompt_ids: list[int], max_new_tokens: int, on_token: Callable[[int], None] | None, t0: float
    ) -> GenerationResult:
        if self.model is None:
            raise RuntimeError("engine unloaded")
        if not prompt_ids:
            raise ValueError("empty prompt")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if len(prompt_ids) + max_new_tokens > self.cache.max_tokens:
            raise ValueError(
                f"prompt {len(prompt_ids)} + {max_new_tokens} new tokens exceeds max_tokens={self.cache.max_tokens}"
            )
        self.wait_for_stage(self.plan.serve_from)
        wait_s = time.perf_counter() - t0
        tokens: list[int] = []
        stages: list[int] = []
        refills = 0
        with self._step_lock:
            version = self.model.gate_version
            logits = self._forward(prompt_ids, 0)
            tokens.append(int(torch.argmax(logits)))
            stages.append(self.loader.bound_stage)
            layers_first = sum(self.model.active)
        ttft = time.perf_counter() - t0
        for i in range(max_new_tokens - 1):
            if on_token is not None:
                on_token(i)
            with self._step_lock:
                context = prompt_ids + tokens
                if self.refill_on_stage and self.model.gate_version != version:
                    logits = self._forward(context, 0)
                    refills += 1
                else:
                    logits = self._decode(tokens[-1], len(context) - 1)
                version = self.model.gate_version
                tokens.append(int(torch.argmax(logits)))
                stages.append(self.loader.bound_stage)
        return GenerationResult(
            tokens=tokens,
            ttft_s=ttft,
            wait_s=wait_s,
            stage_at_first_token=stages[0],
            token_stages=stages,
            layers_at_first_token=layers_first,
            total_s=time.perf_counter() - t0,
            refills=refills,
        )

    def unload(self) -> None:
        """Stop loading, drop weights, cache and graphs (a cold instance again)."""
        self.loader.cancel()
        if self._thread is not None:
            self._thread.join()
        self.graph = None
        self.model = None  # type: ignore[assignment]
        self.cache = None  # type: ignore[assignment]
        self.loader.release()  # its views into the arena must go before the arena does
        if self.arena is not None:
            self.arena.release()
            self.arena = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
