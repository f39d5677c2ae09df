"""Named lists of policy combinations (`python -m sim --preset NAME`).

`published`: each policy from the literature in the library beside the baselines it is compared
with, one kind changed at a time from the run defaults (full staging, a 10-minute keep-alive,
no prewarm, first-fit placement, the `expected_wait` router, admit everything), so that a row's
difference from the first row is that one policy's doing.
"""

from __future__ import annotations

# Each entry: the kinds it sets (the rest keep the run defaults). "{slo}" becomes the run's SLO.
PUBLISHED: tuple[dict[str, str], ...] = (
    {},  # the defaults: full + fixed[ttl=600] + expected_wait + always
    {"keepalive": "none"},
    {"staging": "pipelined"},
    {"staging": "progressive"},
    {"keepalive": "two_tier"},
    {"keepalive": "tiered"},
    {"keepalive": "hybrid_histogram", "prewarm": "histogram"},
    {"keepalive": "greedy_dual", "placement": "greedy_dual"},
    {"prewarm": "popular"},
    {"prewarm": "forecast[mode=seasonal]"},
    {"prewarm": "forecast[mode=ewma]"},
    {"placement": "locality"},
    {"router": "least_loaded"},
    {"admission": "max_queue"},
    {"admission": "deadline[slo={slo}]"},
    {"admission": "goodput[slo={slo}]"},
)

PRESETS: dict[str, tuple[dict[str, str], ...]] = {"published": PUBLISHED}


def preset_specs(name: str, slo: float) -> list[dict[str, str]]:
    """The combinations of preset `name` as spec dicts, each policy that judges by an SLO given `slo`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    out = []
    for combo in PRESETS[name]:
        specs = {kind: spec.replace("{slo}", f"{slo:g}") for kind, spec in combo.items()}
        specs.setdefault("router", f"expected_wait[slo={slo:g}]")
        out.append(specs)
    return out
