"""The calibrated synthetic stand-in for the Azure Functions trace.

Used when no real files are found (and on request as `synthetic`). Every parameter comes
from `traces/calibration/azure_functions_2019.json`, whose entries say where each number
was measured or which ATC'20 figure it is from:
- each function's daily invocation count is drawn from the calibrated (heavy-tailed,
  orders-of-magnitude) distribution, restricted to a band [min_daily, max_daily] so a
  small cluster sees both cold starts and warm hits, by stratified sampling so that a
  handful of functions still spans the band;
- a share of functions is periodic (timer-like, CV 0, random phase); the others are
  gamma renewal processes whose inter-arrival CV is drawn from the calibrated log-normal;
- time runs through the calibrated diurnal shape (operational time warped by the
  hour-of-day rate multiplier);
- each function also gets a trigger, an execution time and a memory size, reported in
  the details.
All randomness flows from one `SeedSequence(seed)`, spawned into one stream per purpose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from traces.arrivals import DiurnalClock, stream
from traces.base import Trace
from traces.errors import TraceError
from traces.mapping import MODES, deployments
from traces.ordering import numbered
from traces.population import (
    DRAWS,
    TriggerModel,
    assign_apps,
    draw_cvs,
    quantile_daily,
    rate_quantiles,
    trigger_model,
)
from traces.tokens import TokenSource

CALIBRATION = Path(__file__).parent / "calibration" / "azure_functions_2019.json"
DEFAULT_DURATION_S = 3600.0


@cache
def load_calibration(path: str = str(CALIBRATION)) -> dict:
    """The calibration JSON (cached), checked; `TraceError` naming the file (and field) if
    it is missing, not JSON or not a calibration."""
    try:
        cal = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TraceError(f"{path}: cannot read calibration: {' '.join(str(exc).split())}", path=str(path)) from None
    check_calibration(cal, str(path))
    return cal


def check_calibration(cal: object, path: str) -> None:
    """Every entry the generator and the calibrated token sampler read, with its type and range.

    Bounds beyond the shapes: the diurnal multipliers are at most 24 (all of a day's load in
    one hour) and the CV log-normal has |mu| <= 5, sigma <= 3, so a damaged file cannot ask
    for an unbounded number of arrivals.
    """
    def fail(name: str, problem: str) -> TraceError:
        return TraceError(f"{path}: field '{name}': {problem}", path=path, field_name=name)

    def get(name: str) -> object:
        node = cal
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                raise fail(name, "missing")
            node = node[part]
        return node

    def is_number(v: object) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            return math.isfinite(v)
        except OverflowError:  # an integer beyond the float range
            return False

    def number(name: str, lo: float, hi: float) -> float:
        v = get(name)
        if not is_number(v) or not lo <= v <= hi:
            raise fail(name, f"expected a number in [{lo:g}, {hi:g}], got {str(v)[:40]}")
        return float(v)

    def numbers(name: str, n: int | None = None, lo: float = -np.inf, hi: float = np.inf,
                positive: bool = False, increasing: bool = False) -> list:
        v = get(name)
        if not isinstance(v, list) or len(v) < 2 or (n is not None and len(v) != n):
            raise fail(name, f"expected a list of {n or 'at least 2'} numbers")
        for x in v:
            if not is_number(x) or not lo <= x <= hi or (positive and not x > 0):
                raise fail(name, f"entry {str(x)[:40]} is not a {'positive ' if positive else ''}number"
                                 f"{f' in [{lo:g}, {hi:g}]' if np.isfinite(lo) or np.isfinite(hi) else ''}")
        if increasing and any(b < a for a, b in zip(v, v[1:], strict=False)):
            raise fail(name, "must not decrease")
        return v

    if not isinstance(cal, dict):
        raise TraceError(f"{path}: a calibration is a JSON object", path=path)
    probs = numbers("quantile_probs", lo=0.0, hi=1.0, increasing=True)
    for name in ("daily_invocations", "duration_s", "memory_mb"):
        numbers(f"{name}.value", n=len(probs), positive=True, increasing=True)
    number("periodic_share.value", 0.0, 1.0)
    number("cv_lognormal.mu", -5.0, 5.0)
    number("cv_lognormal.sigma", 0.0, 3.0)
    if not sum(numbers("diurnal_hourly.value", n=24, lo=0.0, hi=24.0)) > 0:
        raise fail("diurnal_hourly.value", "needs a positive entry")
    shares = get("trigger_shares.value")
    if not isinstance(shares, dict) or not all(is_number(v) and v >= 0 for v in shares.values()) \
            or not sum(v for k, v in shares.items() if k != "timer") > 0:
        raise fail("trigger_shares.value", "expected non-negative shares, some for a trigger other than timer")
    inv = get("trigger_invocation_shares.value")
    if not isinstance(inv, dict) or not all(is_number(v) and v >= 0 for v in inv.values()) \
            or not sum(inv.values()) > 0:
        raise fail("trigger_invocation_shares.value", "expected non-negative shares, some positive")
    bins = get("functions_per_app.bins")
    if not isinstance(bins, list) or not bins or not all(
            isinstance(b, list) and len(b) == 3 and all(is_number(x) for x in b)
            and 1 <= b[0] <= b[1] <= 1e6 and b[2] >= 0 for b in bins) or not sum(b[2] for b in bins) > 0:
        raise fail("functions_per_app.bins", "expected [least, most, share] rows with 1 <= least <= most <= 1e6, "
                                             "shares >= 0, some positive")
    tokens = get("tokens") if "tokens" in cal else {}
    if not isinstance(tokens, dict):
        raise fail("tokens", "expected an object of token tables")
    for kind in tokens:
        p = f"tokens.{kind}"
        n = len(numbers(f"{p}.probs.value", lo=0.0, hi=1.0, increasing=True))
        numbers(f"{p}.prompt_quantiles.value", n=n, positive=True, increasing=True)
        numbers(f"{p}.output_quantiles.value", n=n, positive=True, increasing=True)
        number(f"{p}.rank_correlation_normal_scores.value", -1.0, 1.0)


@dataclass(frozen=True)
class SyntheticOptions:
    """Options of the calibrated generator."""

    functions: int = field(default=8, metadata={"help": "number of functions (each a deployment)"})
    draw: str = field(default="band", metadata={
        "help": "band: one function per stratum of daily rate within [min_daily, max_daily]; sample: a uniform "
                "sample of the workload (full spread); top: the busiest of `population` functions"})
    population: int = field(default=46_000, metadata={
        "help": "functions in the workload that draw=top picks from (about a day of the 2019 trace)"})
    min_daily: float = field(default=24.0, metadata={"help": "least daily invocations of a function (1/hour)"})
    max_daily: float = field(default=14400.0, metadata={"help": "most daily invocations of a function (1 per 6 s)"})
    start_hour: float = field(default=0.0, metadata={"help": "hour of day (UTC) at which the trace starts"})
    diurnal: bool = field(default=True, metadata={"help": "apply the calibrated hour-of-day shape"})
    catalog: tuple[str, ...] = field(default=("llama-2-7b",), metadata={"help": "base model names, round-robin"})
    mode: str = field(default="per_function", metadata={"help": "per_function or shared (base model + adapter)"})
    rate_scale: float = field(default=1.0, metadata={"help": "multiply every function's rate"})
    tokens: str = field(default="calibrated", metadata={"help": "calibrated[:conv|code], LLM trace, or fixed:P,O"})
    calibration: str = field(default=str(CALIBRATION), metadata={"help": "calibration JSON to use"})

    def check(self) -> None:
        if self.functions < 1:
            raise TraceError(f"option functions: must be at least 1, got {self.functions}")
        if self.draw not in DRAWS:
            raise TraceError(f"option draw: {self.draw!r} is not one of {', '.join(DRAWS)}")
        if not self.functions <= self.population <= 10**12:
            raise TraceError(f"option population: need functions ({self.functions}) <= population <= 1e12, "
                             f"got {self.population}")
        if not 0 < self.min_daily <= self.max_daily:
            raise TraceError(f"option min_daily/max_daily: need 0 < {self.min_daily} <= {self.max_daily}")
        if not 0 < self.rate_scale < float("inf"):
            raise TraceError(f"option rate_scale: must be a positive number, got {self.rate_scale}")
        if self.mode not in MODES:
            raise TraceError(f"option mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not self.catalog:
            raise TraceError("option catalog: needs at least one model name")


def _quantile(cal: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(cal["quantile_probs"], float), np.log(np.asarray(cal[name]["value"], float))


def sample_from(cal: dict, name: str, u: np.ndarray) -> np.ndarray:
    """Inverse CDF of calibrated quantile table `name` at probabilities `u` (log-linear)."""
    probs, logq = _quantile(cal, name)
    return np.exp(np.interp(u, probs, logq))


@dataclass(frozen=True)
class SyntheticFunction:
    """One generated function: its load, burstiness and the ATC'20-calibrated attributes."""

    daily: float
    cv: float
    trigger: str
    duration_s: float
    memory_mb: float
    app: int = 0
    rate_quantile: float = 0.5


