"""Per-stage quality and per-layer importance, measured on a real model's real text.

docs/design.md ("Measured facts") records that which layers a stage holds changes perplexity by orders of
magnitude, so quality is never "fraction of layers": it is `perplexity_full /
perplexity_stage` on plain English prose, with the stage's exact gates. The importance
of each layer (perplexity increase with that one layer gated off) orders the
progressive plan, exactly as the simulator's progressive policy orders it from the
profile's `layer_importance`.

Quality is a property of the model and the plan, not of the hardware, and it is
measured on the CPU. A GPU machine that cannot install the small model reuses a
measurement saved as JSON (`--quality-from`, or the one shipped in `validate/data/`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from contracts.plan import StagePlan, progressive_plan
from validate.config import PROGRESSIVE_FRACTIONS
from validate.errors import ValidateError
from validate.results import StageQuality

SHIPPED = Path(__file__).resolve().parent / "data" / "smollm2-135m-quality.json"


@dataclass
class QualityResult:
    """Stages of the progressive plan of the measured model, its layer importance, and where from."""

    model: str
    num_layers: int
    stages: list[StageQuality]
    importance: list[float]
    source: str
    date: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QualityResult:
        d = dict(d)
        d["stages"] = [StageQuality(**s) for s in d["stages"]]
        return cls(**d)

    def stages_for(self, target_layers: int) -> list[StageQuality]:
        """The stages for a model of `target_layers`: as measured, or as a stand-in (stage j for stage j)."""
        if target_layers == self.num_layers:
            return list(self.stages)
        target = progressive_plan(target_layers, PROGRESSIVE_FRACTIONS)
        if target.num_stages != len(self.stages):
            raise ValidateError(
                f"the quality measurement has {len(self.stages)} stages, the {target_layers}-layer plan "
                f"{target.num_stages}."
            )
        return [
            replace(
                s,
                num_layers=len(target.layers_after(j)),
                source=f"stand-in: {s.source} (stage {j + 1} of the plan)",
            )
            for j, s in enumerate(self.stages)
        ]


def prose_text() -> tuple[str, str]:
    """(text, where it came from): the Python licence, plain English prose on every machine."""
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys.base_prefix) / "lib" / v / "LICENSE.txt"]
    candidates += [Path("/usr/share/common-licenses/GPL-3"), Path("/usr/share/common-licenses/Apache-2.0")]
    for p in candidates:
        if p.exists():
            return p.read_text(errors="replace"), str(p)
    raise ValidateError("no plain-text licence file found to measure perplexity on.")


def stage_names(plan: StagePlan) -> list[str]:
    """stage1, stage2, ..., and 'full' for the stage that completes the model."""
    return [f"stage{j + 1}" if j < plan.num_stages - 1 else "full" for j in range(plan.num_stages)]


def measure_quality(model_dir: Path, max_tokens: int, date: str = "") -> QualityResult:
    """Measure layer importance, then the quality of each stage of the importance-ordered plan."""
    from progressive_serve.quality import layer_importance, load_full_model, measure_stage_quality

    text, text_source = prose_text()
    model = load_full_model(model_dir)
    n = model.shape.num_layers
    importance = [float(v) for v in layer_importance(model_dir, text, max_tokens, model=model)]
    plan = progressive_plan(n, PROGRESSIVE_FRACTIONS, importance)
    rows = measure_stage_quality(model_dir, [plan], text, max_tokens, model=model)
    names = stage_names(plan)
    stages = [
        StageQuality(
            name=names[j],
            num_layers=int(row["num_layers"]),
            quality=min(1.0, float(row["quality"])),
            perplexity=float(row["perplexity"]),
            token_agreement=float(row["token_agreement"]),
            source=f"{model_dir.name}, {row['num_layers']}/{n} layers, {row['tokens']} tokens of {Path(text_source).name}",
        )
        for j, row in enumerate(rows)
    ]
    return QualityResult(model_dir.name, n, stages, importance, f"measured on {text_source}", date)


def save_quality(q: QualityResult, path: Path) -> Path:
    path.write_text(json.dumps(q.to_dict(), indent=2) + "\n")
    return path


def load_quality(path: Path) -> QualityResult:
    """A saved QualityResult (quality.json of an earlier run, or the shipped one)."""
    try:
        return QualityResult.from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, TypeError, KeyError) as e:
        raise ValidateError(f"cannot read a quality measurement from {path}: {e}.") from None
