"""Measure, then write what was measured: profile JSON, measurements JSON, report and plots.

Kept apart from the CLI so that the writing half can be re-run on a saved
`measurements.json` (and tested with hand-made numbers) without a device.
"""

from __future__ import annotations

import re

from validate.config import RunConfig
from validate.plots import write_plots
from validate.profile_writer import build_profile_dict, write_profile
from validate.report import render_report, write_report
from validate.results import Measurements


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def profile_name(m: Measurements) -> str:
    """e.g. 'nvidia-h100-80gb-hbm3-llama-2-7b-measured' or 'cpu-smollm2-135m-measured'."""
    device = "cpu" if m.device.get("kind") == "cpu" else slug(m.device.get("name", "gpu"))
    return f"{device}-{slug(m.model_name)}-measured"


def write_outputs(cfg: RunConfig, m: Measurements, replay_md: str | None = None) -> dict:
    """Profile (validated by sim.profile), measurements, plots and report under cfg.out; the profile dict."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    profile = build_profile_dict(m, profile_name(m), cfg.network_gbps)
    write_profile(profile, cfg.out / "profile.json")
    m.save(cfg.out / "measurements.json")
    write_report_and_plots(cfg, m, replay_md)
    return profile


def write_report_and_plots(cfg: RunConfig, m: Measurements, replay_md: str | None = None) -> None:
    plots = write_plots(m, cfg.out)
    write_report(render_report(m, "profile.json", plots, replay_md), cfg.out / "report.md")


def measure_and_write(cfg: RunConfig) -> tuple[Measurements, dict]:
    from validate.measure import run_measurements

    m = run_measurements(cfg)
    return m, write_outputs(cfg, m)
