"""Empirical distributions written as Python dict literals, read without `eval`.

ServeGen stores each client's token-length distribution as a *string* such as
`"{224: 0.0003, 225: 0.0008}"` (value: probability). Its own loader `eval`s that string,
which would run any code a damaged or hostile file holds. This module accepts exactly the
literal grammar those strings use, numbers only:

    pdf   := "{" [ entry ("," entry)* [","] ] "}"
    entry := number ":" number
    number:= [+-] digits [. digits] [(e|E) [+-] digits]      (no inf, nan, underscores)

and returns a `Pdf` (sorted values with a cumulative table) to draw from. A problem is a
`PdfError` that says which character is wrong; the caller adds file, line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_ENTRY = rf"\s*{_NUM}\s*:\s*{_NUM}\s*"
_WHOLE = re.compile(rf"\s*\{{(?:{_ENTRY}(?:,{_ENTRY})*,?)?\s*\}}\s*")
_PAIR = re.compile(rf"({_NUM})\s*:\s*({_NUM})")
_NUM_AT = re.compile(_NUM)
_SPACE = re.compile(r"\s*")
# A probability table sums to 1 up to float rounding (the real files: within 4e-13); more
# than this off means a truncated or edited table, which must not be renormalised silently.
SUM_TOLERANCE = 1e-6


class PdfError(ValueError):
    """A distribution string that is not a `{value: probability}` literal of numbers."""


@dataclass(frozen=True)
class Pdf:
    """An empirical distribution: `values` ascending, `cdf[i]` = P(X <= values[i]), cdf[-1] = 1."""

    values: np.ndarray
    cdf: np.ndarray

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` independent draws (inverse CDF, as ServeGen samples: the first value whose
        cumulative probability reaches the uniform draw, so zero-probability values never come out)."""
        idx = np.searchsorted(self.cdf, rng.random(n), side="right")
        return self.values[np.minimum(idx, len(self.values) - 1)]

    @property
    def mean(self) -> float:
        probs = np.diff(self.cdf, prepend=0.0)
        return float(np.dot(self.values, probs))


def _where_wrong(text: str) -> int:
    """The index of the first character where `text` stops following the grammar."""
    i = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("{", i):
        return i
    i = _SPACE.match(text, i + 1).end()  # type: ignore[union-attr]
    expect_entry = True
    while i < len(text):
        if text[i] == "}":
            return _SPACE.match(text, i + 1).end()  # type: ignore[union-attr]  # trailing junk starts here
        if not expect_entry:
            if text[i] != ",":
                return i
            i = _SPACE.match(text, i + 1).end()  # type: ignore[union-attr]
            expect_entry = True
            continue
        for part in ("key", ":", "value"):
            if part == ":":
                if not text.startswith(":", i):
                    return i
                i += 1
            else:
                m = _NUM_AT.match(text, i)
                if m is None:
                    return i
                i = m.end()
            i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
        expect_entry = False
    return len(text)


def parse_pdf(text: str, *, integer_values: bool, max_value: float) -> Pdf:
    """Parse one distribution string; `integer_values` for token counts (keys must be whole).

    Refused: anything outside the grammar, an empty table, duplicate values, values that
    are negative, above `max_value` or (with `integer_values`) not whole, probabilities
    that are negative, and tables that do not sum to 1 within `SUM_TOLERANCE`.
    """
    if not isinstance(text, str):
        raise PdfError(f"expected a string holding a {{value: probability}} literal, got {type(text).__name__}")
    if _WHOLE.fullmatch(text) is None:
        at = _where_wrong(text)
        near = text[max(0, at - 10):at + 10]
        raise PdfError(f"not a {{value: probability}} literal of numbers: unexpected text at character {at + 1} "
                       f"(near {near!r})")
    pairs = _PAIR.findall(text)
    if not pairs:
        raise PdfError("empty distribution {} (no values)")
    keys = np.array([float(k) for k, _ in pairs])
    probs = np.array([float(p) for _, p in pairs])
    if not (np.all(np.isfinite(keys)) and np.all(np.isfinite(probs))):
        raise PdfError("a number is too large to be finite")
    if np.any(keys < 0) or np.any(keys > max_value):
        bad = keys[(keys < 0) | (keys > max_value)][0]
        raise PdfError(f"value {bad:g} is outside [0, {max_value:g}]")
    if integer_values and np.any(keys != np.floor(keys)):
        raise PdfError(f"value {keys[keys != np.floor(keys)][0]:g} is not a whole number of tokens")
    if np.any(probs < 0):
        raise PdfError(f"negative probability {probs[probs < 0][0]:g}")
    total = float(probs.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise PdfError(f"probabilities sum to {total:.9g}, not 1")
    order = np.argsort(keys, kind="stable")
    keys, probs = keys[order], probs[order]
    if np.any(keys[1:] == keys[:-1]):
        raise PdfError(f"value {keys[1:][keys[1:] == keys[:-1]][0]:g} appears twice")
    cdf = np.cumsum(probs) / total
    cdf[-1] = 1.0
    values = keys.astype(np.int64) if integer_values else keys
    return Pdf(values, cdf)
