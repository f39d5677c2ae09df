"""The replay check's parts: segment cutting, the error table, and the wall-clock server on a fake engine."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from sim.profile import profile_from_dict
from validate.cli import parse_policies
from validate.errors import ValidateError
from validate.profile_writer import build_profile_dict
from validate.replay import runner as runner_mod
from validate.replay.compare import ERROR_HEADER, compare_policy, format_table, markdown_table
from validate.replay.pipeline import keepalive_arg, plan_for, replay_profile
from validate.replay.runner import ReplayServer, ServerSpec
from validate.replay.segment import COLUMNS, FUNCTIONS_FILE, SegmentSpec, build_segment, write_requests_csv

SHARED_TRACES = Path("/work/shared/traces")


def _function_trace(root: Path, rows: dict[str, list[int]]) -> Path:
    """A tiny Azure Functions 2019 file: per-minute counts for a few functions over 4 minutes."""
    path = root / FUNCTIONS_FILE
    path.parent.mkdir(parents=True)
    lines = ["HashOwner,HashApp,HashFunction,Trigger,1,2,3,4"]
    lines += [f"o,a,{fn},http,{','.join(map(str, counts))}" for fn, counts in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return root


# -- segment ----------------------------------------------------------------------------------------


def test_segment_maps_busiest_functions_to_models_and_compresses_time(tmp_path):
    root = _function_trace(tmp_path, {"quiet": [0, 1, 0, 0], "busy": [2, 0, 3, 1], "mid": [1, 1, 0, 0]})
    spec = SegmentSpec(trace_dir=root, start_min=0, end_min=4, compress=60.0, num_models=2,
                       max_prompt_tokens=50, max_output_tokens=5)  # fmt: skip
    seg = build_segment(spec)
    assert list(seg.columns) == COLUMNS
    assert (seg["model"] == "m0").sum() == 6 and (seg["model"] == "m1").sum() == 2  # "quiet" is not kept
    assert seg["arrival_s"].is_monotonic_increasing
    assert seg["arrival_s"].between(0, 4.0).all()  # 4 trace minutes = 4 s at 60x
    busy_minute_2 = seg[(seg.model == "m0") & seg.arrival_s.between(2.0, 3.0)]
    assert len(busy_minute_2) == 3  # minute 3 of the trace (index 2) holds its 3 invocations
    assert seg["prompt_tokens"].between(1, 50).all() and seg["output_tokens"].between(1, 5).all()
    again = build_segment(spec)
    pd.testing.assert_frame_equal(seg, again)  # same seed, same segment


def test_segment_caps_and_errors(tmp_path):
    root = _function_trace(tmp_path, {"busy": [9, 0, 9, 0]})
    capped = build_segment(
        SegmentSpec(trace_dir=root, start_min=0, end_min=4, max_per_minute=2, num_models=1)
    )
    assert len(capped) == 4
    first3 = build_segment(SegmentSpec(trace_dir=root, start_min=0, end_min=4, max_requests=3, num_models=1))
    assert len(first3) == 3
    with pytest.raises(ValidateError, match="outside"):
        build_segment(SegmentSpec(trace_dir=root, start_min=100, end_min=120))
    with pytest.raises(ValidateError, match="no invocations"):
        build_segment(SegmentSpec(trace_dir=root, start_min=1, end_min=2))
    with pytest.raises(ValidateError, match="--trace-dir"):
        build_segment(SegmentSpec(trace_dir=tmp_path / "none"))
    out = write_requests_csv(capped, tmp_path / "requests.csv")
    assert out.read_text().splitlines()[0] == "arrival_s,model,prompt_tokens,output_tokens"


@pytest.mark.skipif(
    not (SHARED_TRACES / FUNCTIONS_FILE).exists(), reason="shared trace samples not on this machine"
)
def test_segment_of_the_real_trace_has_real_token_counts():
    seg = build_segment(SegmentSpec(trace_dir=SHARED_TRACES, start_min=255, end_min=285, compress=120,
                                    max_per_minute=2, max_prompt_tokens=128, max_output_tokens=8, token_scale=1 / 16))  # fmt: skip
    assert 10 <= len(seg) <= 60
    assert set(seg["model"]) == {"m0", "m1", "m2"}
    assert seg["arrival_s"].max() < 15.0
    assert seg["prompt_tokens"].nunique() > 1  # drawn from the Azure LLM trace, not a constant


# -- comparison -------------------------------------------------------------------------------------


def test_errors_against_hand_computed_percentiles():
    real = pd.DataFrame(
        {
            "ttft_s": [1.0, 1.0, 1.0, 1.0, 5.0],
            "cold": [True, False, False, False, True],
            "refills": [1, 0, 0, 2, 0],
        }
    )
    sim = pd.DataFrame({
        "ttft_s": [2.0, 2.0, 2.0, 2.0, 10.0, 99.0],
        "cold": [True, True, False, False, True, True],
        "rejected": [False, False, False, False, False, True],
    })  # fmt: skip
    e = compare_policy("full/none", real, sim, sim_refills=2)
    assert e.real_ttft[50] == 1.0 and e.sim_ttft[50] == 2.0
    assert e.ttft_error(50) == pytest.approx(1.0)  # +100 %
    assert e.real_ttft[90] == pytest.approx(3.4) and e.sim_ttft[90] == pytest.approx(6.8)
    assert e.ttft_error(90) == pytest.approx(1.0)
    assert (e.real_cold, e.sim_cold, e.cold_error, e.sim_rejected) == (2, 3, 1, 1)
    assert (e.real_refills, e.sim_refills) == (3, 2)
    table = format_table([e])
    header = table.splitlines()[0]
    for col in ("TTFT p50 err %", "TTFT p90 err %", "TTFT p99 err %", "cold-start count err", "real refills"):
        assert col in header
    assert "+100.0" in table and "+1" in table.splitlines()[2]
    assert markdown_table([e]).startswith("| " + " | ".join(ERROR_HEADER) + " |")


# -- replay profile and plans -----------------------------------------------------------------------


def test_replay_profile_removes_process_costs_and_still_validates():
    from test_validate_units import sample_measurements

    measured = build_profile_dict(sample_measurements(), "toy")
    r = replay_profile(measured, engine_max_tokens=512)
    p = profile_from_dict(json.loads(json.dumps(r)))
    assert p.engine.process_start_s == 0.0 and p.engine.cuda_context_s == 0.0
    assert p.models[0].max_batch == 1 and p.models[0].max_tokens_in_flight == 512
    assert measured["engine"]["process_start_s"] == 3.0  # the measured profile is untouched
    capped = profile_from_dict(json.loads(json.dumps(replay_profile(measured, 512, max_instances=3))))
    per_instance = 500_000_000 + 1024 * 512
    assert capped.hardware.gpu_memory_gb - capped.hardware.gpu_reserved_gb == pytest.approx(
        3 * per_instance / 1e9, rel=1e-3
    )
    assert keepalive_arg("fixed", 10.0) == "fixed[ttl=10]" and keepalive_arg("none", 10.0) == "none"
    assert plan_for("progressive", 4, [5.0, 1.0, 2.0, 9.0]).stages[0] == (0, 2, 3)
    assert plan_for("pipelined", 4, None).serve_from == 3
    with pytest.raises(ValidateError):
        plan_for("eager", 4, None)


def test_policies_option_parses_and_rejects():
    assert parse_policies("full/none, progressive/fixed") == (("full", "none"), ("progressive", "fixed"))
    with pytest.raises(ValidateError, match="STAGING/KEEPALIVE"):
        parse_policies("full")


# -- the wall-clock server, on a fake engine ------------------------------------------------------


@dataclass
class _Result:
    ttft_s: float
    stage_at_first_token: int = 0
    refills: int = 0


class FakeEngine:
    """Loads in `LOAD_S`, answers in `GEN_S`; counts constructions and unloads."""

    LOAD_S, GEN_S = 0.15, 0.02
    made = 0
    unloaded = 0
    lock = threading.Lock()

    def __init__(self, *args):
        with FakeEngine.lock:
            FakeEngine.made += 1
        self.device = "cpu"

    def start(self):
        self._t = time.perf_counter()
        return self

    def wait_for_stage(self, j):
        time.sleep(max(0.0, self._t + self.LOAD_S - time.perf_counter()))

    def generate(self, prompt, n):
        time.sleep(self.GEN_S)
        return _Result(self.GEN_S)

    def unload(self):
        with FakeEngine.lock:
            FakeEngine.unloaded += 1


def _serve(
    monkeypatch, tmp_path, keepalive: str, ttl: float, arrivals: list[tuple[float, str]], capacity=10.0
):
    monkeypatch.setattr(runner_mod, "make_engine", lambda spec, plan: FakeEngine())
    monkeypatch.setattr(runner_mod, "drop_file_cache", lambda files: None)
    FakeEngine.made = FakeEngine.unloaded = 0
    seg = pd.DataFrame({"arrival_s": [a for a, _ in arrivals], "model": [m for _, m in arrivals],
                        "prompt_tokens": 4, "output_tokens": 2})  # fmt: skip
    spec = ServerSpec(engine=None, files=(), keepalive=keepalive, ttl_s=ttl, capacity_bytes=capacity,
                      footprint_bytes=1.0, vocab_size=100)  # fmt: skip
    from policies.plan import full_plan

    server = ReplayServer(spec, full_plan(2))
    rows = server.run(seg)
    return rows, server


def test_server_routes_like_the_simulator_and_keeps_instances_alive(monkeypatch, tmp_path):
    rows, server = _serve(monkeypatch, tmp_path, "fixed", 5.0,
                          [(0.0, "a"), (0.05, "a"), (0.6, "a"), (0.65, "b")])  # fmt: skip
    # the second request finds the first instance loading with its one slot taken: a second instance
    assert list(rows["cold"]) == [True, True, False, True]
    assert list(rows["instance_id"]) == [0, 1, 0, 2]
    assert rows.loc[0, "ttft_s"] == pytest.approx(FakeEngine.LOAD_S + FakeEngine.GEN_S, abs=0.06)
    assert rows.loc[2, "ttft_s"] == pytest.approx(FakeEngine.GEN_S, abs=0.03)
    assert server.counters["loads"] == 3 and FakeEngine.made == 3
    assert FakeEngine.unloaded == 3  # everything is unloaded at the end of the run


def test_server_without_keepalive_evicts_when_idle(monkeypatch, tmp_path):
    rows, server = _serve(monkeypatch, tmp_path, "none", 5.0, [(0.0, "a"), (0.8, "a"), (1.6, "a")])
    assert list(rows["cold"]) == [True, True, True]
    assert server.counters["loads"] == 3 and server.counters["evictions"] == 3


def test_server_evicts_idle_lru_instance_when_memory_is_full(monkeypatch, tmp_path):
    rows, server = _serve(
        monkeypatch, tmp_path, "fixed", 5.0, [(0.0, "a"), (0.6, "b"), (1.2, "a")], capacity=1.0
    )
    assert list(rows["cold"]) == [True, True, True]  # b's start evicted idle a
    assert server.counters["queued_on_busy"] == 0


def test_a_model_without_an_instance_waits_for_memory_as_in_the_simulator(monkeypatch, tmp_path):
    """Memory for one instance, busy with a: b waits (no fifth engine beyond the cap), oldest
    first, and starts when a goes idle; a's next request, arriving while b waits, joins a."""
    rows, server = _serve(
        monkeypatch, tmp_path, "fixed", 5.0, [(0.0, "a"), (0.01, "a"), (0.05, "b"), (0.06, "c")], capacity=1.0
    )
    load = FakeEngine.LOAD_S
    assert list(rows["instance_id"]) == [0, 0, 1, 2]
    assert list(rows["cold"]) == [True, True, True, True]  # b and c waited for memory: cold
    # causal, whatever the machine's load: b's engine is built only once a's last request is
    # done, and c's once b's is (an engine beyond the cap would serve b within one load)
    assert rows.loc[2, "first_token_s"] >= rows.loc[1, "finish_s"] + 0.9 * load
    assert rows.loc[3, "first_token_s"] >= rows.loc[2, "finish_s"] + 0.9 * load
    assert server.counters["waited_for_memory"] == 2 and server.counters["queued_on_busy"] == 1
    assert server.counters["loads"] == 3 and not server.waiting


