"""Plots for the report (matplotlib, Agg backend: no display is ever needed).

Three pictures carry what the tables cannot: where a cold start's time goes per plan,
how latency grows with prompt length and batch per stage, and the per-layer load
timeline (read, copy, bind) that shows whether the loader keeps the link busy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from validate.results import Measurements  # noqa: E402


def plot_cold_start(m: Measurements, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    names = list(dict.fromkeys(p for c in m.cold_starts for p in c.parts))
    for i, c in enumerate(m.cold_starts):
        left = 0.0
        for k, name in enumerate(names):
            v = c.parts.get(name, 0.0)
            ax.barh(i, v, left=left, color=f"C{k}", label=name if i == 0 else None)
            left += v
        ax.barh(i, max(0.0, c.ttft_s - left), left=left, color="lightgrey", label="other" if i == 0 else None)
    ax.set_yticks(range(len(m.cold_starts)), [c.plan for c in m.cold_starts])
    ax.set_xlabel("seconds from cold to first token")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"TTFT from cold: {m.model_name}")
    return _save(fig, path)


def plot_latency(m: Measurements, path: Path) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    for name, t in m.prefill.items():
        a.plot(t.x, t.seconds, marker="o", label=name)
    for name, t in m.decode.items():
        b.plot(t.x, t.seconds, marker="o", label=name)
    a.set_xlabel("prompt tokens")
    a.set_ylabel("prefill s")
    b.set_xlabel("batch size")
    b.set_ylabel("decode step s")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("latency per stage")
    return _save(fig, path)


def plot_load_timeline(m: Measurements, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for i, r in enumerate(m.per_layer):
        start = r.get("start_s", 0.0)
        ax.barh(i, r.get("read_s", 0.0), left=start, color="C0", label="read" if i == 0 else None)
        ax.barh(
            i,
            r.get("copy_s", 0.0),
            left=start + r.get("read_s", 0.0),
            color="C1",
            label="copy" if i == 0 else None,
        )
    ax.set_xlabel("seconds since load start")
    ax.set_ylabel("loading unit (0 = embedding/head)")
    ax.legend(fontsize=7)
    ax.set_title("per-layer load timeline (full plan)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(m: Measurements, out_dir: Path) -> dict[str, str]:
    """Write every plot under out_dir/plots; {title: path relative to out_dir}."""
    plots = {
        "TTFT from cold per plan": plot_cold_start(m, out_dir / "plots" / "cold_start.png"),
        "latency tables": plot_latency(m, out_dir / "plots" / "latency.png"),
    }
    if m.per_layer:
        plots["load timeline"] = plot_load_timeline(m, out_dir / "plots" / "load_timeline.png")
    return {k: str(v.relative_to(out_dir)) for k, v in plots.items()}
