"""report.html: one self-contained page a person opens to read a run.

Everything is in the one file: the CSS inline and every plot as a base64 `data:` URI, so the
page opens from a mail attachment or an archive with no network and no sibling files. It
holds the verdict, the ranked table with every id's full label, every plot, and the run's
inputs (trace, profile, cluster, seed, and from run.json beside it, when there is one, the
trace files, the profile's hash and the versions of the code; run.json has the command).

The page is a deterministic function of its inputs (no timestamp), written atomically.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.atomic import write_text
from sim.report import COLUMN_NOTES, RANK_RULE, SUMMARY_COLUMNS, _summary_cells
from sim.verdict import verdict

# (key in write_results' paths, caption): the plots in the order the page shows them.
PLOTS: tuple[tuple[str, str], ...] = (
    ("pareto", "SLO attainment against GPU memory cost; Pareto-optimal combinations ringed"),
    ("ttft_cdf", "Time to first token: CDF over all requests, SLO dashed, rejected requests at the right edge"),
    ("gpu_memory", "GPU memory held by instances over time, one panel per combination"),
    ("per_model", "Requests that waited for weights, instance loads and wakes, and TTFT, for the busiest models"),
    ("quality_over_time", "Token-weighted quality of the tokens served over time, beside the requests that waited"),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1b1b1b; background: #fff; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.verdict { background: #eef6ee; border-left: 5px solid #2e7d32; padding: 0.6em 1em; }
.verdict p { margin: 0.3em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e4e4; }
th { background: #f4f4f4; text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.txt, th.txt { text-align: left; }
tr.pareto td { background: #fbfbe8; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.notes { color: #555; font-size: 0.85em; }
code { font-size: 0.9em; }
"""


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _ranked_table(rows: Sequence[Mapping[str, Any]], models: Sequence[Mapping[str, Any]] | None) -> str:
    body, ranked = _summary_cells(rows, models)
    text_cols = {"id", "pareto"}
    head = "".join(f'<th class="{"txt" if k in text_cols else ""}">{html.escape(h)}</th>'
                   for k, h in SUMMARY_COLUMNS) + '<th class="txt">policy</th>'
    out = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for cells, r in zip(body, ranked, strict=True):
        tds = "".join(f'<td class="{"txt" if k in text_cols else "num"}">{html.escape(c)}</td>'
                      for c, (k, _) in zip(cells, SUMMARY_COLUMNS, strict=True))
        tds += f'<td class="txt"><code>{html.escape(r.label)}</code></td>'
        out.append(f'<tr class="{"pareto" if r.pareto else ""}">{tds}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _inputs(header: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> str:
    items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in header.items()]
    if manifest:
        # Only the inputs --resume holds equal (not the command, which names --out and
        # --resume): the same run writes the same page in any folder, resumed or not.
        inputs = manifest.get("inputs") or {}
        trace = inputs.get("trace") or {}
        for f in trace.get("files") or []:
            items.append(("trace file", f"{f.get('name')} ({f.get('size')} bytes)"))
        profile = inputs.get("profile") or {}
        if profile.get("sha256"):
            items.append(("profile sha256", f"{profile.get('name')}: {str(profile['sha256'])[:16]}"))
        for name, version in (inputs.get("versions") or {}).items():
            items.append((f"version: {name}", str(version)))
    rows = "".join(f'<tr><th class="txt">{html.escape(k)}</th><td class="txt"><code>{html.escape(v)}</code></td></tr>'
                   for k, v in items)
    return f"<table>{rows}</table>"


def _manifest(folder: Path) -> dict[str, Any] | None:
    """run.json beside the report, when it is a run's folder (the API writes none)."""
    try:
        data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def render(rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any], models: Sequence[Mapping[str, Any]] | None,
           plots: Mapping[str, Path], manifest: Mapping[str, Any] | None = None) -> str:
    """The page's HTML text (see the module docstring)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>progressive-serve: simulation report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>progressive-serve simulation report</h1>",
             f'<p class="notes">{html.escape(str(header.get("trace", "")))}</p>']
    v = verdict(rows)
    parts.append("<h2>Verdict</h2>")
    if v is None:
        parts.append("<p>No policy combination finished: nothing to compare.</p>")
    else:
        parts.append('<div class="verdict">' + "".join(f"<p>{html.escape(t)}</p>" for t in v.lines()) + "</div>")
        parts.append(f"<h2>Ranking</h2><p>{html.escape(RANK_RULE[0].upper() + RANK_RULE[1:])}; highlighted rows are "
                     "Pareto-optimal.</p>")
        parts.append(_ranked_table(rows, models))
        parts.append('<p class="notes">' + html.escape(" ".join(COLUMN_NOTES)) + "</p>")
    parts.append("<h2>Plots</h2>")
    for key, caption in PLOTS:
        path = plots.get(key)
        if path is not None and Path(path).is_file():
            parts.append(f'<figure><img src="{_png_uri(Path(path))}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Run inputs</h2>")
    parts.append(_inputs(header, manifest))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path: Path, rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any],
                 models: Sequence[Mapping[str, Any]] | None, plots: Mapping[str, Path]) -> None:
    """Write report.html at `path` (atomically); run.json beside it adds the command and versions."""
    path = Path(path)
    write_text(path, render(rows, header, models, plots, _manifest(path.parent)))
