"""`--help` lists every built-in with its parameters, and what it lists loads as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from policies.registry import KINDS, described, load_policy, names

ROOT = Path(__file__).resolve().parents[1]


def test_every_described_builtin_loads_back_as_written():
    for kind in KINDS:
        specs = described(kind)
        assert len(specs) == len(names(kind))
        for spec in specs:
            policy = load_policy(kind, spec)
            assert policy.name == spec.split("[")[0]


def test_help_shows_parameters():
    out = subprocess.run([sys.executable, "-m", "sim", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    flat = " ".join(out.split())
    assert "fixed[ttl=600]" in flat and "max_queue[depth=64]" in flat and "expected_wait" in flat
