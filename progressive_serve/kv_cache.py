"""A static KV cache: allocated once, written by position.

Writing with `index_copy_` at a positions *tensor* (not a Python slice) is what lets one
captured decode step serve every position: the graph reads the position from device memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from progressive_serve.config import LlamaShape


@dataclass
class KVCache:
    """K and V for every layer: `keys[l]` has shape (batch, kv_heads, max_tokens, head_dim)."""

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def allocate(
        cls, shape: LlamaShape, *, batch: int, max_tokens: int, device=None, dtype=torch.float32
    ) -> KVCache:
        size = (shape.num_layers, batch, shape.num_kv_heads, max_tokens, shape.dim_per_head)
        return cls(
            keys=torch.zeros(size, device=device, dtype=dtype),
            values=torch.zeros(size, device=device, dtype=dtype),
        )

    @property
    def max_tokens(self) -> int:
        return self.keys.shape[3]

    @property
    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()

    def write(
        self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, kv_heads, tokens, head_dim) at `positions`; return the first kv_len slots."""
        if kv_len > self.max_tokens:
            raise ValueError(f"kv_len {kv_len} exceeds the cache's {self.max_tokens} tokens")
        kc, vc = self.keys[layer], self.values[layer]
        kc.index_copy_(2, positions, k)
        vc.index_copy_(2, positions, v)
        return kc[:, :, :kv_len], vc[:, :, :kv_len]


@dataclass
class SlotBatch:
    """One decode step of several sequences at once, each with its own cache and position.

    Continuous batching (`progressive_serve.batching`): the linear layers run over the whole
    batch, attention runs per sequence over that sequence's own cache, exactly as a batch-1
    step would, so a sequence's tokens do not depend on who else is in the batch.
    """

    caches: list[KVCache]
    positions: list[int]


def slot_views(cache: KVCache) -> list[KVCache]:
    """Per-sequence caches as views into one batch allocation (no copy: slot b is row b)."""
    return [KVCache(cache.keys[:, b : b + 1], cache.values[:, b : b + 1]) for b in range(cache.keys.shape[1])]
