"""docs/traces.md stays true: its Python example runs and every option is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from traces.catalog import CatalogOptions
from traces.functions2019 import Azure2019Options
from traces.functions2021 import Azure2021Options
from traces.requests_trace import RequestsOptions

DOC = Path(__file__).resolve().parents[1] / "docs" / "traces.md"


def test_python_example_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PROGRESSIVE_SERVE_TRACES", raising=False)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})


@pytest.mark.parametrize("cls", [Azure2019Options, Azure2021Options, RequestsOptions, CatalogOptions])
def test_every_option_is_documented(cls):
    text = DOC.read_text()
    for f in dataclasses.fields(cls):
        assert f"`{f.name}`" in text, f.name
