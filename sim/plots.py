"""The run's plots of the combinations: TTFT CDF, GPU memory over time, the Pareto scatter
(the per-model and per-request ones are in sim.model_plots).

Each plot is drawn to tell policy combinations apart: every curve has its own colour and
dash pattern (and curves that coincide exactly say so in the legend: `P3 = P1`), legends sit
outside the data, every axis names its unit, and combinations are named by their short ids
(`P1`, ...; sim.verdict) with the full labels in the legend or the table.

Everything drawn here is a deterministic function of its inputs: the Agg canvas, fixed
sizes and DPI, and PNGs without timestamp or software metadata, so the same run gives
byte-identical files. Each file is written under a temporary name and renamed when complete
(`sim.atomic`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.atomic import atomic_open
from sim.metrics import RunMetrics
from sim.verdict import COST, QUALITY, SLO, pareto_flags, short_id

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_PNG_METADATA: dict[str, str | None] = {"Software": None}
_CDF_POINTS = 400
_DPI = 100
_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
_LABEL_CHARS = 48  # legend labels longer than this are cut (the table lists them in full)


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


# --- plumbing --------------------------------------------------------------------------------------

def figure(width: float = 10.0, height: float = 5.0) -> Figure:
    """A figure on the Agg canvas. matplotlib loads here, not at import: `--help` stays fast."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=_DPI, metadata=_PNG_METADATA, bbox_inches="tight")


