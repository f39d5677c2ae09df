"""Measure the statistics that drive the synthetic generator, from whatever real files exist.

Every number written carries its `source`: "measured from <file>" when the files at hand
hold enough data (at least `min_functions` functions, `min_invocations` invocations),
otherwise the figure the ATC'20 paper publishes (Shahrad et al., "Serverless in the
Wild", USENIX ATC 2020), with the measured value kept beside it for comparison. Only these
numbers are committed, never trace rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from traces import paper
from traces.azure2019 import read_durations, read_invocations, read_memory
from traces.calibration import published
from traces.errors import Issues
from traces.llm import read_azure_llm

MAX_CV_INVOCATIONS = 1_000_000  # busier function-days are left out of the CV (sorting cost); few are
PROBS = [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]


def _q(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(np.asarray(values, float), PROBS)]


def iat_cv(counts: np.ndarray, rng: np.random.Generator) -> float | None:
    """CV of inter-arrival times of one function-day, arrivals spread uniformly in their minute
    (None below 3 or above MAX_CV_INVOCATIONS invocations)."""
    busy = np.flatnonzero(counts)
    if not 3 <= counts.sum() <= MAX_CV_INVOCATIONS:
        return None
    t = np.sort(np.repeat(busy * 60.0, counts[busy]) + rng.random(int(counts.sum())) * 60.0)
    gaps = np.diff(t)
    return float(gaps.std() / gaps.mean())


def measure_invocations(files: list[Path], issues: Issues) -> dict:
    """Per-function daily totals, IAT CVs, hourly shape and trigger shares of day files."""
    totals: dict[tuple, int] = {}
    triggers: dict[tuple, str] = {}
    by_trigger: dict[str, int] = {}
    cvs: list[float] = []
    hourly = np.zeros(24)
    rng = np.random.default_rng(0)
    for path in files:
        for row in read_invocations(path, issues):
            totals[row.key] = totals.get(row.key, 0) + row.total
            triggers[row.key] = row.trigger
            by_trigger[row.trigger] = by_trigger.get(row.trigger, 0) + row.total
            hourly += row.counts.reshape(24, 60).sum(axis=1)
            cv = iat_cv(row.counts, rng)
            if cv is not None:
                cvs.append(cv)
    daily = np.array(list(totals.values()), float) / max(len(files), 1)
    trig = list(triggers.values())
    n_inv = int(sum(totals.values()))
    apps: dict[tuple, int] = {}
    for key in totals:  # key = (owner, app, function)
        apps[key[:-1]] = apps.get(key[:-1], 0) + 1
    return {"daily": daily, "cvs": np.array(cvs), "hourly": hourly, "n_inv": n_inv,
            "triggers": {t: trig.count(t) / len(trig) for t in sorted(set(trig))} if trig else {},
            "trigger_invocations": {t: by_trigger[t] / n_inv for t in sorted(by_trigger)} if n_inv else {},
            "functions_per_app": sorted(apps.values())}


def measure_tokens(path: Path) -> dict:
    """Quantile tables and normal-score rank correlation of an Azure LLM trace's token counts."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    rows = [p for _, _, p in read_azure_llm(path, "m", Issues())]
    prompt = np.array([r[1] for r in rows], float)
    output = np.array([r[2] for r in rows], float)
    keep = (prompt > 0) & (output > 0)
    prompt, output = prompt[keep], output[keep]
    n = len(prompt)
    z1, z2 = ndtri(rankdata(prompt) / (n + 1)), ndtri(rankdata(output) / (n + 1))
    src = f"measured from {path.name} ({n} requests with prompt and output > 0)"
    return {"probs": {"value": PROBS, "source": "quantile levels"},
            "prompt_quantiles": {"value": _q(prompt), "source": src},
            "output_quantiles": {"value": _q(output), "source": src},
            "rank_correlation_normal_scores": {"value": round(float(np.corrcoef(z1, z2)[0, 1]), 4), "source": src}}


def _names(files: list[Path]) -> str:
    return ", ".join(p.name for p in files)


