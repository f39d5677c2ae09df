"""The vLLM plugin: registration, gates at 1 equal vLLM's own model, gates and staged binding.

Skipped where vLLM is not installed (the project's `vllm` extra, a separate 3.5 GB venv).
vLLM runs in a subprocess (`progressive_serve.vllm_check`): it keeps process-wide state.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed", allow_module_level=True)

from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.config import SHAPES  # noqa: E402
from progressive_serve.quality import load_full_model  # noqa: E402
from progressive_serve.testing import gated_logits  # noqa: E402

# head_dim 64: vLLM's CPU attention supports only common head sizes
SHAPE = dataclasses.replace(
    SHAPES["tiny"],
    hidden_size=128,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=256,
    num_layers=4,
    vocab_size=512,
)
PROMPTS = [[5, 6, 7, 8, 9, 10], [100, 200, 300]]
STAGES = [[0, 3], [1, 2]]


@pytest.fixture(scope="module")
def vllm_result(tmp_path_factory):
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("vllm"), SHAPE, seed=5, dtype="float32")
    cmd = [
        sys.executable,
        "-m",
        "progressive_serve.vllm_check",
        str(ckpt),
        "--mode",
        "all",
        "--drop",
        "[1]",
        "--stages",
        json.dumps(STAGES),
        "--prompts",
        json.dumps(PROMPTS),
        "--tokens",
        "8",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PROGRESSIVE_SERVE_RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout + out.stderr)[-3000:]
    return ckpt, json.loads(lines[-1].split(" ", 1)[1])


def _ours(ckpt, gates: list[float]) -> list[list[int]]:
    model = load_full_model(ckpt)
    model.set_gates(gates)
    outs = []
    with torch.inference_mode():
        for p in PROMPTS:
            ids, new = list(p), []
            for _ in range(8):
                nxt = int(gated_logits(model, ids)[-1].argmax())
                new.append(nxt)
                ids.append(nxt)
            outs.append(new)
    return outs


@pytest.mark.slow
def test_register_is_idempotent_and_lazy(vllm_result):
    reg = vllm_result[1]["registration"]
    assert reg["known"] and reg["lazy"]  # registered by name; the model module not imported yet
    assert reg["second"] is False  # a second call registers nothing
    installed = any(e.name == "progressive_serve" for e in entry_points(group="vllm.general_plugins"))
    assert reg["by_entry_point"] == installed  # vLLM's plugin loader ran our register()


@pytest.mark.slow
def test_gates_at_one_generate_what_vllm_generates(vllm_result):
    _, r = vllm_result
    assert r["gated"]["arch"] == "ProgressiveLlamaForCausalLM"
    assert r["gated"]["tokens"] == r["vanilla"]["tokens"]


@pytest.mark.slow
def test_gate_off_in_vllm_equals_gate_off_in_the_pytorch_engine(vllm_result):
    ckpt, r = vllm_result
    assert r["gated"]["dropped"]["1"] != r["vanilla"]["tokens"]
    assert r["gated"]["dropped"]["1"] == _ours(ckpt, [1.0, 0.0, 1.0, 1.0])
    assert r["gated"]["computed_when_dropped"]["1"] == 3  # eager: the closed layer is not run


@pytest.mark.slow
def test_staged_binding_in_vllm_is_in_place_and_ends_at_the_full_model(vllm_result):
    ckpt, r = vllm_result
    staged = r["staged"]
    assert staged["pointers_unchanged"] is True
    assert staged["stages"][0]["gates"] == [1.0, 0.0, 0.0, 1.0]
    assert staged["stages"][0]["computed_layers"] == 2
    assert staged["stages"][-1]["computed_layers"] == 4
    assert staged["stages"][0]["tokens"] == _ours(ckpt, [1.0, 0.0, 0.0, 1.0])
    assert staged["stages"][-1]["gates"] == [1.0] * 4
    assert staged["stages"][-1]["tokens"] == r["vanilla"]["tokens"]
