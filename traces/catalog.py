"""A platform catalogue: functions grouped by application onto N models or adapters.

At full Azure Functions volume (about 46,000 functions) the one-deployment-per-function
mapping (`traces.mapping.deployments`) asks a cluster to hold tens of thousands of models,
so every request is a cold start. A serverless LLM platform serves a catalogue of a few
hundred models or adapters instead, each used by some applications. This module builds
that catalogue from the synthetic generator's own draw, with no popularity numbers of
its own:

- an application's popularity is the sum of its functions' generated daily rates (the
  calibrated, heavy-tailed per-function distribution, ATC'20 Fig. 5(a), aggregated by the
  calibrated application sizes, Fig. 1); every function of an application shares one
  catalogue entry;
- applications are ranked by that popularity and dealt out in rank order: rank r goes to
  entry r mod N. The N busiest applications each get their own entry, and entry k also
  serves ranks k + N, k + 2N, ..., so entries keep the applications' rank order (entry 0
  is the busiest) and their popularity is the applications' skew with the long tail
  spread evenly;
- each entry is a deployment of one of the `catalog` base models (round-robin), named
  `<base>-m<k>` (mode per_function: a model of that base's shape each) or the base model
  with adapter `m<k>` (mode shared).

The skew that results is measured, not assumed (`skew`), and reported in the trace's
details next to the applications' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from traces.base import Trace
from traces.errors import TraceError
from traces.ordering import numbered
from traces.synthetic import DEFAULT_DURATION_S, SyntheticOptions, _records, synthetic_plan, synthetic_trace
from traces.tokens import TokenSource

LISTED_ENTRIES = 10  # catalogue entries named one by one in the details
LISTED_FUNCTIONS = 32


@dataclass(frozen=True)
class CatalogOptions(SyntheticOptions):
    """The generator's options plus the catalogue size (0: no catalogue, the plain mapping)."""

    catalog_size: int = field(default=0, metadata={
        "help": "0: each function its own deployment (see mode); N: a catalogue of N models/adapters, "
                "one per application, by popularity (traces/catalog.py)"})

    def check(self) -> None:
        super().check()
        if not 0 <= self.catalog_size <= 1_000_000:
            raise TraceError(f"option catalog_size: must be between 0 and 1,000,000, got {self.catalog_size}")


@dataclass(frozen=True)
class Skew:
    """How concentrated a popularity is: shares of the busiest 1 % and 10 %, and the Zipf
    exponent `s` of rate ~ rank^-s fitted by least squares on log rate against log rank."""

    items: int
    top1_share: float
    top10_share: float
    zipf_s: float

    def describe(self) -> str:
        return (f"{self.items} items: busiest 1% carry {self.top1_share:.1%}, busiest 10% {self.top10_share:.1%}, "
                f"Zipf s={self.zipf_s:.2f}")


def skew(rates: np.ndarray) -> Skew:
    """The `Skew` of positive `rates` (any order; zeros are left out of the fit)."""
    r = np.sort(np.asarray(rates, float))[::-1]
    if len(r) == 0 or not r.sum() > 0:
        raise ValueError("skew needs at least one positive rate")
    total = r.sum()

    def share(frac: float) -> float:
        return float(r[:max(1, int(np.ceil(frac * len(r))))].sum() / total)

    pos = r[r > 0]
    ranks = np.log(np.arange(1, len(pos) + 1))
    zipf = float(-np.polyfit(ranks, np.log(pos), 1)[0]) if len(pos) >= 2 else 0.0
    return Skew(len(r), share(0.01), share(0.10), zipf)


@dataclass(frozen=True)
class Catalogue:
    """Which entry serves each application, what each entry is, and its popularity."""

    entry_of_app: dict[int, int]
    targets: list[tuple[str, str]]  # per entry: (model, adapter)
    daily: np.ndarray  # per entry: daily invocations of its applications
    apps_per_entry: np.ndarray
    app_skew: Skew

    @property
    def skew(self) -> Skew:
        return skew(self.daily)


