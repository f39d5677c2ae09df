"""Putting rows in arrival order with bounded memory, and numbering the requests.

Real files are nearly sorted: the Azure 2021 trace is ordered by *end* time, so start
times (end - duration) come slightly out of order, and LLM logs can have small swaps.
A heap holding `window_s` seconds of rows restores the order without reading the file
whole; a row more than the window earlier than any row before it in the file is a
reported problem, never a silent swap (even after a gap in the times).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from typing import Any

from traces.errors import Issues
from traces.request import Request


def in_arrival_order(rows: Iterable[tuple[float, int, Any]], window_s: float, path: str,
                     issues: Issues, time_field: str = "time") -> Iterator[tuple[float, Any]]:
    """Reorder `(time, line, payload)` rows that are at most `window_s` out of order.

    A row is out of order by `newest - t`, where `newest` is the latest time of any row
    before it in the file; more than `window_s` is reported (a `TraceError` naming file,
    line and field, or a counted skip when lenient), whatever gaps came before it.
    `window_s` = inf holds every row and sorts the whole file in memory.
    """
    heap: list[tuple[float, int, Any]] = []
    newest = float("-inf")
    # A new row earlier than `limit` is too late; a held row earlier than it can go out, since
    # no row accepted later can precede it. The slack of a few ulps keeps a row exactly
    # `window_s` late from being refused by rounding.
    limit = float("-inf")
    reach = window_s + 4 * math.ulp(window_s)
    for t, line, payload in rows:
        if t < limit:
            issues.row(path, line, time_field, f"arrival {t:.6f} is out of order by {newest - t:.3f} s (a row "
                       f"before it is at {newest:.6f}), more than the reorder_window_s option allows (now "
                       f"{window_s:g} s; inf sorts the whole file in memory)", "out_of_order")
            continue
        heapq.heappush(heap, (t, line, payload))
        if t > newest:
            newest = t
            limit = newest - reach - 4 * math.ulp(newest)
            while heap and heap[0][0] < limit:
                t0, _, p = heapq.heappop(heap)
                yield t0, p
    while heap:
        t0, _, p = heapq.heappop(heap)
        yield t0, p


def numbered(records: Iterable[tuple[float, str, int, int, str, str]],
             duration_s: float | None) -> Iterator[Request]:
    """Turn `(arrival_s, model, prompt, output, function, adapter)` into numbered `Request`s.

    Stops at the first arrival at or after `duration_s` (records must be sorted).
    """
    limit = float("inf") if duration_s is None else duration_s
    for i, (t, model, prompt, output, function, adapter) in enumerate(records):
        if t >= limit:
            return
        yield Request(float(t), model, int(prompt), int(output), i, function, adapter)
