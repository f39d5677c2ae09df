"""`python -m sim sweep`: the spec, the combined table, resuming after SIGKILL, failure
isolation and Ray (skipped when Ray is not installed)."""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sim.sweep_report import mean_ci, pareto
from sim.sweep_spec import SpecError, load_sweep

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
CODE = ("contracts", "sim", "policies", "traces", "profiles")
OUTPUTS = ("sweep.csv", "sweep.md", "runs.csv", "pareto_ttft_p99_vs_gpu_memory.png",
           "pareto_slo_vs_gpu_memory.png", "pareto_quality_vs_ttft_p50.png")

FLAKY = '''
from policies import Keep, KeepAlivePolicy


class Flaky(KeepAlivePolicy):
    """Keeps an idle instance a minute; with fail=true its first idle instance raises."""

    name = "flaky"

    def __init__(self, fail: bool = False):
        self.fail = fail

    def on_idle(self, inst, now):
        if self.fail:
            raise RuntimeError("flaky by request")
        return [Keep("gpu", 60.0)]
'''

# 2 staging x 3 keep-alive x 2 cluster sizes x 2 seeds = 24 short runs; the keep-alive policy
# from a file raises in one configuration per staging and size.
SPEC = """
seeds = [0, 1]
duration = 600

[policies]
staging = ["full", "progressive"]
keepalive = ["fixed[ttl=60]", "flaky.py:Flaky", { name = "flaky.py:Flaky", fail = true }]

[cluster]
sizes = ["1x2", [1, 4]]

[[traces]]
name = "azure_functions"
"""


