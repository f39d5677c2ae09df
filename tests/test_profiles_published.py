"""The shipped profiles against the figures they were built from.

1. The default profile (LLaMA-2-7B on an A6000) against the seed's published cold-start phases:
   the simulator runs one cold request under `full` and `progressive` staging and each phase
   it produces is compared with the seed's vLLM log lines. The seed's numbers are typed here
   from its results files (repository 2Ju1/ProgressiveServe, results/01_both_baseline_first.json
   and results/01_both_progressive_first.json; the first is the table in docs/design.md).
   Where the table's progressive column cannot be reproduced, the test says why, with the
   runs that show it (docs/profiles.md, "The seed's two columns").
2. Every shipped profile loads, validates and runs a short simulation (`python -m sim`).
3. The published H100 / H200 profiles are what `profiles/build.py` computes from its cited
   constants (no table is typed), and they refuse to report quality nobody measured.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from policies import load_policy
from profiles import build, roofline
from sim.config import SimConfig
from sim.metrics import RunMetrics
from sim.policyset import PolicySet
from sim.profile import PROFILES_DIR, load_profile, shipped_profiles
from sim.simulator import Simulator
from traces.request import Request

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# The seed's published phases (vLLM 0.7.4, LLaMA-2-7B fp16, local SSD, CUDA graphs on), s.
# "rest" is cold_start_time - "Model loading took ... seconds" - "init engine ... took":
# the part of `LLM(...)` that is neither weights nor engine init.

# Baseline run first in its process (01_both_baseline_first.json, experiments 1 and 2).
BASE_FIRST = {"cold": (29.02, 31.69), "weights": (12.66, 15.50), "init": (10.40, 10.19),
              "rest": (29.02 - 12.77 - 10.40, 31.69 - 15.61 - 10.19)}
# Progressive stage 1 (24 of 32 layers) second in that same process: the table's column.
PROG_SECOND = {"cold": (18.17, 17.81), "weights": (9.24, 8.86), "init": (8.40, 8.43),
               "rest": (18.17 - 9.28 - 8.40, 17.81 - 8.90 - 8.43)}
# Progressive stage 1 first in its process (01_both_progressive_first.json).
PROG_FIRST = {"cold": (20.31, 19.97), "weights": (9.06, 8.89), "init": (10.36, 10.21),
              "rest": (20.31 - 9.18 - 10.36, 19.97 - 9.00 - 10.21)}
# Baseline second in that process: its init engine (8.43, 8.44) shows the 2 s order effect.
BASE_SECOND_INIT = (8.43, 8.44)


def mean(v: tuple[float, ...]) -> float:
    return sum(v) / len(v)


@dataclass
class Phases:
    rest: float  # arrival to the first weight byte: process start and CUDA context
    weights: float  # the serving stage's weights
    init: float  # KV cache and graph capture, after the weights
    cold: float  # arrival to ready

    def get(self, name: str) -> float:
        return getattr(self, name)


def simulate_phases(profile_name: str, staging: str) -> Phases:
    """One cold request on an idle cluster; the phases read off the real simulator's events."""
    profile = load_profile(profile_name)
    chosen = dict(staging=staging, keepalive="fixed", prewarm="none", placement="first_fit",
                  router="least_loaded", admission="always")
    policies = PolicySet(**{k: load_policy(k, v) for k, v in chosen.items()})
    sim = Simulator(profile, policies, SimConfig(nodes=1, gpus_per_node=1), RunMetrics(policies.label, 5.0))
    log: list[tuple[str, float]] = []
    transfer, became_ready = sim.net.transfer, sim.became_ready

    def logged_transfer(path, nbytes, efficiency=1.0):
        log.append(("transfer", sim.env.now))
        done = transfer(path, nbytes, efficiency)
        done.callbacks.append(lambda _e: log.append(("landed", sim.env.now)))
        return done

    def logged_ready(inst, pipelined):
        log.append(("ready", sim.env.now))
        return became_ready(inst, pipelined)

    sim.net.transfer, sim.became_ready = logged_transfer, logged_ready
    model = profile.default_model.name
    sim.run([Request(arrival_s=0.0, model=model, prompt_tokens=8, output_tokens=1, request_id=0)])
    first = next(t for e, t in log if e == "transfer")
    ready = next(t for e, t in log if e == "ready")
    landed = max(t for e, t in log if e == "landed" and t <= ready)
    return Phases(rest=first, weights=landed - first, init=ready - landed, cold=ready)


DEFAULT = "a6000-llama2-7b-published"


@pytest.fixture(scope="module")
def full() -> Phases:
    return simulate_phases(DEFAULT, "full")


@pytest.fixture(scope="module")
def progressive() -> Phases:
    return simulate_phases(DEFAULT, "progressive")


