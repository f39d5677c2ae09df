"""The combined table and trade-off plots of a sweep.

Per configuration (a grid point without its seed): the mean of every summary metric over the
seeds that ran, and where two or more did, the half-width of its 95 % confidence interval
(Student t, n - 1 degrees of freedom). Three plots put the configurations on trade-offs and
mark the Pareto front: TTFT p99 against GPU memory GB-hours, SLO attainment against GPU
memory GB-hours, quality against TTFT p50. Everything written is a deterministic function of
the runs' results (fixed float formats, PNGs without metadata), so a sweep that was killed
and finished writes the same bytes as one that never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.atomic import atomic_open, write_text
from sim.report import format_value, write_csv
from sim.sweep_spec import Config

CI_SUFFIX = "_ci95"
# Row keys that are not averaged: the label, and the fidelity a run served at (a word).
_NOT_METRICS = ("policy", "fidelity")
MD_METRICS = ("requests", "cold_start_pct", "ttft_p50_s", "ttft_p99_s", "slo_attainment_pct", "quality_mean",
              "gpu_mem_gb_hours", "gpu_idle_gb_hours")
_CONFIG_SHOWN = ("trace", "duration_s", "profile", "cluster", "storage", "fidelity", "compute_sharing", "slo_ttft_s")


@dataclass(frozen=True)
class Front:
    """A trade-off: x is minimised; y is minimised or maximised."""

    name: str  # as the `pareto` column lists it
    file: str
    x: str
    y: str
    y_better: str  # "low" or "high"
    x_label: str
    y_label: str
    title: str


FRONTS = (
    Front("ttft_p99-vs-memory", "pareto_ttft_p99_vs_gpu_memory.png", "gpu_mem_gb_hours", "ttft_p99_s", "low",
          "GPU memory held by instances (GB-hours)", "TTFT p99 (s)",
          "TTFT p99 against GPU memory (lower left is better)"),
    Front("slo-vs-memory", "pareto_slo_vs_gpu_memory.png", "gpu_mem_gb_hours", "slo_attainment_pct", "high",
          "GPU memory held by instances (GB-hours)", "SLO attainment (% of requests served within the TTFT SLO)",
          "SLO attainment against GPU memory (upper left is better)"),
    Front("quality-vs-ttft_p50", "pareto_quality_vs_ttft_p50.png", "ttft_p50_s", "quality_mean", "high",
          "TTFT p50 (s)", "quality (token-weighted; 1 = the full model)",
          "Quality against TTFT p50 (upper left is better)"),
)


def _t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with `dof` degrees of freedom."""
    from scipy.special import stdtrit  # scipy.stats would take a second longer to import

    return float(stdtrit(dof, 0.975))


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean of the finite values and the half-width of its 95 % Student t interval (NaN with
    fewer than two values)."""
    xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, _t975(n - 1) * math.sqrt(var / n)


def metric_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary's numeric keys in first-seen order, gb_<link> last and sorted (as summary.csv)."""
    seen: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if k not in _NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool):
                seen.setdefault(k, None)
    plain = [k for k in seen if not k.startswith("gb_")]
    return plain + sorted(k for k in seen if k.startswith("gb_"))


def pareto(points: Sequence[tuple[int, float, float]], y_better: str) -> set[int]:
    """Ids of the points no other point beats on both axes (x lower; y lower or higher as
    said). Points with a NaN are never on the front; equal points are on it together."""
    sign = 1.0 if y_better == "low" else -1.0
    pts = sorted((x, sign * y, i) for i, x, y in points if math.isfinite(x) and math.isfinite(y))
    front: set[int] = set()
    best: tuple[float, float] | None = None
    for x, y, i in pts:
        if best is None or y < best[1] or (y == best[1] and x == best[0]):
            front.add(i)
            best = (x, y) if best is None or y < best[1] else best
    return front


