"""How far the simulator's prediction was from the engine, per policy.

TTFT percentiles are compared as relative errors ((sim - real) / real) because TTFTs span
milliseconds (warm) to seconds (cold); the cold-start count is compared as a plain
difference because it is a small integer where a relative error misleads. Rejected
requests (the simulator may shed load) are left out of the percentiles and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PERCENTILES = (50, 90, 99)
ERROR_HEADER = (
    "policy",
    "requests",
    "real p50 s",
    "sim p50 s",
    "TTFT p50 err %",
    "TTFT p90 err %",
    "TTFT p99 err %",
    "real cold",
    "sim cold",
    "cold-start count err",
    "real refills",
    "sim refills",
)


@dataclass(frozen=True)
class PolicyError:
    """One policy's real-vs-simulated comparison."""

    policy: str
    requests: int
    real_ttft: dict[int, float]
    sim_ttft: dict[int, float]
    real_cold: int
    sim_cold: int
    sim_rejected: int = 0
    # tokens computed by a prefill over the context because a stage bound mid-request
    real_refills: int = 0
    sim_refills: int = 0

    def ttft_error(self, p: int) -> float:
        """Relative error of the simulated p-th percentile TTFT (0.1 = 10 % too high)."""
        real = self.real_ttft[p]
        return float("nan") if real <= 0 else (self.sim_ttft[p] - real) / real

    @property
    def cold_error(self) -> int:
        return self.sim_cold - self.real_cold

    def row(self) -> list[str]:
        return [
            self.policy,
            str(self.requests),
            f"{self.real_ttft[50]:.3f}",
            f"{self.sim_ttft[50]:.3f}",
            *(f"{100 * self.ttft_error(p):+.1f}" for p in PERCENTILES),
            str(self.real_cold),
            str(self.sim_cold),
            f"{self.cold_error:+d}",
            str(self.real_refills),
            str(self.sim_refills),
        ]

    def to_dict(self) -> dict:
        d = {
            "policy": self.policy,
            "requests": self.requests,
            "real_cold": self.real_cold,
            "sim_cold": self.sim_cold,
            "cold_error": self.cold_error,
            "sim_rejected": self.sim_rejected,
            "real_refills": self.real_refills,
            "sim_refills": self.sim_refills,
        }
        for p in PERCENTILES:
            d[f"real_p{p}_s"] = self.real_ttft[p]
            d[f"sim_p{p}_s"] = self.sim_ttft[p]
            d[f"p{p}_error"] = self.ttft_error(p)
        return d


def percentiles(values: pd.Series) -> dict[int, float]:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if v.size == 0:
        return {p: float("nan") for p in PERCENTILES}
    return {p: float(np.percentile(v, p)) for p in PERCENTILES}


def compare_policy(policy: str, real: pd.DataFrame, sim: pd.DataFrame, sim_refills: int = 0) -> PolicyError:
    """Compare one policy: `real` and `sim` each have ttft_s and cold per request; `real`
    may have the engine's `refills` per request, `sim_refills` is the simulator's total."""
    rejected = sim["rejected"].astype(bool) if "rejected" in sim else pd.Series(False, index=sim.index)
    served = sim[~rejected]
    return PolicyError(
        policy=policy,
        requests=len(real),
        real_ttft=percentiles(real["ttft_s"]),
        sim_ttft=percentiles(served["ttft_s"]),
        real_cold=int(real["cold"].astype(bool).sum()),
        sim_cold=int(served["cold"].astype(bool).sum()),
        sim_rejected=int(rejected.sum()),
        real_refills=int(real["refills"].sum()) if "refills" in real else 0,
        sim_refills=int(sim_refills),
    )


def format_table(errors: list[PolicyError]) -> str:
    """A fixed-width text table whose header names every error column."""
    rows = [list(ERROR_HEADER), *(e.row() for e in errors)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(ERROR_HEADER))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(errors: list[PolicyError]) -> str:
    head = "| " + " | ".join(ERROR_HEADER) + " |"
    rule = "|" + "|".join(" --- " for _ in ERROR_HEADER) + "|"
    body = ["| " + " | ".join(e.row()) + " |" for e in errors]
    return "\n".join([head, rule, *body])
