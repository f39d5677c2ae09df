"""CUDA-graph capture of the single-token decode step, valid across every loading stage.

Two modes, both captured once, before any weight is bound, and never re-captured:

* `whole` — one graph for embedding, every layer and head (the seed's design). A gate of 0
  still computes the layer (on zero weights) and multiplies it away: no compute is saved.
* `per_layer` — one graph for embedding+RoPE, one per decoder layer, one for the head, all
  reading and writing the same static hidden-state buffer. The host replays only the
  graphs of active layers (the branch sits *outside* the captured region), so an absent
  layer costs no compute, and its weights may be unmapped (see `cuda_vmm`). Each replay
  is one launch, so the overhead is (layers + 2) launches per step instead of one.

Shapes are fixed: the step attends over all `cache.max_tokens` slots and masks by position,
and the token id and position are copied into static device tensors before replay.
"""

from __future__ import annotations

import torch

from progressive_serve import device_guard
from progressive_serve.kv_cache import KVCache
from progressive_serve.model import AlphaGatedLlama

MODES = ("whole", "per_layer")


class DecodeGraph:
    """Captured decode step for batch 1; `step(token, position)` returns logits (1, 1, vocab)."""

    def __init__(
        self, *, model: AlphaGatedLlama, cache: KVCache, mode: str = "per_layer", emulate: bool = False
    ) -> None:
        """`emulate=True` replays each piece eagerly instead of as a CUDA graph (tests on CPU:
        the same static buffers, fixed shapes and skip logic, without a GPU)."""
        if mode not in MODES:
            raise ValueError(f"graph mode {mode!r}; known: {', '.join(MODES)}")
        if model.device.type != "cuda" and not emulate:
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.model, self.cache, self.mode, self.emulate = model, cache, mode, emulate
        dev = model.device
        self.kv_len = cache.max_tokens
        self.ids = torch.zeros((1, 1), dtype=torch.long, device=dev)
        self.pos = torch.zeros((1,), dtype=torch.long, device=dev)
        self.hidden = torch.zeros((1, 1, model.shape.hidden_size), dtype=model.dtype, device=dev)
        self.cos = torch.zeros((1, model.shape.dim_per_head), dtype=model.dtype, device=dev)
        self.sin = torch.zeros_like(self.cos)
        self.logits = torch.zeros((1, 1, model.shape.vocab_size), dtype=torch.float32, device=dev)
        self.graphs: dict[str, torch.cuda.CUDAGraph | _Eager] = {}
        self.pool = None if emulate else torch.cuda.graph_pool_handle()
        self.capture_stream = None if emulate else torch.cuda.Stream(device=dev)
        self.captured = False

    # -- pieces, written to static buffers --------------------------------------------------------
    def _embed(self) -> None:
        self.hidden.copy_(self.model.embed(self.ids))
        cos, sin = self.model.rope(self.pos)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def _run_layer(self, i: int) -> torch.Tensor:
        return self.model.run_layer(
            i,
            self.hidden,
            positions=self.pos,
            rope=(self.cos, self.sin),
            cache=self.cache,
            kv_len=self.kv_len,
        )

    def _layer(self, i: int) -> None:
        self.hidden.copy_(self._run_layer(i))

    def _head(self) -> None:
        self.logits.copy_(self.model.head(self.hidden))

    def _whole(self) -> None:
        self._embed()
        for i in range(self.model.shape.num_layers):
            self._guarded_layer(i)
        self._head()

    def _guarded_layer(self, i: int) -> None:
        """A layer in the one-graph mode, where closed layers run too: their weights may be
        half-copied by the loader's side stream, and `lerp(h, inf, 0)` is NaN, so a closed
        layer's output is discarded by a select on its gate, not multiplied away."""
        self.hidden.copy_(torch.where(self.model.gates[i] != 0, self._run_layer(i), self.hidden))

    # -- capture / replay -----------------------------------------------------------------------------
    def _capture(self, key: str, fn) -> None:
        if self.emulate:
            self.graphs[key] = _Eager(fn)
            return
        # keep_graph: the captured cudaGraph_t stays readable (validate counts its nodes);
        # it must then be instantiated before the first replay, here rather than mid-serving.
        try:
            g = torch.cuda.CUDAGraph(keep_graph=True)
        except TypeError:  # torch before keep_graph: no node counts, same replay
            g = torch.cuda.CUDAGraph()
        # thread_local: another thread's allocations (a loader's pinned buffers, another
        # engine's prefill) do not invalidate this capture
        with torch.cuda.graph(g, pool=self.pool, stream=self.capture_stream, capture_error_mode="thread_local"):
            fn()
        if hasattr(g, "instantiate"):
            g.instantiate()
        self.graphs[key] = g

    @torch.inference_mode()
    def capture(self, warmup: int = 2) -> None:
        """Warm up every piece eagerly on a side stream (cuBLAS handles, lazy kernel loading,
        allocator), then capture. Absent layers hold zeros (or `cuda_vmm`'s zero placeholder),
        so running them in the warm-up is harmless; their K/V slots are refilled later.
        """
        # torch allows one capture at a time per process, entering one synchronises the whole
        # device and empties the allocator's cache, and another thread's device-wide call would
        # invalidate it: the whole window is held through `device_guard`, the one owner of such
        # calls. The emulation takes the same window, so CPU tests see the same ordering.
        with device_guard.capture_window(self.model.device):
            if self.emulate:
                self._capture_all()
            else:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(warmup):
                        self._whole()
                torch.cuda.current_stream().wait_stream(stream)
                self._capture_all()
                device_guard.synchronize(self.model.device)  # re-entrant: this thread holds the window
        self.captured = True

    def _capture_all(self) -> None:
        if self.mode == "whole":
            self._capture("whole", self._whole)
        else:
            self._capture("embed", self._embed)
            for i in range(self.model.shape.num_layers):
                self._capture(f"layer{i}", lambda i=i: self._layer(i))
            self._capture("head", self._head)

    @torch.inference_mode()
    def step(self, token: int, position: int) -> torch.Tensor:
        if not self.captured:
            raise RuntimeError("capture() first")
        if position >= self.kv_len:
            raise ValueError(f"position {position} beyond the cache's {self.kv_len} slots")
        self.ids.fill_(int(token))
        self.pos.fill_(int(position))
        if self.mode == "whole":
            self.graphs["whole"].replay()
        else:
            self.graphs["embed"].replay()
            for i, active in enumerate(self.model.active):
                if active:  # absent layers: no launch, no compute, weights never touched
                    self.graphs[f"layer{i}"].replay()
            self.graphs["head"].replay()
        return self.logits


class _Eager:
    """Stands in for a captured graph: `replay()` runs the piece eagerly."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def replay(self) -> None:
        self.fn()
