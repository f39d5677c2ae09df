"""Per-stage quality and per-layer importance, measured on a real model's real text.

FINDINGS.md measured that which layers a stage holds changes perplexity by orders of
magnitude, so quality is never "fraction of layers": it is `perplexity_full /
perplexity_stage` on plain English prose, with the stage's exact gates. The importance
of each layer (perplexity increase with that one layer gated off) orders the
progressive plan, exactly as the simulator's progressive policy orders it from the
profile's `layer_importance`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from policies.plan import StagePlan, progressive_plan
from validate.config import PROGRESSIVE_FRACTIONS
from validate.errors import ValidateError
from validate.results import StageQuality


def prose_text() -> tuple[str, str]:
    """(text, where it came from): the Python licence, plain English prose on every machine."""
    candidates = [
        Path(sys.base_prefix)
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "LICENSE.txt"
    ]
    candidates += [Path("/usr/share/common-licenses/GPL-3"), Path("/usr/share/common-licenses/Apache-2.0")]
    for p in candidates:
        if p.exists():
            return p.read_text(errors="replace"), str(p)
    raise ValidateError("no plain-text licence file found to measure perplexity on.")


def stage_names(plan: StagePlan) -> list[str]:
    """stage1, stage2, ..., and 'full' for the stage that completes the model."""
    return [f"stage{j + 1}" if j < plan.num_stages - 1 else "full" for j in range(plan.num_stages)]


def measure_quality(
    model_dir: Path, text: str, max_tokens: int, target_layers: int, stand_in: bool
) -> tuple[list[StageQuality], list[float], StagePlan]:
    """Stage quality of the progressive plan measured on `model_dir`.

    Returns (stages for a model of `target_layers` layers, the measured model's layer
    importance, the measured model's plan). With `stand_in` the measured model is not the
    profiled one (random weights have no quality): stage j of the measured plan stands
    for stage j of the profiled model's plan, and `source` says so.
    """
    from progressive_serve.quality import layer_importance, load_full_model, measure_stage_quality

    model = load_full_model(model_dir)
    n = model.shape.num_layers
    importance = [float(v) for v in layer_importance(model_dir, text, max_tokens, model=model)]
    plan = progressive_plan(n, PROGRESSIVE_FRACTIONS, importance)
    rows = measure_stage_quality(model_dir, [plan], text, max_tokens, model=model)
    target = progressive_plan(target_layers, PROGRESSIVE_FRACTIONS)
    names = stage_names(plan)
    stages = []
    for j, row in enumerate(rows):
        layers = len(target.layers_after(j)) if stand_in else int(row["num_layers"])
        src = f"{model_dir.name}, {row['num_layers']}/{n} layers, {row['tokens']} tokens"
        if stand_in:
            src = f"stand-in: {src} (stage {j + 1} of the same plan)"
        stages.append(
            StageQuality(
                name=names[j],
                num_layers=layers,
                quality=min(1.0, float(row["quality"])),
                perplexity=float(row["perplexity"]),
                token_agreement=float(row["token_agreement"]),
                source=src,
            )
        )
    return stages, importance, plan