def _style(i: int) -> dict[str, Any]:
    """Colour and dash pattern of the i-th combination: ten colours times six patterns, and
    lines drawn first are wider, so that a later curve on top of an earlier one leaves it
    visible at its edges."""
    from matplotlib import colormaps

    colour = colormaps["tab10"](i % 10)
    return {"color": colour, "linestyle": _STYLES[(i // 10 + i) % len(_STYLES)],
            "linewidth": max(1.0, 3.2 - 0.35 * i)}


def _short(text: str, n: int = _LABEL_CHARS) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _legend_right(ax: Axes, **kw: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  fontsize="small", frameon=False, **kw)


def _num(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key, math.nan)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


# --- TTFT CDF --------------------------------------------------------------------------------------

def cdf_steps(xs: np.ndarray, ps: np.ndarray, share: float, edge: float, right: float) -> tuple[np.ndarray, np.ndarray]:
    """The step curve drawn for one combination: its CDF points (`ps` already scaled to the
    served `share`), held flat to `right`; with rejections (`share` < 1), flat to `edge` and
    then up to 1 there, the rejected requests, held to `right`."""
    last = float(ps[-1]) if ps.size else 0.0
    if share < 1.0:
        return np.concatenate([xs, [edge, edge, right]]), np.concatenate([ps, [last, 1.0, 1.0]])
    return np.concatenate([xs, [right]]), np.concatenate([ps, [last]])


def plot_ttft_cdf(path: Path, series: Sequence[RunMetrics | PlotSeries], rows: Sequence[Mapping[str, Any]] | None = None,
                  slo_s: float | None = None) -> None:
    """TTFT CDF over all requests of each combination on a log time axis.

    With `rows` (the summary rows, same order) the curves are scaled to each combination's
    served share, and its rejected requests rise at the right edge of the plot, in a shaded
    band the legend names: a curve that ends below 1 before the band is one whose other
    requests were never served. Without rows, curves are over served requests only."""
    fig = figure(11.0, 5.5)
    ax = fig.add_subplot()
    curves: list[tuple[int, str, np.ndarray, np.ndarray, float]] = []
    xmax = 0.0
    for i, m in enumerate(map(PlotSeries.of, series)):
        share = 1.0
        if rows is not None and i < len(rows):
            req, served = _num(rows[i], "requests"), _num(rows[i], "served")
            if req > 0 and not math.isnan(served):
                share = served / req
        keep = m.ttft_x > 0
        xs, ps = m.ttft_x[keep], m.ttft_p[keep] * share
        curves.append((i, m.label, xs, ps, share))
        if xs.size:
            xmax = max(xmax, float(xs[-1]))
    if slo_s is not None:
        xmax = max(xmax, slo_s)
    any_rejected = any(c[4] < 1.0 for c in curves)
    edge = xmax * 1.6 if xmax > 0 else 10.0  # the rejected band: [edge, right]
    right = edge * 1.5 if any_rejected else xmax * 1.25 if xmax > 0 else 10.0
    for k, (i, label, xs, ps, share) in enumerate(curves):
        same = next((short_id(j) for j, _, x2, p2, s2 in curves[:k]
                     if s2 == share and np.array_equal(x2, xs) and np.array_equal(p2, ps)), None)
        text = f"{short_id(i)} = {same} (same curve)" if same else f"{short_id(i)} {_short(label)}"
        if share < 1.0:
            text += f" ({100.0 * (1.0 - share):.1f} % rejected)"
        elif not xs.size:
            continue
        ax.step(*cdf_steps(xs, ps, share, edge, right), where="post", label=text, **_style(i))
    if any_rejected:
        ax.axvspan(edge, right, color="0.85", zorder=0, label="rejected requests (never served), at the right edge")
    elif rows is not None and curves:
        ax.plot([], [], " ", label="no request was rejected (none at the right edge)")
    if slo_s is not None:
        ax.axvline(slo_s, color="black", linestyle="--", linewidth=1.0, label=f"TTFT SLO {slo_s:g} s")
    ax.set_xscale("log")
    if curves:
        lows = [float(xs[0]) for _, _, xs, _, _ in curves if xs.size]
        ax.set_xlim(min(lows) * 0.8 if lows else edge / 100, right)
    ax.set_xlabel("time to first token (s, log scale)")
    ax.set_ylabel("fraction of requests" if rows is not None else "fraction of served requests")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("TTFT CDF per policy combination")
    _legend_right(ax)
    save(fig, path)


# --- GPU memory ------------------------------------------------------------------------------------

def plot_gpu_memory(path: Path, series: Sequence[RunMetrics | PlotSeries], capacity_gb: float | None = None) -> None:
    """GPU memory held by instances over time: one small panel per combination, the same
    axes in every panel, with the cluster's GPU memory as a dashed line when known."""
    ss = list(map(PlotSeries.of, series))
    n = max(1, len(ss))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = figure(4.0 * ncols + 1.0, 2.6 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    tmax = max((float(s.mem_t[-1]) for s in ss if s.mem_t.size), default=1.0)
    scale, unit = _time_unit(tmax)
    for k, ax in enumerate(axes.flat):
        if k >= len(ss):
            ax.set_visible(False)
            continue
        s = ss[k]
        style = _style(k)
        if s.mem_t.size:
            ax.step(s.mem_t / scale, s.mem_gb, where="post", color=style["color"], linewidth=1.2)
            ax.fill_between(s.mem_t / scale, s.mem_gb, step="post", color=style["color"], alpha=0.25)
        if capacity_gb is not None:
            ax.axhline(capacity_gb, color="black", linestyle="--", linewidth=1.0)
        ax.set_title(f"{short_id(k)} {_short(s.label, 42)}", fontsize="small")
        ax.grid(True, alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel("GPU memory in use (GB)")
        if k >= len(ss) - ncols:
            ax.set_xlabel(f"simulated time ({unit})")
            ax.xaxis.set_tick_params(labelbottom=True)
    if capacity_gb is not None:
        axes.flat[0].set_ylim(0.0, capacity_gb * 1.08)
    note = f"dashed: the cluster's GPU memory, {capacity_gb:g} GB" if capacity_gb is not None else ""
    fig.suptitle("GPU memory held by instances" + (f" ({note})" if note else ""))
    save(fig, path)


# --- Pareto scatter --------------------------------------------------------------------------------

def plot_pareto(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """SLO attainment against GPU GB-hours, quality as colour; the Pareto-optimal
    combinations (on SLO attainment, GB-hours and quality) ringed and joined."""
    fig = figure(9.0, 5.5)
    ax = fig.add_subplot()
    xs = np.array([_num(r, COST) for r in rows])
    ys = np.array([_num(r, SLO) for r in rows])
    qs = np.array([_num(r, QUALITY) for r in rows])
    front = pareto_flags(rows)
    ok = ~(np.isnan(xs) | np.isnan(ys))
    if ok.any():
        qok = qs[ok & ~np.isnan(qs)]
        lo = float(qok.min()) if qok.size else 0.0
        vmin, vmax = (min(lo, 0.999), 1.0)
        sc = ax.scatter(xs[ok], ys[ok], c=np.where(np.isnan(qs[ok]), vmin, qs[ok]), cmap="viridis",
                        vmin=vmin, vmax=vmax, s=70, zorder=3, edgecolors="none")
        cb = fig.colorbar(sc, ax=ax, pad=0.02, format="%.3f")
        cb.set_label("quality (token-weighted, 1 = full model)")
        pf = [i for i in range(len(rows)) if front[i] and ok[i]]
        if pf:
            ax.scatter(xs[pf], ys[pf], s=200, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4,
                       label="Pareto-optimal (SLO, GB-h, quality)")
            order = sorted(pf, key=lambda i: (xs[i], ys[i]))
            ax.plot(xs[order], ys[order], color="black", linewidth=0.8, linestyle=":", zorder=2)
        # Ids of points within 6 % of the axes' span of each other are listed together, so
        # that no label hides another.
        sx = max(float(np.ptp(xs[ok])), 1e-9)
        sy = max(float(np.ptp(ys[ok])), 1e-9)
        spots: list[tuple[float, float, list[str]]] = []
        for i in range(len(rows)):
            if not ok[i]:
                continue
            near = next((sp for sp in spots if abs(sp[0] - xs[i]) / sx < 0.06 and abs(sp[1] - ys[i]) / sy < 0.06), None)
            if near is None:
                spots.append((float(xs[i]), float(ys[i]), [short_id(i)]))
            else:
                near[2].append(short_id(i))
        for x, y, ids in spots:
            text = "\n".join(", ".join(ids[k:k + 3]) for k in range(0, len(ids), 3))
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(9, 7), fontsize="small", va="top"
                        if len(ids) > 3 else "baseline")
        pad_y = max(1.0, 0.08 * float(np.ptp(ys[ok])))
        ax.set_ylim(float(ys[ok].min()) - pad_y, min(100.0, float(ys[ok].max())) + pad_y)
        pad_x = max(0.05 * float(np.ptp(xs[ok])), 0.05 * float(xs[ok].max()), 0.01)
        ax.set_xlim(max(0.0, float(xs[ok].min()) - pad_x), float(xs[ok].max()) + max(2 * pad_x, 0.2 * sx))
        if pf:
            ax.legend(loc="lower right", fontsize="small", framealpha=0.9)
    ax.set_xlabel("GPU memory cost (GB-hours, lower is better)")
    ax.set_ylabel("SLO attainment (% of requests, higher is better)")
    ax.grid(True, alpha=0.3)
    ax.set_title("Trade-off: SLO attainment against GPU memory cost")
    save(fig, path)
