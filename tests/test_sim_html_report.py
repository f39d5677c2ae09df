"""report.html: one self-contained file (no network, no sibling files) with the verdict, the
ranked table, every plot and the run's inputs; it renders in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.metrics import GB, RunMetrics
from sim.records import RequestRecord
from sim.report import write_results

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 2000


def metrics(label: str, seed: int, reject_every: int = 0) -> RunMetrics:
    rng = np.random.default_rng(seed)
    m = RunMetrics(label, slo_ttft_s=2.0)
    t = 0.0
    for i in range(500):
        t += float(rng.exponential(0.5))
        if reject_every and i % reject_every == 0:
            m.on_request(RequestRecord.rejection(policy=label, request_id=i, model="m", function="f", arrival_s=t,
                                                 prompt_tokens=10, output_tokens=10, reason="full"))
            continue
        ttft = float(rng.lognormal(0.0, 1.0))
        m.on_request(RequestRecord(label, i, "m", "f", t, t + ttft, t + ttft + 1.0, ttft, 0.02, 50, 100, ttft > 3.0,
                                   max(0.0, ttft - 1.0), 1, 0.97, False, "", 0, 0, 0))
        if i % 10 == 0:
            m.on_memory(t, float(rng.integers(0, 4)) * 13.5 * GB, 0.0)
    return m


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    ms = [metrics("full + none", 1), metrics("progressive + fixed[ttl=60]", 2, reject_every=7)]
    rows = [m.finish(300.0) for m in ms]
    models = [{"policy": m.label, "model": "m", "requests": 500, "cold": 40, "loads": 3, "wakes": 2} for m in ms]
    header = {"trace": "unit-test trace", "profile": "p", "cluster": "1 x 2", "TTFT SLO (s)": 2.0, "seed": 11,
              "cluster GPU memory (GB)": 96.0}
    write_results(out, rows, ms, header, models)
    return out / "report.html"


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    # nothing fetched from anywhere: no URL, no src or href other than data: URIs
    assert not re.search(r"(?i)https?://", text)
    srcs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for name in ("ttft_cdf.png", "gpu_memory.png", "pareto.png", "per_model.png"):
        blob = base64.b64encode((report.parent / name).read_bytes()).decode()
        assert blob in text, name  # every plot, embedded as written
    assert "best: P" in text and "cheapest within 1 pp" in text
    assert "progressive + fixed[ttl=60]" in text and "<td class=\"txt\">P2</td>" in text
    for item in ("unit-test trace", "seed", "11"):
        assert item in text


def test_report_is_byte_identical_on_repeat(tmp_path):
    texts = []
    for k in range(2):
        ms = [metrics("a", 3), metrics("b", 4)]
        rows = [m.finish(300.0) for m in ms]
        write_results(tmp_path / str(k), rows, ms, {"trace": "t"})
        texts.append((tmp_path / str(k) / "report.html").read_bytes())
    assert texts[0] == texts[1]


def test_report_of_a_cli_run_names_its_inputs_and_versions(tmp_path):
    trace = tmp_path / "requests.csv"
    trace.write_text("arrival_s,model,prompt_tokens,output_tokens\n0,llama-a,100,10\n30,llama-a,80,5\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "sim", "--trace", str(trace), "--staging", "full",
                           "--keepalive", "none,fixed", "--seed", "5", "--out", str(out), "--quiet", "--no-records"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (out / "report.html").read_text()
    for item in ("requests.csv", "seed", "version: progressive-serve", "cluster GPU memory (GB)", "profile sha256"):
        assert item in text, item
    assert "report.html" in done.stdout


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium (/usr/bin/chromium) is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
         report.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # the page's own console: Chromium logs its messages as CONSOLE lines
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (HEIGHT, WIDTH)
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05  # not a blank page
    assert (gray < 0.5).mean() > 0.005  # text and plot lines drawn in dark ink
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
