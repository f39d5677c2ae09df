"""The progress bar counts what the run did: the simulated clock against the horizon, and
the requests replayed."""

from __future__ import annotations

import pytest

from sim.progress import RunProgress


class Err:
    def __init__(self, capsys) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys):
    return Err(capsys)


def test_bar_follows_the_clock_and_the_requests(stderr):
    clock = iter([40.0, 250.0])  # the second report comes after the horizon (the drain)
    bar = RunProgress("full + none", 100.0, lambda: next(clock), delay_s=0.0)
    bar(4096)
    assert bar.bar.n == 40.0 and bar.requests == 4096
    bar(5000)
    assert bar.bar.n == 100.0  # capped at the horizon
    bar.close()
    text = stderr.getvalue()
    assert "100/100 simulated s" in text and "5,000 req" in text and "0 req" not in text.replace("5,000 req", "")


def test_without_horizon_the_bar_counts_simulated_seconds(stderr):
    bar = RunProgress("x", None, lambda: 12.0, delay_s=0.0)
    bar(3)
    bar.close()
    text = stderr.getvalue()
    assert "12 simulated s" in text and "3 req" in text


def test_a_short_run_prints_no_bar(stderr):
    bar = RunProgress("x", 100.0, lambda: 100.0, delay_s=30.0)
    bar(7)
    bar.close()
    assert stderr.getvalue() == ""
