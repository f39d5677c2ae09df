"""Random checkpoints drawn from a shared pool (`tiled=True`): right scales, deterministic, loadable."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from policies.plan import full_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.engine import ProgressiveEngine  # noqa: E402
from progressive_serve.testing import random_prompt, torch_threads  # noqa: E402


def _layer0(d):
    return load_file(str(d / "model-00002-of-00008.safetensors"))


def test_tiled_checkpoint_has_the_scales_of_the_drawn_one_and_is_deterministic(tmp_path):
    a = _layer0(write_random_checkpoint(tmp_path / "a", "tiny", seed=3, dtype="float32", tiled=True))
    b = _layer0(write_random_checkpoint(tmp_path / "b", "tiny", seed=3, dtype="float32", tiled=True))
    c = _layer0(write_random_checkpoint(tmp_path / "c", "tiny", seed=4, dtype="float32", tiled=True))
    up = a["model.layers.0.mlp.up_proj.weight"]  # (176, 64): N(0, 1/64) -> std 0.125
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(up, c["model.layers.0.mlp.up_proj.weight"])
    assert abs(float(up.std()) - 64**-0.5) < 0.01 and abs(float(up.mean())) < 0.01
    norm = a["model.layers.0.input_layernorm.weight"]  # 1 + 0.1 N(0, 1)
    assert abs(float(norm.mean()) - 1.0) < 0.05 and 0.05 < float(norm.std()) < 0.15


def test_tiled_checkpoint_serves(tmp_path):
    d = write_random_checkpoint(tmp_path / "t", "tiny", seed=1, dtype="float32", tiled=True)
    with torch_threads(1):
        eng = ProgressiveEngine(d, full_plan(6), device="cpu", max_tokens=32).start()
        res = eng.generate(random_prompt(eng.shape, 4), 4)
        eng.unload()
    assert len(res.tokens) == 4 and all(0 <= t < 320 for t in res.tokens)
