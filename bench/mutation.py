"""Mutation testing of the simulator core, on demand (issue 13; not part of CI).

Runs mutmut (configured in pyproject.toml's [tool.mutmut]: which files it mutates and which
tests judge the mutants) on sim/serving.py, sim/lifecycle.py, sim/keeper.py (part of
lifecycle.py until session 6), sim/placing.py, sim/simulator.py and sim/flows.py, in a
copy of the working tree so that mutmut's `mutants/` folder never lands in the checkout,
then prints killed/survived/total per file and the score (killed + timeout over all mutants that ran).

    python bench/mutation.py                    # full run, 2 workers
    python bench/mutation.py --max-children 4
    python bench/mutation.py --workdir /tmp/mut --keep   # keep the copy to inspect survivors:
    cd /tmp/mut && mutmut show sim.serving.x_batch_loop__mutmut_12
    python bench/mutation.py 'sim.flows.*'      # only some mutants (mutmut's name patterns)

A rerun with the same --workdir reuses mutmut's cached results for unchanged code and tests.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import print_figures, slug

ROOT = Path(__file__).resolve().parent.parent
# What the tests need to import besides the mutated package (sim/ is copied whole by mutmut).
COPY = ["sim", "contracts", "policies", "profiles", "traces", "validate", "progressive_serve", "tests",
        "pyproject.toml"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "mutants")
LINE = re.compile(r"^\s*(sim\.\w+)\.(\S+)__mutmut_\d+: (.+)$")


def copy_tree(dst: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=IGNORE, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dst / name)


def mutmut(workdir: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    exe = shutil.which("mutmut", path=os.path.dirname(sys.executable)) or "mutmut"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([exe, *args], cwd=workdir, env=env, text=True, check=False,
                          capture_output=capture)


def tally(workdir: Path) -> dict[str, collections.Counter]:
    out = mutmut(workdir, "results", "--all", "true", capture=True)
    if out.returncode != 0:
        sys.exit(f"mutmut results failed:\n{out.stdout}\n{out.stderr}")
    per_file: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in out.stdout.splitlines():
        m = LINE.match(line)
        if m:
            per_file[m.group(1)][m.group(3).strip()] += 1
    return per_file


def report(per_file: dict[str, collections.Counter]) -> tuple[float, dict[str, object]]:
    """Print the table; (the score over every file, each file's counts and score as figures)."""
    total = collections.Counter()
    figures: dict[str, object] = {}
    print(f"\n{'module':<16} {'killed':>7} {'survived':>9} {'timeout':>8} {'other':>6} {'total':>6} {'score':>7}")
    for mod in sorted(per_file) + ["all"]:
        c = total if mod == "all" else per_file[mod]
        if mod != "all":
            total.update(c)
        killed, survived, timeout = c["killed"], c["survived"], c["timeout"]
        n = sum(c.values())
        other = n - killed - survived - timeout
        ran = killed + survived + timeout
        score = 100.0 * (killed + timeout) / ran if ran else 0.0
        print(f"{mod:<16} {killed:>7} {survived:>9} {timeout:>8} {other:>6} {n:>6} {score:>6.1f}%")
        figures.update({f"{slug(mod)}_killed": killed, f"{slug(mod)}_survived": survived,
                        f"{slug(mod)}_timeout": timeout, f"{slug(mod)}_score_pct": round(score, 1)})
    others = {k: v for k, v in total.items() if k not in ("killed", "survived", "timeout")}
    if others:
        print(f"other statuses: {dict(others)}")
    return score, figures  # the loop's last row is "all"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mutants", nargs="*", help="mutant name patterns to run (default: all)")
    ap.add_argument("--max-children", type=int, default=2, help="parallel test workers (default 2)")
    ap.add_argument("--workdir", type=Path, help="where to copy the tree and run (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (implied by --workdir)")
    ap.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    ap.add_argument("--min-score", type=float, default=None, help="exit 1 below this score (percent)")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mutation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    copy_tree(workdir)
    print(f"mutmut in {workdir}", flush=True)
    t0 = time.perf_counter()
    run = mutmut(workdir, "run", "--max-children", str(args.max_children), *args.mutants)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        print(f"mutmut run exited with {run.returncode}", file=sys.stderr)
    per_file = tally(workdir)
    score, figures = report(per_file)
    print(f"mutation score {score:.1f}%  (wall {wall:.0f} s)")
    if args.survivors:
        out = mutmut(workdir, "results", capture=True).stdout
        print("\nnot killed:\n" + out)
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"results kept in {workdir} (cd there; mutmut show NAME / mutmut browse)")
    print_figures({**figures, "wall_s": round(wall)})
    if run.returncode != 0:
        return run.returncode
    return 1 if args.min_score is not None and score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
