"""Run the simulator through its command line, as a user would, on one policy combination.

The simulator is another package with its own CLI contract; calling it as a subprocess
(never importing its internals) means the replay checks exactly what `python -m sim`
does, and a change inside `sim` cannot silently bypass the check.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from validate.errors import ValidateError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def sim_cli_available() -> bool:
    """True when `python -m sim` exists in this installation."""
    try:
        return importlib.util.find_spec("sim.__main__") is not None
    except ImportError:
        return False


def sim_command(
    requests_csv: Path, profile: Path, staging: str, keepalive: str, out_dir: Path, seed: int = 0
) -> list[str]:
    """The exact argument list; kept separate so the report can print it."""
    return [
        sys.executable, "-m", "sim",
        "--trace", str(requests_csv),
        "--profile", str(profile),
        "--staging", staging,
        "--keepalive", keepalive,
        "--fidelity", "iteration",
        # the policies the real server implements (validate/replay/runner.py), named rather
        # than left to the simulator's defaults: the first GPU replay ran the simulator's
        # default router (expected_wait) against a least_loaded server
        "--router", "least_loaded",
        "--placement", "first_fit",
        "--prewarm", "none",
        "--admission", "always",
        "--nodes", "1",
        "--gpus-per-node", "1",
        "--seed", str(seed),
        "--out", str(out_dir),
    ]  # fmt: skip


def run_sim(
    requests_csv: Path,
    profile: Path,
    staging: str,
    keepalive: str,
    out_dir: Path,
    seed: int = 0,
    timeout_s: float = 600,
) -> pd.DataFrame:
    """The simulator's per-request frame for one staging x keep-alive combination."""
    if not sim_cli_available():
        raise ValidateError("the simulator's command line (python -m sim) is not installed in this checkout.")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = sim_command(requests_csv, profile, staging, keepalive, out_dir, seed)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=PROJECT_ROOT
        )
    except subprocess.TimeoutExpired:
        raise ValidateError(f"the simulator ran past {timeout_s:.0f} s on {staging}/{keepalive}.") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ValidateError(f"the simulator failed on {staging}/{keepalive}: {last}")
    path = out_dir / "requests.parquet"
    if not path.exists():
        raise ValidateError(f"the simulator wrote no {path} for {staging}/{keepalive}.")
    return pd.read_parquet(path)


def sim_refills(out_dir: Path) -> int:
    """The simulator's refills over every model (its `models.csv`); 0 when it wrote none."""
    path = out_dir / "models.csv"
    if not path.exists():
        return 0
    models = pd.read_csv(path)
    return int(models["refills"].sum()) if "refills" in models else 0
