"""ProgressiveEngine: serve from the first usable stage while the rest of the model binds.

Lifecycle: construct (allocate zeroed weights and the KV cache; capture the decode graph on
CUDA) -> `start()` (a background thread loads the plan's stages) -> `generate()` (waits for
the plan's `serve_from` stage, then serves at whatever stage is bound at each step) ->
`unload()`. Every generated token carries the stage it was produced at.

With init overlapped (`StagePlan.overlap_init`, or a pipelined plan: the simulator's rule,
`init_overlaps`) the KV cache and the graph are made by a second thread that `start()`
launches beside the loader: every gate is 0 until a stage binds, so the model is valid with
no weights and the capture needs none. Serving starts once both the serving stage is bound
and that init is done.

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

from progressive_serve import device_guard
from progressive_serve.config import LlamaShape
from progressive_serve.kv_cache import KVCache
from progressive_serve.loader import StagedLoader
from progressive_serve.model import AlphaGatedLlama
from progressive_serve.timings import EngineTimings, Stopwatch, process_age_s

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

if TYPE_CHECKING:  # plans are plain data; importing `policies` would pull in its siblings
    from contracts.plan import StagePlan


def init_overlaps(plan: StagePlan) -> bool:
    """Whether KV allocation and graph capture run beside the load: the simulator's rule
    (`sim.lifecycle.load_weights`), so one plan means the same in both."""
    return plan.overlap_init or plan.pipelined


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
    overlapped_layers: int = 0  # prefill layers computed while later layers were still loading

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
        emulate_graph: bool = False,
        max_batch: int = 1,
        overlap_init: bool | None = None,
    ) -> None:
        """`emulate_graph=True` (CPU only) builds the decode graph's runner with every piece
        replayed eagerly (`DecodeGraph(emulate=True)`): the graph path's logic and its capture
        window without a GPU (tests, the GPU run's CPU rehearsal). `max_batch > 1` serves
        concurrent `generate` calls with continuous batching (`progressive_serve.batching`):
        one KV slot per sequence, joining at step boundaries; eager decode (the captured
        decode graph is batch 1). `overlap_init` (default: the plan's, `init_overlaps`) leaves
        the KV cache and the graph to `start()`, which makes them beside the loader."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if plan.pipelined and [i for st in plan.stages for i in st] != list(range(plan.num_layers)):
            raise ValueError(f"pipelined plan {plan.name!r} must bind layers in order 0..{plan.num_layers - 1}")
        if max_batch > 1 and use_cuda_graph:
            raise ValueError("continuous batching (max_batch > 1) decodes eagerly: use_cuda_graph=False")
        self.timings = EngineTimings(process_s=process_age_s())
        self.ckpt_dir = Path(ckpt_dir)
        self.plan = plan
        self.device = torch.device(device)
        self.dtype = as_dtype(dtype)
        self.shape = LlamaShape.from_dir(self.ckpt_dir)
        self.refill_on_stage = plan.refill if refill_on_stage is None else refill_on_stage
        self.overlap_init = init_overlaps(plan) if overlap_init is None else overlap_init
        self.timings.init_overlapped = self.overlap_init
        self.max_tokens, self.max_batch = max_tokens, max_batch
        self._graph_mode = graph_mode if use_cuda_graph else None
        if self.device.type == "cuda" and emulate_graph:
            raise ValueError("emulate_graph is for the CPU; on CUDA the graph is captured")
        with Stopwatch() as sw:
            device_guard.init_context(self.device)  # CUDA: the context (device-wide); else nothing
        if self.device.type == "cuda":
            self.timings.context_s = sw.s
        elif use_vmm or (use_cuda_graph and not emulate_graph):
            raise ValueError("use_cuda_graph and use_vmm need device='cuda' (emulate_graph=True on the CPU)")
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
        self._step_lock = threading.Lock()
        self._request_lock = threading.Lock()  # batch 1: one request owns the KV cache at a time
        self._stage_cv = threading.Condition()
        self.stage = -1  # the last stage whose gates are open; -1 before stage 0
        self.initialized = False  # the KV cache (and graph, batcher) exist
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
        self.cache: KVCache | None = None
        self.graph = None
        self.batcher = None
        self._thread: threading.Thread | None = None
        self._init_thread: threading.Thread | None = None
        self._t_start = 0.0
        self.pipelined_progress = 0  # layers an execute-while-load prefill has computed (tests watch it)
        if not self.overlap_init:
            self._init_serving()

    def _init_serving(self) -> None:
        """What serving needs besides the weights: the KV cache, the decode graph, the batcher.

        Valid before any weight is bound: every gate is 0, so the graph's pieces are captured
        over zeroed (or half-copied) weights whose output no step uses. On CUDA the warm-up
        before capture writes K/V at position 0 from whatever the weights hold then, so the
        cache is zeroed after it: a layer bound later starts from the same zeros as it would
        without overlap.
        """
        with Stopwatch() as sw:
            cache = KVCache.allocate(
                self.shape, batch=self.max_batch, max_tokens=self.max_tokens, device=self.device, dtype=self.dtype
            )
            self._sync()
        self.timings.kv_alloc_s = sw.s
        if self._graph_mode is not None:
            from progressive_serve.cuda_graph import DecodeGraph

            with Stopwatch() as sw:
                graph = DecodeGraph(
                    model=self.model, cache=cache, mode=self._graph_mode, emulate=self.device.type != "cuda"
                )
                graph.capture()
                if not graph.emulate:
                    cache.keys.zero_()
                    cache.values.zero_()
                    self._sync()
            self.timings.capture_s = sw.s
            self.graph = graph
        self.cache = cache
        if self.max_batch > 1:
            from progressive_serve.batching import ContinuousBatcher

            self.batcher = ContinuousBatcher(self, cache)
        with self._stage_cv:
            self.initialized = True
            if self._t_start:
                self.timings.init_done_s = time.perf_counter() - self._t_start
                if self.stage >= self.plan.serve_from and self.timings.serve_ready_s is None:
                    self.timings.serve_ready_s = self.timings.init_done_s
            self._stage_cv.notify_all()

    def _init_in_background(self) -> None:
        try:
            self._init_serving()
        except BaseException as e:  # surfaced to waiters, as the loader's are
            with self._stage_cv:
                self._error = e
                self._stage_cv.notify_all()

    def _sync(self) -> None:
        """Wait for this thread's stream (allocations run there): never device-wide, so it
        cannot meet another engine's capture (see `device_guard`)."""
        device_guard.stream_synchronize(self.device)

    # -- loading ---------------------------------------------------------------------------------
    def start(self, background: bool = True) -> ProgressiveEngine:
        """Begin staged loading in a background thread and return at once (or load it all now)."""
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._t_start = time.perf_counter()
        self._thread = threading.Thread(target=self._load, name="progressive-loader", daemon=True)
        self._thread.start()
        if not self.initialized:  # init overlapped: KV cache and capture beside the loader
            self._init_thread = threading.Thread(target=self._init_in_background, name="progressive-init", daemon=True)
            self._init_thread.start()
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
            if j == self.plan.serve_from and self.initialized:
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
        if not self.initialized:  # init overlapped, but nothing runs beside this call: init first
            self._init_serving()
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

    def wait_until_serving(self, timeout: float | None = None) -> int:
        """Block until the serving stage is bound and the KV cache and graph exist; returns the stage."""
        self.wait_for_stage(self.plan.serve_from, timeout)
        self._wait_initialized(timeout)
        return self.stage

    def _wait_initialized(self, timeout: float | None = None) -> None:
        with self._stage_cv:
            ok = self._stage_cv.wait_for(lambda: self.initialized or self._error is not None, timeout)
            if self._error is not None:
                raise RuntimeError(f"engine init failed: {self._error!r}") from self._error
            if not ok:
                raise TimeoutError(f"KV cache and graph not ready after {timeout} s")

    def wait_until_loaded(self, timeout: float | None = None) -> None:
        self.wait_for_stage(self.plan.num_stages - 1, timeout)
        self._wait_initialized(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- serving ---------------------------------------------------------------------------------
    def _forward(self, ids: list[int], start_pos: int, cache: KVCache | None = None) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(start_pos, start_pos + len(ids), device=self.device)
        return self.model(x, positions=pos, cache=cache or self.cache, last_only=True)[0, -1]

    def _decode(self, token: int, pos: int) -> torch.Tensor:
        if self.graph is not None:
            return self.graph.step(token, pos)[0, -1]
        return self._forward([token], pos)

    @torch.inference_mode()
    def generate(
        self, prompt_ids: list[int], max_new_tokens: int, on_token: Callable[[int], None] | None = None
    ) -> GenerationResult:
        """Greedy generation; waits for the plan's serve_from stage first.

        With `max_batch=1` requests are served one at a time (concurrent callers queue, and
        their wait counts in their TTFT); with more, concurrent callers share decode steps
        (continuous batching). `on_token(i)` runs after token i, outside the step lock (tests
        bind a stage there).
        """
        t0 = time.perf_counter()
        if self.max_batch > 1:
            self._check_request(prompt_ids, max_new_tokens)
            self.wait_until_serving()
            return self.batcher.submit(prompt_ids, max_new_tokens, on_token, t0, time.perf_counter() - t0)
        with self._request_lock:
            return self._generate(prompt_ids, max_new_tokens, on_token, t0)

    def _generate(
        self, prompt_ids: list[int], max_new_tokens: int, on_token: Callable[[int], None] | None, t0: float
    ) -> GenerationResult:
        self._check_request(prompt_ids, max_new_tokens)
        tokens: list[int] = []
        stages: list[int] = []
        refills = overlapped = 0
        if self.plan.pipelined and self.stage < self.plan.serve_from:
            logits, wait_s, overlapped = self._pipelined_prefill(prompt_ids)
            with self._step_lock:
                version = self.model.gate_version
                tokens.append(int(torch.argmax(logits)))
                stages.append(self.loader.bound_stage)
                layers_first = sum(self.model.active)
        else:
            self.wait_until_serving()
            wait_s = time.perf_counter() - t0
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
            overlapped_layers=overlapped,
        )

    def _pipelined_prefill(self, ids: list[int]) -> tuple[torch.Tensor, float, int]:
        """Execute-while-load: the prompt's prefill runs layer by layer, each layer as soon as
        its stage is bound, while the loader moves the next ones. The operations are the
        full forward pass's, in its order, so the logits are the fully loaded model's.
        Returns (last position's logits, seconds blocked on the loader, layers computed
        before the last one was bound)."""
        waited = 0.0
        overlapped = 0
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(len(ids), device=self.device)

        def wait(stage: int) -> None:
            nonlocal waited
            t = time.perf_counter()
            self.wait_for_stage(stage)
            waited += time.perf_counter() - t

        wait(0)  # the embedding unit binds with stage 0
        t = time.perf_counter()
        self._wait_initialized()  # layer 0 writes its K/V: the cache must exist
        waited += time.perf_counter() - t
        with self._step_lock:
            h = self.model.embed(x)
            rope = self.model.rope(pos)
        stage_of = {i: j for j, st in enumerate(self.plan.stages) for i in st}
        for i in range(self.shape.num_layers):
            wait(stage_of[i])
            with self._step_lock:
                h = self.model.run_layer(i, h, positions=pos, rope=rope, cache=self.cache, kv_len=len(ids))
                if self.loader.bound_stage < self.plan.num_stages - 1:
                    overlapped += 1
            self.pipelined_progress = i + 1
        with self._step_lock:
            logits = self.model.head(h[:, -1:])[0, -1]
        return logits, waited, overlapped

    def _check_request(self, prompt_ids: list[int], max_new_tokens: int) -> None:
        if self.model is None:
            raise RuntimeError("engine unloaded")
        if not prompt_ids:
            raise ValueError("empty prompt")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if len(prompt_ids) + max_new_tokens > self.max_tokens:
            raise ValueError(
                f"prompt {len(prompt_ids)} + {max_new_tokens} new tokens exceeds max_tokens={self.max_tokens}"
            )

    def unload(self) -> None:
        """Stop loading, drop weights, cache and graphs (a cold instance again)."""
        if self._init_thread is not None:
            self._init_thread.join()  # an overlapped init finishes first (it may make the batcher)
        if self.batcher is not None:
            self.batcher.close()  # requests in flight finish; waiting ones fail
        self.loader.cancel()
        if self._thread is not None:
            self._thread.join()
        # dropping captured graphs and mapped memory are device calls too: done under the
        # device lock, so they never meet another engine's capture window
        with device_guard.exclusive():
            self.graph = None
            self.model = None  # type: ignore[assignment]
            self.cache = None  # type: ignore[assignment]
            self.loader.release()  # its views into the arena must go before the arena does
            if self.arena is not None:
                self.arena.release()
                self.arena = None
            device_guard.empty_cache(self.device)  # under the device lock: never inside a capture
