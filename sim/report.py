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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.atomic import atomic_open, write_text
from sim.metrics import RunMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CSV_FLOAT = "{:.9g}"  # enough digits to round-trip the summary's precision, and stable
_PNG_METADATA: dict[str, str | None] = {"Software": None}
_CDF_POINTS = 400


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


def format_markdown(rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    """A header block (one bullet per item) followed by a Markdown table of the rows."""
    lines = ["# progressive-serve simulation summary", ""]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines.append("")
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


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Full-precision CSV (NaN as an empty field), '\\n' line endings on every platform."""
    cols = _columns(rows)
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            w.writerow([_csv_value(_cell(row, c)) for c in cols])


def _figure() -> Figure:
    """A figure on the Agg canvas. matplotlib loads here, not at import: `--help` stays fast."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, metadata=_PNG_METADATA)


@dataclass(frozen=True)
class PlotSeries:
    """What the plots draw of one policy combination: its TTFT CDF points and GPU memory
    timeline. Kept apart from `RunMetrics` so that a resumed run can draw a combination
    finished by an earlier process from the numbers it saved (`to_dict`/`from_dict` round
    trip every float exactly)."""

    label: str
    ttft_x: np.ndarray
    ttft_p: np.ndarray
    mem_t: np.ndarray
    mem_gb: np.ndarray

    @classmethod
    def of(cls, m: RunMetrics | PlotSeries) -> PlotSeries:
        if isinstance(m, PlotSeries):
            return m
        xs, ps = m.ttft_sketch.cdf_points(_CDF_POINTS)
        ts, gb = m.memory_timeline
        return cls(m.label, np.asarray(xs, np.float64), np.asarray(ps, np.float64),
                   np.asarray(ts, np.float64), np.asarray(gb, np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "ttft_x": self.ttft_x.tolist(), "ttft_p": self.ttft_p.tolist(),
                "mem_t": self.mem_t.tolist(), "mem_gb": self.mem_gb.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlotSeries:
        return cls(str(d["label"]), *(np.asarray(d[k], dtype=np.float64) for k in ("ttft_x", "ttft_p", "mem_t", "mem_gb")))


def plot_ttft_cdf(path: Path, metrics_list: Sequence[RunMetrics | PlotSeries]) -> None:
    """One TTFT CDF per policy on a log time axis (values <= 0 cannot be drawn there)."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for m in map(PlotSeries.of, metrics_list):
        xs, ps = m.ttft_x, m.ttft_p
        keep = xs > 0
        if keep.any():
            ax.step(xs[keep], ps[keep], where="post", label=m.label)
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize="small", loc="lower right")
    ax.set_xlabel("time to first token (s)")
    ax.set_ylabel("fraction of served requests")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("TTFT CDF per policy")
    _save(fig, path)


def plot_gpu_memory(path: Path, metrics_list: Sequence[RunMetrics | PlotSeries]) -> None:
    """GPU memory held by instances over time, one step curve per policy."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for m in map(PlotSeries.of, metrics_list):
        ts, gb = m.mem_t, m.mem_gb
        if ts.size:
            ax.step(ts / 3600.0, gb, where="post", label=m.label)
            drawn = True
    if drawn:
        ax.legend(fontsize="small", loc="upper right")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("GPU memory in use (GB)")
    ax.grid(True, alpha=0.3)
    ax.set_title("GPU memory held by instances")
    _save(fig, path)


def write_results(
    out_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    metrics_list: Sequence[RunMetrics | PlotSeries],
    header: Mapping[str, Any],
) -> dict[str, Path]:
    """Write summary.csv, summary.md, ttft_cdf.png and gpu_memory.png into `out_dir`.

    `rows` are the `finish()` rows of `metrics_list` (or of the runs their `PlotSeries`
    were taken from), in the same order; `header` items (trace, profile, seed, cluster,
    SLO, ...) head the Markdown file. Each file is replaced atomically. Returns the paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary_csv": out / "summary.csv",
        "summary_md": out / "summary.md",
        "ttft_cdf": out / "ttft_cdf.png",
        "gpu_memory": out / "gpu_memory.png",
    }
    write_csv(paths["summary_csv"], rows)
    write_text(paths["summary_md"], format_markdown(rows, header))
    plot_ttft_cdf(paths["ttft_cdf"], metrics_list)
    plot_gpu_memory(paths["gpu_memory"], metrics_list)
    return paths
