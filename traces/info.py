"""`python -m traces info`: what a trace holds, in numbers that can be checked against the file.

For Azure Functions 2019 day files the numbers come straight from the rows (functions,
invocations, per-function daily rates, triggers, burstiness); for every other trace they
come from iterating its requests with nothing filtered out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from traces.azure2019 import read_durations, read_invocations, read_memory
from traces.base import Trace
from traces.calibrate import iat_cv
from traces.errors import Issues

PCTS = (50, 90, 99, 100)


def _pcts(values, unit: str = "") -> str:
    if len(values) == 0:
        return "n/a"
    q = np.percentile(np.asarray(values, float), PCTS)
    return ", ".join(f"p{p} {v:.4g}{unit}" for p, v in zip(PCTS, q, strict=True))


def functions_2019_info(files: list[Path], lenient: bool = False) -> dict:
    """Statistics of Azure Functions 2019 invocation day files, read row by row."""
    issues = Issues(lenient)
    totals: dict[tuple, int] = {}
    triggers: Counter = Counter()
    cvs, busy_minutes = [], 0
    per_minute = np.zeros(1440 * len(files), np.int64)
    rng = np.random.default_rng(0)
    for day, path in enumerate(files):
        for row in read_invocations(path, issues):
            per_minute[day * 1440:(day + 1) * 1440] += row.counts
            if row.key not in totals:
                triggers[row.trigger] += 1
            totals[row.key] = totals.get(row.key, 0) + row.total
            busy_minutes += int(np.count_nonzero(row.counts))
            cv = iat_cv(row.counts, rng)
            if cv is not None:
                cvs.append(cv)
    days = len(files)
    daily = np.array(list(totals.values()), float) / max(days, 1)
    return {
        "format": "azure_functions_2019 invocations",
        "files": len(files),
        "days": days,
        "span_s": days * 86400,
        "functions": len(totals),
        "invocations": int(sum(totals.values())),
        "busy_function_minutes": busy_minutes,
        "invocations_per_minute": _pcts(per_minute),
        "peak_to_mean_per_minute": round(float(per_minute.max() / per_minute.mean()), 2) if per_minute.any() else "n/a",
        "daily_invocations_per_function": _pcts(daily),
        "functions_at_most_1_per_hour": f"{np.mean(daily <= 24):.1%}" if len(daily) else "n/a",
        "functions_at_most_1_per_minute": f"{np.mean(daily <= 1440):.1%}" if len(daily) else "n/a",
        "triggers": ", ".join(f"{t} {n}" for t, n in triggers.most_common()),
        "iat_cv_per_function": _pcts(cvs) + f" ({len(cvs)} functions with >= 3 invocations)",
        **issues.details(),
    }


def table_info(fmt: str, files: list[Path], lenient: bool = False) -> dict:
    """Statistics of Azure Functions 2019 durations (ms) or memory (MB) files."""
    issues = Issues(lenient)
    if fmt.endswith("durations"):
        rows = [v for f in files for _, v in read_durations(f, issues)]
        what, values = "average_execution_ms_per_function", [v[0] for v in rows]
    else:
        rows = [v for f in files for _, v in read_memory(f, issues)]
        what, values = "average_allocated_mb_per_app", [v[1] for v in rows]
    return {"format": fmt, "files": ";".join(str(f) for f in files), "rows": len(rows), what: _pcts(values),
            **issues.details()}


def trace_info(trace: Trace) -> dict:
    """Statistics of any trace, from its requests."""
    times, prompt, output, models, functions = [], [], [], Counter(), set()
    for r in trace:
        times.append(r.arrival_s)
        prompt.append(r.prompt_tokens)
        output.append(r.output_tokens)
        models[r.model] += 1
        if r.function:
            functions.add(r.function)
    t = np.asarray(times)
    out: dict = {"trace": trace.name, "synthetic": trace.synthetic, "requests": len(t)}
    if len(t):
        span = float(t[-1] - t[0])
        per_min = np.bincount(((t - t[0]) // 60).astype(int))
        gaps = np.diff(t)
        out.update({
            "first_arrival_s": round(float(t[0]), 3), "last_arrival_s": round(float(t[-1]), 3),
            "span_s": round(span, 3),
            "mean_rate_per_s": round(len(t) / span, 4) if span > 0 else "n/a",
            "requests_per_minute": _pcts(per_min),
            "iat_cv": round(float(gaps.std() / gaps.mean()), 3) if len(gaps) > 1 and gaps.mean() > 0 else "n/a",
            "peak_to_mean_per_minute": round(float(per_min.max() / per_min.mean()), 2),
            "models": len(models),
            "busiest_models": ", ".join(f"{m} {n}" for m, n in models.most_common(5)),
            "functions": len(functions),
            "prompt_tokens": _pcts(prompt), "output_tokens": _pcts(output),
        })
    for key, value in trace.details.items():
        out[f"detail.{key}"] = value
    if trace.synthetic and "calibration" in trace.details:
        out.update(calibration_info(str(trace.details["calibration"]), int(trace.details.get("seed", 0))))
    return out


POPULATION_DRAW = 1_000_000  # functions drawn to show the population's shares (about 0.3 s)


def calibration_info(path: str, seed: int) -> dict:
    """The generator's population next to the published ATC'20 numbers it is calibrated to:
    `generated (published ...)` per trigger share of functions and of invocations, daily-rate
    percentile, periodic share and application size bin."""
    from traces.population import population_shares, trigger_model
    from traces.synthetic import load_calibration

    cal = load_calibration(path)
    model = trigger_model(cal)
    stats = population_shares(cal, model, POPULATION_DRAW, np.random.default_rng(seed))
    out: dict = {"population.drawn": f"{POPULATION_DRAW} functions and applications (seed {seed}), shown as "
                                     "generated (published)",
                 "population.trigger_split": f"rate quantile {model.split:.3f}: below it "
                                             + ", ".join(f"{t} {p:.1%}" for t, p in zip(model.names, model.low,
                                                                                         strict=True))
                                             + "; above it " + ", ".join(f"{t} {p:.1%}" for t, p in
                                                                         zip(model.names, model.high, strict=True))}
    groups = {"functions": "trigger_share_of_functions", "invocations": "trigger_share_of_invocations",
              "daily": "daily_invocations_per_function", "apps": "functions_per_application"}
    for prefix, title in groups.items():
        items = [(k.split(".", 1)[1], v) for k, v in stats.items() if k.startswith(prefix + ".")]
        fmt = (lambda g, p: f"{g:.4g} ({p:.4g})") if prefix == "daily" else (lambda g, p: f"{g:.2%} ({p:.2%})")
        out[f"population.{title}"] = ", ".join(
            f"{name} {fmt(g, p) if not name.startswith('at_most') else f'{g:.1%} ({p:.1%})'}" for name, (g, p) in items)
    g, p = stats["periodic"]
    out["population.periodic_share"] = f"{g:.1%} ({p:.1%})"
    return out


def render(info: dict) -> str:
    """`key: value` lines, keys aligned."""
    width = max(len(k) for k in info)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in info.items())
