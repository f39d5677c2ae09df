"""The calibrated population of functions the synthetic generator draws from.

A run needs only a few functions, so none of the population is materialised: each function
is drawn by its *rate quantile* u in [0, 1] (its place in the calibrated distribution of
daily invocations, ATC'20 Fig. 5(a)), and everything else is drawn given u:

- `draw=band` (default): one function per stratum of u within [min_daily, max_daily],
  so a handful of functions still spans the band; `sample`: u uniform on [0, 1], a uniform
  sample of the workload's functions over the full spread (about 8 orders of magnitude);
  `top`: the busiest `functions` of a workload of `population` functions, drawn as the top
  order statistics of that many uniforms (exact, without drawing the others).
- trigger: the paper gives each trigger's share of functions and of invocations
  (Fig. 2); invocations come mostly from the busiest functions, so the trigger mix
  depends on u. The simplest mix that honours both columns is piecewise constant: one mix
  below a split quantile u*, another above it, solved exactly (`trigger_model`). Both
  columns then hold over the population by construction; the mix within a band is the
  mix the paper implies for such functions.
- burstiness: timer functions are periodic (CV 0); other functions are periodic with the
  probability that brings the periodic share to the calibrated one (Fig. 6), else their
  CV is log-normal.
- application: functions are grouped into applications whose sizes follow Fig. 1;
  functions of one application are otherwise independent (the paper does not give their
  joint behaviour in a form this model can use).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAWS = ("band", "sample", "top")
SPLIT_GRID = np.linspace(0.5, 0.999, 500)
U_GRID = np.concatenate([np.linspace(0.0, 0.99, 99_001), np.linspace(0.99, 1.0, 100_001)[1:]])


def quantile_daily(cal: dict, u: np.ndarray) -> np.ndarray:
    """Daily invocations at rate quantile `u` (log-linear in the calibrated quantile table)."""
    probs = np.asarray(cal["quantile_probs"], float)
    return np.exp(np.interp(u, probs, np.log(np.asarray(cal["daily_invocations"]["value"], float))))


def cdf_daily(cal: dict, x: float) -> float:
    probs = np.asarray(cal["quantile_probs"], float)
    return float(np.interp(np.log(x), np.log(np.asarray(cal["daily_invocations"]["value"], float)), probs))


@dataclass(frozen=True)
class TriggerModel:
    """P(trigger | rate quantile u): `low` below `split`, `high` at or above it."""

    names: tuple[str, ...]
    split: float
    low: np.ndarray
    high: np.ndarray

    def draw(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One trigger per u, by inverse CDF of the mix of its region."""
        c_low, c_high = np.cumsum(self.low), np.cumsum(self.high)
        r = rng.random(len(u))
        cum = np.where((np.asarray(u) >= self.split)[:, None], c_high[None, :], c_low[None, :])
        idx = np.minimum((r[:, None] >= cum).sum(axis=1), len(self.names) - 1)
        return np.asarray(self.names)[idx]


def invocation_cdf(cal: dict) -> np.ndarray:
    """Share of all invocations made by functions with rate quantile below each point of U_GRID
    (trapezoids on a grid 100x finer in the top percentile, where most invocations are)."""
    x = quantile_daily(cal, U_GRID)
    cum = np.concatenate([[0.0], np.cumsum((x[1:] + x[:-1]) / 2 * np.diff(U_GRID))])
    return cum / cum[-1]


def trigger_model(cal: dict) -> TriggerModel:
    """Solve the two-region mix: for each trigger t with function share p and invocation share q,
    low * u* + high * (1 - u*) = p and low * I0 + high * (1 - I0) = q, I0 the invocation share
    below u*. Of the splits on SPLIT_GRID where every share is non-negative, the one whose
    smallest share is largest (the least extreme mix) is used; without one, the rate does
    not depend on the trigger (the function shares alone)."""
    p_all, q_all = cal["trigger_shares"]["value"], cal["trigger_invocation_shares"]["value"]
    names = tuple(p_all)
    p = np.array([p_all[n] for n in names], float)
    q = np.array([q_all.get(n, 0.0) for n in names], float)
    p, q = p / p.sum(), q / q.sum()
    cum = invocation_cdf(cal)
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    for s in SPLIT_GRID:
        i0 = float(np.interp(s, U_GRID, cum))
        det = s * (1 - i0) - (1 - s) * i0
        if abs(det) < 1e-12:
            continue
        low = (p * (1 - i0) - q * (1 - s)) / det
        high = (q * s - p * i0) / det
        worst = float(min(low.min(), high.min()))
        if worst >= 0 and (best is None or worst > best[0]):
            best = (worst, float(s), low, high)
    if best is None:
        return TriggerModel(names, 1.0, p, p)
    _, s, low, high = best
    return TriggerModel(names, s, low / low.sum(), high / high.sum())


