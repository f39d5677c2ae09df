"""Random-weight checkpoints of real LLaMA shapes, in Hugging Face layout.

Load-time measurements need checkpoints of real sizes (LLaMA-2-7B: 13.5 GB in fp16) that
no registry may ship here; weights only need the right shapes and finite, well-scaled
values. Files are written one decoder layer per shard, streamed, so a 7B checkpoint never
needs more than one layer in memory, and a layer is one contiguous read for the loader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from progressive_serve.config import LlamaShape, shape_named

_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _random(shape: tuple[int, ...], *, gen: torch.Generator, dtype: torch.dtype, norm: bool) -> torch.Tensor:
    if norm:  # RMSNorm scales near 1, as trained models have
        return (1.0 + 0.1 * torch.randn(shape, generator=gen)).to(dtype)
    return (torch.randn(shape, generator=gen) * shape[-1] ** -0.5).to(dtype)


class _Tiled:
    """Normal values for big checkpoints at memory speed: one pool of N(0, 1) draws, and each
    tensor a copy of the pool from a random offset (wrapping), scaled as `_random` scales.

    Drawing 6.7 billion normals took about 3 s per 7B layer on a 2-core VM (100 s in all).
    Here the pool is drawn once and kept ready-scaled in the target dtype for each scale in
    use (a model has three or four: 1/sqrt(fan-in) per input width, the embedding's 1, the
    norms' 1 + 0.1 N), so a tensor is one memory copy. Load timings only need the right sizes
    and finite, well-scaled values; random weights have no quality to lose either way.
    """

    POOL = 1 << 24  # 16 Mi values: drawn and scaled in well under a second

    def __init__(self, gen: torch.Generator) -> None:
        self.gen = gen
        self.pool = torch.randn(self.POOL, generator=gen)
        self._ready: dict[tuple[torch.dtype, str, float], torch.Tensor] = {}

    def _scaled(self, dtype: torch.dtype, norm: bool, scale: float) -> torch.Tensor:
        key = (dtype, "norm" if norm else "linear", scale)
        if key not in self._ready:
            self._ready[key] = (1.0 + 0.1 * self.pool if norm else self.pool * scale).to(dtype)
        return self._ready[key]

    def __call__(
        self, shape: tuple[int, ...], *, dtype: torch.dtype, norm: bool, scale: float | None = None
    ) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        pool = self._scaled(dtype, norm, 1.0 if norm else (shape[-1] ** -0.5 if scale is None else scale))
        start = int(torch.randint(0, self.POOL, (1,), generator=self.gen))
        out = torch.empty(n, dtype=dtype)
        done = 0
        while done < n:  # contiguous runs of the pool, wrapping at its end
            k = min(n - done, self.POOL - start)
            out[done : done + k].copy_(pool[start : start + k])
            done += k
            start = 0
        return out.view(shape)


_ST_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write one safetensors file straight from the tensors' memory: an 8-byte header length,
    the JSON header (padded to 8 bytes), then each tensor's bytes in header order.
    `safetensors.torch.save_file` copies every tensor to bytes first, which made writing a
    7B checkpoint as slow as drawing it."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(t.contiguous().view(-1).view(torch.uint8).numpy().data)


def write_random_checkpoint(
    out_dir: str | Path,
    shape: str | LlamaShape = "tiny",
    seed: int = 0,
    dtype: str = "float16",
    *,
    tiled: bool = False,
) -> Path:
    """Write `config.json`, shards and `model.safetensors.index.json` for random weights.

    Shard 1 holds the embedding, shards 2..L+1 one decoder layer each, the last the final
    norm and (untied) head. Linear weights are N(0, 1/fan_in); the embedding is N(0, 1).
    `tiled=True` draws the values from one shared pool (`_Tiled`): the same distribution per
    value at disk speed, for the 7B checkpoint a GPU run must build within its time budget.
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
        save_safetensors(out / fname, tensors, {"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()

    tile = _Tiled(gen) if tiled else None

    def draw(shp: tuple[int, ...], norm: bool) -> torch.Tensor:
        if tile is not None:
            return tile(shp, dtype=tdtype, norm=norm)
        return _random(shp, gen=gen, dtype=tdtype, norm=norm)

    if tile is not None:
        emb = tile((s.vocab_size, s.hidden_size), dtype=tdtype, norm=False, scale=1.0)
    else:
        emb = torch.randn((s.vocab_size, s.hidden_size), generator=gen).to(tdtype)
    shard(1, {"model.embed_tokens.weight": emb})
    del emb
    for i in range(s.num_layers):
        tensors = {
            f"model.layers.{i}.{suffix}": draw(shp, suffix.endswith("layernorm.weight"))
            for suffix, shp in s.layer_tensor_shapes().items()
        }
        shard(i + 2, tensors)
        del tensors
    last = {"model.norm.weight": draw((s.hidden_size,), True)}
    if not s.tie_word_embeddings:
        last["lm_head.weight"] = draw((s.vocab_size, s.hidden_size), False)
    shard(n_shards, last)
    (out / "config.json").write_text(json.dumps(s.to_hf_config(dtype), indent=2) + "\n")
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out
