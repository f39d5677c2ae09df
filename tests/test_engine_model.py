"""The gated model against transformers' LlamaForCausalLM on the same random checkpoint."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from policies.plan import full_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.config import SHAPES, LlamaShape  # noqa: E402
from progressive_serve.kv_cache import KVCache  # noqa: E402
from progressive_serve.loader import StagedLoader  # noqa: E402
from progressive_serve.model import AlphaGatedLlama  # noqa: E402
from progressive_serve.testing import gated_logits, hf_logits, hf_reference, random_prompt, torch_threads  # noqa: E402

TIED = dataclasses.replace(SHAPES["tiny"], tie_word_embeddings=True, num_layers=3, rope_theta=100000.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def _loaded(ckpt, dtype=torch.float32) -> AlphaGatedLlama:
    shape = LlamaShape.from_dir(ckpt)
    model = AlphaGatedLlama(shape=shape, dtype=dtype, initial_gate=0.0)
    StagedLoader(ckpt, model, full_plan(shape.num_layers)).run()
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=1, dtype="float32")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return _loaded(tiny)


def test_all_gates_open_matches_transformers(tiny, tiny_model):
    ids = random_prompt(tiny_model.shape, 24)
    ref = hf_logits(hf_reference(tiny), ids)
    ours = gated_logits(tiny_model, ids)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_gate_zero_equals_layer_removed(tiny, tiny_model, layer):
    ids = random_prompt(tiny_model.shape, 16, seed=layer)
    n = tiny_model.shape.num_layers
    tiny_model.set_gates([0.0 if i == layer else 1.0 for i in range(n)])
    try:
        computed = gated_logits(tiny_model, ids, skip_inactive=False)  # layer runs, gate removes it
        skipped = gated_logits(tiny_model, ids, skip_inactive=True)  # layer not run at all
    finally:
        tiny_model.set_gates([1.0] * n)
    ref = hf_logits(hf_reference(tiny, drop_layer=layer), ids)
    torch.testing.assert_close(computed, ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(computed, skipped)  # lerp at alpha = 0 is an exact identity


def test_tied_head_and_fp16_checkpoint_match_transformers(tmp_path):
    ckpt = write_random_checkpoint(tmp_path, TIED, seed=3, dtype="float16")
    ids = random_prompt(TIED, 12)
    model = _loaded(ckpt)  # fp16 file into fp32 parameters: the loader converts
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ref = hf_logits(hf_reference(ckpt, dtype=torch.float32), ids)
    torch.testing.assert_close(gated_logits(model, ids), ref, atol=5e-5, rtol=1e-4)


@torch.inference_mode()
def test_incremental_decode_equals_full_pass(tiny_model):
    ids = random_prompt(tiny_model.shape, 20, seed=7)
    full = gated_logits(tiny_model, ids)
    cache = KVCache.allocate(tiny_model.shape, batch=1, max_tokens=32)
    prefill = tiny_model(torch.tensor([ids[:12]]), positions=torch.arange(12), cache=cache)
    steps = [prefill[0]]
    for p in range(12, 20):
        steps.append(tiny_model(torch.tensor([[ids[p]]]), positions=torch.tensor([p]), cache=cache)[0])
    torch.testing.assert_close(torch.cat(steps), full, atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_fixed_shape_step_equals_eager(tiny_model):
    """The graph-shaped step (attend over every cache slot, mask by position) changes nothing."""
    ids = random_prompt(tiny_model.shape, 10, seed=9)
    cache = KVCache.allocate(tiny_model.shape, batch=1, max_tokens=64)
    tiny_model(torch.tensor([ids[:9]]), positions=torch.arange(9), cache=cache)
    eager = tiny_model(torch.tensor([[ids[9]]]), positions=torch.tensor([9]), cache=cache)
    fixed = tiny_model(torch.tensor([[ids[9]]]), positions=torch.tensor([9]), cache=cache, kv_len=64)
    torch.testing.assert_close(fixed, eager, atol=1e-6, rtol=1e-5)


def test_set_gate_keeps_one_tensor(tiny_model):
    ptr = tiny_model.gates.data_ptr()
    tiny_model.set_gate(2, 0.0)
    assert tiny_model.gates.data_ptr() == ptr and tiny_model.active[2] is False
    tiny_model.set_gate(2, 1.0)
    assert tiny_model.gates.tolist() == [1.0] * tiny_model.shape.num_layers
    with pytest.raises(IndexError):
        tiny_model.set_gate(99, 1.0)


def test_shape_round_trips_through_hf_config():
    for shape in SHAPES.values():
        assert LlamaShape.from_hf_config(shape.to_hf_config()) == dataclasses.replace(
            shape, head_dim=shape.dim_per_head
        )
    with pytest.raises(ValueError, match="rope type"):
        LlamaShape.from_hf_config({**SHAPES["tiny"].to_hf_config(), "rope_scaling": {"rope_type": "llama3"}})


def test_greedy_drop_scores_rank_removed_layers_last(tiny, tiny_model):
    from policies.plan import progressive_plan
    from progressive_serve.quality import greedy_drop_scores, layer_importance

    ids = random_prompt(tiny_model.shape, 24, seed=11)
    scores = greedy_drop_scores(tiny, ids, drops=2, model=tiny_model)
    removed = sorted(range(6), key=lambda i: scores[i])[:2]
    assert sorted(scores[i] for i in removed) == [0.0, 1.0] and all(
        s >= 2.0 for s in scores if s not in (0.0, 1.0)
    )
    single = layer_importance(tiny, ids, model=tiny_model)
    assert min(range(6), key=lambda i: single[i]) == scores.index(0.0)  # round 1 is single-layer importance
    plan = progressive_plan(6, fractions=(4 / 6, 1.0), importance=scores)
    assert set(plan.stages[1]) == set(removed)  # the greedily removed layers load last
    assert tiny_model.gates.tolist() == [1.0] * 6