@pytest.mark.parametrize("phase", ["rest", "weights", "init", "cold"])
def test_default_reproduces_the_baseline_column(full, phase):
    """Each simulated phase of a full cold start is within 10 % of the seed's baseline mean."""
    assert full.get(phase) == pytest.approx(mean(BASE_FIRST[phase]), rel=0.10)


def test_loader_efficiency_arithmetic():
    """12.55 GiB (the profile's 13,476,831,232 B) in 14.08 s over the 3.5 GB/s NVMe: 0.2735."""
    p = load_profile(DEFAULT)
    rate = p.default_model.weight_bytes / mean(BASE_FIRST["weights"])
    assert p.default_model.weight_bytes == 13_476_831_232
    assert p.engine.loader_efficiency == pytest.approx(rate / (p.hardware.ssd_read_gbps * 1e9), abs=5e-5)


def test_progressive_init_matches_a_first_in_process_run(progressive):
    """Engine init does not depend on the active layers: a new process pays 10.2-10.4 s for
    24 of 32 layers as for 32 (progressive first: 10.36, 10.21). The table's 8.4 s is the
    second engine of one Python process (baseline second: 8.43, 8.44 s as well)."""
    assert progressive.init == pytest.approx(mean(PROG_FIRST["init"]), rel=0.10)
    assert progressive.init == pytest.approx(mean(BASE_FIRST["init"]), rel=0.10)
    assert abs(mean(BASE_SECOND_INIT) - mean(PROG_SECOND["init"])) < 0.1  # the order effect, both models


def test_progressive_weights_are_the_stage_bytes_at_the_baseline_rate(progressive, full):
    """The simulator loads stage 1 (24 layers, embedding, head) with the loader the baseline
    measured: its weights phase is that share of the full one, by bytes."""
    m = load_profile(DEFAULT).default_model
    stage_bytes = 24 * m.layer_bytes + m.embedding_bytes + m.head_bytes
    assert progressive.weights == pytest.approx(full.weights * stage_bytes / m.weight_bytes, rel=1e-9)


@pytest.mark.xfail(strict=True, reason="measured confound: the seed's progressive run loaded another "
                   "checkpoint (/acpl-ssd20/1218/A) with its own load_weights at 1.14 GB/s against the "
                   "baseline loader's 0.92-0.96 GB/s, first or second in the process alike (docs/profiles.md)")
def test_progressive_weights_match_the_table(progressive):
    assert progressive.weights == pytest.approx(mean(PROG_SECOND["weights"]), rel=0.10)


@pytest.mark.xfail(strict=True, reason="measured confound: the progressive runs' LLM() spent 0.5-0.8 s "
                   "outside weights and init against the baseline's 5.4-5.9 s, first or second alike; and "
                   "the table's column ran second in a warm process (init -2 s) (docs/profiles.md)")
def test_progressive_cold_start_matches_the_table(progressive):
    assert progressive.cold == pytest.approx(mean(PROG_SECOND["cold"]), rel=0.10)


def test_progressive_gap_is_the_measured_confounds(progressive):
    """The simulated progressive cold start less the three effects measured in other runs of
    the seed lands within 10 % of the table's column: (1) the out-of-weights part of LLM()
    that the progressive checkpoint does not pay (baseline-first rest - progressive-first
    rest), (2) its faster loader (the simulated stage-1 weights - the progressive-first
    weights), (3) the second engine of a process (baseline first - baseline second init)."""
    no_rest = mean(BASE_FIRST["rest"]) - mean(PROG_FIRST["rest"])
    loader = progressive.weights - mean(PROG_FIRST["weights"])
    second_engine = mean(BASE_FIRST["init"]) - mean(BASE_SECOND_INIT)
    explained = progressive.cold - no_rest - loader - second_engine
    assert explained == pytest.approx(mean(PROG_SECOND["cold"]), rel=0.10)
    assert progressive.cold - no_rest - loader == pytest.approx(mean(PROG_FIRST["cold"]), rel=0.10)


# ---------------------------------------------------------------------------------------------
# every shipped profile


def test_at_least_four_published_profiles_besides_the_default():
    names = shipped_profiles()
    gpus = {load_profile(n).hardware.gpu_name for n in names if n != DEFAULT}
    assert len([n for n in names if n != DEFAULT]) >= 4
    assert any("H100" in g for g in gpus) and any("H200" in g for g in gpus)


@pytest.mark.parametrize("name", shipped_profiles())
def test_shipped_profile_loads_and_every_number_has_a_source(name):
    p = load_profile(name)
    if p.provenance["kind"] == "measured":
        # written by `python -m validate` on the hardware it names: the command, date, device and
        # the raw measurements behind every number travel with it
        for key in ("command", "date", "device", "measured", "versions"):
            assert p.provenance.get(key), f"{name}: no {key} in its provenance"
    else:
        assert p.provenance["kind"] == "published" and p.provenance.get("source")
        notes = " ".join(f"{k} {v}" for k, v in p.provenance.get("notes", {}).items())
        for field in ("loader_efficiency", "process_start_s", "graph_capture_s", "prefill", "stages"):
            assert field in notes, f"{name}: no note for {field}"
    for m in p.models:
        assert m.footprint_bytes <= p.hardware.usable_gpu_bytes
        for s in m.stages:
            assert s.source, f"{name}: stage {s.name} has no source"