class ConcurrentFakeEngine(FakeEngine):
    """Like FakeEngine, and records how many generate calls overlap (a batching engine's view)."""

    inside = 0
    most = 0

    def generate(self, prompt, n):
        with FakeEngine.lock:
            ConcurrentFakeEngine.inside += 1
            ConcurrentFakeEngine.most = max(ConcurrentFakeEngine.most, ConcurrentFakeEngine.inside)
        time.sleep(0.4)
        with FakeEngine.lock:
            ConcurrentFakeEngine.inside -= 1
        return _Result(self.GEN_S)


def test_server_with_two_slots_sends_concurrent_requests_to_one_batching_instance(monkeypatch, tmp_path):
    monkeypatch.setattr(runner_mod, "make_engine", lambda spec, plan: ConcurrentFakeEngine())
    monkeypatch.setattr(runner_mod, "drop_file_cache", lambda files: None)
    FakeEngine.made = FakeEngine.unloaded = 0
    ConcurrentFakeEngine.most = 0
    seg = pd.DataFrame({"arrival_s": [0.0, 0.25, 0.3, 0.35], "model": ["a"] * 4,
                        "prompt_tokens": 4, "output_tokens": 2})  # fmt: skip
    spec = ServerSpec(engine=None, files=(), keepalive="fixed", ttl_s=5.0, capacity_bytes=10.0,
                      footprint_bytes=1.0, vocab_size=100, slots=2)  # fmt: skip
    from policies.plan import full_plan

    server = ReplayServer(spec, full_plan(2))
    rows = server.run(seg)
    # 0.25 shares the serving instance (ready at 0.15, busy until 0.55); 0.3 finds both of its
    # slots taken and starts a second instance; 0.35 joins that one while it loads
    assert list(rows["instance_id"]) == [0, 0, 1, 1]
    assert list(rows["cold"]) == [True, False, True, True]
    assert ConcurrentFakeEngine.most >= 2 and FakeEngine.made == 2 and FakeEngine.unloaded == 2


