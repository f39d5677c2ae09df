"""ServeGen: the eval-free distribution parser, the per-window draw, errors, and the real folders."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_traces_helpers import SHARED, need

from traces import TraceError, open_trace
from traces.pdfparse import PdfError, parse_pdf
from traces.rowtrace import RowOptions
from traces.servegen import ServeGenOptions, gap_positions

REPO = Path(__file__).resolve().parents[1]
SERVEGEN = SHARED / "servegen"


def pdf(text: str, integer: bool = True):
    return parse_pdf(text, integer_values=integer, max_value=1e7)


# -- the parser ------------------------------------------------------------------------------------

def test_parser_reads_the_literal_servegen_writes():
    p = pdf("{224: 0.25, 225: 0.5, 300: 0.0, 231: 0.25}")
    assert p.values.tolist() == [224, 225, 231, 300]
    assert p.cdf.tolist() == [0.25, 0.75, 1.0, 1.0]
    assert p.mean == pytest.approx(224 * 0.25 + 225 * 0.5 + 231 * 0.25)
    assert pdf("{0.5: 1.0,}", integer=False).values.tolist() == [0.5]
    assert pdf(" {\n1: 5e-1, 2: .5 } ").values.tolist() == [1, 2]


@pytest.mark.parametrize("text, needle", [
    ("__import__('os').system('x')", "character 1"),
    ("{1: __import__('os')}", "character 5"),
    ("{1: 0.5, 2: 0.5", "character 16"),
    ("{1: 0.5 2: 0.5}", "character 9"),
    ("{1: inf}", "character 5"),
    ("{1: nan}", "character 5"),
    ("{1_0: 1.0}", "character 3"),
    ("{1: 1.0} junk", "character 10"),
    ("{}", "empty"),
    ("{1: 0.5, 1: 0.5}", "appears twice"),
    ("{1: -0.5, 2: 1.5}", "negative probability"),
    ("{1: 0.5, 2: 0.4}", "sum to 0.9"),
    ("{1.5: 1.0}", "not a whole number"),
    ("{-3: 1.0}", "outside"),
    ("{1e400: 1.0}", "finite"),
])
def test_parser_refuses_everything_else(text, needle):
    with pytest.raises(PdfError, match=needle):
        pdf(text)


def test_sampling_follows_the_table():
    p = pdf("{10: 0.1, 20: 0.0, 30: 0.6, 40: 0.3}")
    got = Counter(p.sample(np.random.default_rng(1), 200_000).tolist())
    assert 20 not in got
    observed = [got[v] for v in (10, 30, 40)]
    assert stats.chisquare(observed, [20_000, 120_000, 60_000]).pvalue > 0.001


# -- the arrival draw ------------------------------------------------------------------------------

def test_exponential_gaps_given_their_count_are_uniform_order_statistics():
    rng = np.random.default_rng(2)
    pos = np.concatenate([gap_positions(20, "Gamma", 1.0, rng) for _ in range(2000)])
    assert stats.kstest(pos, "uniform").pvalue > 0.001
    one = np.array([gap_positions(1, "Gamma", 1.0, rng)[0] for _ in range(20_000)])
    assert stats.kstest(one, "uniform").pvalue > 0.001  # a lone arrival: anywhere in the window


@pytest.mark.parametrize("family, shape", [("Gamma", 0.035), ("Weibull", 0.1), ("Weibull", 0.002), ("Gamma", 50.0)])
def test_extreme_shapes_give_finite_ordered_offsets(family, shape):
    pos = gap_positions(500, family, shape, np.random.default_rng(3))
    assert np.all(np.isfinite(pos)) and np.all(np.diff(pos) >= 0) and 0 <= pos[0] and pos[-1] < 1


def test_burstier_shape_gives_burstier_gaps():
    rng = np.random.default_rng(4)
    def cv(shape):
        gaps = np.diff(np.concatenate([gap_positions(2000, "Gamma", shape, rng) for _ in range(5)]))
        gaps = gaps[gaps > 0]
        return gaps.std() / gaps.mean()
    assert cv(0.1) > 2.0 > cv(1.0) > 0.7 > cv(20.0)


# -- tiny folders written here ---------------------------------------------------------------------

def write_client(folder: Path, cid: int, rows: list[str], lengths: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"chunk-{cid}-trace.csv").write_text("\n".join(rows) + "\n")
    if lengths is not None:
        (folder / f"chunk-{cid}-dataset.json").write_text(json.dumps(lengths, indent=2))


def window_rows(rates: list[float], family: str = "Gamma", shape: float = 0.5) -> list[str]:
    return [f"{i * 600},{r},1.4,{family},{shape},2.0" if r else f"{i * 600},0,0,,0,0" for i, r in enumerate(rates)]


LANG = {"0": {"input_tokens": "{100: 0.5, 200: 0.5}", "output_tokens": "{7: 1.0}"}}


@pytest.fixture
def tiny(tmp_path):
    root = tmp_path / "servegen"
    write_client(root / "m-a", 0, window_rows([0.5, 0, 0.25], "Weibull", 0.4), LANG)
    write_client(root / "m-a", 1, window_rows([0.1, 0.1, 0.1]))  # no lengths: borrows client 0's
    write_client(root / "m-b", 3, window_rows([1 / 6, 1 / 3]), {"0": {"input_tokens": "{5000: 1.0}",
                                                                     "output_tokens": "{0: 0.5, 9: 0.5}"}})
    return root


def test_counts_per_window_are_the_files_rates(tiny):
    trace = open_trace(str(tiny), rate_scale=1, failures="keep")
    reqs = list(trace)
    per = Counter((r.tenant, int(r.arrival_s // 600)) for r in reqs)
    assert per == {("m-a/c0", 0): 300, ("m-a/c0", 2): 150, ("m-a/c1", 0): 60, ("m-a/c1", 1): 60,
                   ("m-a/c1", 2): 60, ("m-b/c3", 0): 100, ("m-b/c3", 1): 200}
    assert [r.request_id for r in reqs] == list(range(len(reqs)))
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(reqs, reqs[1:], strict=False))
    assert {r.model for r in reqs} == {"llama-2-7b-m-a", "llama-2-7b-m-b"}
    assert trace.details["duration_s"] == 1800 and trace.details["lengths_borrowed"] == 180
    assert trace.details["cluster.nodes"] == 1 and trace.details["cluster.gpus_per_node"] == 8


def test_lengths_own_borrowed_and_failures(tiny):
    reqs = list(open_trace(str(tiny), rate_scale=1))  # failures=drop: m-b's 0-token outputs go
    a = [r for r in reqs if r.model.endswith("m-a")]
    assert {r.prompt_tokens for r in a} == {100, 200} and {r.output_tokens for r in a} == {7}
    b = [r for r in reqs if r.model.endswith("m-b")]
    assert {(r.prompt_tokens, r.output_tokens) for r in b} == {(5000, 9)}
    assert 100 < len(b) < 200  # about half of 300 kept


def test_rate_scale_keeps_the_expected_count(tiny):
    counts = [len(list(open_trace(str(tiny), rate_scale=0.01, seed=s, failures="keep"))) for s in range(300)]
    assert np.mean(counts) == pytest.approx(9.3, abs=0.3)  # (300 + 150 + 180 + 300) x 0.01


def test_same_seed_same_requests_and_streams_per_client(tiny):
    both = list(open_trace(str(tiny), rate_scale=1, seed=5))
    assert both == list(open_trace(str(tiny), rate_scale=1, seed=5))
    assert both != list(open_trace(str(tiny), rate_scale=1, seed=6))
    only_b = list(open_trace(str(tiny), rate_scale=1, seed=5, models="m-b"))
    assert [(r.arrival_s, r.output_tokens) for r in only_b] == \
        [(r.arrival_s, r.output_tokens) for r in both if r.model.endswith("m-b")]


def test_duration_start_and_client_choice(tiny):
    cut = list(open_trace(str(tiny), rate_scale=1, duration_s=300))
    assert cut and max(r.arrival_s for r in cut) < 300
    later = list(open_trace(str(tiny), rate_scale=1, start_s=600))
    assert later and min(r.arrival_s for r in later) >= 0 and max(r.arrival_s for r in later) < 1200
    assert {r.tenant for r in later} == {"m-a/c0", "m-a/c1", "m-b/c3"}
    with_lengths = list(open_trace(str(tiny), rate_scale=1, clients="with_lengths"))
    assert {r.tenant for r in with_lengths} == {"m-a/c0", "m-b/c3"}
    with pytest.raises(TraceError, match="option models: m-z not found.*found: m-a, m-b"):
        open_trace(str(tiny), models="m-z")
    with pytest.raises(TraceError, match="start_s: 1800 s is at or after the end"):
        open_trace(str(tiny), start_s=1800)


def test_multimodal_prompt_adds_items(tmp_path):
    mm = {"0": {"text_tokens": "{100: 1.0}", "image_tokens": "{500: 1.0}", "audio_tokens": "{0: 1.0}",
                "video_tokens": "{0: 1.0}", "image_count": "{2: 0.5, 0: 0.5}", "audio_count": "{0: 1.0}",
                "video_count": "{0: 1.0}", "output_tokens": "{20: 1.0}"}}
    write_client(tmp_path / "mm-x", 0, window_rows([1.0]), mm)
    reqs = list(open_trace(str(tmp_path / "mm-x"), rate_scale=1))
    assert len(reqs) == 600 and {r.prompt_tokens for r in reqs} == {100, 1100}


def test_model_without_any_lengths_is_counted_not_dropped_silently(tmp_path):
    write_client(tmp_path / "m-c", 0, window_rows([0.1]))
    trace = open_trace(str(tmp_path / "m-c"), rate_scale=1)
    assert list(trace) == [] and trace.details["requests_dropped.no_lengths.m-c"] == 60


@pytest.mark.parametrize("rows, needle", [
    (["0,x,1,Gamma,0.5,2"], r"chunk-0-trace.csv:1: field 'rate': 'x' is not a number"),
    (["0,0.1,1,Gamma,0.5,2", "1200,0.1,1,Gamma,0.5,2"], r"chunk-0-trace.csv:2: field 'timestamp': .*expected 600"),
    (["0,0.1,1,Poisson,0.5,2"], r":1: field 'pattern': 'Poisson' is not Gamma, Weibull"),
    (["0,0.1,1,Gamma,0,2"], r":1: field 'shape': '0' is not a positive"),
    (["0,0.1,1,,0,0"], r":1: field 'pattern': rate 0.1 but no arrival pattern"),
    (["0,0.1,1,Gamma,0.5"], r":1: field 'scale': 5 fields, expected 6"),
    (["0,-1,1,Gamma,0.5,2"], r":1: field 'rate': '-1' is not a non-negative"),
    (["0,1e9,1,Gamma,0.5,2"], r":1: field 'rate': 1e\+09 requests/s is more than"),
])
def test_bad_series_rows_name_file_line_field(tmp_path, rows, needle):
    write_client(tmp_path / "m", 0, rows, LANG)
    with pytest.raises(TraceError, match=needle):
        list(open_trace(str(tmp_path / "m"), rate_scale=1))


@pytest.mark.parametrize("fields, needle", [
    ({"input_tokens": "{100: 0.5, 200: 0.5", "output_tokens": "{7: 1.0}"}, r"dataset.json:3: field 'input_tokens': "
                                                                            r"window 0: .*character 20"),
    ({"input_tokens": "{100: 1.0}", "output_tokens": "print(1)"}, r"dataset.json:4: field 'output_tokens'"),
    ({"input_tokens": "{100: 1.0}"}, r"field 'output_tokens' missing"),
])
def test_bad_length_files_name_file_line_field(tmp_path, fields, needle):
    write_client(tmp_path / "m", 0, window_rows([0.1]), {"0": fields})
    with pytest.raises(TraceError, match=needle):
        list(open_trace(str(tmp_path / "m"), rate_scale=1))
    (tmp_path / "m" / "chunk-0-dataset.json").write_text('{"0": {"input_tokens": ')
    with pytest.raises(TraceError, match=r"dataset.json:1: not JSON"):
        list(open_trace(str(tmp_path / "m"), rate_scale=1))


@pytest.mark.parametrize("cls", [ServeGenOptions, RowOptions])
def test_every_option_is_documented(cls):
    text = (REPO / "docs" / "traces.md").read_text()
    for f in dataclasses.fields(cls):
        assert f"`{f.name}`" in text, f.name


def test_named_trace_missing_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    with pytest.raises(TraceError, match="python -m traces download servegen"):
        open_trace("servegen")


# -- the real folders ------------------------------------------------------------------------------

def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_real_mm_image_hour_has_exactly_the_files_counts():
    folder = need(SERVEGEN / "mm-image")
    trace = open_trace(str(folder), rate_scale=1, failures="keep", duration_s=3600, seed=1)
    reqs = list(trace)
    want = Counter()
    for f in folder.glob("chunk-*-trace.csv"):
        cid = int(f.name.split("-")[1])
        for row in _rows(f)[:6]:
            want[(f"mm-image/c{cid}", int(row[0]) // 600)] = round(float(row[1]) * 600)
    got = Counter((r.tenant, int(r.arrival_s // 600)) for r in reqs)
    assert got == +want and len(reqs) == sum(want.values())
    assert trace.details["clients"] == 35 and "lengths_borrowed" not in trace.details  # every client has lengths


def test_real_client_lengths_follow_its_distribution():
    folder = need(SERVEGEN / "deepseek-r1")
    table = json.loads((folder / "chunk-1-dataset.json").read_text())["0"]
    want = pdf(table["input_tokens"]).mean
    reqs = [r for r in open_trace(str(folder), rate_scale=1, duration_s=6 * 3600, failures="keep", seed=2)
            if r.tenant == "deepseek-r1/c1"]
    assert len(reqs) > 1000
    got = np.mean([r.prompt_tokens for r in reqs])
    assert got == pytest.approx(want, rel=0.1)


def test_real_fortnight_by_name_is_multi_model_and_streams():
    shared = need(SERVEGEN).parent
    trace = open_trace("servegen", trace_dir=str(shared), duration_s=1200, seed=0)
    reqs = list(trace)
    models = Counter(r.model for r in reqs)
    assert set(models) == {f"llama-2-7b-{m}" for m in ("m-large", "m-mid", "m-small", "deepseek-r1", "mm-image")}
    assert models["llama-2-7b-m-mid"] > models["llama-2-7b-deepseek-r1"]  # the real skew between models
    assert len({r.tenant for r in reqs}) > 50
    # every 600 s window's expected count at rate_scale 1/1000 (failures dropped: a few fewer)
    expected = sum(float(row[1]) * 600 * 0.001 for f in (shared / "servegen").glob("*/chunk-*-trace.csv")
                   for row in _rows(f)[:2])
    assert 0.9 * expected < len(reqs) <= expected + 4 * math.sqrt(expected)
    assert trace.details["duration_s"] == 1200 and "14 d" in trace.details["models"]


def test_sim_runs_servegen_on_the_cluster_it_suggests(tmp_path):
    shared = need(SERVEGEN).parent
    out = tmp_path / "sg"
    proc = subprocess.run([sys.executable, "-m", "sim", "--trace", "servegen", "--trace-dir", str(shared),
                           "--duration", "600", "--out", str(out), "--quiet", "--keepalive", "fixed"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trace: servegen (real per-client processes" in proc.stdout
    assert "cluster: 1 x 8" in proc.stdout
    models = (out / "models.csv").read_text()
    assert "llama-2-7b-m-mid" in models and "llama-2-7b-mm-image" in models
