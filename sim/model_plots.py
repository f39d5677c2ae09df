"""Plots of what happened inside a run: per model (the busiest ones) and over time.

`per_model.png`: for the models with the most requests, the share of requests that waited
for weights, the instance loads and wakes (from the per-model rows, models.csv) and, when
the per-request records are there, the TTFT p50 and p99. `quality_over_time.png` (with
records): the token-weighted quality of the tokens served over simulated time by the
combinations that served below full quality (a progressive plan), beside the share of
requests that waited for weights, so that the dips read as cold starts.

Records are read from the run's Parquet parts, a few columns at a time; without records
(`--no-records`) these plots show what the per-model rows hold, or are not drawn. Same
determinism and atomic writes as sim.plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.plots import _legend_right, _short, _style, _time_unit, figure, save
from sim.verdict import QUALITY, short_id

if TYPE_CHECKING:
    import pandas as pd

BUSIEST_MODELS = 6
TIME_BUCKETS = 60
_COLUMNS = ("policy", "model", "first_token_s", "arrival_s", "ttft_s", "output_tokens", "quality", "cold",
            "rejected")


def load_records(parts: Sequence[Path]) -> pd.DataFrame:
    """The columns these plots need from the run's record files (parts in run order)."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = [pq.read_table(p, columns=list(_COLUMNS)).to_pandas() for p in parts if Path(p).is_file()]
    if not frames:
        return pd.DataFrame(columns=list(_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def busiest_models(models: Sequence[Mapping[str, Any]], n: int = BUSIEST_MODELS) -> list[str]:
    """The `n` models with the most requests over all combinations (ties by name)."""
    total: dict[str, int] = {}
    for m in models:
        total[str(m["model"])] = total.get(str(m["model"]), 0) + int(m.get("requests", 0))
    return [name for name, _ in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def plot_per_model(path: Path, labels: Sequence[str], models: Sequence[Mapping[str, Any]],
                   records: pd.DataFrame | None = None, n: int = BUSIEST_MODELS) -> None:
    """Per busiest model and combination: requests that waited (%), loads and wakes, and
    with `records` the served requests' TTFT p50 (bar) and p99 (tick)."""
    names = busiest_models(models, n)
    cell = {(str(m["policy"]), str(m["model"])): m for m in models}
    ttft = None
    if records is not None and len(records):
        served = records[~records["rejected"].astype(bool) & records["model"].isin(names)]
        ttft = served.groupby(["policy", "model"])["ttft_s"].quantile([0.5, 0.99]).unstack()
    panels = 3 if ttft is not None else 2
    fig = figure(12.0, 3.2 * panels + 0.6)
    axes = fig.subplots(panels, 1, sharex=True)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(names))
    for i, lab in enumerate(labels):
        waited, loads, wakes, p50, p99 = [], [], [], [], []
        for name in names:
            m = cell.get((lab, name), {})
            req = int(m.get("requests", 0))
            waited.append(100.0 * int(m.get("cold", 0)) / req if req else 0.0)
            loads.append(int(m.get("loads", 0)))
            wakes.append(int(m.get("wakes", 0)))
            if ttft is not None:
                q = ttft.loc[(lab, name)] if (lab, name) in ttft.index else None
                p50.append(float(q[0.5]) if q is not None else np.nan)
                p99.append(float(q[0.99]) if q is not None else np.nan)
        st = _style(i)
        pos = x - 0.4 + width * (i + 0.5)
        axes[0].bar(pos, waited, width, color=st["color"], label=f"{short_id(i)} {_short(lab)}")
        axes[1].bar(pos, loads, width, color=st["color"], edgecolor="white")
        axes[1].bar(pos, wakes, width, bottom=loads, color=st["color"], alpha=0.45, hatch="//", edgecolor="white")
        if ttft is not None:
            axes[2].bar(pos, p50, width, color=st["color"])
            axes[2].scatter(pos, p99, marker="_", s=200, color="black", zorder=3,
                            label="p99" if i == 0 else None)
    axes[0].set_ylabel("requests that waited\nfor weights (%)")
    axes[0].set_ylim(0, 105)
    axes[1].set_ylabel("instance starts (count):\nloads solid, wakes hatched")
    if ttft is not None:
        axes[2].set_yscale("log")
        axes[2].set_ylabel("TTFT (s, log scale):\np50 bar, p99 tick")
        axes[2].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize="small")
    axes[-1].set_xticks(x, [_short(nm, 24) for nm in names], rotation=20, ha="right")
    axes[-1].set_xlabel(f"model (the {len(names)} with the most requests)")
    for ax in axes:
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title("Cold starts, wakes and TTFT per model")
    _legend_right(axes[0])
    save(fig, path)


def below_full_quality(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of the combinations that served some tokens below full quality."""
    out = []
    for i, r in enumerate(rows):
        q = r.get(QUALITY)
        if isinstance(q, int | float) and not isinstance(q, bool) and q < 1.0:
            out.append(i)
    return out


def quality_by_time(records: pd.DataFrame, label: str, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per time bucket (`edges`, seconds) of combination `label`: the token-weighted quality of
    the served requests whose first token fell in it, and the % of the requests arriving in it
    that waited for weights; NaN where a bucket has none."""
    k = len(edges) - 1
    rec = records[records["policy"] == label]
    served = rec[~rec["rejected"].astype(bool)]
    b = np.clip(np.searchsorted(edges, served["first_token_s"].to_numpy(), side="right") - 1, 0, k - 1)
    w = served["output_tokens"].to_numpy(dtype=np.float64)
    tokens = np.bincount(b, weights=w, minlength=k)
    qsum = np.bincount(b, weights=w * served["quality"].to_numpy(dtype=np.float64), minlength=k)
    ba = np.clip(np.searchsorted(edges, rec["arrival_s"].to_numpy(), side="right") - 1, 0, k - 1)
    n = np.bincount(ba, minlength=k).astype(np.float64)
    cold = np.bincount(ba, weights=rec["cold"].to_numpy(dtype=np.float64), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tokens > 0, qsum / tokens, np.nan), np.where(n > 0, 100.0 * cold / n, np.nan)


def plot_quality_over_time(path: Path, rows: Sequence[Mapping[str, Any]], records: pd.DataFrame,
                           horizon_s: float) -> None:
    """Token-weighted quality of the tokens served, by when their request got its first
    token, in TIME_BUCKETS equal buckets; below it the share of arrivals that waited for
    weights. One line per combination that served below full quality (`below_full_quality`);
    when none did, the top panel says so and the bottom one shows every combination."""
    below = below_full_quality(rows)
    which = below or list(range(len(rows)))
    scale, unit = _time_unit(horizon_s)
    edges = np.linspace(0.0, horizon_s, TIME_BUCKETS + 1)
    mids = (edges[:-1] + edges[1:]) / 2 / scale
    fig = figure(11.0, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i in which:
        q, share = quality_by_time(records, str(rows[i].get("policy")), edges)
        st = {**_style(i), "linewidth": 1.5}
        label = f"{short_id(i)} {_short(str(rows[i].get('policy')))}"
        if below:
            top.plot(mids, q, marker=".", label=label, **st)
        bottom.plot(mids, share, marker=".", label=None if below else label, **st)
    if not below:
        top.text(0.5, 0.5, "every combination served every token at full quality", transform=top.transAxes,
                 ha="center", va="center")
    top.set_ylabel("token-weighted quality\n(1 = full model)")
    top.set_ylim(top=1.005)
    bottom.set_ylabel("requests that waited\nfor weights (%)")
    bottom.set_ylim(-2, 102)
    bottom.set_xlabel(f"simulated time ({unit}; {TIME_BUCKETS} buckets, quality by first-token time)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.set_title("Quality of the tokens served over time, and the cold starts behind the dips")
    _legend_right(top if below else bottom)
    save(fig, path)