def test_replay_profile_carries_the_replay_batch_and_its_kv():
    from test_validate_units import sample_measurements

    measured = build_profile_dict(sample_measurements(), "toy")
    four = profile_from_dict(json.loads(json.dumps(replay_profile(measured, 512, max_instances=2, batch=4))))
    assert four.models[0].max_batch == 4 and four.models[0].max_tokens_in_flight == 4 * 512
    # each instance's memory holds four KV slots: the simulator's capacity says the same
    per_instance = 500_000_000 + 1024 * 4 * 512
    assert four.hardware.gpu_memory_gb - four.hardware.gpu_reserved_gb == pytest.approx(
        2 * per_instance / 1e9, rel=1e-3
    )


def test_the_simulator_runs_the_policies_the_real_server_implements(tmp_path):
    """Named, not left to the simulator's defaults (its default router is expected_wait)."""
    from validate.replay.simulate import sim_command

    cmd = sim_command(tmp_path / "r.csv", tmp_path / "p.json", "full", "none", tmp_path / "o")
    named = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert named["--router"] == "least_loaded" and named["--placement"] == "first_fit"
    assert named["--prewarm"] == "none" and named["--admission"] == "always"
    assert (named["--fidelity"], named["--nodes"], named["--gpus-per-node"]) == ("iteration", "1", "1")


