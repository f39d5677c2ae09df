"""`Table`: a profile's monotone lookup table (a prefill or decode time by size), interpolated.

The one owner of how the simulator turns measured points into times: serving, the router's
estimates and the compiled walk's memo all ask a `Table` and never interpolate themselves.
"""

from __future__ import annotations

from bisect import bisect_right
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
        # Pure-Python bisect: np.interp's array conversion costs more than the interpolation.
        xs, ys = self.x, self.seconds
        if len(xs) == 1:
            return ys[0] * value / xs[0] if xs[0] else ys[0]
        if value <= xs[0]:
            i = 1
        elif value >= xs[-1]:
            i = len(xs) - 1
        else:
            i = bisect_right(xs, value)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        if value <= x0 and i == 1:
            return y0  # clamp below the first point
        if value > x1 and y1 < y0:
            return y1  # never extrapolate downwards (a noisy last segment): times cannot go negative
        return y0 + (y1 - y0) * (value - x0) / (x1 - x0)
