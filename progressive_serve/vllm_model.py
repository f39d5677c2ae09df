"""`ProgressiveLlamaForCausalLM`: vLLM's own LLaMA with a gate on every decoder layer.

Made by injecting a gated `layer_type` into vLLM's `LlamaForCausalLM` (no copy of its
model code). vLLM's decoder layer uses a fused residual: it takes and returns
`(hidden, residual)` whose sum is the residual stream. The gated layer returns
`(alpha * hidden', lerp(stream, residual', alpha))`: at alpha = 1 exactly vLLM's outputs,
at alpha = 0 exactly the stream it was given (an identity), with no branch, so compiled
and graph-captured code stays one shape. All gates live in one buffer, `gates`. Where vLLM
runs the model uncompiled (`enforce_eager=True`: no torch.compile, no CUDA graphs), a
closed layer is not computed at all: it returns `(0, stream)` at once, which is the same
pair (vLLM's next layer adds the two).

Binding (`bind_layers`) feeds a layer's tensors from the checkpoint through vLLM's own
`load_weights`, which copies into the existing (fused qkv / gate_up) parameters in place.
vLLM's CPU build repacks every linear weight into a oneDNN handle after loading and frees
the parameter, which would make a later in-place bind impossible; a model started for
staged loading (`progressive_gates` given) therefore keeps its decoder-layer weights as
plain parameters (`_cpu_skip_gemm_dispatch`) and re-packs only the head after binding it.
Imported only by vLLM when it builds the model (see `vllm_plugin`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from vllm.config import CompilationMode
from vllm.model_executor.layers.linear import LinearBase
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM
from vllm.model_executor.models.utils import PPMissingLayer

from progressive_serve.model import layer_of
from progressive_serve.safetensors_index import index_checkpoint, plan_reads, read_into


class GatedLlamaDecoderLayer(LlamaDecoderLayer):
    """vLLM's decoder layer, scaled by `alpha` (a view of the model's gate buffer)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("alpha", torch.ones(1), persistent=False)
        self.closed = False  # alpha == 0, mirrored on the host by the model's set_gate(s)
        self.skip_closed = False  # only where nothing is compiled or captured (eager)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None):
        # vLLM's norms add in place into `residual`, so the stream must be its own tensor.
        stream = hidden_states.clone() if residual is None else hidden_states + residual
        if self.closed and self.skip_closed:
            return torch.zeros_like(hidden_states), stream
        hidden, new_residual = super().forward(positions, hidden_states, residual)
        alpha = self.alpha.to(hidden.dtype)
        return hidden * alpha, torch.lerp(stream, new_residual, alpha)


class ProgressiveLlamaForCausalLM(LlamaForCausalLM):
    """LLaMA with per-layer gates; `hf_config.progressive_gates` sets their start values."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix, layer_type=GatedLlamaDecoderLayer)
        config = vllm_config.model_config.hf_config
        n = config.num_hidden_layers
        given = getattr(config, "progressive_gates", None)
        initial = given or [1.0] * n
        if len(initial) != n:
            raise ValueError(f"progressive_gates has {len(initial)} entries for {n} layers")
        self.register_buffer("gates", torch.tensor(initial, dtype=torch.float32), persistent=False)
        self.inplace = given is not None
        eager = vllm_config.compilation_config.mode == CompilationMode.NONE
        for i, layer in enumerate(self.model.layers):
            if isinstance(layer, PPMissingLayer):
                continue
            layer.alpha = self.gates[i : i + 1]
            layer.skip_closed = eager
            layer.closed = float(initial[i]) == 0.0
            if self.inplace:
                for module in layer.modules():
                    if isinstance(module, LinearBase):
                        module._cpu_skip_gemm_dispatch = True

    def set_gate(self, layer: int, value: float) -> None:
        self.gates[layer].fill_(float(value))
        self._mirror(layer, value)

    def set_gates(self, values: list[float]) -> None:
        self.gates.copy_(torch.tensor(values, dtype=self.gates.dtype))
        for i, v in enumerate(values):
            self._mirror(i, v)

    def _mirror(self, layer: int, value: float) -> None:
        module = self.model.layers[layer]
        if not isinstance(module, PPMissingLayer):
            module.closed = float(value) == 0.0

    def computed_layers(self) -> int:
        """Decoder layers a forward pass computes now (closed ones are skipped when eager)."""
        return sum(
            1 for m in self.model.layers
            if not isinstance(m, PPMissingLayer) and not (m.closed and m.skip_closed)
        )

    def gate_values(self) -> list[float]:
        return self.gates.tolist()

    def data_pointers(self) -> dict[str, int]:
        """Every parameter's storage address (binding must leave them unchanged)."""
        return {name: p.data_ptr() for name, p in self.named_parameters()}

    def bind_layers(
        self, ckpt_dir: str | Path, layers: Iterable[int | None], open_gates: bool = True
    ) -> set[str]:
        """Copy the given units from `ckpt_dir` into place (None = embedding/norm/head), then open gates."""
        wanted = set(layers)
        entries = [e for name, e in index_checkpoint(ckpt_dir).items() if layer_of(name) in wanted]
        buf = torch.empty(max((e.nbytes for e in entries), default=0), dtype=torch.uint8)

        def weights():
            for e in entries:
                (run,) = plan_reads([e])
                yield e.name, read_into(run, buf)[e.name]

        loaded = self.load_weights(weights())
        if None in wanted:
            self._repack_head()
        if open_gates:
            for layer in wanted - {None}:
                self.set_gate(layer, 1.0)
        return loaded

    def _repack_head(self) -> None:
        """vLLM's CPU build computes the head from a packed copy; rebuild it from the bound weight."""
        from vllm.platforms import current_platform

        if current_platform.is_cpu() and hasattr(self.lm_head, "cpu_linear"):
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            dispatch_cpu_unquantized_gemm(self.lm_head, remove_weight=False)