def build_catalogue(apps: np.ndarray, daily: np.ndarray, size: int, bases: tuple[str, ...],
                    mode: str) -> Catalogue:
    """Deal applications out over `size` entries by popularity rank (see the module docstring).

    `apps[i]` and `daily[i]` are function i's application and daily rate. Fewer applications
    than `size` use only as many entries."""
    if size < 1:
        raise ValueError(f"catalogue size must be at least 1, got {size}")
    if not bases:
        raise ValueError("catalogue needs at least one base model")
    ids, owner = np.unique(np.asarray(apps), return_inverse=True)
    app_daily = np.bincount(owner, weights=np.asarray(daily, float), minlength=len(ids))
    order = np.lexsort((ids, -app_daily))  # busiest first, ties by application id
    n = min(size, len(ids))
    entry = np.empty(len(ids), dtype=np.int64)
    entry[order] = np.arange(len(ids)) % n
    targets = []
    for k in range(n):
        base = bases[k % len(bases)]
        targets.append((f"{base}-m{k}", "") if mode == "per_function" else (base, f"m{k}"))
    return Catalogue(
        entry_of_app={int(a): int(e) for a, e in zip(ids, entry, strict=True)},
        targets=targets,
        daily=np.bincount(entry, weights=app_daily, minlength=n),
        apps_per_entry=np.bincount(entry, minlength=n),
        app_skew=skew(app_daily),
    )


def catalogue_details(cat: Catalogue, size: int, fns: list, deps: list[tuple[str, str]]) -> dict[str, Any]:
    """The trace's `details` entries for the catalogue (the run's summary prints them)."""
    out: dict[str, Any] = {
        "catalog.size": size,
        "catalog.entries_used": len(cat.targets),
        "catalog.how": "applications ranked by daily invocations (the sum of their functions' generated rates); "
                       "rank r -> entry r mod N; every function of an application shares its entry",
        "catalog.applications": cat.app_skew.describe(),
        "catalog.entries": cat.skew.describe(),
    }
    for k in np.argsort(-cat.daily, kind="stable")[:LISTED_ENTRIES]:
        model, adapter = cat.targets[k]
        out[f"catalog.entry.{k}"] = (f"{model}{f'+{adapter}' if adapter else ''}: {cat.apps_per_entry[k]} apps, "
                                     f"{cat.daily[k]:.4g} inv/day ({cat.daily[k] / cat.daily.sum():.1%})")
    for i, (f, (model, adapter)) in enumerate(zip(fns[:LISTED_FUNCTIONS], deps, strict=False)):
        out[f"function.{i}"] = (f"fn{i} (app{f.app}, {f.trigger}, {f.daily:.3g}/day, CV {f.cv:.2f}) -> "
                                f"{model}{f'+{adapter}' if adapter else ''}")
    if len(fns) > LISTED_FUNCTIONS:
        out["function.more"] = f"{len(fns) - LISTED_FUNCTIONS} more not listed"
    return out


def catalog_trace(opts: CatalogOptions, *, duration_s: float | None, seed: int, tokens: TokenSource,
                  name: str) -> Trace:
    """The synthetic trace of `opts` with its functions mapped onto a catalogue of
    `opts.catalog_size` entries: the same arrivals, functions and tokens as without the
    catalogue (same seed streams), only the model each request asks for differs."""
    if opts.catalog_size < 1:
        raise TraceError(f"option catalog_size: a catalogue needs at least 1 entry, got {opts.catalog_size}")
    # the plain trace for the generator's own details (its plan is drawn again below, identically)
    base = synthetic_trace(opts, duration_s=duration_s, seed=seed, tokens=tokens, name=name)
    plan, arr_ss, tok_ss = synthetic_plan(opts, seed)
    fns, clock = plan.functions, plan.clock
    cat = build_catalogue(np.array([f.app for f in fns]), np.array([f.daily * opts.rate_scale for f in fns]),
                          opts.catalog_size, opts.catalog, opts.mode)
    deps = [cat.targets[cat.entry_of_app[f.app]] for f in fns]
    horizon = DEFAULT_DURATION_S if duration_s is None else float(duration_s)

    def make_iter():
        return numbered(_records(fns, deps, opts, clock, horizon, arr_ss, tok_ss, tokens), horizon)

    details = {k: v for k, v in base.details.items() if not k.startswith("function.")}
    details.update(catalogue_details(cat, opts.catalog_size, fns, deps))
    return Trace(name, make_iter, True, details)
