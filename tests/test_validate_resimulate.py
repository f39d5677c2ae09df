"""`python -m validate --resimulate`: the simulator's side of the shipped H200 replay, again.

The engine's rows were measured once on a GPU (docs/measured/h200-llama-2-7b/replay); the
simulator's side runs here, as a user would, and must give the error table the docs quote.
A change to the simulator that moves it shows here, and the docs' figures are made again.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAVED = ROOT / "docs" / "measured" / "h200-llama-2-7b" / "replay"
PROFILE = ROOT / "profiles" / "nvidia-h200-llama-2-7b-measured.json"


def _validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "validate", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_the_shipped_h200_replay_resimulates_to_the_quoted_errors(tmp_path):
    r = _validate("--resimulate", str(SAVED), "--profile", str(PROFILE), "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr[-2000:]
    got = pd.read_csv(tmp_path / "again" / "replay_errors.csv").set_index("policy")
    quoted = pd.read_csv(SAVED / "replay_errors.csv").set_index("policy")
    assert list(got.index) == ["full/fixed", "full/none", "progressive/fixed", "progressive/none"]
    pd.testing.assert_frame_equal(got, quoted, rtol=1e-9)
    assert (got["requests"] == 30).all() and "TTFT p50 err %" in r.stdout
    png = (tmp_path / "again" / "replay_ttft.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2_000
    # the engine's side is the saved one: the real figures are those of the run on the GPU
    as_run = pd.read_csv(SAVED / "as-run" / "replay_errors.csv").set_index("policy")
    for col in ("real_p50_s", "real_p90_s", "real_p99_s", "real_cold"):
        assert got[col].to_dict() == pytest.approx(as_run[col].to_dict())


def test_without_a_profile_the_saved_replay_profile_is_used_as_it_ran(tmp_path):
    r = _validate("--resimulate", str(SAVED), "--out", str(tmp_path / "as-ran"))
    assert r.returncode == 0, r.stderr[-2000:]
    got = pd.read_csv(tmp_path / "as-ran" / "replay_errors.csv").set_index("policy")
    as_run = pd.read_csv(SAVED / "as-run" / "replay_errors.csv").set_index("policy").loc[got.index]
    # today's simulator on the profile as it ran: the simulated p50s of that run
    assert got["sim_p50_s"].to_dict() == pytest.approx(as_run["sim_p50_s"].to_dict(), rel=1e-6)


def test_a_folder_without_engine_rows_is_one_line_of_error(tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(SAVED, bad)
    for f in bad.glob("real-*.csv"):
        f.unlink()
    r = _validate("--resimulate", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0
    assert "holds no real-*.csv" in r.stderr
    r = _validate("--resimulate", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "is not a saved replay" in r.stderr


@pytest.mark.parametrize("breakage", ["no ttl", "no capacity", "empty requests", "no ttft column"])
def test_a_damaged_saved_replay_is_one_line_naming_what_is_wrong(tmp_path, breakage):
    import json

    bad = tmp_path / "bad"
    shutil.copytree(SAVED, bad)
    details = json.loads((bad / "replay_details.json").read_text())
    if breakage == "no ttl":
        del details["ttl_s"]
    elif breakage == "no capacity":
        del details["capacity"]
    elif breakage == "empty requests":
        (bad / "requests.csv").write_text("")
    else:
        pd.read_csv(bad / "real-full-none.csv").drop(columns="ttft_s").to_csv(bad / "real-full-none.csv", index=False)
    (bad / "replay_details.json").write_text(json.dumps(details))
    r = _validate("--resimulate", str(bad), "--profile", str(PROFILE), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "unexpected" not in r.stderr
    expected = {"no ttl": "ttl_s", "no capacity": "capacity", "empty requests": "is not a saved replay",
                "no ttft column": "no column ttft_s"}[breakage]  # fmt: skip
    assert expected in r.stderr


def test_the_saved_replay_is_never_the_output(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(SAVED, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    r = _validate("--resimulate", str(copy), "--profile", str(PROFILE), "--out", str(copy))
    assert r.returncode != 0 and "the saved replay itself" in r.stderr
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before
