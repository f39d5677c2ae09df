"""Random-weight checkpoints of real LLaMA shapes, in Hugging Face layout.

Load-time measurements need checkpoints of real sizes (LLaMA-2-7B: 13.5 GB in fp16) that
no registry may ship here; weights only need the right shapes and finite, well-scaled
values. Files are written one decoder layer per shard, streamed, so a 7B checkpoint never
needs more than one layer in memory, and a layer is one contiguous read for the loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from progressive_serve.config import LlamaShape, shape_named

_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _random(shape: tuple[int, ...], *, gen: torch.Generator, dtype: torch.dtype, norm: bool) -> torch.Tensor:
    if norm:  # RMSNorm scales near 1, as trained models have
        return (1.0 + 0.1 * torch.randn(shape, generator=gen)).to(dtype)
    return (torch.randn(shape, generator=gen) * shape[-1] ** -0.5).to(dtype)


def write_random_checkpoint(
    out_dir: str | Path, shape: str | LlamaShape = "tiny", seed: int = 0, dtype: str = "float16"
) -> Path:
    """Write `config.json`, shards and `model.safetensors.index.json` for random weights.

    Shard 1 holds the embedding, shards 2..L+1 one decoder layer each, the last the final
    norm and (untied) head. Linear weights are N(0, 1/fan_in); the embedding is N(0, 1).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    s = shape_named(shape) if isinstance(shape, str) else shape
    tdtype = _DTYPES[dtype]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    n_shards = s.num_layers + 2
    weight_map: dict[str, str] = {}
    total = 0

    def shard(k: int, tensors: dict[str, torch.Tensor]) -> None:
        nonlocal total
        fname = f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()

    emb = torch.randn((s.vocab_size, s.hidden_size), generator=gen).to(tdtype)
    shard(1, {"model.embed_tokens.weight": emb})
    del emb
    for i in range(s.num_layers):
        tensors = {
            f"model.layers.{i}.{suffix}": _random(
                shp, gen=gen, dtype=tdtype, norm=suffix.endswith("layernorm.weight")
            )
            for suffix, shp in s.layer_tensor_shapes().items()
        }
        shard(i + 2, tensors)
        del tensors
    last = {"model.norm.weight": _random((s.hidden_size,), gen=gen, dtype=tdtype, norm=True)}
    if not s.tie_word_embeddings:
        last["lm_head.weight"] = _random((s.vocab_size, s.hidden_size), gen=gen, dtype=tdtype, norm=False)
    shard(n_shards, last)
    (out / "config.json").write_text(json.dumps(s.to_hf_config(dtype), indent=2) + "\n")
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out
