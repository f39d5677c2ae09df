"""Interrupted and repeated runs of `python -m sim` (issue 14).

Every output appears under its final name only when complete; run.json records the run;
SIGINT/SIGTERM leave a marked partial run, exit 130/143 with one line; SIGKILL anywhere
followed by `--resume` gives the uninterrupted run's files byte for byte; --out on another
run's results, a file or an unwritable place is refused (exit 2, one line) before anything
is simulated.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.atomic import is_temp_name
from sim.interrupt import Interrupted, SignalGuard
from sim.records import RecordWriter, RequestRecord, concat_records

REPO = Path(__file__).resolve().parents[1]
COMBOS = ["--staging", "full,progressive", "--keepalive", "none,fixed"]
LABELS = [
    "full + none",
    "full + fixed[ttl=600.0]",
    "progressive[fractions=0.75/0.875/1.0] + none",
    "progressive[fractions=0.75/0.875/1.0] + fixed[ttl=600.0]",
]
OUTPUTS = ("summary.csv", "summary.md", "models.csv", "requests.parquet", "ttft_cdf.png", "gpu_memory.png",
           "pareto.png", "per_model.png", "quality_over_time.png", "report.html")
KILL_SEED = 14
N_KILL_REQUESTS = 1000
N_SMALL = 60

SLOW_POLICY = '''
import os
import time
from pathlib import Path

from policies import KeepAlivePolicy


class Slow(KeepAlivePolicy):
    """Keeps an idle instance for 60 s. With $SLOW_MARKER set, each call touches that file
    and takes a second, so a test can signal the run while this combination is going."""

    name = "slow"

    def on_idle(self, inst, now):
        marker = os.environ.get("SLOW_MARKER")
        if marker:
            Path(marker).touch()
            time.sleep(1.0)
        return [("gpu", 60.0)]
'''


def write_trace(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = ["arrival_s,model,prompt_tokens,output_tokens"]
    t = 0.0
    for _ in range(n):
        t += rng.expovariate(2.0)
        lines.append(f"{t:.3f},m{rng.randrange(5)},{rng.randrange(50, 800)},{rng.randrange(5, 150)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SLOW_MARKER", None)
    env.update(extra or {})
    return env


def run_sim(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=REPO,
                          env=_env(env), timeout=timeout)


def start_sim(*args: str, env: dict | None = None, capture: bool = True) -> subprocess.Popen:
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "sim", *args], stdout=pipe, stderr=pipe, text=True,
                            cwd=REPO, env=_env(env))


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0, step: float = 0.005) -> bool:
    """Poll `condition` until it holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(step)
    raise AssertionError("timed out waiting for the run")


def manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def done_count(out: Path) -> int:
    try:
        return sum(c["status"] == "done" for c in manifest(out)["combinations"])
    except (OSError, ValueError, KeyError):
        return 0


def assert_readable(out: Path) -> None:
    """Every file under its final name in `out` is whole; only .NAME.tmp files may be partial."""
    for p in sorted(out.rglob("*")):
        if p.is_dir() or is_temp_name(p.name):
            continue
        if p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            rows = list(csv.reader(p.read_text().splitlines()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), p
        elif p.suffix == ".png":
            data = p.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), p
        elif p.suffix == ".md":
            assert p.read_text().endswith("\n"), p
        elif p.suffix == ".html":
            assert p.read_text().endswith("</html>\n"), p
        else:
            raise AssertionError(f"unexpected file {p}")


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def kill_trace(tmp_path_factory) -> Path:
    return write_trace(tmp_path_factory.mktemp("trace") / "requests.csv", N_KILL_REQUESTS, seed=3)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> Path:
    return write_trace(tmp_path_factory.mktemp("small") / "small.csv", N_SMALL, seed=5)


@pytest.fixture(scope="module")
def slow_policy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policies") / "slow_policy.py"
    path.write_text(SLOW_POLICY)
    return path


def slow_args(trace: Path, policy: Path, out: Path | None) -> list[str]:
    """One fast combination, then one with the Slow policy."""
    args = ["--trace", str(trace), "--staging", "full", "--keepalive", f"none,{policy}:Slow", "--quiet"]
    return args + (["--out", str(out)] if out is not None else [])


