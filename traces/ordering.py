"""Putting rows in arrival order with bounded memory, and numbering the requests.

Real files are nearly sorted: the Azure 2021 trace is ordered by *end* time, so start
times (end - duration) come slightly out of order, and LLM logs can have small swaps.
A heap holding `window_s` seconds of rows restores the order without reading the file
whole; a row later than the window allows is a reported problem, never a silent swap.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from traces.errors import Issues
from traces.request import Request


def in_arrival_order(rows: Iterable[tuple[float, int, Any]], window_s: float, path: str,
                     issues: Issues, time_field: str = "time") -> Iterator[tuple[float, Any]]:
    """Reorder `(time, line, payload)` rows that are at most `window_s` out of order."""
    heap: list[tuple[float, int, Any]] = []
    newest = float("-inf")
    last_out = float("-inf")
    for t, line, payload in rows:
        if t < last_out:
            issues.row(path, line, time_field, f"arrival {t:.6f} is out of order by {last_out - t:.3f} s, more "
                       f"than the reorder_window_s option allows (now {window_s:g} s)", "out_of_order")
            continue
        heapq.heappush(heap, (t, line, payload))
        newest = max(newest, t)
        while heap and heap[0][0] <= newest - window_s:
            t0, _, p = heapq.heappop(heap)
            last_out = t0
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
