"""The `Trace` interface: a named, lazily iterated, time-ordered stream of requests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from traces.request import Request


@dataclass
class Trace:
    """A named source of requests.

    `name` is what the run prints and writes into the summary (for example
    `azure_functions_2019 (real: /data/...d01.csv)` or `azure_functions (synthetic ...)`).
    `make_iter` is called once per iteration so a trace can be replayed for every
    policy combination without being held in memory. Requests come out ordered by
    `arrival_s`, with `request_id` numbered from 0.
    `details` carries the choices the trace made (functions kept, model mapping, rate
    scale, seed) so that the run's summary can report them.
    """

    name: str
    make_iter: object  # Callable[[], Iterator[Request]]
    synthetic: bool = False
    details: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.make_iter())  # type: ignore[operator]
