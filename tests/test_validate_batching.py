"""validate's measurement of the engine's own continuous batching, on the CPU with a tiny checkpoint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from policies.plan import full_plan  # noqa: E402
from progressive_serve.checkpoint import write_random_checkpoint  # noqa: E402
from progressive_serve.testing import torch_threads  # noqa: E402
from validate.batching import measure_batching  # noqa: E402
from validate.coldstart import EngineSpec  # noqa: E402


def test_batching_rows_come_from_the_engine_serving_the_batch(tmp_path):
    ckpt = write_random_checkpoint(tmp_path / "tiny", "tiny", seed=2, dtype="float32")
    spec = EngineSpec(ckpt, "cpu", "float32", False, 64)
    with torch_threads(1):
        rows = measure_batching(spec, full_plan(6), [1, 2, 3, 4, 5], (1, 3), 5)
    assert [r["batch"] for r in rows] == [1, 3]
    assert rows[0]["largest_shared_step"] == 1 and 2 <= rows[1]["largest_shared_step"] <= 3
    for r in rows:
        assert r["decode_s_per_step"] > 0 and r["tokens_per_s"] > 0 and r["tokens"] == 5


def test_replay_server_serves_real_batching_engines(tmp_path):
    """The replay's server with two slots per instance on the real engine (tiny, CPU)."""
    import pandas as pd

    from validate.replay.runner import ReplayServer, ServerSpec

    ckpt = write_random_checkpoint(tmp_path / "tiny", "tiny", seed=2, dtype="float32")
    engine = EngineSpec(ckpt, "cpu", "float32", False, 64, max_batch=2)
    # the last arrives well after the first two are done (a real engine's load and steps on a
    # CPU shared with other work can take over a second), within the 5 s keep-alive
    seg = pd.DataFrame({"arrival_s": [0.0, 0.01, 0.02, 2.5], "model": ["a", "a", "b", "a"],
                        "prompt_tokens": [5, 6, 4, 3], "output_tokens": [6, 6, 3, 2]})  # fmt: skip
    spec = ServerSpec(
        engine, tuple(sorted(ckpt.glob("*.safetensors"))), "fixed", 5.0, 10.0, 1.0, 320, slots=2
    )
    with torch_threads(1):
        rows = ReplayServer(spec, full_plan(6)).run(seg)
    assert len(rows) == 4 and rows["ttft_s"].gt(0).all()
    # the first two share one instance of a; b gets its own; the last finds a warm
    assert rows.loc[0, "instance_id"] == rows.loc[1, "instance_id"] == rows.loc[3, "instance_id"]
    assert rows.loc[2, "instance_id"] != rows.loc[0, "instance_id"] and not rows.loc[3, "cold"]


def test_served_decode_is_timed_through_the_engines_own_step(tmp_path):
    from progressive_serve.engine import ProgressiveEngine
    from validate.latency import served_decode_by_context

    ckpt = write_random_checkpoint(tmp_path / "tiny", "tiny", seed=2, dtype="float32")
    with torch_threads(1):
        eager = ProgressiveEngine(ckpt, full_plan(6), device="cpu", max_tokens=64).start(background=False)
        out = served_decode_by_context(eager, "cpu", (4, 40, 100), 2)
        graphed = ProgressiveEngine(
            ckpt, full_plan(6), device="cpu", max_tokens=64, use_cuda_graph=True, emulate_graph=True
        ).start(background=False)
        g = served_decode_by_context(graphed, "cpu", (4, 40), 2)
    assert out["contexts"] == [4, 40] and all(s > 0 for s in out["seconds"])  # 100 is past the cache
    assert not out["cuda_graph"] and out["kv_slots_attended"] == "position + 1"
    assert g["cuda_graph"] and g["kv_slots_attended"] == 64