def test_replay_profile_serves_with_the_engines_own_decode_step_and_loader_rate():
    """The replay's engines decode with their own step (graphed at batch 1, batched above) and
    load through one process at the loader's page-cache rate: the replay profile says so."""
    from test_validate_units import sample_measurements

    measured = build_profile_dict(sample_measurements(), "toy")
    me = measured["provenance"]["measured"]
    me["served_decode"] = {"contexts": [16, 128, 448], "seconds": [0.004, 0.006, 0.005], "cuda_graph": True}
    me["batching"] = [{"batch": 4, "decode_s_per_step": 0.03}, {"batch": 1, "decode_s_per_step": 0.02}]
    me["engine_phases"]["load_gbps_warm"] = 2.0  # the loader from the page cache, below 25 GB/s x 0.8
    one = replay_profile(measured, 512)
    assert one["models"][0]["decode"] == {"x": [1.0], "seconds": [0.005]}
    assert one["hardware"]["h2d_gbps"] == pytest.approx(2.0 / 0.8)
    assert "served_decode, CUDA graph" in one["provenance"]["notes"]["replay"]
    four = profile_from_dict(json.loads(json.dumps(replay_profile(measured, 512, batch=4))))
    assert four.models[0].decode(1) == pytest.approx(0.02) and four.models[0].decode(4) == pytest.approx(0.03)
    # a loader as fast as its link leaves the link alone; the measured profile is untouched
    me["engine_phases"]["load_gbps_warm"] = 30.0
    assert replay_profile(measured, 512)["hardware"]["h2d_gbps"] == 25.0
    assert measured["hardware"]["h2d_gbps"] == 25.0 and measured["models"][0]["decode"] != one["models"][0]["decode"]
