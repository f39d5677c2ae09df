"""The per-model ledger adds up to the run's totals."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import SimConfig
from sim.metrics import RunMetrics
from sim.policyset import PolicySet
from sim.profile import load_profile
from sim.simulator import Simulator
from traces.request import Request


def _requests(n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(20.0, n))
    models = rng.choice(["a", "b", "c", "d", "e"], n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    return [Request(float(x), str(m), 300, 60, i) for i, (x, m) in enumerate(zip(t, models, strict=True))]


@pytest.mark.parametrize("keepalive", ["none", "fixed[ttl=120]", "two_tier[gpu=30,dram=300]"])
@pytest.mark.parametrize("fidelity", ["request", "iteration"])
def test_ledger_sums_to_summary(keepalive, fidelity):
    policies = PolicySet.from_specs(staging="progressive", keepalive=keepalive)
    metrics = RunMetrics(policies.label, 5.0)
    sim = Simulator(load_profile(), policies, SimConfig(nodes=1, gpus_per_node=2, fidelity=fidelity), metrics)
    row = sim.run(_requests(300, 3))
    rows = sim.usage.rows(policies.label)
    assert sum(r["requests"] for r in rows) == row["requests"] == 300
    assert sum(r["cold"] for r in rows) == round(row["cold_start_pct"] * row["requests"] / 100)
    assert sum(r["gpu_mem_gb_hours"] for r in rows) == pytest.approx(row["gpu_mem_gb_hours"], rel=1e-9)
    assert sum(r["gpu_idle_gb_hours"] for r in rows) == pytest.approx(row["gpu_idle_gb_hours"], rel=1e-9, abs=1e-12)
    assert all(r["loads"] >= 1 for r in rows)
    # every load or wake moved bytes onto a GPU over PCIe, and nothing else did
    assert sum(r["gb_loaded"] for r in rows) == pytest.approx(row["gb_pcie"], rel=1e-9)
    if keepalive == "none":
        assert all(r["wakes"] == 0 for r in rows)
