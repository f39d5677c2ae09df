"""LLaMA-family shapes: the few numbers that decide every tensor's size.

One frozen dataclass read from (and written to) a Hugging Face `config.json`, so that the
engine, the random-checkpoint writer and the vLLM plugin agree on shapes without importing
`transformers`. Presets carry the real shapes the project measures: a tiny one for tests,
SmolLM2-135M (the real small model) and LLaMA-2-7B (the seed's model).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class LlamaShape:
    """The architecture hyper-parameters of a LLaMA-family decoder."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    head_dim: int | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}"
            )

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    def layer_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per decoder layer: Hugging Face name suffix -> shape (the layer's weights, in file order)."""
        h, i, d = self.hidden_size, self.intermediate_size, self.dim_per_head
        return {
            "input_layernorm.weight": (h,),
            "self_attn.q_proj.weight": (self.num_heads * d, h),
            "self_attn.k_proj.weight": (self.num_kv_heads * d, h),
            "self_attn.v_proj.weight": (self.num_kv_heads * d, h),
            "self_attn.o_proj.weight": (h, self.num_heads * d),
            "post_attention_layernorm.weight": (h,),
            "mlp.gate_proj.weight": (i, h),
            "mlp.up_proj.weight": (i, h),
            "mlp.down_proj.weight": (h, i),
        }

    def layer_numel(self) -> int:
        total = 0
        for shape in self.layer_tensor_shapes().values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    def kv_numel_per_token(self) -> int:
        """Elements of K and V cached per token over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.dim_per_head

    @classmethod
    def from_hf_config(cls, cfg: dict) -> LlamaShape:
        """Read a Hugging Face LLaMA `config.json` dict (transformers 4.x or 5.x spelling)."""
        arch = cfg.get("model_type", "llama")
        if arch not in ("llama", "mistral", "qwen2"):
            raise ValueError(f"unsupported model_type {arch!r}: only LLaMA-family decoders are built")
        rope = cfg.get("rope_parameters") or {}
        scaling = cfg.get("rope_scaling") or {}
        rope_type = scaling.get("rope_type", scaling.get("type", rope.get("rope_type", "default")))
        if rope_type not in ("default", None):
            raise ValueError(f"rope type {rope_type!r} is not implemented (only plain RoPE)")
        heads = int(cfg["num_attention_heads"])
        return cls(
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            vocab_size=int(cfg["vocab_size"]),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            rope_theta=float(cfg.get("rope_theta", rope.get("rope_theta", 10000.0))),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim"),
        )

    @classmethod
    def from_dir(cls, ckpt_dir: str | Path) -> LlamaShape:
        return cls.from_hf_config(json.loads((Path(ckpt_dir) / "config.json").read_text()))

    def to_hf_config(self, torch_dtype: str = "float16") -> dict:
        """A `config.json` that `transformers` and vLLM load as `LlamaForCausalLM`."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.dim_per_head,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": torch_dtype,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }

    def to_dict(self) -> dict:
        return asdict(self)


SHAPES: dict[str, LlamaShape] = {
    # Small enough for a unit test in milliseconds, but every feature on: GQA, untied head.
    "tiny": LlamaShape(
        hidden_size=64,
        intermediate_size=176,
        num_layers=6,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=320,
        max_position_embeddings=512,
    ),
    "smollm2-135m": LlamaShape(
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        vocab_size=49152,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "llama2-7b": LlamaShape(
        hidden_size=4096,
        intermediate_size=11008,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    ),
}


def shape_named(name: str) -> LlamaShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; known: {', '.join(sorted(SHAPES))}") from None
