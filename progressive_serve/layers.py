"""LLaMA building blocks, bottom-up: norm, rotary embedding, attention, MLP, gated decoder layer.

Parameters are created with `torch.zeros` on the target device at construction and never
re-allocated: the staged loader copies weights *into* them. Zero weights make an absent
layer's contribution exactly zero (no NaN from uninitialised memory), so a gate of 0 is an
exact identity even when the layer is still computed. Module and parameter names follow
Hugging Face's `LlamaForCausalLM`, so checkpoint names map onto them without a table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from progressive_serve.config import LlamaShape
from progressive_serve.kv_cache import KVCache, SlotBatch


def _weight(*shape: int, device: torch.device | str | None, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, device=device, dtype=dtype), requires_grad=False)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 as the reference does."""

    def __init__(self, *, size: int, eps: float, device=None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = _weight(size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Plain RoPE; cos/sin tables for every position are precomputed so a step only indexes them."""

    def __init__(self, *, head_dim: int, theta: float, max_positions: int, device=None) -> None:
        super().__init__()
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim)
        )
        t = torch.arange(max_positions, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions].to(dtype), self.sin[positions].to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, tokens, head_dim); cos/sin: (tokens, head_dim)."""
    return x * cos + _rotate_half(x) * sin


class LlamaAttention(nn.Module):
    """Grouped-query attention that writes its K/V into a static cache slot by position."""

    def __init__(self, *, shape: LlamaShape, layer_idx: int, device=None, dtype=torch.float32) -> None:
        super().__init__()
        d = shape.dim_per_head
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = shape.num_heads, shape.num_kv_heads, d
        self.q_proj = _Linear(shape.hidden_size, shape.num_heads * d, device=device, dtype=dtype)
        self.k_proj = _Linear(shape.hidden_size, shape.num_kv_heads * d, device=device, dtype=dtype)
        self.v_proj = _Linear(shape.hidden_size, shape.num_kv_heads * d, device=device, dtype=dtype)
        self.o_proj = _Linear(shape.num_heads * d, shape.hidden_size, device=device, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | SlotBatch,
        kv_len: int,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        if isinstance(cache, SlotBatch):  # one token per sequence, each at its own position
            cos, sin = cos.view(b, 1, 1, -1), sin.view(b, 1, 1, -1)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            out = torch.cat([self._attend_one(q, k, v, cache, i, positions) for i in range(b)])
            return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        keys, values = cache.write(self.layer_idx, positions, k, v, kv_len)
        # A key is visible to a query at or after its position; masking by position (not by a
        # Python length) keeps the same kernel valid for a captured, fixed-shape decode step.
        mask = torch.arange(kv_len, device=x.device)[None, :] <= positions[:, None]
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, enable_gqa=self.num_kv_heads != self.num_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def _attend_one(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        batch: SlotBatch,
        i: int,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Sequence i of a slot batch: its K/V into its own cache, attention over its own slots,
        the same call (shapes, mask) as a batch-1 decode step at that position."""
        pos = positions[i : i + 1]
        kv_len = batch.positions[i] + 1
        keys, values = batch.caches[i].write(self.layer_idx, pos, k[i : i + 1], v[i : i + 1], kv_len)
        mask = torch.arange(kv_len, device=q.device)[None, :] <= pos[:, None]
        return F.scaled_dot_product_attention(
            q[i : i + 1], keys, values, attn_mask=mask, enable_gqa=self.num_kv_heads != self.num_heads
        )


class _Linear(nn.Module):
    """A bias-free linear layer whose weight starts at zero (no random init to pay for)."""

    def __init__(self, in_features: int, out_features: int, *, device=None, dtype=torch.float32) -> None:
        super().__init__()
        self.weight = _weight(out_features, in_features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, *, shape: LlamaShape, device=None, dtype=torch.float32) -> None:
        super().__init__()
        self.gate_proj = _Linear(shape.hidden_size, shape.intermediate_size, device=device, dtype=dtype)
        self.up_proj = _Linear(shape.hidden_size, shape.intermediate_size, device=device, dtype=dtype)
        self.down_proj = _Linear(shape.intermediate_size, shape.hidden_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class AlphaGatedLayer(nn.Module):
    """A residual block whose contribution is scaled by a gate read from a device tensor.

    `out = lerp(h, block(h), alpha)`, i.e. `h + alpha * f(h)`. `torch.lerp` returns exactly
    `block(h)` at alpha = 1 and exactly `h` at alpha = 0, so a fully loaded model is
    bit-identical to the ungated one and an absent layer is a true identity. The gate is a
    0-d view of the model's gate tensor, read on every call, so a captured graph follows
    gate changes without re-capture. Subclasses implement `block`.
    """

    def block(self, h: torch.Tensor, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h: torch.Tensor, *, gate: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.lerp(h, self.block(h, **kwargs), gate)


class LlamaDecoderLayer(AlphaGatedLayer):
    """Pre-norm attention then pre-norm MLP, each added to the residual stream."""

    def __init__(self, *, shape: LlamaShape, layer_idx: int, device=None, dtype=torch.float32) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(
            size=shape.hidden_size, eps=shape.rms_norm_eps, device=device, dtype=dtype
        )
        self.self_attn = LlamaAttention(shape=shape, layer_idx=layer_idx, device=device, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(
            size=shape.hidden_size, eps=shape.rms_norm_eps, device=device, dtype=dtype
        )
        self.mlp = LlamaMLP(shape=shape, device=device, dtype=dtype)

    def block(self, h: torch.Tensor, **kwargs) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), **kwargs)
        return h + self.mlp(self.post_attention_layernorm(h))
