"""Durations and memory files: read, checked, summarised, and used by calibrate when big enough."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_traces_helpers import row_2019, write_2019

from traces import TraceError
from traces.azure2019 import DURATION_COLUMNS, MEMORY_COLUMNS, read_durations, read_memory
from traces.calibrate import calibration
from traces.cli import main
from traces.errors import Issues


def _durations(folder, rows):
    path = folder / "function_durations_percentiles.anon.d01.csv"
    path.write_text(",".join(DURATION_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def _memory(folder, rows):
    path = folder / "app_memory_percentiles.anon.d01.csv"
    path.write_text(",".join(MEMORY_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def test_reads_values_and_reports_bad_ones(tmp_path):
    good = "o,a,f,120,10,5,400,5,6,50,100,200,390,400"
    path = _durations(tmp_path, [good, "o,a,g,-3,1,1,1,1,1,1,1,1,1,1", "o,a,h,1,2"])
    with pytest.raises(TraceError, match=r"d01.csv:3: field 'Average': value '-3'"):
        list(read_durations(path))
    issues = Issues(lenient=True)
    rows = list(read_durations(path, issues))
    assert rows[0][0] == ("o", "a", "f") and rows[0][1][0] == 120.0 and issues.total_skipped == 2
    mem = _memory(tmp_path, ["o,a,12,150.5,100,110,120,130,140,150,160,170", "o,b,x,1,1,1,1,1,1,1,1,1"])
    with pytest.raises(TraceError, match="field 'SampleCount'"):
        list(read_memory(mem))
    with pytest.raises(TraceError, match=r"x.csv:1: unexpected header \(missing \['HashFunction', 'Average'"):
        list(read_durations(_memory(tmp_path, []).rename(tmp_path / "x.csv")))


def test_calibrate_measures_when_enough_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows, drows, mrows = [], [], []
    for i in range(40):
        busy = rng.choice(1440, size=int(rng.integers(3, 200)), replace=False)
        rows.append(row_2019("o", f"a{i}", "f", "http", {int(m): 1 for m in busy}))
        drows.append(f"o,a{i},f,{100 + i},5,1,1,1,1,1,1,1,1,1")
        mrows.append(f"o,a{i},12,{200 + i},1,1,1,1,1,1,1,1")
    inv = write_2019(tmp_path, rows)
    cal = calibration([inv], [_durations(tmp_path, drows)], [_memory(tmp_path, mrows)], min_functions=20,
                      min_invocations=100)
    for key in ("daily_invocations", "periodic_share", "diurnal_hourly", "duration_s", "memory_mb"):
        assert cal[key]["source"].startswith("measured from"), key
    assert cal["duration_s"]["value"][0] == pytest.approx(0.1) and cal["memory_mb"]["value"][-1] == 239
    small = calibration([inv], min_functions=1000)
    assert "ATC'20 Fig. 5(a)" in small["daily_invocations"]["source"]
    assert "ATC'20 Fig. 7" in small["duration_s"]["source"] and "cdf_points" in small["memory_mb"]


def test_info_on_tables(tmp_path, capsys):
    path = _memory(tmp_path, ["o,a,12,150.5,100,110,120,130,140,150,160,170"])
    assert main(["info", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["rows"] == 1 and got["average_allocated_mb_per_app"].startswith("p50 150.5")


def test_calibrate_keeps_token_tables_it_cannot_measure(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    write_2019(tmp_path, [row_2019("o", "a", "f", "http", {1: 2, 9: 1})])
    out = tmp_path / "cal.json"
    out.write_text(json.dumps({"tokens": {"conv": {"kept": True}}}))
    assert main(["calibrate", "--trace-dir", str(tmp_path), "--out", str(out)]) == 0
    cal = json.loads(out.read_text())
    assert cal["tokens"] == {"conv": {"kept": True}}
    assert cal["daily_invocations"]["measured_sample"]["value"] == [3]
    assert main(["calibrate", "--trace-dir", str(tmp_path / "cache")]) == 2  # nothing to measure: one-line error