@pytest.fixture(scope="module")
def slow_reference(small_trace, slow_policy, tmp_path_factory) -> Path:
    """The slow-policy run uninterrupted (and not slow: no $SLOW_MARKER)."""
    out = tmp_path_factory.mktemp("slow_reference") / "out"
    done = run_sim(*slow_args(small_trace, slow_policy, out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def reference(kill_trace, tmp_path_factory) -> tuple[Path, float]:
    """The uninterrupted run, and how long it took."""
    out = tmp_path_factory.mktemp("reference") / "out"
    started = time.monotonic()
    done = run_sim("--trace", str(kill_trace), *COMBOS, "--quiet", "--out", str(out))
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    return out, wall


# --- the manifest and atomic outputs -------------------------------------------------------------

def test_a_complete_run_has_a_manifest_and_nothing_else(reference, kill_trace):
    out, _ = reference
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "run.json"])
    m = manifest(out)
    assert m["status"] == "complete" and m["seed"] == 0
    assert m["command"][:3] == ["python", "-m", "sim"] and str(kill_trace) in m["command"]
    assert {"python", "numpy", "pyarrow", "simpy"} <= set(m["versions"])
    inputs = m["inputs"]
    assert inputs["trace"]["files"][0]["size"] == kill_trace.stat().st_size
    assert len(inputs["profile"]["sha256"]) == 64 and len(m["code"]) == 64
    assert all(c["code"] == m["code"] for c in m["combinations"])
    assert [c["label"] for c in m["combinations"]] == LABELS
    assert all(c["status"] == "done" and c["records"] == N_KILL_REQUESTS for c in m["combinations"])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    for c, row in zip(m["combinations"], rows, strict=True):
        assert c["summary"]["policy"] == row["policy"] and str(c["summary"]["requests"]) == row["requests"]
    assert pq.read_table(out / "requests.parquet").num_rows == N_KILL_REQUESTS * len(LABELS)


