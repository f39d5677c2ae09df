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

from traces.azure2019 import read_durations, read_invocations, read_memory
from traces.errors import Issues
from traces.llm import read_azure_llm

PROBS = [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]
PAPER = "Shahrad et al., Serverless in the Wild, USENIX ATC 2020"


def _q(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(np.asarray(values, float), PROBS)]


def lognormal_quantiles(mu: float, sigma: float) -> list[float]:
    """Quantiles at PROBS of a log-normal; the 0 and 1 ends are the 1e-4 and 1-1e-4 points."""
    from scipy.special import ndtri

    p = np.clip(np.asarray(PROBS), 1e-4, 1 - 1e-4)
    return [float(v) for v in np.exp(mu + sigma * ndtri(p))]


def burr_quantiles(c: float, k: float, lam: float) -> list[float]:
    """Quantiles at PROBS of a Burr XII(c, k, scale lam), ends clipped like `lognormal_quantiles`."""
    p = np.clip(np.asarray(PROBS), 1e-4, 1 - 1e-4)
    return [float(v) for v in lam * ((1 - p) ** (-1 / k) - 1) ** (1 / c)]


def lognormal_through(x1: float, p1: float, x2: float, p2: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal with CDF p1 at x1 and p2 at x2."""
    from scipy.special import ndtri

    z1, z2 = ndtri(p1), ndtri(p2)
    sigma = (np.log(x2) - np.log(x1)) / (z2 - z1)
    return float(np.log(x1) - z1 * sigma), float(sigma)


def iat_cv(counts: np.ndarray, rng: np.random.Generator) -> float | None:
    """CV of inter-arrival times of one function-day, arrivals spread uniformly in their minute."""
    busy = np.flatnonzero(counts)
    if counts.sum() < 3:
        return None
    t = np.sort(np.repeat(busy * 60.0, counts[busy]) + rng.random(int(counts.sum())) * 60.0)
    gaps = np.diff(t)
    return float(gaps.std() / gaps.mean())


def measure_invocations(files: list[Path], issues: Issues) -> dict:
    """Per-function daily totals, IAT CVs, hourly shape and trigger shares of day files."""
    totals: dict[tuple, int] = {}
    triggers: dict[tuple, str] = {}
    cvs: list[float] = []
    hourly = np.zeros(24)
    rng = np.random.default_rng(0)
    for path in files:
        for row in read_invocations(path, issues):
            totals[row.key] = totals.get(row.key, 0) + row.total
            triggers[row.key] = row.trigger
            hourly += row.counts.reshape(24, 60).sum(axis=1)
            cv = iat_cv(row.counts, rng)
            if cv is not None:
                cvs.append(cv)
    daily = np.array(list(totals.values()), float) / max(len(files), 1)
    trig = list(triggers.values())
    return {"daily": daily, "cvs": np.array(cvs), "hourly": hourly, "n_inv": int(sum(totals.values())),
            "triggers": {t: trig.count(t) / len(trig) for t in sorted(set(trig))} if trig else {}}


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
    issues = Issues()
    inv = measure_invocations(list(invocations), issues) if invocations else None
    enough = inv is not None and len(inv["daily"]) >= min_functions and inv["n_inv"] >= min_invocations
    src = f"measured from {_names(list(invocations))}" if inv else ""
    out: dict = {"schema": 1, "units": "daily counts in invocations/day; durations in s; memory in MB",
                 "quantile_probs": PROBS}

    mu, sigma = lognormal_through(24.0, 0.45, 1440.0, 0.81)
    paper_daily = {"value": lognormal_quantiles(mu, sigma), "log_mu": round(mu, 4), "log_sigma": round(sigma, 4),
                   "source": f"{PAPER}, Sec. 3.3 / Fig. 5(a): 45% of applications are invoked at most once per hour "
                             "and 81% at most once per minute on average; a log-normal through those two points "
                             "(application-level figures used per function)"}
    out["daily_invocations"] = {"value": _q(inv["daily"]), "source": src} if enough else paper_daily
    if inv is not None:
        out["daily_invocations"]["measured_sample"] = {
            "value": sorted(int(v) for v in inv["daily"]), "source": f"{src} ({len(inv['daily'])} functions)"}

    timer_share = {"value": 0.156, "source": f"{PAPER}, Fig. 2: timer triggers are 15.6% of functions; timers "
                                             "fire periodically, the CV-0 mass of Fig. 6"}
    if enough:
        out["periodic_share"] = {"value": float(np.mean(inv["cvs"] < 0.2)), "source": src + " (share with CV < 0.2)"}
    else:
        out["periodic_share"] = timer_share
        if inv is not None and len(inv["cvs"]):
            out["periodic_share"]["measured_sample"] = {"value": round(float(np.mean(inv["cvs"] < 0.2)), 4),
                                                        "source": f"{src} ({len(inv['cvs'])} functions, unused)"}
    if inv is not None and len(inv["cvs"]):
        bursty = np.log(inv["cvs"][inv["cvs"] >= 0.2])
        note = "" if enough else (f"; only {len(bursty)} functions: ATC'20 Fig. 6 gives the shape (a mass at CV 0, "
                                  "most others above 1) but no numbers to fit")
        out["cv_lognormal"] = {"mu": round(float(bursty.mean()), 4), "sigma": round(float(bursty.std(ddof=1)), 4),
                               "source": f"{src}: log of IAT CV of functions with >= 3 invocations and CV >= 0.2, "
                                         f"arrivals spread uniformly within their minute (seed 0){note}",
                               "measured_sample": {"value": [round(float(c), 3) for c in inv["cvs"]]}}
    if enough:
        shape = inv["hourly"] / inv["hourly"].mean()
        out["diurnal_hourly"] = {"value": [round(float(v), 4) for v in shape], "source": src}
    else:
        h = np.arange(24)
        shape = 1 + 0.25 * np.cos(2 * np.pi * (h + 0.5 - 14) / 24)
        out["diurnal_hourly"] = {"value": [round(float(v), 4) for v in shape],
                                 "source": f"assumed: 1 + 0.25 cos(2 pi (hour - 14) / 24), peak/trough 1.67; "
                                           f"{PAPER}, Fig. 3 shows a clear diurnal cycle but its values could not "
                                           "be read here, and the samples at hand are too small to measure it"}
        if inv is not None:
            out["diurnal_hourly"]["measured_sample"] = {"value": inv["hourly"].astype(int).tolist(),
                                                        "source": f"{src} (hourly invocation totals, unused)"}
    out["trigger_shares"] = {"value": {"http": 0.55, "queue": 0.152, "event": 0.022, "orchestration": 0.069,
                                       "timer": 0.156, "storage": 0.028, "others": 0.022},
                             "source": f"{PAPER}, Fig. 2(a): share of functions per trigger group"}
    if inv is not None:
        out["trigger_shares"]["measured_sample"] = {"value": inv["triggers"], "source": src}

    out["duration_s"] = _durations(list(durations), min_functions)
    out["memory_mb"] = _memory(list(memory), min_functions)
    out["tokens"] = {k: measure_tokens(p) for k, p in (("conv", conv), ("code", code)) if p is not None}
    return out


def _durations(files: list[Path], min_functions: int) -> dict:
    avg = np.array([v[0] / 1000.0 for f in files for _, v in read_durations(f)])
    if len(avg) >= min_functions:
        return {"value": _q(avg), "source": f"measured from {_names(files)} (per-function Average, ms -> s)"}
    return {"value": lognormal_quantiles(-0.38, 2.36),
            "source": f"{PAPER}, Fig. 7: per-function average execution time fitted by a log-normal with "
                      "mu -0.38, sigma 2.36 (log of seconds); recalled from the paper, not re-checked here"}


def _memory(files: list[Path], min_functions: int) -> dict:
    mb = np.array([v[1] for f in files for _, v in read_memory(f)])
    if len(mb) >= min_functions:
        return {"value": _q(mb), "source": f"measured from {_names(files)} (per-app AverageAllocatedMb)"}
    return {"value": burr_quantiles(11.652, 0.221, 107.083),
            "source": f"{PAPER}, Fig. 8: per-application allocated memory fitted by a Burr XII with c 11.652, "
                      "k 0.221, scale 107.083 MB; recalled from the paper, not re-checked here"}


def write_calibration(cal: dict, path: Path) -> None:
    """Write the JSON with numbers rounded to 6 significant digits and number lists on one line."""
    import json
    import re

    def tidy(v):
        if isinstance(v, float):
            return float(f"{v:.6g}")
        if isinstance(v, dict):
            return {k: tidy(x) for k, x in v.items()}
        if isinstance(v, list):
            return [tidy(x) for x in v]
        return v

    text = json.dumps(tidy(cal), indent=2)
    text = re.sub(r"\[\s+([-0-9.,e+\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
