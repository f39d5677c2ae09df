"""The progress bar of one policy combination: simulated time against the horizon, and
the requests replayed so far.

The simulator reports the number of arrivals it has handled (every few thousand, and once
at the end); the bar reads the simulated clock at each report, so it shows what the run
really did: how far through the replayed interval the clock is, and how many requests went
in. A run shorter than `delay_s` of wall time prints no bar at all (a bar that appears and
vanishes within a second tells nothing), and the last state is drawn before the bar closes,
so a log never keeps a stale "0 req".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm


class RunProgress:
    """Call it with the requests replayed so far; `close()` when the combination is done."""

    def __init__(self, label: str, horizon_s: float | None, clock: Callable[[], float], *,
                 disable: bool = False, delay_s: float = 1.0) -> None:
        self.horizon_s = horizon_s if horizon_s is not None and horizon_s > 0 else None
        self.clock = clock
        self.requests = 0
        self.delay_s = delay_s
        self.started = time.monotonic()
        self.bar = tqdm(desc=label[:48], total=self.horizon_s, unit=" sim s", disable=disable, leave=False,
                        mininterval=0.5, delay=delay_s, file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} simulated s "
                                   "[{elapsed}<{remaining}{postfix}]" if self.horizon_s else
                                   "{desc}: {n:.0f} simulated s [{elapsed}{postfix}]")

    def __call__(self, requests: int) -> None:
        self.requests = requests
        now = self.clock()
        if self.horizon_s is not None:
            now = min(now, self.horizon_s)
        self.bar.set_postfix_str(f"{requests:,} req", refresh=False)
        self.bar.update(now - self.bar.n)

    def close(self) -> None:
        if time.monotonic() - self.started >= self.delay_s:  # shown: show where it ended
            self.bar.refresh()
        self.bar.close()
