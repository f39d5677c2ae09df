"""`Table`: a profile's monotone lookup table (a prefill or decode time by size), interpolated.

The one owner of how the simulator turns measured points into times: serving, the router's
estimates and the compiled walk's memo all ask a `Table` and never interpolate themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

# Answers a table remembers before its memo starts afresh (about 3 MB per table when full).
TABLE_MEMO_SIZE = 1 << 15


@dataclass(frozen=True)
class Table:
    """A monotone lookup table, linearly interpolated and extrapolated from the last segment.

    It remembers its answers (`memo`, argument -> seconds): the simulator asks the same few
    prompt lengths and batch sizes over and over (two to five times per simulated request,
    from serving and from the router), and a bisect and an interpolation in Python cost 0.3
    to 0.6 us where a dictionary hit costs 0.03. The memo holds at most `TABLE_MEMO_SIZE`
    answers and then starts afresh: bounded memory, and an answer is the same whether
    remembered or not. It is not part of the table's value (equality, hashing, `asdict`,
    pickling leave it out).
    """

    x: tuple[float, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "memo", {})

    def __getstate__(self) -> dict:
        return {"x": self.x, "seconds": self.seconds}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "memo", {})

    def __call__(self, value: float) -> float:
        memo = self.memo
        v = memo.get(value)
        if v is None:
            v = self._interpolate(value)
            if len(memo) >= TABLE_MEMO_SIZE:
                memo.clear()
            memo[value] = v
        return v

    def _interpolate(self, value: float) -> float:
        return interpolate(self.x, self.seconds, 0, len(self.x), value)


def interpolate(xs, ys, off: int, n: int, value: float) -> float:
    """The table rule: `ys` over `xs` (points `off` to `off + n`) at `value`, linearly interpolated,
    clamped below the first point, extrapolated from the last segment but never downwards.

    The one copy of the rule: `Table` calls it on its tuples, and the compiled batch loops
    (`sim/batch_kernel.py`) compile this very function over arrays of many tables, so both
    compute the same floats. Hence plain indexing and a hand-written bisection (numba compiles
    neither `bisect` nor slices of tuples).
    """
    if n == 1:
        x0 = xs[off]
        return ys[off] * value / x0 if x0 != 0.0 else ys[off]
    if value <= xs[off]:
        i = 1
    elif value >= xs[off + n - 1]:
        i = n - 1
    else:  # bisect_right: the first point above `value`
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if value < xs[off + mid]:
                hi = mid
            else:
                lo = mid + 1
        i = lo
    x0, x1, y0, y1 = xs[off + i - 1], xs[off + i], ys[off + i - 1], ys[off + i]
    if value <= x0 and i == 1:
        return y0  # clamp below the first point
    if value > x1 and y1 < y0:
        return y1  # never extrapolate downwards (a noisy last segment): times cannot go negative
    return y0 + (y1 - y0) * (value - x0) / (x1 - x0)
