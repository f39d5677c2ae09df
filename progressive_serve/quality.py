"""Per-stage quality of a staging plan, measured on a real model: perplexity and agreement.

For each stage the model runs with exactly the gates the engine would have at that stage
(absent layers are identities). Perplexity is over the next token at every position of a
text; token agreement is the share of positions whose greedy (argmax) next token equals
the full model's, teacher-forced on the same text. `quality = perplexity_full / perplexity`
is the number the simulator's profile carries.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from progressive_serve.config import LlamaShape
from progressive_serve.kv_cache import KVCache
from progressive_serve.loader import StagedLoader
from progressive_serve.model import AlphaGatedLlama

if TYPE_CHECKING:
    from contracts.plan import StagePlan


def load_full_model(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> AlphaGatedLlama:
    """Every layer bound, every gate 1 (CPU)."""
    from contracts.plan import full_plan

    shape = LlamaShape.from_dir(model_dir)
    model = AlphaGatedLlama(shape=shape, dtype=dtype, initial_gate=0.0)
    StagedLoader(model_dir, model, full_plan(shape.num_layers)).run()
    return model


def token_ids(model_dir: str | Path, text: str | list[int], max_tokens: int) -> list[int]:
    """Token ids of `text` with the folder's tokenizer (or `text` itself if already ids)."""
    if isinstance(text, list):
        return text[:max_tokens]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return tok(text, add_special_tokens=False)["input_ids"][:max_tokens]


@torch.inference_mode()
def _logits(model: AlphaGatedLlama, ids: list[int]) -> torch.Tensor:
    cache = KVCache.allocate(model.shape, batch=1, max_tokens=len(ids), dtype=model.dtype)
    x = torch.tensor([ids], dtype=torch.long)
    return model(x, positions=torch.arange(len(ids)), cache=cache, skip_inactive=True)[0]


def _perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    target = torch.tensor(ids[1:], dtype=torch.long)
    return math.exp(float(F.cross_entropy(logits[:-1].float(), target)))


def measure_stage_quality(
    model_dir: str | Path,
    plans: list[StagePlan],
    text: str | list[int],
    max_tokens: int = 1024,
    model: AlphaGatedLlama | None = None,
) -> list[dict]:
    """One row per (plan, stage): perplexity, the full model's, agreement and quality."""
    ids = token_ids(model_dir, text, max_tokens)
    if len(ids) < 2:
        raise ValueError("text must have at least 2 tokens")
    model = model or load_full_model(model_dir)
    n = model.shape.num_layers
    saved = model.gates.tolist()
    try:
        model.set_gates([1.0] * n)
        full = _logits(model, ids)
        ppl_full = _perplexity(full, ids)
        full_top = full.argmax(-1)
        rows = []
        for plan in plans:
            if plan.num_layers != n:
                raise ValueError(f"plan {plan.name!r} has {plan.num_layers} layers, the model {n}")
            for j in range(plan.num_stages):
                model.set_gates(plan.gates_after(j))
                logits = _logits(model, ids)
                ppl = _perplexity(logits, ids)
                rows.append(
                    {
                        "plan": plan.name,
                        "stage": j,
                        "num_layers": len(plan.layers_after(j)),
                        "layers": list(plan.layers_after(j)),
                        "perplexity": ppl,
                        "perplexity_full": ppl_full,
                        "token_agreement": float((logits.argmax(-1) == full_top).float().mean()),
                        "quality": ppl_full / ppl,
                        "tokens": len(ids),
                    }
                )
        return rows
    finally:
        model.set_gates(saved)


def layer_importance(
    model_dir: str | Path,
    text: str | list[int],
    max_tokens: int = 1024,
    model: AlphaGatedLlama | None = None,
    layers: list[int] | None = None,
) -> list[float]:
    """Perplexity increase with each single layer gated off (higher = more harmful to drop).

    `layers` limits the measurement to those layers (the others get NaN): a quick check
    needs only a few of the n + 1 forward passes.
    """
    ids = token_ids(model_dir, text, max_tokens)
    model = model or load_full_model(model_dir)
    n = model.shape.num_layers
    saved = model.gates.tolist()
    try:
        model.set_gates([1.0] * n)
        ppl_full = _perplexity(_logits(model, ids), ids)
        out = [math.nan] * n
        for layer in range(n) if layers is None else layers:
            model.set_gates([0.0 if i == layer else 1.0 for i in range(n)])
            out[layer] = _perplexity(_logits(model, ids), ids) - ppl_full
        return out
    finally:
        model.set_gates(saved)


def greedy_drop_scores(
    model_dir: str | Path,
    text: str | list[int],
    drops: int,
    max_tokens: int = 256,
    model: AlphaGatedLlama | None = None,
) -> list[float]:
    """Importance scores from greedy removal: drop, one at a time, the layer that hurts least now.

    Single-layer importance ignores that layers compensate for each other; removing them one
    by one and re-measuring each time does not. Costs about `drops * n` forward passes. The
    scores fit `policies.plan.importance_order`: the k-th layer removed scores k (least
    important first), layers never removed score `drops` plus their own ppl increase.
    """
    ids = token_ids(model_dir, text, max_tokens)
    model = model or load_full_model(model_dir)
    n = model.shape.num_layers
    saved = model.gates.tolist()
    removed: list[int] = []
    last: dict[int, float] = {}
    try:
        for _ in range(min(drops, n - 1)):
            for layer in range(n):
                if layer in removed:
                    continue
                model.set_gates([0.0 if i in removed or i == layer else 1.0 for i in range(n)])
                last[layer] = _perplexity(_logits(model, ids), ids)
            removed.append(min((v, i) for i, v in last.items() if i not in removed)[1])
        model.set_gates([1.0] * n)
        ppl_full = _perplexity(_logits(model, ids), ids)
    finally:
        model.set_gates(saved)
    scores = [float(drops) + max(last.get(i, ppl_full) - ppl_full, 0.0) for i in range(n)]
    for k, layer in enumerate(removed):
        scores[layer] = float(k)
    return scores
