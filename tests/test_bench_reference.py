"""`bench/reference_mixes.py`: digests that tell one bit apart, a comparison that names what
moved, and a command that says so in its exit status."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_bench_figures import _module  # loads a bench script as a module

REPO = Path(__file__).resolve().parents[1]
ref = _module("reference_mixes")


def _digest(**changes) -> dict:
    base = {"records": 2, "cpu_s": 0.1, "records_digest": {"ttft_s": "a", "cold": "b"},
            "summary_digest": {"ttft_p99_s": "c"}, "models_digest": {"loads": "d"},
            "summary": [{"policy": "full + none", "ttft_p99_s": 1.5}]}
    return {**base, **changes}


def test_a_digest_tells_apart_one_bit_of_a_float_and_nan_from_none():
    x = 0.1 + 0.2
    a = ref.frame_digest(pd.DataFrame({"t": [x, 1.0]}))
    b = ref.frame_digest(pd.DataFrame({"t": [math.nextafter(x, 1.0), 1.0]}))  # the last bit
    assert a != b
    assert ref.frame_digest(pd.DataFrame({"t": [x, 1.0]})) == a  # and the same values, the same digest
    assert ref.frame_digest(pd.DataFrame({"s": ["x", None]})) != ref.frame_digest(pd.DataFrame({"s": ["x", "None"]}))
    assert ref.frame_digest(pd.DataFrame({"t": [1.0, 2.0]})) != ref.frame_digest(pd.DataFrame({"t": [2.0, 1.0]}))


def test_compare_names_the_columns_and_summary_cells_that_moved():
    old = {"m": _digest(), "same": _digest(), "gone": {"skipped": "absent"}}
    new = {"m": _digest(records_digest={"ttft_s": "A", "cold": "b"},
                        summary=[{"policy": "full + none", "ttft_p99_s": 1.75}]),
           "same": _digest(), "gone": _digest(), "fresh": _digest()}
    c = ref.compare(old, new)
    assert c.same == ["same"]
    assert set(c.unmatched) == {"gone", "fresh"}  # skipped on one side, or not in the old file
    assert c.differ["m"][0] == "records.ttft_s"
    assert "full + none: ttft_p99_s 1.5 -> 1.75" in c.differ["m"]
    # a column added or a record count changed is a difference too
    c = ref.compare({"m": _digest()}, {"m": _digest(records=3, models_digest={"loads": "d", "wakes": "e"})})
    assert c.differ["m"][:2] == ["records 2 -> 3", "models.wakes (added)"]


def test_a_changed_run_is_found_and_the_same_run_passes(tmp_path, monkeypatch, capsys):
    """The command end to end in this process on the cheapest mix: written, compared with itself
    (exit 0), then compared after the mix's seed changes under the same name (exit 1, named)."""
    out = tmp_path / "ref.json"
    assert ref.main(["--only", "default_trace", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())["mixes"]["default_trace"]
    assert saved["records"] > 100 and saved["summary"]
    assert ref.main(["--only", "default_trace", "--against", str(out)]) == 0
    assert "1 of 1 mixes give the same results" in capsys.readouterr().out
    changed = [ref.Mix("default_trace", {**ref.select("default_trace")[0].options, "seed": 1})]
    monkeypatch.setattr(ref, "mixes", lambda: changed)
    assert ref.main(["--only", "default_trace", "--against", str(out)]) == 1
    said = capsys.readouterr().out
    assert "DIFFERS default_trace:" in said and "records." in said
    assert said.strip().splitlines()[-1].endswith("differ=1")
    # a full run names a mix the file holds that is no longer in the set
    monkeypatch.setattr(ref, "mixes", lambda: [ref.Mix("default_trace", {"trace": "synthetic", "duration": 1800})])
    old = json.loads(out.read_text())
    old["mixes"]["renamed_away"] = old["mixes"]["default_trace"]
    out.write_text(json.dumps(old))
    assert ref.main(["--against", str(out)]) == 0
    assert "no longer a mix (renamed or removed): renamed_away" in capsys.readouterr().out


def test_errors_compare_by_message_and_twins_must_agree():
    c = ref.compare({"a": {"error": "x"}, "b": {"error": "x"}}, {"a": {"error": "y"}, "b": {"error": "x"}})
    assert c.same == ["b"] and c.differ["a"] == ["error 'x' -> 'y'"]
    chosen = [ref.Mix("base", {}), ref.Mix("twin", {}, twin_of="base")]
    same = {"base": _digest(cpu_s=1.0), "twin": _digest(cpu_s=2.0)}  # CPU time is not a result
    assert ref.twins_apart(chosen, same) == {}
    apart = ref.twins_apart(chosen, {**same, "twin": _digest(summary_digest={"ttft_p99_s": "C"})})
    assert apart == {"twin": ["summary.ttft_p99_s"]}
    assert ref.twins_apart(chosen, {"twin": _digest()}) == {}  # its twin did not run in this call


def test_the_python_batch_loops_twin_agrees_with_the_compiled_one(capsys):
    """A twin pair run for real: the exit status says they agree, the last line counts none apart."""
    code = ref.main(["--only", "busy_staging_keepalive,busy_python_batches"])
    said = capsys.readouterr().out
    assert code == 0 and "twins_apart=0" in said.strip().splitlines()[-1]


def test_walk_in_python_keeps_the_walk_in_python_and_puts_the_limits_back():
    from policies.ttft import TtftEstimator

    saved = TtftEstimator.compiled_min_candidates, TtftEstimator.compiled_min_gpus
    with pytest.raises(RuntimeError), ref.walk_in_python(True):
        assert TtftEstimator.compiled_min_candidates == TtftEstimator.compiled_min_gpus == sys.maxsize
        raise RuntimeError("a mix that fails")
    assert (TtftEstimator.compiled_min_candidates, TtftEstimator.compiled_min_gpus) == saved
    with ref.walk_in_python(False):
        assert (TtftEstimator.compiled_min_candidates, TtftEstimator.compiled_min_gpus) == saved


def test_the_packed_profile_shares_gpus_and_its_two_mixes_differ():
    """The packed mixes are the only ones that step co-located instances: their profile must let a
    GPU hold more instances than compute slots, and switching sharing off must change results."""
    from sim.config import SimConfig
    from sim.profile import load_profile
    from sim.simulator import gpus_can_be_shared

    profile = load_profile(ref.packed_profile())
    assert gpus_can_be_shared(profile, SimConfig())
    assert ref.packed_profile() == ref.packed_profile()  # one file, rewritten only if it changed
    shared, alone = (ref.run_mix(m) for m in ref.select("packed_time_slice,packed_no_sharing"))
    assert shared["records"] == alone["records"] > 1000
    assert shared["records_digest"]["ttft_s"] != alone["records_digest"]["ttft_s"]


def test_twins_are_refused_where_the_compiled_paths_cannot_run(monkeypatch, capsys):
    monkeypatch.setattr(ref, "compiled_paths_unready", lambda: "ImportError: no numba")
    assert ref.main(["--only", "day_walk_python"]) == 1
    assert "twins cannot be checked here: ImportError: no numba" in capsys.readouterr().err


def test_a_mix_whose_trace_files_are_absent_is_skipped(monkeypatch):
    monkeypatch.setattr(ref, "SHARED_TRACES", Path("/nonexistent/traces"))
    assert "skipped" in ref.run_mix(ref.Mix("x", {}, needs="burstgpt"))


def test_bad_inputs_give_one_line(tmp_path):
    with pytest.raises(SystemExit, match="unknown mix 'nope'"):
        ref.select("default_trace,nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  oops")
    with pytest.raises(SystemExit, match=r"bad.json: line 2: not JSON"):
        ref.read_digests(str(bad))
    bad.write_text("[]")
    with pytest.raises(SystemExit, match="not a digest file"):
        ref.read_digests(str(bad))
    with pytest.raises(SystemExit, match="no such file"):
        ref.read_digests(str(tmp_path / "none.json"))


def test_the_command_lists_its_mixes():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "bench/reference_mixes.py", "--list"], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == [m.name for m in ref.mixes()] and len(names) >= 30
    assert "day_walk_python" in names