def write_spec(folder: Path, text: str = SPEC, name: str = "spec.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flaky.py").write_text(FLAKY)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def sweep(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", "sweep", *args], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def code_env(tmp_path_factory):
    """An environment running a frozen copy of the simulator's code: a run's fingerprint covers
    the code, which must not change between the runs a test compares (an edit in the working
    tree meanwhile would make every result new)."""
    code = tmp_path_factory.mktemp("code")
    for package in CODE:
        shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dict(ENV, PYTHONPATH=str(code))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, code_env):
    """The spec above swept once, uninterrupted, on a local pool of 2 processes."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_spec(folder)
    started = time.perf_counter()
    out = sweep(str(spec), "--out", "ref", "--jobs", "2", cwd=folder, env=code_env)
    return folder, spec, out, time.perf_counter() - started, code_env


# --- the spec ---------------------------------------------------------------------------------------

def test_spec_expands_the_grid(tmp_path):
    spec = write_spec(tmp_path, """
        seeds = 3
        [policies]
        staging = "full, progressive"
        keepalive = [{ name = "fixed", ttl = [60, 600] }, "two_tier"]
        prewarm = ["none", "popular[window=300]"]
        [cluster]
        nodes = [1, 2]
        gpus_per_node = 4
        storage = ["ssd", "remote"]
        [[traces]]
        name = "synthetic"
        duration = 120
        options = { functions = 4 }
        """)
    s = load_sweep(spec)
    assert s.seeds == [0, 1, 2]
    assert len(s.configs) == 2 * 3 * 2 * 2 * 2 and s.n_runs == 3 * len(s.configs)
    c = s.configs[0].columns()
    assert (c["staging"], c["keepalive"], c["prewarm"], c["nodes"], c["storage"]) == \
        ("full", "fixed[ttl=60.0]", "none", 1, "ssd")
    assert c["trace"] == "synthetic[functions=4]" and c["duration_s"] == 120
    assert {cf.labels[1][1] for cf in s.configs} == {"fixed[ttl=60.0]", "fixed[ttl=600.0]", "two_tier[gpu=120.0,dram=1800.0]"}
    # every run has its own fingerprint, and the same spec gives the same ones
    assert len({p.fingerprint for p in s.points}) == s.n_runs
    assert [p.fingerprint for p in load_sweep(spec).points] == [p.fingerprint for p in s.points]
    # --duration replaces the trace's duration, hence every fingerprint
    shorter = load_sweep(spec, duration=60)
    assert shorter.configs[0].trace.duration_s == 60
    assert not {p.fingerprint for p in shorter.points} & {p.fingerprint for p in s.points}


def test_spec_defaults_are_python_m_sim_defaults(tmp_path):
    import itertools

    from policies.registry import KINDS, split_specs
    from sim.cli import DEFAULT_POLICIES
    from sim.policyset import PolicySet

    s = load_sweep(write_spec(tmp_path, "duration = 60\n"))
    assert s.seeds == [0]
    lists = [split_specs(DEFAULT_POLICIES[kind]) for kind in KINDS]
    want = [PolicySet.from_specs(**dict(zip(KINDS, specs, strict=True))).label for specs in itertools.product(*lists)]
    assert [c.policy for c in s.configs] == want and len(want) > 1
    assert {(c.nodes, c.gpus_per_node, c.trace.spec) for c in s.configs} == {(2, 4, "azure_functions")}


def test_example_spec_is_valid():
    s = load_sweep(ROOT / "examples" / "sweep.toml")
    assert len(s.seeds) == 5
    assert {(c.nodes, c.gpus_per_node) for c in s.configs} == {(1, 4), (2, 4), (4, 4)}
    assert {c.trace.spec for c in s.configs} == {"azure_functions"}


def test_readme_spec_is_the_example():
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Sweeps"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert tomllib.loads(block) == tomllib.loads((ROOT / "examples" / "sweep.toml").read_text())


@pytest.mark.parametrize("text, key, words", [
    ("polices = {}", "polices", "did you mean 'policies'"),
    ("[policies]\nkeepalive = ['none', 'fxed']", "policies.keepalive[1]", "unknown keepalive policy 'fxed'"),
    ("[policies]\nkeepalive = 'fixed[ttl=abc]'", "policies.keepalive", "ttl"),
    ("[policies]\nstaging = [{ ttl = 3 }]", "policies.staging[0]", "name"),
    ("[policies]\nrouter = 'missing.py:R'", "policies.router", "not found"),
    ("seeds = 'abc'", "seeds", "seed"),
    ("seeds = [1, 1]", "seeds[1]", "twice"),
    ("duration = -5", "duration", "above 0"),
    ("[cluster]\nsizes = ['2by4']", "cluster.sizes[0]", "NODESxGPUS"),
    ("[cluster]\nsizes = ['0x4']", "cluster.sizes[0]", "at least 1 node"),
    ("[cluster]\nnodes = 2\nsizes = ['1x4']", "cluster.nodes", "not both"),
    ("[cluster]\nstorage = 'tape'", "cluster.storage", "ssd, remote"),
    ("[cluster]\nprofile = 'no-such-profile'", "cluster.profile", "not found"),
    ("[cluster]\nunknown_models = 'guess'", "cluster.unknown_models", "default, error"),
    ("[cluster]\nhook_timeout = -1", "cluster.hook_timeout", ">= 0"),
    ("[[traces]]\nname = 'azure_functions'\noptions = { bogus = 1 }", "traces[0]", "bogus"),
    ("[[traces]]\nname = 'no_such_trace'", "traces[0]", "unknown trace"),
    ("[[traces]]\nname = 'synthetic'\nspeed = 2", "traces[0].speed", "unknown key"),
    ("seeds = [0\n", "", "not valid TOML"),
    ("[policies]\nkeepalive = ['fixed', 'none', 'fixed']", "configurations 1 and 3", "listed twice"),
])
def test_bad_spec_is_one_line_naming_file_and_key(tmp_path, text, key, words):
    spec = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_sweep(spec)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{spec}: {key}")
    assert words in message


def test_yaml_spec(tmp_path):
    pytest.importorskip("yaml")
    spec = write_spec(tmp_path, "seeds: [3]\npolicies:\n  staging: [full]\n  keepalive: fixed\ncluster:\n  sizes: [1x4]\n",
                      name="spec.yaml")
    s = load_sweep(spec)
    assert [c.policy for c in s.configs] == ["full + fixed[ttl=600.0]"] and s.seeds == [3]
    bad = write_spec(tmp_path, "seeds: [3\n", name="bad.yml")
    with pytest.raises(SpecError, match=r"bad\.yml: line \d+: not valid YAML"):
        load_sweep(bad)


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    spec = write_spec(tmp_path, "[policies]\nkeepalive = 'fxed'\n")
    out = sweep(str(spec), "--out", "o", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "policies.keepalive" in out.stderr and str(spec) in out.stderr
    assert not (tmp_path / "o").exists()


# --- statistics -------------------------------------------------------------------------------------

def test_mean_and_student_t_interval():
    mean, ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert ci == pytest.approx(2.7764451 * math.sqrt(2.5 / 5), rel=1e-6)  # t(0.975, 4) * s / sqrt(n)
    assert math.isnan(mean_ci([7.0])[1]) and mean_ci([7.0])[0] == 7.0
    assert mean_ci([1.0, math.nan, 3.0])[0] == 2.0
    assert all(math.isnan(v) for v in mean_ci([]))


def test_pareto_front():
    pts = [(0, 1.0, 5.0), (1, 2.0, 3.0), (2, 2.0, 4.0), (3, 3.0, 1.0), (4, 4.0, 1.0), (5, 1.0, 5.0),
           (6, math.nan, 0.0)]
    assert pareto(pts, "low") == {0, 1, 3, 5}
    assert pareto(pts, "high") == {0, 5}


# --- end to end ---------------------------------------------------------------------------------------

def test_local_sweep_end_to_end(reference):
    folder, spec, out, _, env = reference
    assert out.returncode == 1, out.stderr  # one configuration per staging and size fails
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 8 of 24 runs failed") and "flaky[fail=True] failed in on_idle()" in last
    ref = folder / "ref"
    for name in OUTPUTS:
        assert (ref / name).stat().st_size > 0, name
    table = read_csv(ref / "sweep.csv")
    assert len(table) == 12
    ok = [r for r in table if r["keepalive"] != "flaky[fail=True]"]
    bad = [r for r in table if r["keepalive"] == "flaky[fail=True]"]
    assert len(bad) == 4 and all(r["seeds"] == "0" and r["failed"] == "2" for r in bad)
    assert all("RuntimeError: flaky by request" in r["error"] and r["ttft_p99_s"] == "" for r in bad)
    assert all(r["seeds"] == "2" and r["failed"] == "0" and r["error"] == "" for r in ok)
    assert all(float(r["ttft_p99_s_ci95"]) >= 0 and float(r["gpu_mem_gb_hours"]) > 0 for r in ok)
    assert any(r["pareto"] for r in ok) and not any(r["pareto"] for r in bad)
    runs = read_csv(ref / "runs.csv")
    assert len(runs) == 24 and sum(r["status"] == "failed" for r in runs) == 8
    assert len(list((ref / "runs").glob("*.json"))) == 24
    md = (ref / "sweep.md").read_text()
    assert "± " in md and "## Failed runs" in md
    # the mean and interval are those of the per-seed rows
    r0 = ok[0]
    seeds = [float(r["ttft_p99_s"]) for r in runs if r["config"] == r0["config"]]
    mean, ci = mean_ci(seeds)
    assert float(r0["ttft_p99_s"]) == pytest.approx(mean) and float(r0["ttft_p99_s_ci95"]) == pytest.approx(ci)

    # started again: every run has its result, nothing is simulated, the same table comes out
    before = (ref / "sweep.csv").read_bytes()
    again = sweep(str(spec), "--out", "ref", "--jobs", "2", "--quiet", cwd=folder, env=env)
    assert again.returncode == 1
    assert "24 of 24 runs already have results" in again.stdout and "executor" not in again.stdout
    assert (ref / "sweep.csv").read_bytes() == before


def test_a_run_is_what_python_m_sim_computes(reference, tmp_path):
    folder, env = reference[0], reference[4]
    cli = subprocess.run([sys.executable, "-m", "sim", "--duration", "600", "--seed", "1", "--staging", "progressive",
                          "--keepalive", "fixed[ttl=60]", "--nodes", "1", "--gpus-per-node", "4", "--quiet",
                          "--no-records", "--out", str(tmp_path / "cli")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    want = read_csv(tmp_path / "cli" / "summary.csv")[0]
    got = next(r for r in read_csv(folder / "ref" / "runs.csv")
               if r["staging"].startswith("progressive") and r["keepalive"] == "fixed[ttl=60.0]"
               and r["gpus_per_node"] == "4" and r["seed"] == "1")
    for key, value in want.items():
        if key not in ("policy", "fidelity", "id", "rank", "pareto"):  # the CLI's ranking columns
            assert got[key] == value, key
    assert got["fidelity_served"] == want["fidelity"]


def _results(folder: Path) -> int:
    runs = folder / "runs"
    return len(list(runs.glob("*.json"))) if runs.is_dir() else 0


def test_resume_after_sigkill_loses_nothing(reference):
    """Kill the sweep (SIGKILL; once SIGTERM) at seeded random moments, start it again each
    time, and compare the final files with the uninterrupted sweep's, byte for byte. Every
    third kill comes at a random moment of the whole command (start-up, runs, tables and
    plots); the others just after a random number of new results, while runs are in flight."""
    folder, spec, _, wall, env = reference
    out = folder / "killed"
    rng = random.Random(20261129)
    midway = 0
    for attempt in range(7):
        before = _results(out)
        proc = subprocess.Popen([sys.executable, "-m", "sim", "sweep", str(spec), "--out", "killed", "--jobs", "2",
                                 "--quiet"], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        if attempt % 3 == 0:
            time.sleep(rng.uniform(0.0, 1.1) * wall)
        else:
            wanted, delay = before + rng.randint(1, 4), rng.uniform(0.0, 0.05)
            while proc.poll() is None and _results(out) < wanted:
                time.sleep(0.005)
            time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if attempt == 2 else signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 143:
            assert err.strip().count("\n") == 0 and "run the same command again" in err
        midway += proc.returncode in (-9, 143) and 0 < _results(out) < 24
        time.sleep(0.3)  # the pool's orphans notice their driver is gone and leave
    assert midway >= 2
    final = sweep(str(spec), "--out", "killed", "--jobs", "2", "--quiet", cwd=folder, env=env)
    assert final.returncode == 1, final.stderr
    assert not list(out.rglob(".*.tmp"))
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (folder / "ref" / name).read_bytes(), name


def test_ray_executor_gives_the_same_table(reference):
    pytest.importorskip("ray")
    folder, spec, _, _, env = reference
    out = sweep(str(spec), "--out", "ray", "--executor", "ray", "--jobs", "2", "--quiet", cwd=folder, env=env,
                timeout=300)
    assert out.returncode == 1, out.stderr
    assert "local Ray instance, 2 CPUs" in out.stdout
    for name in ("sweep.csv", "sweep.md", "runs.csv"):
        assert (folder / "ray" / name).read_bytes() == (folder / "ref" / name).read_bytes(), name
