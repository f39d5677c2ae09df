"""Reports: number formatting, table layout, and byte-identical files on repeat."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.metrics import GB, RunMetrics
from sim.records import RequestRecord
from sim.report import format_markdown, format_table, format_value, write_results


def run(label: str, seed: int, links: tuple[str, ...] = ("pcie", "ssd")) -> RunMetrics:
    rng = np.random.default_rng(seed)
    m = RunMetrics(label, slo_ttft_s=2.0)
    t = 0.0
    for i in range(3000):
        t += float(rng.exponential(0.5))
        ttft = float(rng.lognormal(0.0, 1.0))
        m.on_request(RequestRecord(
            label, i, "m", "f", t, t + ttft, t + ttft + 2.0, ttft, 0.02, 50, 100, ttft > 3.0,
            max(0.0, ttft - 1.0), 1, 0.95, False, "", 0, 0, 0,
        ))
        if i % 10 == 0:
            m.on_memory(t, float(rng.integers(0, 4)) * 13.5 * GB, 13.5 * GB)
    for link in links:
        m.on_bytes(link, 27e9)
    return m


def results(links_b: tuple[str, ...] = ("network", "pcie")):
    ms = [run("full+none", 1), run("progressive+fixed[keepalive=600]", 2, links_b)]
    rows = [m.finish(2000.0) for m in ms]
    return rows, ms


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("ttft_p50_s", 0.012345, "0.0123"),
        ("ttft_p50_s", 12.345, "12.3"),
        ("ttft_p50_s", 1234.5, "1230"),
        ("ttft_p50_s", 1.0, "1.00"),
        ("ttft_p50_s", 0.0, "0"),
        ("ttft_p99_s", math.nan, "-"),
        ("cold_start_pct", 12.345, "12.3"),
        ("slo_attainment_pct", 100.0, "100.0"),
        ("gpu_mem_gb_hours", 3.14159, "3.14"),
        ("gb_pcie", 27.0, "27.00"),
        ("quality_mean", 0.96666, "0.967"),
        ("requests", 3000, "3000"),
        ("policy", "full+none", "full+none"),
    ],
)
def test_format_value(key, value, text):
    assert format_value(key, value) == text


@given(st.floats(min_value=1e-9, max_value=1e12))
def test_seconds_keep_three_significant_digits(v):
    text = format_value("x_s", v)
    assert "e" not in text
    assert float(text) == pytest.approx(float(f"{v:.3g}"), rel=1e-9)


def test_table_is_aligned_and_missing_links_read_zero():
    rows, _ = results()
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    header = lines[0].split()
    assert header[0] == "policy" and header[-4:] == ["gb_network", "gb_pcie", "gb_pcie_d2h", "gb_ssd"]
    # numbers are right-aligned: every data line ends at the same column as the header
    assert len({len(line) for line in lines}) == 1
    assert lines[2].split()[-4:] == ["0.00", "27.00", "0.00", "27.00"]  # full+none moved nothing on network
    assert lines[3].split()[-1] == "0.00"
    assert format_table([]) == "(no results)\n"


def test_markdown_has_header_block_then_table():
    rows, _ = results()
    md = format_markdown(rows, {"trace": "azure_functions (synthetic)", "seed": 7, "SLO TTFT": "2 s"})
    lines = md.splitlines()
    assert "- **trace**: azure_functions (synthetic)" in lines
    assert "- **seed**: 7" in lines
    table = [line for line in lines if line.startswith("|")]
    # the ranked table (header, rule, 2 rows), then every column (header, rule, 2 rows)
    assert len(table) == 8 and table[0].startswith("| # | id | pareto |") and table[5].startswith("| :--- | ---:")
    assert lines.index("- **seed**: 7") < lines.index("## Verdict") < lines.index(table[0])
    assert any(line.startswith("- best: P") for line in lines)


def test_write_results_files_and_csv_content(tmp_path):
    rows, ms = results()
    paths = write_results(tmp_path / "out", rows, ms, {"trace": "t"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gpu_memory.png", "pareto.png", "report.html", "summary.csv", "summary.md", "ttft_cdf.png",
    ]
    for key in ("ttft_cdf", "gpu_memory", "pareto"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["summary_csv"].open() as fh:
        parsed = list(csv.DictReader(fh))
    assert [r["policy"] for r in parsed] == ["full+none", "progressive+fixed[keepalive=600]"]
    assert float(parsed[0]["ttft_p50_s"]) == pytest.approx(rows[0]["ttft_p50_s"], rel=1e-8)
    assert parsed[0]["gb_network"] == "0" and parsed[1]["gb_ssd"] == "0"
    assert int(parsed[1]["requests"]) == 3000
    # the ranking's columns come last; the run order and full labels stay
    assert list(parsed[0])[-3:] == ["id", "rank", "pareto"]
    assert [(r["id"], r["pareto"]) for r in parsed][0][0] == "P1" and parsed[1]["id"] == "P2"
    assert sorted(r["rank"] for r in parsed) == ["1", "2"]


def test_outputs_are_byte_identical_on_repeat(tmp_path):
    blobs = []
    for k in range(2):
        rows, ms = results()
        paths = write_results(tmp_path / str(k), rows, ms, {"trace": "t", "seed": 0})
        blobs.append({name: p.read_bytes() for name, p in paths.items()})
    assert blobs[0] == blobs[1]
    for name in ("ttft_cdf", "gpu_memory", "pareto"):  # no software or time stamp in the PNGs
        assert b"Software" not in blobs[0][name] and b"tIME" not in blobs[0][name]


def test_empty_runs_still_write_files(tmp_path):
    ms = [RunMetrics("nothing", 1.0)]
    rows = [ms[0].finish(0.0)]
    paths = write_results(tmp_path, rows, ms, {"trace": "empty"})
    assert all(p.exists() for p in paths.values())
    assert ",," in paths["summary_csv"].read_text()  # NaN percentiles are empty fields


def test_cdf_steps_put_rejected_requests_at_the_right_edge():
    from sim.plots import cdf_steps

    xs, ps = np.array([1.0, 2.0]), np.array([0.45, 0.9])  # 90 % served
    px, py = cdf_steps(xs, ps, 0.9, 10.0, 15.0)
    assert px.tolist() == [1.0, 2.0, 10.0, 10.0, 15.0] and py.tolist() == [0.45, 0.9, 0.9, 1.0, 1.0]
    px, py = cdf_steps(xs, np.array([0.5, 1.0]), 1.0, 10.0, 15.0)
    assert px.tolist() == [1.0, 2.0, 15.0] and py.tolist() == [0.5, 1.0, 1.0]
    px, py = cdf_steps(np.array([]), np.array([]), 0.0, 10.0, 15.0)  # nothing served
    assert py.tolist() == [0.0, 1.0, 1.0]
