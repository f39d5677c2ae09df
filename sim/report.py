"""Summary tables and plots for a set of policy combinations.

Everything written here is a deterministic function of its inputs (fixed float formats,
PNGs without timestamp or software metadata), so the same run gives byte-identical files
and results can be diffed or checked into a repository. Every file is written under a
temporary name and renamed when complete (`sim.atomic`): an interrupted run never leaves a
truncated summary or plot under its final name.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.atomic import atomic_open, write_text
from sim.metrics import RunMetrics
from sim.plots import PlotSeries, plot_gpu_memory, plot_pareto, plot_ttft_cdf
from sim.verdict import DEFAULT_TOLERANCE_PP, RANK_COLUMNS, instance_counts, rank, ranked_rows, verdict

__all__ = ["PlotSeries", "format_markdown", "format_summary", "format_table", "format_value", "write_csv",
           "write_results"]

_CSV_FLOAT = "{:.9g}"  # enough digits to round-trip the summary's precision, and stable


def _sig3(v: float) -> str:
    """Three significant digits without exponent notation: 0.0123, 12.3, 1230."""
    if v == 0:
        return "0"
    decimals = 2 - math.floor(math.log10(abs(v)))
    if decimals >= 0:
        return f"{v:.{decimals}f}"
    return f"{round(v, decimals):.0f}"


def format_value(key: str, v: Any) -> str:
    """How a summary cell reads: seconds to 3 significant digits, percentages to 1
    decimal, GB and GB-hours to 2, quality to 3, counts as integers, NaN as '-'."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if isinstance(v, int):
        return str(v)
    if key.endswith("_s"):
        return _sig3(v)
    if key.endswith("_pct"):
        return f"{v:.1f}"
    if key.endswith("_gb_hours") or key.startswith("gb_"):
        return f"{v:.2f}"
    if key.startswith("quality"):
        return f"{v:.3f}"
    return _sig3(v)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the rows' keys in first-seen order, with gb_<link> columns last, sorted."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    plain = [k for k in seen if not k.startswith("gb_")]
    return plain + sorted(k for k in seen if k.startswith("gb_"))


def _cell(row: Mapping[str, Any], key: str) -> Any:
    # A link a policy never used moved zero bytes; any other missing value is unknown.
    return row.get(key, 0.0 if key.startswith("gb_") else math.nan)


def _is_numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]], list[bool]]:
    cols = _columns(rows)
    body = [[format_value(c, _cell(r, c)) for c in cols] for r in rows]
    numeric = [all(_is_numeric(_cell(r, c)) for r in rows) for c in cols]
    return cols, body, numeric


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An aligned plain-text table, one row per policy combination."""
    if not rows:
        return "(no results)\n"
    cols, body, numeric = _cells(rows)
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        parts = [s.rjust(w) if num else s.ljust(w) for s, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    return "\n".join(out) + "\n"


# The ranked table: (summary key, header), narrow enough for 120 columns with any label.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rank", "#"), ("id", "id"), ("pareto", "pareto"), ("slo_attainment_pct", "SLO %"),
    ("ttft_p50_s", "TTFT p50 s"), ("ttft_p99_s", "TTFT p99 s"), ("cold_pct", "cold %"), ("wake_pct", "wake %"),
    ("loads", "loads"), ("wakes", "wakes"), ("rejected", "rejected"), ("quality_mean", "quality"),
    ("gpu_mem_gb_hours", "GPU GB-h"), ("gpu_idle_gb_hours", "idle GB-h"),
)
COLUMN_NOTES = (
    "SLO %: requests with TTFT within the SLO (rejected ones count as missed); cold % / wake %: requests that waited",
    "for a load from scratch / for a sleeping instance to wake (summary.csv: their TTFT p50s); loads / wakes:",
    "instances started from scratch / woken; GPU GB-h: GPU memory held x time (idle: with nothing in flight);",
    "pareto: no other combination is at least as good on SLO %, GPU GB-h and quality and better on one.",
)
RANK_RULE = "ranked by SLO attainment, then fewer GPU GB-hours, then higher quality, then lower TTFT p99"


def _summary_cells(rows: Sequence[Mapping[str, Any]],
                   models: Sequence[Mapping[str, Any]] | None) -> tuple[list[list[str]], list[Any]]:
    """The ranked table's cells, in rank order, and the ranking."""
    counts = instance_counts(models) if models is not None else {}
    ranked = rank(rows)
    body = []
    for r in ranked:
        row = {**r.row, **counts.get(r.label, {}), "rank": r.rank, "id": r.id, "pareto": "yes" if r.pareto else ""}
        # waited for weights = waited for a load from scratch + waited for a wake
        cold = row.get("cold_start_pct", math.nan) - row.get("wake_pct", math.nan)
        row["cold_pct"] = abs(cold) if abs(cold) < 1e-9 else cold  # no "-0.0" from rounding
        body.append([format_value(k, row.get(k, math.nan)) for k, _ in SUMMARY_COLUMNS])
    return body, ranked