def periodic_probability(cal: dict) -> tuple[float, float]:
    """(P(periodic | timer), P(periodic | other trigger)) giving the calibrated periodic share."""
    p0 = float(cal["periodic_share"]["value"])
    shares = cal["trigger_shares"]["value"]
    timer = shares.get("timer", 0.0) / sum(shares.values())
    if p0 <= timer:
        return (p0 / timer if timer else 0.0), 0.0
    return 1.0, (p0 - timer) / (1 - timer)


def draw_cvs(cal: dict, triggers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-function inter-arrival CV: 0 when periodic, else from the calibrated log-normal."""
    p_timer, p_other = periodic_probability(cal)
    periodic = rng.random(len(triggers)) < np.where(triggers == "timer", p_timer, p_other)
    cv = np.exp(cal["cv_lognormal"]["mu"] + cal["cv_lognormal"]["sigma"] * rng.standard_normal(len(triggers)))
    return np.where(periodic, 0.0, cv)


def app_sizes(cal: dict, rng: np.random.Generator, n: int) -> np.ndarray:
    """Functions in each of `n` applications: a Fig. 1 bin, then log-uniform within it."""
    bins = np.asarray(cal["functions_per_app"]["bins"], float)
    pick = rng.choice(len(bins), size=n, p=bins[:, 2] / bins[:, 2].sum())
    lo, hi = bins[pick, 0], bins[pick, 1] + 1
    return np.floor(np.exp(np.log(lo) + rng.random(n) * (np.log(hi) - np.log(lo)))).astype(int).clip(lo, hi - 1)


def assign_apps(cal: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """Application index of each of `n` functions: whole applications drawn until n functions
    are covered (the last one cut to fit), functions shuffled into them."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.extend(app_sizes(cal, rng, 16).tolist())
    owner = np.repeat(np.arange(len(sizes)), sizes)[:n]
    return owner[rng.permutation(n)]


def rate_quantiles(cal: dict, draw: str, n: int, lo: float, hi: float, population: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Rate quantiles of the `n` functions a run needs, busiest first (see the module docstring)."""
    if draw == "band":
        a, b = cdf_daily(cal, lo), cdf_daily(cal, hi)
        return (a + (b - a) * (np.arange(n) + rng.random(n)) / n)[::-1]
    if draw == "sample":
        return np.sort(rng.random(n))[::-1]
    # top: U_(N) = V^(1/N), U_(N-k) = U_(N-k+1) * V^(1/(N-k)): the largest order statistics of N uniforms
    v = rng.random(n)
    return np.exp(np.cumsum(np.log(v) / (population - np.arange(n))))


def population_shares(cal: dict, model: TriggerModel, n: int, rng: np.random.Generator) -> dict:
    """Statistics of `n` functions (and as many applications) drawn from the population, each
    beside the published number it is calibrated to: `{name: (generated, published)}`."""
    u = rng.random(n)
    daily = quantile_daily(cal, u)
    trig = model.draw(u, rng)
    cv = draw_cvs(cal, trig, rng)
    out: dict = {}
    fn_pub, inv_pub = cal["trigger_shares"]["value"], cal["trigger_invocation_shares"]["value"]
    for t in model.names:
        mask = trig == t
        out[f"functions.{t}"] = (float(mask.mean()), fn_pub[t] / sum(fn_pub.values()))
        out[f"invocations.{t}"] = (float(daily[mask].sum() / daily.sum()), inv_pub.get(t, 0.0) / sum(inv_pub.values()))
    for p in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999):
        out[f"daily.p{p * 100:g}"] = (float(np.quantile(daily, p)), float(quantile_daily(cal, np.array(p))))
    for limit, what in ((24.0, "at_most_1_per_hour"), (1440.0, "at_most_1_per_minute")):
        out[f"daily.{what}"] = (float(np.mean(daily <= limit)), cdf_daily(cal, limit))
    out["periodic"] = (float(np.mean(cv == 0)), float(cal["periodic_share"]["value"]))
    sizes = app_sizes(cal, rng, n)
    for lo, hi, share in cal["functions_per_app"]["bins"]:
        key = f"apps.{int(lo)}" if lo == hi else f"apps.{int(lo)}-{int(hi)}"
        total = sum(b[2] for b in cal["functions_per_app"]["bins"])
        out[key] = (float(np.mean((sizes >= lo) & (sizes <= hi))), share / total)
    return out