def calibration(invocations: list[Path], durations: list[Path] = (), memory: list[Path] = (),
                conv: Path | None = None, code: Path | None = None, *, min_functions: int = 1000,
                min_invocations: int = 100_000) -> dict:
    """Build the calibration dictionary (see the module docstring for the source rule)."""
    inv = measure_invocations(list(invocations), Issues()) if invocations else None
    enough = inv is not None and len(inv["daily"]) >= min_functions and inv["n_inv"] >= min_invocations
    src = f"measured from {_names(list(invocations))}" if inv else ""
    out: dict = {"schema": 1, "units": "daily counts in invocations/day; durations in s; memory in MB",
                 "quantile_probs": PROBS}

    if enough:
        out["daily_invocations"] = {"value": _q(inv["daily"]), "source": src}
    else:
        out["daily_invocations"] = {"value": paper.quantiles_from_cdf(paper.DAILY_INVOCATIONS_CDF, PROBS),
                                    "cdf_points": paper.DAILY_INVOCATIONS_CDF, "source": paper.DAILY_INVOCATIONS_SOURCE}
    if inv is not None:
        out["daily_invocations"]["measured_sample"] = {
            "value": sorted(int(v) for v in inv["daily"]), "source": f"{src} ({len(inv['daily'])} functions)"}

    if enough:
        cvs = inv["cvs"]
        bursty = np.log(cvs[cvs >= 0.2])
        out["periodic_share"] = {"value": float(np.mean(cvs < 0.2)), "source": src + " (share with IAT CV < 0.2)"}
        out["cv_lognormal"] = {"mu": float(bursty.mean()), "sigma": float(bursty.std(ddof=1)),
                               "source": src + ": log of IAT CV >= 0.2 of functions with >= 3 invocations"}
    else:
        p0, mu, sigma = paper.cv_model()
        out["periodic_share"] = {"value": p0, "source": paper.IAT_CV_SOURCE + ": the CDF's mass at CV 0"}
        out["cv_lognormal"] = {"mu": round(mu, 4), "sigma": round(sigma, 4), "cdf_points": paper.IAT_CV_CDF,
                               "source": paper.IAT_CV_SOURCE + ": a log-normal fitted (least squares on normal "
                                         "scores) to the CDF above CV 0, from CV 0.25 to 10; per application in "
                                         "the paper, used per function here"}
    if inv is not None and len(inv["cvs"]):
        out["cv_lognormal"]["measured_sample"] = {
            "value": [round(float(c), 3) for c in inv["cvs"]],
            "source": f"{src}: IAT CV per function with >= 3 invocations, arrivals spread uniformly within "
                      "their minute (seed 0)"}

    if enough:
        out["diurnal_hourly"] = {"value": [float(v) for v in inv["hourly"] / inv["hourly"].mean()], "source": src}
    else:
        out["diurnal_hourly"] = {"value": paper.DIURNAL_HOURLY, "source": paper.DIURNAL_SOURCE}
        if inv is not None:
            out["diurnal_hourly"]["measured_sample"] = {"value": inv["hourly"].astype(int).tolist(),
                                                        "source": f"{src} (hourly invocation totals, unused)"}
    out["trigger_shares"] = {"value": paper.TRIGGER_SHARES, "source": paper.TRIGGER_SOURCE}
    if inv is not None:
        out["trigger_shares"]["measured_sample"] = {"value": inv["triggers"], "source": src}
    out["trigger_invocation_shares"] = {"value": published.TRIGGER_INVOCATION_SHARES,
                                        "source": published.TRIGGER_INVOCATION_SOURCE}
    if inv is not None:
        out["trigger_invocation_shares"]["measured_sample"] = {"value": inv["trigger_invocations"], "source": src}
    out["functions_per_app"] = {"bins": [list(b) for b in published.FUNCTIONS_PER_APP_BINS],
                                "source": published.FUNCTIONS_PER_APP_SOURCE}
    if inv is not None:
        out["functions_per_app"]["measured_sample"] = {"value": inv["functions_per_app"],
                                                       "source": f"{src} (functions per application, sorted)"}

    out["duration_s"] = _table(list(durations), min_functions, read_durations, 0, 1000.0,
                               "per-function Average, ms -> s", paper.DURATION_S_CDF, paper.DURATION_SOURCE)
    out["memory_mb"] = _table(list(memory), min_functions, read_memory, 1, 1.0, "per-app AverageAllocatedMb",
                              paper.MEMORY_MB_CDF, paper.MEMORY_SOURCE)
    out["tokens"] = {k: measure_tokens(p) for k, p in (("conv", conv), ("code", code)) if p is not None}
    return out


def _table(files: list[Path], min_rows: int, reader, column: int, divisor: float, what: str,
           cdf: list, paper_source: str) -> dict:
    """Quantiles measured from durations/memory files when they have `min_rows` rows, else the paper's."""
    values = np.array([v[column] / divisor for f in files for _, v in reader(f)])
    values = values[values > 0]
    if len(values) >= min_rows:
        return {"value": _q(values), "source": f"measured from {_names(files)} ({what}, {len(values)} rows)"}
    out = {"value": paper.quantiles_from_cdf(cdf, PROBS), "cdf_points": cdf, "source": paper_source}
    if len(values):
        out["measured_sample"] = {"value": _q(values), "source": f"measured from {_names(files)} "
                                                                 f"({len(values)} rows, unused)"}
    return out


def write_calibration(cal: dict, path: Path) -> None:
    """Write the JSON with numbers rounded to 6 significant digits and number lists on one line."""
    import json
    import re

    def tidy(v):
        if isinstance(v, float):
            return float(f"{v:.6g}")
        if isinstance(v, dict):
            return {k: tidy(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [tidy(x) for x in v]
        return v

    text = json.dumps(tidy(cal), indent=2)
    text = re.sub(r"\[\s+([-0-9.,e+\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    text = re.sub(r"\[\s+((?:\[[^\[\]]*\],?\s*)+)\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)).strip() + "]",
                  text)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
