"""progressive_serve: an alpha-gated LLaMA engine that serves while its weights are still loading.

Every decoder layer is always in the execution graph and scales its contribution to the
residual stream by a gate, `h + alpha_l * f_l(h)`; a staged loader binds weights in place
and opens gates stage by stage. `vllm_plugin` does the same inside vLLM. Needs torch;
nothing here imports vLLM except `vllm_model`, which only vLLM itself imports.
"""

from progressive_serve.config import SHAPES, LlamaShape
from progressive_serve.engine import GenerationResult, ProgressiveEngine
from progressive_serve.layers import AlphaGatedLayer, LlamaDecoderLayer
from progressive_serve.loader import LayerLoadRecord, StagedLoader
from progressive_serve.model import AlphaGatedLlama

__all__ = [
    "SHAPES",
    "AlphaGatedLayer",
    "AlphaGatedLlama",
    "GenerationResult",
    "LayerLoadRecord",
    "LlamaDecoderLayer",
    "LlamaShape",
    "ProgressiveEngine",
    "StagedLoader",
]
