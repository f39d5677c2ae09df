"""Prompt and output lengths for requests whose trace has none (function traces, synthetic).

Three sources, chosen by the `tokens` option:
- `calibrated[:conv|code]` (default conv): quantile tables of ContextTokens and
  GeneratedTokens measured from the Azure LLM inference trace 2023 (see the calibration
  JSON), sampled by inverse CDF (log-linear between quantiles) with a Gaussian copula
  carrying their measured rank correlation;
- an LLM trace (`azure_llm_conv`, `azure_llm_code`, `azure_llm_2024`, `burstgpt` or a
  path): its (prompt, output) pairs resampled with replacement;
- `fixed:P,O`: every request has P prompt and O output tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.errors import TraceError


@dataclass(frozen=True)
class QuantileTokens:
    """Inverse-CDF sampler over quantile tables with a Gaussian-copula correlation."""

    probs: np.ndarray
    prompt_q: np.ndarray
    output_q: np.ndarray
    rho: float
    source: str

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy.special import ndtr  # imported here: scipy costs ~0.5 s at start-up

        z1 = rng.standard_normal(n)
        z2 = self.rho * z1 + np.sqrt(1.0 - self.rho**2) * rng.standard_normal(n)
        prompt = np.exp(np.interp(ndtr(z1), self.probs, np.log(self.prompt_q)))
        output = np.exp(np.interp(ndtr(z2), self.probs, np.log(self.output_q)))
        return np.maximum(np.rint(prompt), 1).astype(np.int64), np.maximum(np.rint(output), 1).astype(np.int64)

    def describe(self) -> str:
        return self.source


@dataclass(frozen=True)
class EmpiricalTokens:
    """Resample (prompt, output) pairs of a real LLM trace with replacement."""

    prompt: np.ndarray
    output: np.ndarray
    source: str

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(self.prompt), size=n)
        return self.prompt[idx], self.output[idx]

    def describe(self) -> str:
        return self.source


@dataclass(frozen=True)
class FixedTokens:
    """The same lengths for every request (for controlled experiments)."""

    prompt_tokens: int
    output_tokens: int

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full(n, self.prompt_tokens, np.int64), np.full(n, self.output_tokens, np.int64)

    def describe(self) -> str:
        return f"fixed {self.prompt_tokens} prompt / {self.output_tokens} output tokens"


TokenSource = QuantileTokens | EmpiricalTokens | FixedTokens


def calibrated_tokens(calibration: dict, kind: str = "conv", source: str = "") -> QuantileTokens:
    """The quantile sampler for `kind` ("conv" or "code") from the calibration JSON (read from `source`)."""
    table = calibration.get("tokens", {}).get(kind)
    if table is None:
        have = ", ".join(calibration.get("tokens", {})) or "none"
        raise TraceError(f"option tokens: no calibrated token table {kind!r} in {source or 'the calibration'} "
                         f"(have: {have})", path=source)
    return QuantileTokens(np.asarray(table["probs"]["value"], float),
                          np.asarray(table["prompt_quantiles"]["value"], float),
                          np.asarray(table["output_quantiles"]["value"], float),
                          float(table["rank_correlation_normal_scores"]["value"]),
                          f"calibrated {kind} quantiles ({table['prompt_quantiles'].get('source', 'no source given')})")


def empirical_tokens(requests, source: str, limit: int = 5_000_000) -> EmpiricalTokens:
    """Collect (prompt, output) pairs from an iterable of `Request` (at most `limit`)."""
    prompt, output = [], []
    for r in requests:
        if r.output_tokens > 0:
            prompt.append(r.prompt_tokens)
            output.append(r.output_tokens)
        if len(prompt) >= limit:
            break
    if not prompt:
        raise TraceError(f"option tokens: {source} has no request with output tokens")
    return EmpiricalTokens(np.asarray(prompt, np.int64), np.asarray(output, np.int64),
                           f"resampled pairs from {source} ({len(prompt)} requests)")


def fixed_tokens(text: str) -> FixedTokens:
    """Parse `fixed:P,O`."""
    try:
        p, o = (int(v) for v in text.split(":", 1)[1].split(","))
    except ValueError:
        raise TraceError(f"option tokens: {text!r} should be fixed:PROMPT,OUTPUT (two whole numbers)") from None
    if p < 1 or o < 1:
        raise TraceError(f"option tokens: {text!r} needs positive token counts")
    return FixedTokens(p, o)
