"""The measured quality fragment stays loadable by the simulator's profile schema."""

from __future__ import annotations

import json
from pathlib import Path

from sim.profile import StageProfile

FRAGMENT = Path(__file__).resolve().parents[1] / "profiles" / "fragments" / "smollm2-135m-quality.json"


def test_fragment_stages_are_sim_stage_profiles():
    d = json.loads(FRAGMENT.read_text())
    model = d["model"]
    stages = [StageProfile(**s) for s in model["stages"]]
    assert [s.num_layers for s in stages] == sorted(s.num_layers for s in stages)
    assert stages[-1].num_layers == model["num_layers"] == 30 and stages[-1].quality == 1.0
    assert all(0.0 <= s.quality <= 1.0 and 0.0 <= s.token_agreement <= 1.0 and s.source for s in stages)
    assert len(model["layer_importance"]) == model["num_layers"]
    assert d["provenance"]["kind"] == "measured"
    for rows in d["plans"].values():  # every measured row keeps quality = perplexity_full / perplexity
        for r in rows:
            assert abs(r["quality"] - r["perplexity_full"] / r["perplexity"]) < 1e-9
