"""The replay's picture: each policy's TTFT distribution on the engine and in the simulator.

The error table gives three percentiles per policy; the CDFs show where between and beyond
them the two sides part (a few slow loads, or every request a little), which is what
decides whether a gap is the model's or one unlucky run's. Cold starts are marked, since
they are where the two sides most often differ.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from validate.plots import _save  # noqa: E402


def _cdf(ax, ttft: pd.Series, cold: pd.Series, label: str, color: str) -> None:
    order = np.argsort(ttft.to_numpy(), kind="stable")
    x = ttft.to_numpy()[order]
    y = np.arange(1, len(x) + 1) / len(x)
    ax.step(x, y, where="post", color=color, label=label)
    is_cold = cold.to_numpy()[order].astype(bool)
    ax.plot(x[is_cold], y[is_cold], "o", color=color, markersize=3, alpha=0.7)


def plot_replay_ttft(pairs: dict[str, tuple[pd.DataFrame, pd.DataFrame]], path: Path) -> Path:
    """One panel per policy: TTFT CDFs of the engine (`real`) and the simulator; dots are cold starts.

    `pairs` maps a policy label to (real rows, simulated rows), each with `ttft_s` and `cold`;
    the simulator's rejected requests (if any) are left out, as the error table leaves them."""
    if not pairs:
        raise ValueError("no policies to plot")
    cols = min(2, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (label, (real, sim)) in zip(axes.flat, pairs.items(), strict=False):
        if "rejected" in sim:
            sim = sim[~sim["rejected"].astype(bool)]
        _cdf(ax, real["ttft_s"], real["cold"], f"engine ({len(real)})", "tab:blue")
        _cdf(ax, sim["ttft_s"], sim["cold"], f"simulator ({len(sim)})", "tab:orange")
        ax.set_title(label)
        ax.set_xlabel("TTFT (s)")
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    return _save(fig, path)
