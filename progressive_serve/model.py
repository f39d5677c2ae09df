"""The alpha-gated LLaMA causal LM: embedding -> gated decoder layers -> norm -> head.

Every decoder layer is always part of the forward pass and reads its gate from one device
tensor (`gates`), so a captured graph never changes shape across loading stages. A host
mirror of which gates are non-zero lets eager (and per-layer graph) execution skip inactive
layers entirely: no compute for a layer whose weights are not there.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from progressive_serve.config import LlamaShape
from progressive_serve.kv_cache import KVCache, SlotBatch
from progressive_serve.layers import LlamaDecoderLayer, RMSNorm, RotaryEmbedding, _Linear, _weight

_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The decoder layer a Hugging Face parameter name belongs to, or None (embedding, norm, head)."""
    m = _LAYER_NAME.match(name)
    return int(m.group(1)) if m else None


class LlamaBackbone(nn.Module):
    def __init__(self, *, shape: LlamaShape, device=None, dtype=torch.float32, layer_device=None) -> None:
        super().__init__()
        layer_device = device if layer_device is None else layer_device
        self.embed_tokens = nn.Module()
        self.embed_tokens.weight = _weight(shape.vocab_size, shape.hidden_size, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(shape=shape, layer_idx=i, device=layer_device, dtype=dtype)
            for i in range(shape.num_layers)
        )
        self.norm = RMSNorm(size=shape.hidden_size, eps=shape.rms_norm_eps, device=device, dtype=dtype)
        self.rotary = RotaryEmbedding(
            head_dim=shape.dim_per_head,
            theta=shape.rope_theta,
            max_positions=shape.max_position_embeddings,
            device=device,
        )


class AlphaGatedLlama(nn.Module):
    """A LLaMA-family causal LM whose decoder layers are gated by `gates[l]` in [0, 1].

    Built with every weight at zero and every gate at `initial_gate`; the staged
    loader copies weights in place and then opens gates. Parameter names equal Hugging Face's,
    so `named_parameters()` is the checkpoint's own index.
    """

    def __init__(
        self,
        *,
        shape: LlamaShape,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        initial_gate: float = 1.0,
        lazy_layers: bool = False,
    ) -> None:
        super().__init__()
        self.shape = shape
        self.dtype = dtype
        # lazy_layers: decoder-layer parameters start on the meta device (no memory) until a
        # `cuda_vmm.LayerArena` attaches them to reserved, unmapped virtual memory.
        self.model = LlamaBackbone(
            shape=shape, device=device, dtype=dtype, layer_device="meta" if lazy_layers else None
        )
        self.lm_head = _Linear(shape.hidden_size, shape.vocab_size, device=device, dtype=dtype)
        if shape.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer(
            "gates",
            torch.full((shape.num_layers,), float(initial_gate), device=device, dtype=dtype),
            persistent=False,
        )
        self.active: list[bool] = [initial_gate != 0.0] * shape.num_layers
        self.gate_version = 0
        self.skip_inactive = False

    @property
    def device(self) -> torch.device:
        return self.gates.device

    # -- gates -------------------------------------------------------------------------------
    def set_gate(self, layer: int, value: float) -> None:
        """Set one layer's alpha in place (the tensor's storage never moves)."""
        if not 0 <= layer < self.shape.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.shape.num_layers - 1}")
        self.gates[layer].fill_(float(value))
        self.active[layer] = float(value) != 0.0
        self.gate_version += 1

    def set_gates(self, values: list[float]) -> None:
        if len(values) != self.shape.num_layers:
            raise ValueError(f"{len(values)} gates for {self.shape.num_layers} layers")
        self.gates.copy_(torch.tensor(values, dtype=self.gates.dtype))
        self.active = [float(v) != 0.0 for v in values]
        self.gate_version += 1

    # -- parameters by loading unit ------------------------------------------------------------
    def parameter_groups(self) -> dict[int | None, dict[str, nn.Parameter]]:
        """Parameters keyed by decoder layer; key None holds embedding, final norm and head."""
        groups: dict[int | None, dict[str, nn.Parameter]] = {None: {}}
        groups.update({i: {} for i in range(self.shape.num_layers)})
        for name, p in self.named_parameters():
            groups[layer_of(name)][name] = p
        return groups

    # -- forward pieces (a per-layer graph runner calls these one by one) -----------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.model.embed_tokens.weight)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.rotary(positions, self.dtype)

    def run_layer(
        self,
        i: int,
        h: torch.Tensor,
        *,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache,
        kv_len: int,
    ) -> torch.Tensor:
        return self.model.layers[i](
            h, gate=self.gates[i], positions=positions, rope=rope, cache=cache, kv_len=kv_len
        )

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(h)).float()

    def decode_rows(self, tokens: list[int], positions: list[int], caches: list[KVCache]) -> torch.Tensor:
        """One decode step for several sequences (continuous batching): token i at position
        `positions[i]` with cache `caches[i]`. Linear layers see the whole batch; attention
        is per sequence (`SlotBatch`). Returns float32 logits (batch, vocab)."""
        ids = torch.tensor([[t] for t in tokens], dtype=torch.long, device=self.device)
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)
        batch = SlotBatch(caches, list(positions))
        h = self.embed(ids)
        rope = self.rope(pos)
        for i in range(self.shape.num_layers):
            if self.skip_inactive and not self.active[i]:
                continue
            h = self.run_layer(i, h, positions=pos, rope=rope, cache=batch, kv_len=0)  # type: ignore[arg-type]
        return self.head(h)[:, -1]

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor,
        cache: KVCache,
        kv_len: int | None = None,
        last_only: bool = False,
        skip_inactive: bool | None = None,
    ) -> torch.Tensor:
        """Logits (float32) for `input_ids` (batch, tokens) at `positions` (tokens,).

        `kv_len` is how many cache slots attention reads (default: up to the last position);
        a fixed `kv_len` gives a fixed-shape step for graph capture. With `skip_inactive`
        layers whose gate is 0 are not computed and write no K/V (the engine re-fills the
        cache when a stage opens new layers).
        """
        if kv_len is None:
            kv_len = int(positions[-1]) + 1
        skip = self.skip_inactive if skip_inactive is None else skip_inactive
        h = self.embed(input_ids)
        rope = self.rope(positions)
        for i in range(self.shape.num_layers):
            if skip and not self.active[i]:
                continue
            h = self.run_layer(i, h, positions=positions, rope=rope, cache=cache, kv_len=kv_len)
        if last_only:
            h = h[:, -1:]
        return self.head(h)
