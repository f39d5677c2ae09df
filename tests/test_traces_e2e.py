"""The issue's "done when": `python -m sim` on the real sample names the real trace and its choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_traces_helpers import AF2019, need

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sim_runs_on_the_real_sample_and_names_it(tmp_path):
    folder = need(AF2019).parent
    if not (REPO / "sim" / "__main__.py").exists():
        pytest.skip("the simulator's CLI is not in this checkout")
    done = subprocess.run([sys.executable, "-m", "sim", "--trace", "azure_functions", "--trace-dir", str(folder),
                           "--duration", "3600", "--quiet", "--no-records", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith("trace: azure_functions_2019 (real: ") and "days d01" in first
    summary = (tmp_path / "summary.md").read_text()
    assert "trace.functions.how" in summary and "trace.tokens" in summary and "trace.invocations.in_files**: 1061" \
        in summary