def format_summary(rows: Sequence[Mapping[str, Any]], models: Sequence[Mapping[str, Any]] | None = None,
                   tolerance_pp: float = DEFAULT_TOLERANCE_PP) -> str:
    """What a run prints: the ranked table (short ids), each id's full label, what the columns
    mean, and the two-line verdict. Every line fits 120 columns except a label longer than
    that. `models` (the per-model rows) give the loads and wakes columns."""
    if not rows:
        return "(no results)\n"
    body, ranked = _summary_cells(rows, models)
    heads = [h for _, h in SUMMARY_COLUMNS]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
    left = {"id", "pareto"}

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if k in left else c.rjust(w)
                 for c, w, (k, _) in zip(cells, widths, SUMMARY_COLUMNS, strict=True)]
        return "  ".join(parts).rstrip()

    out = [f"policy combinations, {RANK_RULE}:", line(heads), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    out.append("")
    width = max(len(r.id) for r in ranked)
    out += [f"{r.id.ljust(width)}  {r.label}" for r in sorted(ranked, key=lambda r: r.index)]
    out.append("")
    out += COLUMN_NOTES
    v = verdict(rows, tolerance_pp)
    if v is not None:
        out.append("")
        out += v.lines()
    return "\n".join(out) + "\n"


def format_markdown(rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any],
                    models: Sequence[Mapping[str, Any]] | None = None) -> str:
    """A header block (one bullet per item), the verdict and ranked table, then a Markdown
    table of every column of the rows."""
    lines = ["# progressive-serve simulation summary", ""]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines.append("")
    v = verdict(rows)
    if v is not None:
        lines += ["## Verdict", ""] + [f"- {text}" for text in v.lines()] + [""]
        body, ranked = _summary_cells(rows, models)
        lines += [f"## Ranking ({RANK_RULE})", ""]
        lines.append("| " + " | ".join([h for _, h in SUMMARY_COLUMNS] + ["policy"]) + " |")
        lines.append("| " + " | ".join(":---" if k in ("id", "pareto") else "---:" for k, _ in SUMMARY_COLUMNS)
                     + " | :--- |")
        lines += ["| " + " | ".join([*b, r.label]) + " |" for b, r in zip(body, ranked, strict=True)]
        lines += ["", "## Every column", ""]
    if rows:
        cols, body, numeric = _cells(rows)
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("| " + " | ".join("---:" if n else ":---" for n in numeric) + " |")
        lines += ["| " + " | ".join(r) + " |" for r in body]
    else:
        lines.append("(no results)")
    return "\n".join(lines) + "\n"


def _csv_value(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else _CSV_FLOAT.format(v)
    return str(v)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Full-precision CSV (NaN as an empty field), '\\n' line endings on every platform.
    Columns: `columns`, else the rows' keys as `format_table` orders them."""
    cols = list(columns) if columns is not None else _columns(rows)
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            w.writerow([_csv_value(_cell(row, c)) for c in cols])


SLO_KEY = "TTFT SLO (s)"  # the header items the plots read
CAPACITY_KEY = "cluster GPU memory (GB)"


def _header_float(header: Mapping[str, Any], key: str) -> float | None:
    v = header.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def write_results(
    out_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    metrics_list: Sequence[RunMetrics | PlotSeries],
    header: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]] | None = None,
    records: Sequence[Path] | None = None,
) -> dict[str, Path]:
    """Write summary.csv, summary.md, the plots and report.html into `out_dir`.

    `rows` are the `finish()` rows of `metrics_list` (or of the runs their `PlotSeries`
    were taken from), in the same order; `header` items (trace, profile, seed, cluster,
    SLO, ...) head the Markdown file and the HTML report (`SLO_KEY` and `CAPACITY_KEY`, when
    present, are drawn in the plots); `models` are the per-model rows (models.csv), for the
    loads and wakes columns and the per-model plot; `records` are the per-request Parquet
    files of the combinations (the run's parts), for the per-model TTFT and the quality over
    time (sim.model_plots). summary.csv is the rows in run order,
    full labels, with `id`, `rank` and `pareto` (1/0) last. Each file is replaced
    atomically. Returns the paths.
    """
    from sim.html_report import write_report
    from sim.model_plots import load_records, plot_per_model, plot_quality_over_time

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary_csv": out / "summary.csv",
        "summary_md": out / "summary.md",
        "ttft_cdf": out / "ttft_cdf.png",
        "gpu_memory": out / "gpu_memory.png",
        "pareto": out / "pareto.png",
    }
    write_csv(paths["summary_csv"], ranked_rows(rows), [*_columns(rows), *RANK_COLUMNS])
    write_text(paths["summary_md"], format_markdown(rows, header, models))
    plot_ttft_cdf(paths["ttft_cdf"], metrics_list, rows, _header_float(header, SLO_KEY))
    plot_gpu_memory(paths["gpu_memory"], metrics_list, _header_float(header, CAPACITY_KEY))
    plot_pareto(paths["pareto"], rows)
    table = load_records(records) if records else None
    if models:
        paths["per_model"] = out / "per_model.png"
        plot_per_model(paths["per_model"], [str(r.get("policy")) for r in rows], models, table)
    horizon = max((float(r["horizon_s"]) for r in rows if _is_numeric(r.get("horizon_s"))), default=0.0)
    if table is not None and horizon > 0:
        paths["quality_over_time"] = out / "quality_over_time.png"
        plot_quality_over_time(paths["quality_over_time"], rows, table, horizon)
    paths["report_html"] = out / "report.html"
    write_report(paths["report_html"], rows, header, models, paths)
    return paths