def test_resuming_a_complete_run_changes_nothing(reference, kill_trace):
    out, _ = reference
    before = {name: (out / name).read_bytes() for name in [*OUTPUTS, "run.json"]}
    done = run_sim("--trace", str(kill_trace), *COMBOS, "--quiet", "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert "nothing to simulate" in done.stdout and all(label in done.stdout for label in LABELS)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_concat_records_gives_the_file_one_writer_would_have(tmp_path):
    def rec(i: int, policy: str) -> RequestRecord:
        return RequestRecord.rejection(policy=policy, request_id=i, model="m", function="f", arrival_s=float(i),
                                       prompt_tokens=1, output_tokens=2, reason="r")

    with RecordWriter(tmp_path / "one.parquet", chunk_rows=8) as w:
        for p in ("a", "b", "c"):
            for i in range(13):
                w.write(rec(i, p))
    parts = []
    for p in ("a", "b", "c"):
        with RecordWriter(tmp_path / f"{p}.parquet", chunk_rows=5) as w:
            for i in range(13):
                w.write(rec(i, p))
        parts.append(w.path)
    assert concat_records(parts, tmp_path / "joined.parquet", chunk_rows=8) == 39
    assert (tmp_path / "joined.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()


def test_record_writer_shows_nothing_under_the_final_name_until_closed(tmp_path):
    path = tmp_path / "r.parquet"
    w = RecordWriter(path, chunk_rows=2)
    for i in range(5):
        w.write(RequestRecord.rejection(policy="p", request_id=i, model="m", function="f", arrival_s=0.0,
                                        prompt_tokens=1, output_tokens=1, reason="r"))
    assert not path.exists() and w.tmp_path.exists()
    # A write() cut short between its appends (a signal) leaves a longer first column: ignored.
    w._cols[0].append("half a record")
    w.close()
    assert pq.read_table(path).num_rows == 5 and not w.tmp_path.exists()
    with pytest.raises(RuntimeError), RecordWriter(tmp_path / "failed.parquet") as w2:
        raise RuntimeError("boom")
    assert not (tmp_path / "failed.parquet").exists() and not w2.tmp_path.exists()


def test_signal_guard_holds_a_signal_in_a_critical_section():
    guard = SignalGuard()
    guard.install()
    try:
        with pytest.raises(Interrupted) as caught:
            with guard.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
                reached = True  # the section runs to its end
        assert reached and caught.value.exit_code == 143 and not caught.value.forced
        second = SignalGuard()
        second.install()
        with pytest.raises(Interrupted) as caught, second.critical():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # insisting: raised inside the section
            time.sleep(0.01)
            pytest.fail("a second signal must not wait for the section to end")
        assert caught.value.forced and caught.value.exit_code == 130
        second.restore()
    finally:
        guard.restore()


# --- SIGKILL, then --resume --------------------------------------------------------------------

def _kill_run(proc: subprocess.Popen, out: Path, kind: str, value: float, rng: random.Random) -> str:
    """SIGKILL `proc` at a kill point; says where it landed."""
    if kind == "time":
        try:
            proc.wait(timeout=value)
            return "finished first"
        except subprocess.TimeoutExpired:
            pass
    elif kind == "combo":  # while combination `value` runs (its records file is open)
        if not wait_for(lambda: (out / "parts" / f".{value:03d}.parquet.tmp").exists(), proc):
            return "finished first"
        time.sleep(rng.uniform(0.0, 0.1))
    elif kind == "final":  # while the summaries and requests.parquet are being written
        if not wait_for(lambda: any((out / n).exists() or (out / f".{n}.tmp").exists() for n in OUTPUTS), proc,
                        step=0.001):
            return "finished first"
    proc.kill()
    proc.wait()
    return f"killed with {done_count(out)} combinations done" + (
        f", {len(list((out / 'parts').glob('.*.tmp')))} being written" if (out / "parts").is_dir() else "")


def test_sigkill_at_random_points_then_resume_gives_the_same_files(reference, kill_trace, tmp_path):
    ref, wall = reference
    rng = random.Random(KILL_SEED)
    args = ["--trace", str(kill_trace), *COMBOS, "--quiet"]
    points = [("time", rng.uniform(0.1, 1.0) * wall) for _ in range(3)]
    points += [("combo", 2), ("final", 0)]
    landed = []
    for k, (kind, value) in enumerate(points):
        out = tmp_path / f"run{k}"
        proc = start_sim(*args, "--out", str(out), capture=False)
        landed.append(_kill_run(proc, out, kind, value, rng))
        if out.exists():
            assert_readable(out)
            assert not (out / "requests.parquet").exists() or manifest(out)["status"] in ("running", "complete")
        done = run_sim(*args, "--out", str(out), "--resume")
        assert done.returncode == 0, (kind, value, done.stderr)
        for name in OUTPUTS:
            assert (out / name).read_bytes() == (ref / name).read_bytes(), (kind, value, landed[-1], name)
        assert manifest(out)["status"] == "complete" and not (out / "parts").exists()
    print("kill points:", list(zip(points, landed, strict=True)))
    assert sum(s.startswith("killed") for s in landed) >= 3, landed


def test_killed_again_and_again_then_resumed(reference, kill_trace, tmp_path):
    """Three SIGKILLs in a row, each run resuming the last, then one that finishes."""
    ref, wall = reference
    rng = random.Random(KILL_SEED + 1)
    out = tmp_path / "out"
    args = ["--trace", str(kill_trace), *COMBOS, "--quiet", "--out", str(out), "--resume"]
    for _ in range(3):
        proc = start_sim(*args, capture=False)
        _kill_run(proc, out, "time", rng.uniform(0.3, 0.9) * wall, rng)
        if out.exists():
            assert_readable(out)
    done = run_sim(*args)
    assert done.returncode == 0, done.stderr
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


# --- SIGINT and SIGTERM ------------------------------------------------------------------------

def _interrupt(args: list[str], marker: Path, signals: list[signal.Signals]) -> subprocess.CompletedProcess:
    proc = start_sim(*args, env={"SLOW_MARKER": str(marker)})
    assert wait_for(marker.exists, proc), proc.communicate()
    time.sleep(0.3)  # some of the slow combination's requests are done
    for s in signals:
        if proc.poll() is None:
            proc.send_signal(s)
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_leaves_a_marked_partial_run(small_trace, slow_policy, slow_reference, tmp_path, sig, code):
    out = tmp_path / "out"
    args = slow_args(small_trace, slow_policy, out)
    done = _interrupt(args, tmp_path / "marker", [sig])
    assert done.returncode == code, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(f"interrupted by {sig.name} during combination 2 of 2 (full + slow)"), line
    assert "--resume" in line and str(out) in line
    assert "full + none " in done.stdout and "full + slow " not in done.stdout

    assert_readable(out)
    m = manifest(out)
    assert m["status"] == "interrupted" and sig.name in m["message"]
    assert [c["status"] for c in m["combinations"]] == ["done", "partial"]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["policy"] for r in rows] == ["full + none"]
    assert "partial" in (out / "summary.md").read_text()
    assert not (out / "requests.parquet").exists()
    partial = out / "requests.partial.parquet"
    assert pq.read_metadata(partial).metadata[b"progressive_serve.status"] == b"partial"
    counts = pq.read_table(partial).to_pandas()["policy"].value_counts().to_dict()
    assert counts["full + none"] == N_SMALL
    assert 0 < counts.get("full + slow", 0) < N_SMALL, counts
    assert m["combinations"][1]["records"] == counts["full + slow"]

    # Finishing it (without the slowness) gives what an uninterrupted run gives. A combination
    # kept from other simulator code is kept, and said so.
    m["combinations"][0]["code"] = "0" * 64
    (out / "run.json").write_text(json.dumps(m))
    resumed = run_sim(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: 1 of 2 combinations done" in resumed.stdout
    assert "1 of them ran on other simulator code" in resumed.stdout
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (slow_reference / name).read_bytes(), name
    assert not partial.exists() and manifest(out)["status"] == "complete"


def test_a_second_signal_stops_at_once_and_the_run_still_resumes(small_trace, slow_policy, tmp_path):
    out = tmp_path / "out"
    args = slow_args(small_trace, slow_policy, out)
    done = _interrupt(args, tmp_path / "marker", [signal.SIGINT, signal.SIGINT])
    assert done.returncode == 130
    assert one_line(done.stderr).startswith("interrupted by SIGINT")
    assert_readable(out)
    resumed = run_sim(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert manifest(out)["status"] == "complete"


def test_sigint_without_out_prints_the_finished_combinations(small_trace, slow_policy, tmp_path):
    args = slow_args(small_trace, slow_policy, None)
    done = _interrupt(args, tmp_path / "marker", [signal.SIGINT])
    assert done.returncode == 130
    assert one_line(done.stderr).startswith("interrupted by SIGINT during combination 2 of 2")
    assert "full + none " in done.stdout


# --- refusing --out ------------------------------------------------------------------------------

def main_in_process(capsys, *args: str) -> tuple[int, str, str]:
    from sim.cli import main

    code = main([*args, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_out_holding_another_run_is_refused(capsys, small_trace, tmp_path):
    (tmp_path / "summary.csv").write_text("policy\nold\n")
    code, out, err = main_in_process(capsys, "--trace", str(small_trace), "--out", str(tmp_path))
    assert code == 2 and not out
    line = one_line(err)
    assert "summary.csv" in line and "--resume" in line and "--overwrite" in line
    assert (tmp_path / "summary.csv").read_text() == "policy\nold\n"
    # --resume needs a run.json to know what was done
    code, _, err = main_in_process(capsys, "--trace", str(small_trace), "--out", str(tmp_path), "--resume")
    assert code == 2 and "run.json" in one_line(err)
    (tmp_path / "run.json").write_text("{not json")
    code, _, err = main_in_process(capsys, "--trace", str(small_trace), "--out", str(tmp_path), "--resume")
    assert code == 2 and "run.json" in one_line(err)


def test_resume_with_other_inputs_is_refused(capsys, small_trace, tmp_path):
    args = ["--trace", str(small_trace), "--staging", "full", "--keepalive", "none", "--out", str(tmp_path)]
    assert main_in_process(capsys, *args)[0] == 0
    code, out, err = main_in_process(capsys, *args, "--resume", "--seed", "7")
    assert code == 2 and not out
    line = one_line(err)
    assert "seed: 0 there, 7 now" in line and "--overwrite" in line


def test_overwrite_replaces_only_the_runs_files(capsys, small_trace, tmp_path):
    (tmp_path / "summary.csv").write_text("policy\nold\n")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "000.parquet").write_bytes(b"PAR1 truncated")
    (tmp_path / ".summary.md.tmp").write_text("half")
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = main_in_process(capsys, "--trace", str(small_trace), "--staging", "full", "--keepalive", "none",
                                   "--out", str(tmp_path), "--overwrite")
    assert code == 0, err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert "full + none" in (tmp_path / "summary.csv").read_text()
    assert not (tmp_path / "parts").exists() and not (tmp_path / ".summary.md.tmp").exists()
    assert_readable_except(tmp_path, "notes.txt")


def assert_readable_except(out: Path, *names: str) -> None:
    for name in names:
        (out / name).unlink()
    assert_readable(out)


def test_out_on_a_file_or_under_one_is_refused_before_simulating(small_trace, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        started = time.monotonic()
        done = run_sim("--trace", str(small_trace), "--no-records", "--quiet", "--out", str(out))
        assert done.returncode == 2 and not done.stdout, done.stdout
        assert str(afile) in one_line(done.stderr)
        assert time.monotonic() - started < 60
    assert afile.read_text() == "x"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder no one can write)")
def test_out_on_a_read_only_folder_is_refused(capsys, small_trace):
    code, out, err = main_in_process(capsys, "--trace", str(small_trace), "--out", "/proc")
    assert code == 2 and not out and "not writable" in one_line(err)
    code, out, err = main_in_process(capsys, "--trace", str(small_trace), "--out", "/proc/no/such/place")
    assert code == 2 and not out and "/proc/no/such/place" in one_line(err)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_on_a_chmod_read_only_folder_is_refused(capsys, small_trace, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = main_in_process(capsys, "--trace", str(small_trace), "--out", str(ro / "run"))
        assert code == 2 and str(ro) in one_line(err)
        code, _, err = main_in_process(capsys, "--trace", str(small_trace), "--out", str(ro))
        assert code == 2 and "not writable" in one_line(err)
    finally:
        ro.chmod(0o755)


# --- other bad arguments -----------------------------------------------------------------------

@pytest.mark.parametrize("duration", ["inf", "nan", "-5", "0", "1e12"])
def test_bad_duration_is_one_line(capsys, small_trace, duration):
    code, out, err = main_in_process(capsys, "--trace", str(small_trace), "--duration", duration)
    assert code == 2 and not out
    assert "--duration" in one_line(err)


@pytest.mark.parametrize("args, words", [
    (["--nodes", "two"], ["--nodes", "two"]),
    (["--resume", "--overwrite", "--out", "x"], ["--overwrite", "--resume"]),
    (["--resume"], ["--resume", "--out"]),
])
def test_bad_arguments_are_one_line(capsys, small_trace, args, words):
    try:
        code, out, err = main_in_process(capsys, "--trace", str(small_trace), *args)
    except SystemExit as e:  # argparse exits by itself
        code, captured = e.code, capsys.readouterr()
        out, err = captured.out, captured.err
    assert code == 2 and not out
    line = one_line(err)
    for word in words:
        assert word in line, line


@pytest.mark.skipif(os.name != "posix", reason="folder locks are POSIX flock")
def test_out_in_use_by_a_running_simulation_is_refused(capsys, small_trace, tmp_path):
    import fcntl

    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run going on there holds it
        code, out, err = main_in_process(capsys, "--trace", str(small_trace), "--out", str(tmp_path), "--resume")
        assert code == 2 and not out and "in use" in one_line(err)
    finally:
        os.close(fd)
    code, _, err = main_in_process(capsys, "--trace", str(small_trace), "--staging", "full", "--keepalive", "none",
                                   "--out", str(tmp_path), "--resume")
    assert code == 0, err
