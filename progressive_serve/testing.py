"""Independent references for tests and validation: `transformers`' LlamaForCausalLM on the same files.

Kept in the package (not a conftest) so the validator can prove the same equalities on
the GPU that the unit tests prove on the CPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from progressive_serve.config import LlamaShape
from progressive_serve.kv_cache import KVCache
from progressive_serve.model import AlphaGatedLlama


def cache_dir() -> Path:
    """Where slow-to-make artefacts (the dequantised SmolLM2) are kept between test runs."""
    d = os.environ.get("PROGRESSIVE_SERVE_CACHE") or os.path.join(
        tempfile.gettempdir(), f"progressive-serve-{os.getuid()}"
    )
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads, then restore. Tests use 1: on a busy 2-core machine two
    spinning OpenMP threads made a SmolLM2 forward pass 7x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def hf_reference(ckpt_dir: str | Path, drop_layer: int | None = None, dtype: torch.dtype = torch.float32):
    """`transformers`' model of the checkpoint, optionally with decoder layer `drop_layer` removed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM.from_pretrained(str(ckpt_dir), dtype=dtype).eval()
    if drop_layer is not None:
        layers = ref.model.layers
        kept = [m for i, m in enumerate(layers) if i != drop_layer]
        for new_idx, m in enumerate(kept):
            m.self_attn.layer_idx = new_idx
        ref.model.layers = torch.nn.ModuleList(kept)
        ref.config.num_hidden_layers = len(kept)
        if hasattr(ref.config, "layer_types") and ref.config.layer_types:
            ref.config.layer_types = ref.config.layer_types[: len(kept)]
    return ref


@torch.inference_mode()
def hf_logits(ref, ids: list[int]) -> torch.Tensor:
    return ref(torch.tensor([ids]), use_cache=False).logits[0].float()


@torch.inference_mode()
def hf_greedy(ref, prompt: list[int], n: int) -> list[int]:
    """Greedy continuation by full re-evaluation (no cache: the simplest correct reference)."""
    ids = list(prompt)
    out = []
    for _ in range(n):
        nxt = int(hf_logits(ref, ids)[-1].argmax())
        out.append(nxt)
        ids.append(nxt)
    return out


@torch.inference_mode()
def gated_logits(model: AlphaGatedLlama, ids: list[int], skip_inactive: bool = False) -> torch.Tensor:
    cache = KVCache.allocate(model.shape, batch=1, max_tokens=len(ids), dtype=model.dtype)
    x = torch.tensor([ids])
    return model(x, positions=torch.arange(len(ids)), cache=cache, skip_inactive=skip_inactive)[0]


def parameter_pointers(model: torch.nn.Module) -> dict[str, int]:
    return {name: p.data_ptr() for name, p in model.named_parameters()}


def random_prompt(shape: LlamaShape, n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, shape.vocab_size, (n,), generator=g).tolist()


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `cond` until it holds (a test watching an engine's background threads); fail after `timeout` s."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.002)
