"""The staged loader: in-place binding, stage gates, records, file layout, errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from policies.plan import full_plan, pipelined_plan, progressive_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.config import LlamaShape  # noqa: E402
from progressive_serve.loader import StagedLoader  # noqa: E402
from progressive_serve.model import AlphaGatedLlama  # noqa: E402
from progressive_serve.safetensors_index import index_checkpoint, plan_reads, read_into  # noqa: E402
from progressive_serve.testing import parameter_pointers, torch_threads  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=2, dtype="float32")


def _model(ckpt) -> AlphaGatedLlama:
    return AlphaGatedLlama(shape=LlamaShape.from_dir(ckpt), initial_gate=0.0)


def test_binding_never_reallocates_and_opens_gates_per_stage(tiny):
    model = _model(tiny)
    plan = progressive_plan(6, fractions=(0.5, 0.84, 1.0))
    before = parameter_pointers(model)
    gates_ptr = model.gates.data_ptr()
    loader = StagedLoader(tiny, model, plan)
    for j in range(plan.num_stages):
        loader.load_stage(j)
        assert parameter_pointers(model) == before, f"a parameter moved in stage {j}"
        assert model.gates.data_ptr() == gates_ptr
        assert model.gates.tolist() == plan.gates_after(j)
        assert loader.bound_stage == j
        for i in range(6):  # bound layers hold the file's weights, absent ones are still zero
            w = model.model.layers[i].mlp.down_proj.weight
            assert bool(w.abs().sum() > 0) == (i in plan.layers_after(j))


def test_records_cover_every_unit_once(tiny):
    model = _model(tiny)
    plan = pipelined_plan(6)
    loader = StagedLoader(tiny, model, plan)
    loader.run()
    units = [r.layer for r in loader.records]
    assert units == [None, 0, 1, 2, 3, 4, 5]
    assert [r.stage for r in loader.records] == [0, 0, 1, 2, 3, 4, 5]
    total = sum(r.nbytes for r in loader.records)
    assert total == sum(p.numel() * 4 for p in model.parameters())
    for r in loader.records:
        assert r.read_s >= 0 and r.copy_s >= 0 and r.end_s >= r.start_s
        assert (r.bind_s > 0) == (r.layer is not None)
    assert len(loader.stage_done_s) == 6 and loader.stage_done_s == sorted(loader.stage_done_s)


def test_buffered_path_equals_direct_path(tiny):
    a, b = _model(tiny), _model(tiny)
    StagedLoader(tiny, a, full_plan(6), direct_read=True).run()
    StagedLoader(tiny, b, full_plan(6), direct_read=False).run()
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_a_layer_is_one_contiguous_read(tiny):
    entries = index_checkpoint(tiny)
    layer3 = [e for n, e in entries.items() if n.startswith("model.layers.3.")]
    runs = plan_reads(layer3)
    assert len(runs) == 1 and len(runs[0].entries) == 9
    buf = torch.empty(runs[0].end - runs[0].start, dtype=torch.uint8)
    views = read_into(runs[0], buf)
    from safetensors import safe_open

    with safe_open(str(runs[0].path), "pt") as f:
        for name, t in views.items():
            assert torch.equal(t, f.get_tensor(name))


def test_checkpoint_layout_is_hugging_face(tiny):
    index = json.loads((tiny / "model.safetensors.index.json").read_text())
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 6
    assert len(set(index["weight_map"].values())) == 8  # embedding, 6 layers, norm + head
    assert index["metadata"]["total_size"] == sum(e.nbytes for e in index_checkpoint(tiny).values())


def test_mismatched_checkpoint_is_refused(tiny, tmp_path):
    other = LlamaShape.from_dir(tiny)
    import dataclasses

    wrong = AlphaGatedLlama(shape=dataclasses.replace(other, num_layers=4), initial_gate=0.0)
    with pytest.raises(ValueError, match="tensors the model does not have"):
        StagedLoader(tiny, wrong, full_plan(4))
    with pytest.raises(ValueError, match="plan"):
        StagedLoader(tiny, _model(tiny), full_plan(5))
    with pytest.raises(FileNotFoundError):
        StagedLoader(tmp_path, _model(tiny), full_plan(6))
