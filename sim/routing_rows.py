"""What a router reads of every instance, kept as one flat array a compiled walk can read.

At full volume the default router (`expected_wait`) scores every instance of a model on
every arrival of that model: at 1,024 GPUs that walk was the largest single cost of a run
(44 %, about 3 us of Python per candidate). `policies/ttft_kernel.py` does the walk in
compiled code, and compiled code cannot read Python objects, so each instance keeps what
the walk reads of it in a row of this table as well: its state, capacity, the requests it
owes that have not started (`waiting`), those running in its batch, and when its request
alone (request fidelity's `Solo`) finishes.

The instance is the only writer of its row (`Instance` updates it wherever its pending,
queue, batch, solo request or state change), so the row always says what the instance's
properties `state`, `capacity`, `waiting` and `active` say; `tests/test_routing_rows.py`
checks that at every routing decision of whole runs.

The row's layout is `contracts/routing_row.py` (the simulator writes rows, a policy reads
them, and neither package imports the other). Rows are slots: an evicted instance's slot is reused by the next one (each row carries its
instance's id, so a reader can tell a new tenant from the old one), so the table's size
follows the instances alive, not those ever started. It is an `array.array` because a
Python-side item update costs about 40 ns there against about 100 ns on a numpy array;
`view()` gives the numpy view a compiled function takes, made anew when the table grows.
"""

from __future__ import annotations

from array import array

import numpy as np

from contracts.routing_row import (  # noqa: F401  (the layout, re-exported for the simulator's modules)
    CAPACITY,
    INSTANCE_ID,
    RUNNING,
    SOLO_FINISH,
    STATE,
    STATE_CODES,
    WAITING,
    WIDTH,
)

_NO_SOLO = float("-inf")


class RoutingRows:
    """A row per instance slot: see the module's docstring."""

    def __init__(self, slots: int = 64):
        self.values = array("d", bytes(8 * WIDTH * slots))
        self._free = list(range(slots - 1, -1, -1))  # popped from the end: lowest slot first
        self._view: np.ndarray | None = None

    @property
    def slots(self) -> int:
        return len(self.values) // WIDTH

    def acquire(self, instance_id: int, state: str, capacity: int) -> int:
        """A slot for a new instance, its row filled in; returns the row's offset in `values`."""
        if not self._free:
            self._grow()
        slot = self._free.pop()
        base = slot * WIDTH
        v = self.values
        v[base + STATE] = STATE_CODES[state]
        v[base + CAPACITY] = capacity
        v[base + WAITING] = 0.0
        v[base + RUNNING] = 0.0
        v[base + SOLO_FINISH] = _NO_SOLO
        v[base + INSTANCE_ID] = instance_id
        return base

    def release(self, base: int) -> None:
        """The instance at offset `base` is gone: its slot may be reused."""
        self.values[base + INSTANCE_ID] = -1.0
        self._free.append(base // WIDTH)

    def view(self) -> np.ndarray:
        """The table as a (slots, WIDTH) float64 array sharing its memory (no copy)."""
        if self._view is None:
            self._view = np.frombuffer(self.values, dtype=np.float64).reshape(-1, WIDTH)
        return self._view

    def _grow(self) -> None:
        # A buffer that a numpy view exports cannot be resized: copy into a larger one, and
        # make the view again when next asked.
        old = self.slots
        grown = array("d", self.values)
        grown.frombytes(bytes(8 * WIDTH * old))  # doubled
        self.values = grown
        self._view = None
        self._free.extend(range(2 * old - 1, old - 1, -1))