@cache
def _trigger_model(path: str) -> TriggerModel:
    """The trigger mix of a calibration file, solved once (see `traces.population.trigger_model`)."""
    return trigger_model(load_calibration(path))


def make_functions(cal: dict, opts: SyntheticOptions, rng: np.random.Generator) -> list[SyntheticFunction]:
    """Draw the functions a run needs (busiest first) from the calibrated population."""
    n = opts.functions
    u = rate_quantiles(cal, opts.draw, n, opts.min_daily, opts.max_daily, opts.population, rng)
    daily = quantile_daily(cal, u)
    if opts.draw == "band":
        daily = np.clip(daily, opts.min_daily, opts.max_daily)
    trig = _trigger_model(opts.calibration).draw(u, rng)
    cv = draw_cvs(cal, trig, rng)
    dur = sample_from(cal, "duration_s", rng.random(n))
    mem = sample_from(cal, "memory_mb", rng.random(n))
    app = assign_apps(cal, n, rng)
    return [SyntheticFunction(float(daily[i]), float(cv[i]), str(trig[i]), float(dur[i]), float(mem[i]),
                              int(app[i]), float(u[i])) for i in range(n)]


def _records(fns, deps, opts: SyntheticOptions, clock: DiurnalClock, horizon: float, arr_ss, tok_ss,
             tokens: TokenSource):
    """Records in arrival order, one chunk of arrivals at a time (memory flat in the request count)."""
    rng, tok_rng = np.random.default_rng(arr_ss), np.random.default_rng(tok_ss)
    rates = np.array([f.daily * opts.rate_scale / 86400.0 for f in fns])
    cvs = np.array([f.cv for f in fns])
    labels = [f"fn{i}" for i in range(len(fns))]
    for tau, fidx in stream(rates, cvs, float(clock.operational(horizon)), rng):
        times = clock.wall(tau)
        prompt, output = tokens.draw(tok_rng, len(times))
        for t, i, p, o in zip(times.tolist(), fidx.tolist(), prompt.tolist(), output.tolist(), strict=True):
            yield t, deps[i][0], p, o, labels[i], deps[i][1]


