"""From serverless functions to LLM deployments: which functions, which model, how much load.

A function trace says when each function was invoked; an LLM simulator needs model names
and token counts. This module makes the choices in between, each one an option with a
default, and reports all of them so a result can be traced back to them:
which functions are kept (top-N by volume, a seeded sample, or all; optionally only some
triggers), what model each maps to (its own deployment, or a shared base model with a
per-function adapter), and how the rate is scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from traces.errors import TraceError

SELECTIONS = ("sample", "top", "all")
MODES = ("per_function", "shared")


@dataclass(frozen=True)
class MappingOptions:
    """How functions become model deployments (every field is a trace option)."""

    select: str = field(default="sample", metadata={"help": "sample | top | all: how functions are chosen"})
    functions: int = field(default=8, metadata={"help": "how many functions to keep (select=sample/top)"})
    min_invocations: int = field(default=1, metadata={
        "help": "functions with fewer invocations in the read days are never chosen"})
    triggers: tuple[str, ...] = field(default=(), metadata={"help": "keep only these triggers (comma list)"})
    catalog: tuple[str, ...] = field(default=("llama-2-7b",), metadata={
        "help": "base model names, assigned to functions round-robin"})
    mode: str = field(default="per_function", metadata={
        "help": "per_function: model '<base>-fn<i>' each; shared: the base model, adapter 'fn<i>'"})
    rate_scale: float = field(default=1.0, metadata={
        "help": "multiply every count (stochastic rounding keeps the expected total)"})
    top_n: int | None = field(default=None, metadata={"help": "shorthand for select=top functions=N"})
    sample_seed: int | None = field(default=None, metadata={
        "help": "seed for select=sample (default: the trace seed), to vary arrivals but keep the functions"})
    tokens: str = field(default="calibrated", metadata={
        "help": "token lengths: calibrated[:conv|code], an LLM trace name or path, or fixed:P,O"})
    lenient: bool = field(default=False, metadata={"help": "skip bad rows with counted warnings"})

    def __post_init__(self) -> None:
        if self.top_n is not None:  # the shorthand wins over select/functions
            object.__setattr__(self, "select", "top")
            object.__setattr__(self, "functions", self.top_n)

    def check(self) -> None:
        if self.select not in SELECTIONS:
            raise TraceError(f"option select: {self.select!r} is not one of {', '.join(SELECTIONS)}")
        if self.mode not in MODES:
            raise TraceError(f"option mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.functions < 1:
            raise TraceError(f"option functions: must be at least 1, got {self.functions}")
        if not 0 < self.rate_scale < float("inf"):
            raise TraceError(f"option rate_scale: must be a positive number, got {self.rate_scale}")
        if not self.catalog:
            raise TraceError("option catalog: needs at least one model name")


@dataclass(frozen=True)
class FunctionStat:
    """What selection needs to know about one function over the days read."""

    key: tuple[str, ...]
    trigger: str
    total: int

    @property
    def label(self) -> str:
        """A short, stable name for reports: the first 8 hex digits of app and function."""
        return "/".join(k[:8] for k in self.key[-2:])


def choose_functions(stats: list[FunctionStat], opts: MappingOptions, rng: np.random.Generator,
                     source: str = "trace") -> tuple[list[FunctionStat], str]:
    """Pick functions; return them (busiest first) and a sentence saying how."""
    pool = [s for s in stats if s.total >= opts.min_invocations]
    how = f"from {len(pool)} of {len(stats)} functions with >= {opts.min_invocations} invocations"
    if opts.triggers:
        pool = [s for s in pool if s.trigger in opts.triggers]
        how += f", triggers {','.join(opts.triggers)} ({len(pool)} left)"
    if not pool:
        raise TraceError(f"{source}: no function left to simulate ({how})", path=source)
    pool.sort(key=lambda s: (-s.total, s.key))
    if opts.select == "all":
        return pool, f"all {len(pool)} " + how
    n = min(opts.functions, len(pool))
    if opts.select == "top":
        return pool[:n], f"top {n} by invocations " + how
    picked = sorted(rng.choice(len(pool), size=n, replace=False).tolist())
    return [pool[i] for i in picked], f"seeded uniform sample of {n} " + how


def deployments(n: int, catalog: tuple[str, ...], mode: str) -> list[tuple[str, str]]:
    """`(model, adapter)` for functions 0..n-1: own deployment each, or shared base + adapter."""
    out = []
    for i in range(n):
        base = catalog[i % len(catalog)]
        out.append((f"{base}-fn{i}", "") if mode == "per_function" else (base, f"fn{i}"))
    return out


def scale_counts(counts: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Scale integer counts by `scale`, rounding each up with probability of its fraction."""
    if scale == 1.0:
        return counts
    scaled = counts * scale
    base = np.floor(scaled)
    return (base + (rng.random(counts.shape) < (scaled - base))).astype(np.int64)


def mapping_details(chosen: list, deps: list[tuple[str, str]], opts, how: str) -> dict:
    """Flat `details` entries for the mapping choices (shown in the run's summary)."""
    out: dict = {
        "functions.kept": len(chosen),
        "functions.how": how,
        "mapping.mode": opts.mode,
        "mapping.catalog": ",".join(opts.catalog),
        "rate_scale": opts.rate_scale,
    }
    if getattr(opts, "sample_seed", None) is not None:
        out["functions.sample_seed"] = opts.sample_seed
    for i, (s, (model, adapter)) in enumerate(zip(chosen[:32], deps, strict=False)):
        target = model + (f"+{adapter}" if adapter else "")
        out[f"function.{i}"] = f"{s.label} ({s.trigger}, {s.total} inv) -> {target}"
    if len(chosen) > 32:
        out["function.more"] = f"{len(chosen) - 32} more not listed"
    return out
