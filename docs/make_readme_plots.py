"""Regenerate the two plots README "Reading the results" shows (docs/img/).

    python docs/make_readme_plots.py

It runs the command's default comparison with the keep-alive policies the README discusses
on ten minutes of the calibrated synthetic trace (`from sim import run`, into a temporary
folder) and copies two of the plots it writes. Deterministic: the same code gives the same
PNGs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sim import run

IMG = Path(__file__).resolve().parent / "img"
OPTIONS = {"trace": "azure_functions", "duration": 600, "keepalive": "none,fixed,two_tier", "no_records": True}


def main() -> None:
    IMG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(out=Path(tmp) / "run", **OPTIONS)
        for name in ("pareto.png", "ttft_cdf.png"):
            shutil.copyfile(res.out / name, IMG / name)
        print(res)


if __name__ == "__main__":
    main()