def combine(configs: Sequence[Config], runs: Mapping[int, list[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per configuration. `runs[config index]`: its runs' records in seed order, each
    with `status` ("done" or "failed"), `row` (the summary row) and `error`."""
    done_rows = [r["row"] for recs in runs.values() for r in recs if r["status"] == "done"]
    keys = metric_keys(done_rows)
    table = []
    for c in configs:
        recs = runs.get(c.index, [])
        ok = [r["row"] for r in recs if r["status"] == "done"]
        failed = [r for r in recs if r["status"] != "done"]
        row = c.columns()
        row["seeds"] = len(ok)
        row["failed"] = len(failed)
        for k in keys:
            mean, ci = mean_ci([r.get(k, 0.0 if k.startswith("gb_") else math.nan) for r in ok])
            row[k] = mean
            row[k + CI_SUFFIX] = ci
        served = sorted({str(r.get("fidelity")) for r in ok})
        row["fidelity_served"] = "/".join(served)
        row["pareto"] = ""
        row["error"] = failed[0]["error"] if failed else ""
        table.append(row)
    for front in FRONTS:
        on = pareto([(i, row.get(front.x, math.nan), row.get(front.y, math.nan)) for i, row in enumerate(table)
                     if row["seeds"]], front.y_better)
        for i in on:
            table[i]["pareto"] = " ".join(filter(None, (table[i]["pareto"], front.name)))
    return table


def write_table_csv(path: Path, table: Sequence[Mapping[str, Any]]) -> None:
    write_csv(path, table)


# --- Markdown ---------------------------------------------------------------------------------------

def _cluster(row: Mapping[str, Any]) -> str:
    return f"{row['nodes']}x{row['gpus_per_node']}"


def _shown(row: Mapping[str, Any], key: str) -> Any:
    return _cluster(row) if key == "cluster" else row[key]


def varying(table: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The configuration columns whose value differs between rows, and the others' values."""
    vary, same = [], {}
    for key in _CONFIG_SHOWN:
        values = [_shown(r, key) for r in table]
        text = {format_value(key, v) for v in values}
        if len(text) > 1:
            vary.append(key)
        elif values:
            same[key] = format_value(key, values[0])
    return vary, same


def _cell(row: Mapping[str, Any], key: str) -> str:
    mean = row.get(key, math.nan)
    text = format_value(key, mean)
    ci = row.get(key + CI_SUFFIX, math.nan)
    if isinstance(ci, float) and math.isfinite(ci):
        text += " ± " + format_value(key, ci)
    return text


def md_rows(table: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    vary, _ = varying(table)
    cols = ["config", "policy", *vary, "seeds"]
    if any(r["failed"] for r in table):
        cols.append("failed")
    metrics = [k for k in MD_METRICS if any(k in r for r in table)]
    cols += [*metrics, "pareto"]
    body = []
    for r in table:
        cells = []
        for c in cols:
            if c in metrics:
                cells.append(_cell(r, c))
            elif c in ("config", "seeds", "failed", "pareto", "policy"):
                cells.append(str(r[c]))
            else:
                cells.append(format_value(c, _shown(r, c)))
        body.append(cells)
    return cols, body


def format_md(table: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    vary, same = varying(table)
    lines = ["# progressive-serve sweep", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += [f"- **{k}** (every configuration): {v}" for k, v in same.items()]
    lines += [
        "- cells: the mean over the seeds that ran; `± h`: the half-width of its 95 % confidence interval "
        "(Student t), where two or more seeds ran",
        "- `pareto`: the trade-offs on whose Pareto front the configuration lies: " +
        "; ".join(f"`{f.name}` ({f.file})" for f in FRONTS),
        "- every metric, with its interval, per configuration: sweep.csv; every run: runs.csv",
        "",
    ]
    cols, body = md_rows(table)
    if body:
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("| " + " | ".join(":---" if c in ("policy", "pareto", *vary) else "---:" for c in cols) + " |")
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
    failed = [r for r in table if r["failed"]]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- config {r['config']} ({r['policy']}): {r['failed']} failed: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def format_text(table: Sequence[Mapping[str, Any]], limit: int = 40) -> str:
    """The Markdown table's columns as aligned text, for the terminal: every configuration,
    or with more than `limit`, the first `limit` of those on a Pareto front."""
    note = ""
    if len(table) > limit:
        on = [r for r in table if r["pareto"]]
        note = (f"{len(table)} configurations (all in sweep.md and sweep.csv); {len(on)} on a Pareto front"
                + (f", the first {limit} shown" if len(on) > limit else "") + ":\n")
        table = on[:limit]
    cols, body = md_rows(table)
    if not body:
        return "(no results)\n"
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
    left = {"policy", "pareto", "trace", "profile", "storage", "fidelity", "compute_sharing", "cluster"}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(s.ljust(w) if c in left else s.rjust(w)
                         for s, w, c in zip(cells, widths, cols, strict=True)).rstrip()

    return note + "\n".join([line(cols), "  ".join("-" * w for w in widths), *map(line, body)]) + "\n"


# --- plots ------------------------------------------------------------------------------------------

_MARKERS = "osD^vP*Xhp<>"


def _finite(v: float) -> float:
    return v if math.isfinite(v) else 0.0


def plot_front(path: Path, table: Sequence[Mapping[str, Any]], front: Front) -> None:
    """Every configuration as a point (colour: staging policy; marker: cluster size; bars: 95 %
    intervals), the Pareto front joined and each of its points numbered by its config."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(10, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = [r for r in table if r["seeds"] and math.isfinite(r.get(front.x, math.nan))
            and math.isfinite(r.get(front.y, math.nan))]
    stagings = list(dict.fromkeys(r["staging"] for r in table))
    clusters = list(dict.fromkeys(_cluster(r) for r in table))
    colours = {s: f"C{i % 10}" for i, s in enumerate(stagings)}
    markers = {c: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(clusters)}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}  # one draw call per colour and marker
    for r in rows:
        groups.setdefault((r["staging"], _cluster(r)), []).append(r)
    for (staging, cluster), members in groups.items():
        xs = [r[front.x] for r in members]
        ys = [r[front.y] for r in members]
        xe = [_finite(r.get(front.x + CI_SUFFIX, math.nan)) for r in members]
        ye = [_finite(r.get(front.y + CI_SUFFIX, math.nan)) for r in members]
        if any(xe) or any(ye):
            ax.errorbar(xs, ys, xerr=xe if any(xe) else None, yerr=ye if any(ye) else None, fmt="none",
                        ecolor=colours[staging], alpha=0.3, linewidth=0.7, zorder=1)
        ax.scatter(xs, ys, color=colours[staging], marker=markers[cluster], s=30, alpha=0.8, zorder=2, linewidths=0)
    on = sorted((r for r in rows if front.name in r["pareto"].split()), key=lambda r: (r[front.x], r[front.y]))
    if on:
        ax.plot([r[front.x] for r in on], [r[front.y] for r in on], color="black", linewidth=1.2, zorder=3,
                drawstyle="steps-post")
        ax.scatter([r[front.x] for r in on], [r[front.y] for r in on], facecolors="none", edgecolors="black",
                   s=110, linewidths=1.2, zorder=4)
        at: dict[tuple[float, float], list[str]] = {}  # configurations on one spot share a label
        for r in on:
            at.setdefault((r[front.x], r[front.y]), []).append(str(r["config"]))
        for (x, y), ids in at.items():
            text = ",".join(ids) if len(ids) <= 3 else f"{','.join(ids[:2])} +{len(ids) - 2} more"
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7, zorder=5)
    ys = [r[front.y] for r in rows if r[front.y] > 0]
    if front.y.endswith("_s") and ys and max(ys) / min(ys) > 30:
        ax.set_yscale("log")
    xs = [r[front.x] for r in rows if r[front.x] > 0]
    if front.x.endswith("_s") and xs and max(xs) / min(xs) > 30:
        ax.set_xscale("log")
    ax.set_xlabel(front.x_label)
    ax.set_ylabel(front.y_label)
    ax.set_title(f"{front.title}: {len(rows)} configurations", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=colours[s], marker="o", linestyle="none", label=f"staging {s}") for s in stagings]
    handles += [Line2D([], [], color="grey", marker=markers[c], linestyle="none", label=f"cluster {c}")
                for c in clusters]
    handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none", markersize=9,
                          label="Pareto front (number: config in sweep.csv)"))
    if not rows:
        ax.text(0.5, 0.5, "no configuration has both values", transform=ax.transAxes, ha="center")
    # The legend goes beside the axes, never over the data.
    legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                       fontsize="small")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight",
                    bbox_extra_artists=[legend])


def write_all(out: Path, table: Sequence[Mapping[str, Any]], runs_table: Sequence[Mapping[str, Any]],
              header: Mapping[str, Any]) -> list[Path]:
    """sweep.csv, sweep.md, runs.csv and the three plots, each renamed into place when complete."""
    written = [out / "sweep.csv", out / "sweep.md", out / "runs.csv"]
    write_table_csv(written[0], table)
    write_text(written[1], format_md(table, header))
    write_csv(written[2], runs_table)
    for front in FRONTS:
        plot_front(out / front.file, table, front)
        written.append(out / front.file)
    return written
