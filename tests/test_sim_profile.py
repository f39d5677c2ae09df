"""Profile schema: the shipped profile loads; bad profiles fail naming the file and the field."""

from __future__ import annotations

import copy
import json
import math

import pytest

from sim.profile import (
    DEFAULT_PROFILE,
    PROFILES_DIR,
    ProfileError,
    load_profile,
    profile_from_dict,
    profile_path,
    shipped_profiles,
)
from sim.table import Table

SHIPPED = json.loads((PROFILES_DIR / f"{DEFAULT_PROFILE}.json").read_text())


def test_shipped_profile_is_published_and_sized_like_llama2_7b():
    p = load_profile()
    assert p.provenance["kind"] == "published"
    m = p.default_model
    assert m.num_layers == 32
    assert 13.4e9 < m.weight_bytes < 13.6e9  # LLaMA-2-7B fp16
    assert m.kv_bytes_per_token == 2 * 32 * 4096 * 2
    assert [s.num_layers for s in m.stages] == [24, 28, 32]


def test_every_shipped_profile_loads():
    for path in PROFILES_DIR.glob("*.json"):
        load_profile(path)


def test_round_trip_through_to_dict():
    p = load_profile()
    again = profile_from_dict(p.to_dict(), "again")
    assert again.to_dict() == p.to_dict()


def test_unknown_model_name_gets_the_default_shape():
    p = load_profile()
    assert p.model("anything-else") is p.default_model


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("hardware"), "hardware"),
        (lambda d: d["hardware"].update(h2d_gbps=-1), "hardware.h2d_gbps"),
        (lambda d: d["hardware"].update(gpu_memory_gb="big"), "hardware.gpu_memory_gb"),
        (lambda d: d["hardware"].update(compute_slots=0.5), "hardware.compute_slots"),
        (lambda d: d["engine"].update(loader_efficiency=1.5), "engine.loader_efficiency"),
        (lambda d: d["engine"].update(init_overlaps_load="yes"), "engine.init_overlaps_load"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d["provenance"].update(kind="guessed"), "provenance.kind"),
        (lambda d: d["models"][0]["decode"].update(x=[1, 1, 2, 3, 4, 5]), "models[0].decode.x"),
        (lambda d: d["models"][0]["prefill"].update(seconds=[0.1]), "models[0].prefill"),
        (lambda d: d["models"][0]["stages"][0].update(quality=2.0), "models[0].stages[0].quality"),
        (lambda d: d["models"][0]["stages"][0].pop("quality"), "models[0].stages[0].quality"),
        (lambda d: d["models"][0]["stages"][0].update(quality="unknown"), "models[0].stages[0].quality"),
        (lambda d: d["models"][0]["stages"][1].update(num_layers=40), "models[0].stages[1].num_layers"),
        (lambda d: d["models"][0].update(layer_bytes=10**12), "models[0]"),
        (lambda d: d.update(models=[]), "models"),
    ],
)
def test_bad_profiles_name_the_field(mutate, field):
    d = copy.deepcopy(SHIPPED)
    mutate(d)
    with pytest.raises(ProfileError) as err:
        profile_from_dict(d, "bad.json")
    msg = str(err.value)
    assert msg.startswith("bad.json: field ")
    assert f"'{field}'" in msg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ProfileError, match="not found.*a6000-llama2-7b-published"):
        load_profile("no-such-profile")
    bad = tmp_path / "broken.json"
    bad.write_text('{"schema_version": 1,\n  "name": }')
    with pytest.raises(ProfileError, match=r"broken.json: line 2: not valid JSON"):
        load_profile(bad)


def test_table_interpolates_clamps_and_extrapolates():
    t = Table((1.0, 8.0, 32.0), (0.02, 0.03, 0.05))
    assert t(1) == pytest.approx(0.02)
    assert t(0.5) == pytest.approx(0.02)  # below the first point: clamp
    assert t(4.5) == pytest.approx(0.025)
    assert t(20) == pytest.approx(0.04)
    assert t(56) == pytest.approx(0.07)  # past the last point: the last segment's slope
    single = Table((512.0,), (0.1,))
    assert single(1024) == pytest.approx(0.2)


def test_table_memo_answers_as_the_table_and_stays_bounded(monkeypatch):
    import dataclasses
    import pickle

    import sim.table as table_mod

    t = Table((1.0, 8.0, 32.0), (0.02, 0.03, 0.05))
    fresh = Table((1.0, 8.0, 32.0), (0.02, 0.03, 0.05))
    for x in (1, 3, 4.5, 20, 56, 3, 20):
        assert t(x) == fresh._interpolate(x)  # remembered or not, the same float
    assert t.memo == {1: t(1), 3: t(3), 4.5: t(4.5), 20: t(20), 56: t(56)}
    t.memo[7] = -1.0  # a planted answer is what a call returns: the call reads the memo first
    assert t(7) == -1.0
    # The memo is not part of the table's value.
    assert t == fresh and hash(t) == hash(fresh)
    assert dataclasses.asdict(t) == {"x": (1.0, 8.0, 32.0), "seconds": (0.02, 0.03, 0.05)}
    copy_ = pickle.loads(pickle.dumps(t))
    assert copy_ == t and copy_.memo == {}
    # Bounded: once full it starts afresh.
    monkeypatch.setattr(table_mod, "TABLE_MEMO_SIZE", 4)
    small = Table((1.0, 8.0), (0.02, 0.03))
    for x in range(1, 10):
        small(x)
        assert len(small.memo) <= 4
    assert small.memo == {9: small._interpolate(9)}


def test_quality_is_interpolated_between_measured_stages():
    m = load_profile().default_model
    q24, q28 = m.stages[0].quality, m.stages[1].quality
    assert m.quality_at(24) == q24
    assert m.quality_at(26) == pytest.approx((q24 + q28) / 2)
    assert m.quality_at(32) == 1.0
    assert m.quality_at(10) == 0.0  # fewer layers than any measurement: no quality claimed


def test_unmeasured_stage_quality_is_null_and_gives_nan():
    """A stage listed with quality null has no quality: quality_at says NaN there, never a
    number interpolated across it; the full model stays 1.0 by definition."""
    d = copy.deepcopy(SHIPPED)
    d["models"][0]["stages"][0]["quality"] = None
    m = profile_from_dict(d, "null.json").default_model
    assert m.stages[0].quality is None and m.unknown_quality_stages == ("stage1",)
    assert math.isnan(m.quality_at(24))
    assert m.quality_at(28) == m.stages[1].quality and m.quality_at(32) == 1.0
    for s in d["models"][0]["stages"]:
        s["quality"] = None
    m = profile_from_dict(d, "null.json").default_model
    assert math.isnan(m.quality_at(28)) and m.stages[-1].quality == 1.0  # the full stage is the reference


def test_shipped_names_with_dots_resolve(tmp_path, monkeypatch):
    """`h100-llama3.1-8b-published` is a shipped name, not a file with suffix '.1-8b-published'."""
    monkeypatch.chdir(tmp_path)
    assert profile_path("h100-llama3.1-8b-published") == PROFILES_DIR / "h100-llama3.1-8b-published.json"
    own = tmp_path / "mine.json"
    own.write_text("{}")
    assert profile_path("mine.json") == own.relative_to(tmp_path)
    assert "h200-qwen3-32b-published" in shipped_profiles()