def expected_requests(fns: list[SyntheticFunction], rate_scale: float, clock: DiurnalClock,
                      a: float, b: float) -> float:
    """Expected arrivals in wall window [a, b]: every process is stationary in operational time,
    so this is the total rate times the operational length of the window."""
    return sum(f.daily for f in fns) * rate_scale / 86400.0 * float(clock.operational(b) - clock.operational(a))


@dataclass(frozen=True)
class SyntheticPlan:
    """What a seed and the options decide before any arrival: the functions and the clock."""

    functions: list[SyntheticFunction]
    clock: DiurnalClock


HOW = {"band": "stratified draw from the calibrated daily-count distribution within [{lo:g}, {hi:g}] invocations/day",
       "sample": "uniform sample of the calibrated population (full spread of daily counts)",
       "top": "the busiest {n} of a calibrated population of {pop} functions (top order statistics)"}


def synthetic_plan(opts: SyntheticOptions, seed: int) -> tuple[SyntheticPlan, np.random.SeedSequence,
                                                                np.random.SeedSequence]:
    """The plan for `seed`, and the seed sequences of the arrival and token streams."""
    cal = load_calibration(opts.calibration)
    fn_ss, arr_ss, tok_ss = np.random.SeedSequence(seed).spawn(3)
    fns = make_functions(cal, opts, np.random.default_rng(fn_ss))
    shape = tuple(float(v) for v in cal["diurnal_hourly"]["value"]) if opts.diurnal else (1.0,) * 24
    return SyntheticPlan(fns, DiurnalClock(shape, opts.start_hour)), arr_ss, tok_ss


def synthetic_trace(opts: SyntheticOptions, *, duration_s: float | None, seed: int, tokens: TokenSource,
                    name: str) -> Trace:
    """The calibrated synthetic `Trace`; `duration_s` None means one hour."""
    plan, arr_ss, tok_ss = synthetic_plan(opts, seed)
    fns, clock = plan.functions, plan.clock
    deps = deployments(len(fns), opts.catalog, opts.mode)
    horizon = DEFAULT_DURATION_S if duration_s is None else float(duration_s)

    def make_iter() -> Iterator:
        return numbered(_records(fns, deps, opts, clock, horizon, arr_ss, tok_ss, tokens), horizon)

    details: dict = {
        "trace": "azure_functions_2019 calibrated synthetic",
        "source": "synthetic",
        "calibration": opts.calibration,
        "functions.kept": len(fns),
        "functions.how": HOW[opts.draw].format(lo=opts.min_daily, hi=opts.max_daily, n=len(fns),
                                                 pop=opts.population),
        "functions.apps": len({f.app for f in fns}),
        "mapping.mode": opts.mode,
        "mapping.catalog": ",".join(opts.catalog),
        "rate_scale": opts.rate_scale,
        "diurnal": "calibrated hourly shape" if opts.diurnal else "flat",
        "start_hour": opts.start_hour,
        "arrivals": "stationary renewal processes (first gap from the residual-life distribution)",
        "tokens": tokens.describe(),
        "seed": seed,
        "duration_s": horizon,
        "expected_requests": round(expected_requests(fns, opts.rate_scale, clock, 0.0, horizon), 1),
    }
    for i, (f, (model, adapter)) in enumerate(zip(fns, deps, strict=True)):
        target = model + (f"+{adapter}" if adapter else "")
        details[f"function.{i}"] = (f"fn{i} (app{f.app}, {f.trigger}, {f.daily:.3g}/day, CV {f.cv:.2f}, "
                                    f"exec {f.duration_s:.3g} s, {f.memory_mb:.0f} MB) -> {target}")
    return Trace(name, make_iter, True, details)
