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

from traces.base import Trace
from traces.errors import TraceError
from traces.mapping import MODES, deployments
from traces.ordering import numbered
from traces.tokens import TokenSource

CALIBRATION = Path(__file__).parent / "calibration" / "azure_functions_2019.json"
DEFAULT_DURATION_S = 3600.0
CHUNK_S = 3600.0


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


def cdf_of(cal: dict, name: str, x: float) -> float:
    """CDF of calibrated quantile table `name` at `x`."""
    probs, logq = _quantile(cal, name)
    return float(np.interp(np.log(x), logq, probs))


def daily_counts(cal: dict, rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """`n` daily counts from the calibrated distribution restricted to [lo, hi], one per stratum."""
    a, b = cdf_of(cal, "daily_invocations", lo), cdf_of(cal, "daily_invocations", hi)
    u = a + (b - a) * (np.arange(n) + rng.random(n)) / n
    return np.clip(sample_from(cal, "daily_invocations", u), lo, hi)[::-1]


def inter_arrival_cvs(cal: dict, rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-function CV: 0 with the periodic share, else log-normal."""
    periodic = rng.random(n) < cal["periodic_share"]["value"]
    cv = np.exp(cal["cv_lognormal"]["mu"] + cal["cv_lognormal"]["sigma"] * rng.standard_normal(n))
    return np.where(periodic, 0.0, cv)


@dataclass
class _Clock:
    """Maps wall time (s from start) to operational time through the hourly rate shape.

    Arrivals are generated at a constant rate in operational time and mapped back to wall
    time (by interpolation on a one-minute grid), which makes the rate follow the shape.
    """

    shape: np.ndarray
    start_hour: float

    def operational(self, t: np.ndarray | float) -> np.ndarray:
        """Integral of the rate multiplier from 0 to t (same units as t)."""
        t = np.asarray(t, float)
        start = self.start_hour * 3600.0
        grid = np.arange(0.0, float(np.max(t, initial=0.0)) + start + 7200.0, 3600.0)
        cum = np.concatenate([[0.0], np.cumsum(self.shape[(grid[:-1] // 3600).astype(int) % 24] * 3600.0)])
        return np.interp(t + start, grid, cum) - np.interp(start, grid, cum)


def _renewal(rate: float, cv: float, end: float, nxt: float,
             rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Arrivals of one renewal process from `nxt` (an arrival) up to `end`, and the next one after."""
    mean = 1.0 / rate
    out = []
    while nxt < end:
        k = int((end - nxt) * rate * 1.2) + 16
        gaps = np.full(k, mean) if cv == 0 else rng.gamma(1.0 / cv**2, mean * cv**2, size=k)
        times = nxt + np.concatenate([[0.0], np.cumsum(gaps)])
        candidates = times[:-1]
        inside = candidates[candidates < end]
        out.append(inside)
        nxt = float(candidates[len(inside)]) if len(inside) < len(candidates) else float(times[-1])
    return (np.concatenate(out) if out else np.empty(0)), nxt


@dataclass(frozen=True)
class SyntheticFunction:
    """One generated function: its load, burstiness and the ATC'20-calibrated attributes."""

    daily: float
    cv: float
    trigger: str
    duration_s: float
    memory_mb: float


def make_functions(cal: dict, opts: SyntheticOptions, rng: np.random.Generator) -> list[SyntheticFunction]:
    """Draw the functions (busiest first) from the calibration."""
    n = opts.functions
    daily = daily_counts(cal, rng, n, opts.min_daily, opts.max_daily)
    cv = inter_arrival_cvs(cal, rng, n)
    shares = {k: v for k, v in cal["trigger_shares"]["value"].items() if k != "timer"}
    names, weights = list(shares), np.array(list(shares.values()))
    trig = rng.choice(names, size=n, p=weights / weights.sum())
    dur = sample_from(cal, "duration_s", rng.random(n))
    mem = sample_from(cal, "memory_mb", rng.random(n))
    return [SyntheticFunction(float(daily[i]), float(cv[i]), "timer" if cv[i] == 0 else str(trig[i]),
                              float(dur[i]), float(mem[i])) for i in range(n)]


def _records(fns, deps, opts: SyntheticOptions, shape, horizon, arr_ss, tok_ss, tokens: TokenSource):
    rng, tok_rng = np.random.default_rng(arr_ss), np.random.default_rng(tok_ss)
    clock = _Clock(shape, opts.start_hour)
    grid = np.linspace(0.0, horizon, int(horizon // 60) + 2)
    op_grid = clock.operational(grid)
    rates = [f.daily * opts.rate_scale / 86400.0 for f in fns]
    nxt = [rng.random() / r for r in rates]
    labels = [f"fn{i}" for i in range(len(fns))]
    for a in np.arange(0.0, horizon, CHUNK_S):
        b_op = float(np.interp(min(a + CHUNK_S, horizon), grid, op_grid))
        taus, idx = [], []
        for i, f in enumerate(fns):
            t, nxt[i] = _renewal(rates[i], f.cv, b_op, nxt[i], rng)
            taus.append(t)
            idx.append(np.full(len(t), i))
        tau = np.concatenate(taus)
        order = np.argsort(tau, kind="stable")
        times = np.interp(tau[order], op_grid, grid)
        fidx = np.concatenate(idx)[order]
        prompt, output = tokens.draw(tok_rng, len(times))
        for t, i, p, o in zip(times.tolist(), fidx.tolist(), prompt.tolist(), output.tolist(), strict=True):
            yield t, deps[i][0], p, o, labels[i], deps[i][1]


def synthetic_trace(opts: SyntheticOptions, *, duration_s: float | None, seed: int, tokens: TokenSource,
                    name: str) -> Trace:
    """The calibrated synthetic `Trace`; `duration_s` None means one hour."""
    cal = load_calibration(opts.calibration)
    fn_ss, arr_ss, tok_ss = np.random.SeedSequence(seed).spawn(3)
    fns = make_functions(cal, opts, np.random.default_rng(fn_ss))
    deps = deployments(len(fns), opts.catalog, opts.mode)
    horizon = DEFAULT_DURATION_S if duration_s is None else float(duration_s)
    shape = np.asarray(cal["diurnal_hourly"]["value"], float) if opts.diurnal else np.ones(24)

    def make_iter() -> Iterator:
        return numbered(_records(fns, deps, opts, shape, horizon, arr_ss, tok_ss, tokens), horizon)

    details: dict = {
        "trace": "azure_functions_2019 calibrated synthetic",
        "source": "synthetic",
        "calibration": opts.calibration,
        "functions.kept": len(fns),
        "functions.how": f"stratified draw from the calibrated daily-count distribution within "
                         f"[{opts.min_daily:g}, {opts.max_daily:g}] invocations/day",
        "mapping.mode": opts.mode,
        "mapping.catalog": ",".join(opts.catalog),
        "rate_scale": opts.rate_scale,
        "diurnal": "calibrated hourly shape" if opts.diurnal else "flat",
        "start_hour": opts.start_hour,
        "tokens": tokens.describe(),
        "seed": seed,
        "duration_s": horizon,
        "expected_requests": round(sum(f.daily for f in fns) * opts.rate_scale * horizon / 86400.0, 1),
    }
    for i, (f, (model, adapter)) in enumerate(zip(fns, deps, strict=True)):
        target = model + (f"+{adapter}" if adapter else "")
        details[f"function.{i}"] = (f"fn{i} ({f.trigger}, {f.daily:.0f}/day, CV {f.cv:.2f}, exec {f.duration_s:.3g} s, "
                                    f"{f.memory_mb:.0f} MB) -> {target}")
    return Trace(name, make_iter, True, details)