@pytest.mark.parametrize("name", build.PUBLISHED)
def test_published_profile_is_what_the_builder_computes(name):
    """No table is typed: the JSON shipped equals `python -m profiles.build`'s output."""
    shipped = json.loads((PROFILES_DIR / f"{name}.json").read_text())
    assert shipped == build.profile_dict(build.PUBLISHED[name])


def test_roofline_reproduces_the_default_profiles_tables():
    """The roofline formula (profiles/roofline.py) with the A6000's datasheet figures gives the
    default profile's prefill and decode tables to the 4 decimals they were written with."""
    p = load_profile(DEFAULT)
    m = p.default_model
    gpu = roofline.Gpu(hbm_gbps=768.0, tflops_bf16=154.8)
    shape = roofline.Shape(weight_bytes=m.weight_bytes, flops_per_token=13.5e9, kv_bytes_per_token=0)
    prefill = roofline.prefill_table(gpu, shape, list(m.prefill.x))
    decode = roofline.decode_table(gpu, shape, list(m.decode.x), per_sequence_s=0.12e-3)
    assert prefill == pytest.approx(list(m.prefill.seconds), abs=6e-5)
    assert decode == pytest.approx(list(m.decode.seconds), abs=6e-5)


def test_published_weights_phase_reproduces_serverlessllm():
    """H100 + Llama-3.1-8B from the SSD: 0.678 s as published; Qwen3-32B: 3.216 s; Qwen3-32B
    loaded repeatedly (read as the host-DRAM cache): 1.253 s (ServerlessLLM's h100_2025 results)."""
    for name, tier, want in [("h100-llama3.1-8b-published", "ssd", 0.678),
                             ("h100-qwen3-32b-published", "ssd", 3.216),
                             ("h100-qwen3-32b-published", "dram", 1.253)]:
        p = load_profile(name)
        hw, m = p.hardware, p.default_model
        link = min(hw.ssd_read_gbps, hw.h2d_gbps) if tier == "ssd" else hw.h2d_gbps
        assert m.weight_bytes / (p.engine.loader_efficiency * link * 1e9) == pytest.approx(want, rel=0.02), name


def test_unknown_stage_quality_is_nan_not_a_number():
    p = load_profile("h100-llama3.1-8b-published")
    m = p.default_model
    assert all(s.quality is None for s in m.stages if s.num_layers < m.num_layers)
    assert math.isnan(m.quality_at(24)) and m.quality_at(m.num_layers) == 1.0
    assert "no measured quality" in p.quality_note()
    assert load_profile(DEFAULT).quality_note() == ""


# ---------------------------------------------------------------------------------------------
# the command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


AZURE_2019 = ROOT.parent / "shared" / "traces" / "azure_functions_2019"


@pytest.mark.parametrize("name", shipped_profiles())
def test_each_profile_runs_a_short_simulation(name):
    if not AZURE_2019.is_dir():
        pytest.skip(f"{AZURE_2019} is absent")
    r = run_cli("--trace", "azure_functions", "--trace-dir", str(AZURE_2019), "--duration", "120",
                "--profile", name, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower()


def write_trace(path: Path, model: str) -> Path:
    """Two cold requests (two GPUs) and a warm one, in the plain CSV form `python -m sim` reads."""
    rows = [(0.0, 512, 64), (0.5, 256, 32), (60.0, 128, 16)]
    path.write_text("arrival_s,model,prompt_tokens,output_tokens\n"
                    + "".join(f"{t},{model},{p},{o}\n" for t, p, o in rows))
    return path


def test_progressive_run_with_unknown_quality_says_so(tmp_path):
    """Full staging reports quality 1; progressive serves tokens at a stage nobody measured, so
    its quality is left empty ('-') and the run says why."""
    trace = write_trace(tmp_path / "t.csv", "llama-3.1-8b")
    r = run_cli("--trace", str(trace), "--profile", "h100-llama3.1-8b-published", "--staging", "full,progressive",
                "--nodes", "1", "--gpus-per-node", "2", "--quiet", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "no measured quality" in r.stdout + r.stderr
    rows = {row["policy"]: row for row in csv_rows(tmp_path / "run" / "summary.csv")}
    quality = {label.split("staging=")[1].split()[0] if "staging=" in label else label: row["quality_mean"]
               for label, row in rows.items()}
    assert any(q not in ("", "nan", "NaN") and float(q) == 1.0 for q in quality.values()), quality
    assert any(q in ("", "nan", "NaN") for q in quality.values()), quality


def csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_help_lists_the_shipped_profiles():
    r = run_cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name in shipped_profiles():
        assert name in text
