"""A short, time-compressed segment of a real trace, mapped onto a handful of models.

The engine replays requests in wall-clock time, so a segment must be short; compressing
time (one trace minute becomes `60 / compress` seconds) keeps the real shape of the
arrivals (bursts, gaps, which function follows which) while making a few trace minutes
run in under a minute. Each of the `num_models` busiest functions in the window becomes
one model ("m0" the busiest), so per-model cold starts and keep-alive behave as on a
serverless platform. Token counts come from the Azure LLM 2023 trace (real prompt and
output lengths), clipped so a CPU run stays short; the clips are printed with the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from validate.errors import ValidateError

COLUMNS = ["arrival_s", "model", "prompt_tokens", "output_tokens"]
FUNCTIONS_FILE = "azure_functions_2019/invocations_per_function_md.anon.d01.csv"
LLM_FILE = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"


@dataclass(frozen=True)
class SegmentSpec:
    """Which part of which trace, how compressed, and how large the requests may be."""

    trace_dir: Path
    start_min: int = 240
    end_min: int = 300
    compress: float = 60.0
    num_models: int = 3
    max_per_minute: int = 0  # per function and trace minute; 0 keeps every invocation
    max_requests: int = 0  # 0: no cap
    max_prompt_tokens: int = 512
    max_output_tokens: int = 32
    token_scale: float = 1.0  # multiplies real token counts before clipping (a CPU run shrinks them)
    seed: int = 0

    def describe(self) -> dict:
        d = asdict(self)
        d["trace_dir"] = str(self.trace_dir)
        return d


def _function_counts(spec: SegmentSpec) -> pd.DataFrame:
    """Per-minute invocation counts (functions x minutes) of the window, read with pandas."""
    path = spec.trace_dir / FUNCTIONS_FILE
    if not path.exists():
        raise ValidateError(f"replay needs the Azure Functions 2019 sample at {path}; pass --trace-dir.")
    df = pd.read_csv(path)
    minutes = [str(m) for m in range(spec.start_min + 1, spec.end_min + 1) if str(m) in df.columns]
    if not minutes:
        raise ValidateError(f"the window {spec.start_min}-{spec.end_min} min lies outside {path.name}.")
    counts = df[minutes].astype(int)
    counts.index = df["HashFunction"].str[:12]
    return counts


def _token_pool(spec: SegmentSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (prompt, output) pairs drawn from the Azure LLM 2023 conversation trace, clipped."""
    path = spec.trace_dir / LLM_FILE
    if path.exists():
        llm = pd.read_csv(path, usecols=["ContextTokens", "GeneratedTokens"])
        idx = rng.integers(0, len(llm), size=n)
        prompt = llm["ContextTokens"].to_numpy()[idx]
        output = llm["GeneratedTokens"].to_numpy()[idx]
    else:
        prompt = np.full(n, spec.max_prompt_tokens)
        output = np.full(n, spec.max_output_tokens)
    return (
        np.clip(prompt, 1, spec.max_prompt_tokens).astype(int),
        np.clip(output, 1, spec.max_output_tokens).astype(int),
    )


def _from_open_trace(spec: SegmentSpec) -> pd.DataFrame | None:
    """Arrivals (seconds of the day), function and tokens via `traces.open_trace`; None if it cannot."""
    try:
        from traces import TraceError, open_trace
    except ImportError:
        return None
    try:
        trace = open_trace(
            "azure_functions_2019", trace_dir=str(spec.trace_dir), duration_s=spec.end_min * 60.0, seed=spec.seed,
            select="all", tokens="azure_llm_conv",
        )  # fmt: skip
        rows = [
            (r.arrival_s, r.function, r.prompt_tokens, r.output_tokens)
            for r in trace
            if r.arrival_s >= spec.start_min * 60
        ]
    except (TraceError, OSError, ValueError):
        return None
    if trace.synthetic:
        return None
    return pd.DataFrame(rows, columns=["t", "function", "prompt_tokens", "output_tokens"])


def _from_csv(spec: SegmentSpec) -> pd.DataFrame:
    """The same from the CSV directly: per-minute counts spread uniformly at random within the minute."""
    rng = np.random.default_rng(spec.seed)
    counts = _function_counts(spec)
    times: list[float] = []
    funcs: list[str] = []
    for fn, row in counts.iterrows():
        for j, c in enumerate(row.to_numpy()):
            if c > 0:
                times.extend((spec.start_min + j + rng.random(int(c))) * 60.0)
                funcs.extend([str(fn)] * int(c))
    df = pd.DataFrame({"t": times, "function": funcs})
    prompt, output = _token_pool(spec, len(df), rng)
    return df.assign(prompt_tokens=prompt, output_tokens=output)


def _scaled(tokens: pd.Series, scale: float, cap: int) -> np.ndarray:
    return np.clip(np.round(tokens.to_numpy(dtype=float) * scale), 1, cap).astype(int)


def build_segment(spec: SegmentSpec) -> pd.DataFrame:
    """The segment as a frame with COLUMNS, sorted by arrival, seconds from its start.

    Read through `traces.open_trace` (the project's reader: real per-minute counts,
    uniform random times within a minute, token pairs resampled from the Azure LLM 2023
    trace); where that reader cannot read the folder, straight from the CSV.
    """
    if spec.compress <= 0:
        raise ValidateError(f"--replay-compress must be positive, got {spec.compress}.")
    df = _from_open_trace(spec)
    source = "traces.open_trace"
    if df is None:
        df, source = _from_csv(spec), "csv"
    df = df[(df["t"] >= spec.start_min * 60.0) & (df["t"] < spec.end_min * 60.0)].sort_values(
        "t", kind="stable"
    )
    if spec.max_per_minute > 0:
        minute = (df["t"] // 60).astype(int)
        df = df[df.groupby([df["function"], minute]).cumcount() < spec.max_per_minute]
    busiest = df["function"].value_counts(sort=False)
    busiest = sorted(busiest.items(), key=lambda kv: (-kv[1], kv[0]))[: spec.num_models]
    if not busiest:
        raise ValidateError(f"no invocations in minutes {spec.start_min}-{spec.end_min} of the trace.")
    names = {fn: f"m{k}" for k, (fn, _) in enumerate(busiest)}
    df = df[df["function"].isin(names)]
    seg = pd.DataFrame(
        {
            "arrival_s": ((df["t"] - spec.start_min * 60.0) / spec.compress).round(6),
            "model": df["function"].map(names),
            "prompt_tokens": _scaled(df["prompt_tokens"], spec.token_scale, spec.max_prompt_tokens),
            "output_tokens": _scaled(df["output_tokens"], spec.token_scale, spec.max_output_tokens),
        }
    ).sort_values(["arrival_s", "model"], kind="stable")
    if spec.max_requests > 0:
        seg = seg.head(spec.max_requests)
    seg = seg.reset_index(drop=True)
    seg.attrs["source"] = source
    return seg[COLUMNS]


def write_requests_csv(seg: pd.DataFrame, path: str | Path) -> Path:
    """The simulator's trace input: header arrival_s,model,prompt_tokens,output_tokens."""
    path = Path(path)
    seg[COLUMNS].to_csv(path, index=False)
    return path
