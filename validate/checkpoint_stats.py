"""Byte counts of a checkpoint, read from safetensors headers (no tensor is loaded).

The profile needs bytes per decoder layer, embedding and head, and KV bytes per token;
these are facts of the checkpoint on disk, so they are counted from it rather than
computed from a shape formula that might disagree with what the loader moves.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from validate.errors import ValidateError

LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


@dataclass(frozen=True)
class CheckpointStats:
    """What a safetensors checkpoint holds, in bytes."""

    files: tuple[Path, ...]
    num_layers: int
    layer_bytes: tuple[int, ...]
    embedding_bytes: int
    head_bytes: int
    other_bytes: int
    dtype_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(self.layer_bytes) + self.embedding_bytes + self.head_bytes + self.other_bytes

    @property
    def mean_layer_bytes(self) -> int:
        return round(sum(self.layer_bytes) / max(1, self.num_layers))


def read_header(path: Path) -> dict:
    """The JSON header of one safetensors file: {name: {dtype, shape, data_offsets}}."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValidateError(f"{path} is not a safetensors file (shorter than 8 bytes).")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValidateError(f"{path} is not a safetensors file (its header is not JSON).") from None
    header.pop("__metadata__", None)
    return header


def checkpoint_stats(ckpt_dir: str | Path) -> CheckpointStats:
    """Count a checkpoint folder's bytes per decoder layer, embedding, head and the rest."""
    files = tuple(sorted(Path(ckpt_dir).glob("*.safetensors")))
    if not files:
        raise ValidateError(
            f"no *.safetensors files in {ckpt_dir}; --model wants a Hugging Face-layout folder."
        )
    layers: dict[int, int] = {}
    embedding = head = other = 0
    dtype_bytes = 0
    for path in files:
        for name, meta in read_header(path).items():
            start, end = meta["data_offsets"]
            size = end - start
            m = LAYER_RE.search(name)
            if m:
                layers[int(m.group(1))] = layers.get(int(m.group(1)), 0) + size
                dtype_bytes = dtype_bytes or DTYPE_BYTES.get(meta["dtype"], 0)
            elif "embed_tokens" in name or name.endswith("wte.weight"):
                embedding += size
            elif "lm_head" in name or name.endswith("output.weight"):
                head += size
            else:
                other += size
    if not layers:
        raise ValidateError(f"{ckpt_dir} holds no decoder layers named '*.layers.N.*'.")
    n = max(layers) + 1
    return CheckpointStats(
        files=files,
        num_layers=n,
        layer_bytes=tuple(layers.get(i, 0) for i in range(n)),
        embedding_bytes=embedding,
        head_bytes=head,
        other_bytes=other,
        dtype_bytes=dtype_bytes or 2,
    )


def kv_bytes_per_token(config: dict, dtype_bytes: int) -> int:
    """Key and value bytes one token adds to the cache: 2 x layers x kv_heads x head_dim x dtype."""
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def read_config(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValidateError(
            f"{ckpt_dir} has no config.json; --model wants a Hugging Face-layout folder."
        ) from None
    except json.JSONDecodeError as e:
        raise ValidateError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}).") from None
