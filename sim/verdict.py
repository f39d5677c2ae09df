"""Which policy combination to deploy: a ranking, the Pareto front and a two-line verdict.

A run compares several combinations on three things a platform engineer trades against each
other: SLO attainment (higher is better), GPU memory cost in GB-hours (lower is better) and
token-weighted quality (higher is better; below 1 only when a progressive plan served
tokens from a partial model).

Ranking rule (documented in README "Reading the results"): SLO attainment descending, then
GPU GB-hours ascending, then quality descending, then TTFT p99 ascending, then run order. A value that is missing
(NaN: a combination that saw no requests) ranks as the worst value of its column.

Pareto-optimal: no other combination is at least as good on all three and strictly better
on one. The verdict names the best-ranked combination and the cheapest (fewest GPU
GB-hours) whose SLO attainment is within `tolerance_pp` percentage points of the best's.

Short ids `P1`, `P2`, ... follow the run order (the order of `--staging`, `--keepalive`, ...
combinations), so the same combination keeps its id whatever its rank; the table lists the
full label of each id under it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SLO = "slo_attainment_pct"
COST = "gpu_mem_gb_hours"
QUALITY = "quality_mean"
TAIL = "ttft_p99_s"
DEFAULT_TOLERANCE_PP = 1.0
# The columns the ranking adds to summary.csv (after the metrics' own).
RANK_COLUMNS: tuple[str, ...] = ("id", "rank", "pareto")


def short_id(index: int) -> str:
    """`P1` for the first combination in run order."""
    return f"P{index + 1}"


def _num(row: Mapping[str, Any], key: str, worst: float) -> float:
    v = row.get(key, math.nan)
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return worst
    return float(v)


def _goals(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """(SLO %, -GB-hours, quality): each the higher the better; NaN the worst."""
    return (_num(row, SLO, -math.inf), -_num(row, COST, math.inf), _num(row, QUALITY, -math.inf))


@dataclass(frozen=True)
class Ranked:
    """One combination's place: `index` in run order, its short `id`, `rank` (1 = best)."""

    index: int
    id: str
    rank: int
    pareto: bool
    row: Mapping[str, Any]

    @property
    def label(self) -> str:
        return str(self.row.get("policy", self.id))


def pareto_flags(rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Per row: True unless another row is as good on every goal and better on one."""
    goals = [_goals(r) for r in rows]

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [not any(dominates(o, g) for o in goals) for g in goals]


def rank(rows: Sequence[Mapping[str, Any]]) -> list[Ranked]:
    """The rows in rank order (see the module docstring for the rule)."""
    pareto = pareto_flags(rows)
    goals = [_goals(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (tuple(-g for g in goals[i]), _num(rows[i], TAIL, math.inf), i))
    return [Ranked(i, short_id(i), r + 1, pareto[i], rows[i]) for r, i in enumerate(order)]


def ranked_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows in run order with `id`, `rank` and `pareto` (1/0) added (summary.csv's view)."""
    by_index = {r.index: r for r in rank(rows)}
    return [{**row, "id": by_index[i].id, "rank": by_index[i].rank, "pareto": int(by_index[i].pareto)}
            for i, row in enumerate(rows)]


@dataclass(frozen=True)
class Verdict:
    """The best combination and the cheapest one within `tolerance_pp` of its SLO attainment."""

    best: Ranked
    cheapest: Ranked
    tolerance_pp: float

    def lines(self) -> list[str]:
        b, c = self.best, self.cheapest
        first = f"best: {b.id} {b.label} ({_facts(b.row)})"
        if c.index == b.index:
            second = (f"cheapest within {self.tolerance_pp:g} pp of its SLO attainment: {b.id} itself "
                      "(no combination within that distance uses fewer GPU GB-hours)")
        else:
            saved = _saving(b.row, c.row)
            second = (f"cheapest within {self.tolerance_pp:g} pp of its SLO attainment: {c.id} {c.label} "
                      f"({_facts(c.row)}{saved})")
        return [first, second]


def _facts(row: Mapping[str, Any]) -> str:
    return (f"SLO {_pct(row.get(SLO))} met, {_fixed(row.get(COST), 2)} GPU GB-h, "
            f"quality {_fixed(row.get(QUALITY), 3)}")


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, int | float) or math.isnan(v) else f"{v:.1f} %"


def _fixed(v: Any, digits: int) -> str:
    return "-" if not isinstance(v, int | float) or math.isnan(v) else f"{v:.{digits}f}"


def _saving(best: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    b, o = _num(best, COST, math.nan), _num(other, COST, math.nan)
    if not (b > 0 and math.isfinite(o)):
        return ""
    return f"; {100.0 * (b - o) / b:.0f} % fewer GPU GB-h than the best"


def verdict(rows: Sequence[Mapping[str, Any]], tolerance_pp: float = DEFAULT_TOLERANCE_PP) -> Verdict | None:
    """The verdict over `rows` (None when there are none)."""
    if not rows:
        return None
    if not tolerance_pp >= 0:
        raise ValueError(f"tolerance_pp must be >= 0, got {tolerance_pp}")
    ranked = rank(rows)
    best = ranked[0]
    floor = _num(best.row, SLO, -math.inf) - tolerance_pp
    near = [r for r in ranked if _num(r.row, SLO, -math.inf) >= floor]
    cheapest = min(near, key=lambda r: (_num(r.row, COST, math.inf), r.rank))
    return Verdict(best, cheapest, tolerance_pp)


def instance_counts(models: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per policy label, the instance loads (cold starts from scratch) and wakes (a sleeping
    process brought back) summed over models, from the per-model rows (models.csv)."""
    out: dict[str, dict[str, int]] = {}
    for m in models:
        c = out.setdefault(str(m["policy"]), {"loads": 0, "wakes": 0})
        c["loads"] += int(m.get("loads", 0))
        c["wakes"] += int(m.get("wakes", 0))
    return out
