"""Unit tests of validate's arithmetic and writers: hand-computed oracles, no device, no torch."""

from __future__ import annotations

import json
import struct

import pytest

from sim.profile import profile_from_dict
from validate.checkpoint_stats import checkpoint_stats, kv_bytes_per_token
from validate.engine_phases import load_span_gbps, loader_efficiency, summarize_layers
from validate.errors import ValidateError
from validate.limits import (
    LinkLimit,
    encoding_efficiency,
    parse_link_speed,
    pci_link_limit,
    pcie_limit_gbps,
    ratio,
)
from validate.probes import Bandwidth, disk_read, gbps
from validate.profile_writer import build_profile_dict, latency_scale, validate_profile_dict, write_profile
from validate.report import fmt, render_report
from validate.results import ColdStart, LatencyTable, Measurements, StageQuality


def sample_measurements() -> Measurements:
    """A hand-made run: 4 layers of 100 MB, links with round numbers, a 3-stage plan."""
    bw = {
        "disk_cold": Bandwidth("disk_cold", 2_000_000_000, (1.0, 1.0, 1.0), "O_DIRECT").to_dict(),
        "disk_warm": Bandwidth("disk_warm", 2_000_000_000, (0.2, 0.25, 0.2), "page cache").to_dict(),
        "h2d_pinned": Bandwidth("h2d_pinned", 1_000_000_000, (0.04,), "copy").to_dict(),
        "h2d_pageable": Bandwidth("h2d_pageable", 1_000_000_000, (0.1,), "copy").to_dict(),
        "d2h_pinned": Bandwidth("d2h_pinned", 1_000_000_000, (0.05,), "copy").to_dict(),
    }
    table = LatencyTable([1.0, 2.0, 4.0], [0.010, 0.012, 0.016])
    half = LatencyTable([1.0, 2.0, 4.0], [0.005, 0.006, 0.008])
    return Measurements(
        command="python -m validate --small",
        date="2026-11-25T09:00:00Z",
        device={"kind": "cuda", "name": "Test GPU", "memory_gb": 80.0, "host_dram_gb": 256.0, "disk_gb": 1000.0,
                "versions": {"torch": "2.13.0"}},
        model_name="toy",
        checkpoint={"num_layers": 4, "layer_bytes": 100_000_000, "embedding_bytes": 50_000_000,
                    "head_bytes": 50_000_000, "total_bytes": 500_000_000, "kv_bytes_per_token": 1024},
        bandwidth=bw,
        limits={"pcie": {"gbps": 31.5, "description": "PCIe 16 GT/s x16"}, "disk": None},
        engine={"process_start_s": 3.0, "cuda_context_s": 0.5, "reserved_gb": 0.5, "weight_alloc_s": 0.1,
                "kv_cache_alloc_s": 0.2, "graph_capture_s": 1.0, "bind_s_per_layer": 0.001,
                "loader_efficiency": 0.8, "loader_link_gbps": 2.0},
        per_layer=[{"layer": i, "read_s": 0.05, "copy_s": 0.01, "bind_s": 0.001, "start_s": 0.06 * i,
                    "end_s": 0.06 * (i + 1), "nbytes": 100_000_000} for i in range(4)],
        prefill={"full": table, "stage1": half},
        decode={"full": table, "stage1": half},
        cold_starts=[ColdStart("full", 6.0, 0, 4, 2.0, {"process start": 3.0, "weights to serving stage": 2.0}),
                     ColdStart("progressive", 5.0, 0, 3, 2.0, {"process start": 3.0, "weights to serving stage": 1.5})],
        stages=[StageQuality("stage1", 3, 0.5, perplexity=40.0, token_agreement=0.7, source="toy"),
                StageQuality("full", 4, 1.0, perplexity=20.0, token_agreement=1.0, source="toy")],
        gate_overhead={"gated_tok_s": 99.0, "plain_tok_s": 100.0, "overhead": 0.0101, "cuda_graph": True},
        graph_check={"skipped": "CUDA graphs need a CUDA device (run with --gpu)"},
        layer_importance=[5.0, 1.0, 2.0, 9.0],
        max_batch=4,
        max_tokens_in_flight=4096,
    )  # fmt: skip


# -- physical limits ------------------------------------------------------------------------------


def test_pcie_limits_match_the_published_figures():
    assert pcie_limit_gbps(16.0, 16) == pytest.approx(31.5, abs=0.01)  # PCIe 4.0 x16
    assert pcie_limit_gbps(32.0, 16) == pytest.approx(63.015, abs=0.001)  # PCIe 5.0 x16
    assert pcie_limit_gbps(5.0, 16) == pytest.approx(8.0)  # PCIe 2.0 x16, 8b/10b
    assert encoding_efficiency(64.0) == pytest.approx(242 / 256)
    with pytest.raises(ValueError):
        pcie_limit_gbps(0, 16)


def test_link_speed_parsing_and_a_fake_sysfs_device(tmp_path):
    assert parse_link_speed("16.0 GT/s PCIe\n") == 16.0
    assert parse_link_speed("8 GT/s") == 8.0
    assert parse_link_speed("Unknown") is None
    d = tmp_path / "0000:1b:00.0"
    d.mkdir()
    for name, text in {"max_link_speed": "32.0 GT/s PCIe", "current_link_speed": "2.5 GT/s PCIe",
                       "current_link_width": "16", "max_link_width": "16"}.items():  # fmt: skip
        (d / name).write_text(text + "\n")
    lim = pci_link_limit(d)  # an idle GPU reports 2.5 GT/s; the maximum is the honest limit
    assert lim is not None and lim.gbps == pytest.approx(63.015, abs=0.001)
    assert pci_link_limit(tmp_path / "missing") is None
    assert ratio(31.5, LinkLimit(63.0, "x")) == pytest.approx(0.5)
    assert ratio(None, lim) is None and ratio(1.0, None) is None


# -- probe math -----------------------------------------------------------------------------------


def test_bandwidth_is_the_median_of_samples_in_decimal_gb():
    assert gbps(2_000_000_000, 0.5) == 4.0
    with pytest.raises(ValueError):
        gbps(1, 0.0)
    b = Bandwidth("x", 1_000_000_000, (1.0, 0.5, 0.25))
    assert b.samples_gbps == (1.0, 2.0, 4.0)
    assert b.gbps == 2.0
    assert b.to_dict()["gbps"] == 2.0


def test_disk_read_reads_every_byte(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"\x01" * (3 * 1024 * 1024 + 17))  # not block-aligned: O_DIRECT's short last read
    cold, warm = disk_read([f], repeats=2)
    assert cold.nbytes == warm.nbytes == 3 * 1024 * 1024 + 17
    assert len(cold.seconds) == len(warm.seconds) == 2
    assert cold.gbps > 0 and warm.gbps > 0


def test_loader_records_summaries():
    recs = [
        {
            "layer": None,
            "read_s": 9.0,
            "copy_s": 9.0,
            "bind_s": 0.0,
            "start_s": 0.0,
            "end_s": 1.0,
            "nbytes": 1_000_000_000,
        },
        {
            "layer": 0,
            "read_s": 0.2,
            "copy_s": 0.1,
            "bind_s": 0.01,
            "start_s": 1.0,
            "end_s": 1.5,
            "nbytes": 500_000_000,
        },
        {
            "layer": 1,
            "read_s": 0.4,
            "copy_s": 0.3,
            "bind_s": 0.03,
            "start_s": 1.5,
            "end_s": 2.0,
            "nbytes": 500_000_000,
        },
    ]
    s = summarize_layers(recs)  # the embedding unit is not a layer
    assert s == pytest.approx({"read_s_per_layer": 0.3, "copy_s_per_layer": 0.2, "bind_s_per_layer": 0.02})
    assert load_span_gbps(recs) == pytest.approx(1.0)  # 2 GB over 2 s
    assert loader_efficiency(1.0, [2.0, 4.0]) == (0.5, 2.0)
    assert loader_efficiency(5.0, [2.0]) == (1.0, 2.0)  # never above the slowest link
    assert loader_efficiency(0.0, []) == (1.0, 0.0)


# -- checkpoint byte counts -----------------------------------------------------------------------


def _write_safetensors(path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    sizes = {"F16": 2, "F32": 4}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_checkpoint_stats_counts_bytes_per_unit(tmp_path):
    _write_safetensors(tmp_path / "a.safetensors", {
        "model.embed_tokens.weight": ("F16", [10, 4]),
        "model.layers.0.mlp.up_proj.weight": ("F16", [8, 4]),
        "model.layers.0.input_layernorm.weight": ("F16", [4]),
    })  # fmt: skip
    _write_safetensors(tmp_path / "b.safetensors", {
        "model.layers.1.mlp.up_proj.weight": ("F16", [8, 4]),
        "model.layers.1.input_layernorm.weight": ("F16", [4]),
        "model.norm.weight": ("F16", [4]),
        "lm_head.weight": ("F16", [10, 4]),
    })  # fmt: skip
    s = checkpoint_stats(tmp_path)
    assert s.num_layers == 2
    assert s.layer_bytes == (72, 72)
    assert (s.embedding_bytes, s.head_bytes, s.other_bytes) == (80, 80, 8)
    assert s.total_bytes == 312
    assert s.dtype_bytes == 2
    with pytest.raises(ValidateError, match="no \\*.safetensors"):
        checkpoint_stats(tmp_path / "nothing")


def test_kv_bytes_per_token_of_smollm2_and_llama2():
    smollm2 = {
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "hidden_size": 576,
    }
    assert kv_bytes_per_token(smollm2, 4) == 2 * 30 * 3 * 64 * 4
    llama = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096}
    assert kv_bytes_per_token(llama, 2) == 524288  # the published profile's figure


# -- profile building -----------------------------------------------------------------------------


def test_profile_passes_the_simulators_schema_and_keeps_provenance():
    m = sample_measurements()
    d = build_profile_dict(m, "test-gpu-toy-measured")
    p = profile_from_dict(json.loads(json.dumps(d)))
    assert p.provenance["kind"] == "measured"
    assert p.provenance["command"] == "python -m validate --small"
    assert p.hardware.h2d_gbps == pytest.approx(25.0)
    assert p.hardware.ssd_read_gbps == pytest.approx(2.0)
    assert p.hardware.ssd_warm_gbps == pytest.approx(10.0)
    assert p.hardware.pcie_limit_gbps == 31.5
    assert p.engine.loader_efficiency == 0.8
    assert p.models[0].weight_bytes == 500_000_000
    assert p.models[0].layer_importance == (5.0, 1.0, 2.0, 9.0)
    stage1 = p.models[0].stages[0]
    assert (stage1.num_layers, stage1.quality, stage1.latency_scale) == (3, 0.5, 0.5)
    assert "cold_start" in d["provenance"]["measured"]
    assert "hardware.network_gbps" in d["provenance"]["notes"]
    assert p.engine.loader_efficiency_dram is None  # not measured: one share for every tier
    m.engine.update(load_gbps_warm=2.5, loader_efficiency_warm=0.1)
    warm = profile_from_dict(json.loads(json.dumps(build_profile_dict(m, "test-gpu-toy-measured"))))
    assert warm.engine.loader_efficiency_dram == 0.1 and warm.engine.loader_efficiency_from("ssd") == 0.8
    assert "2.5 GB/s" in warm.provenance["notes"]["engine.loader_efficiency_dram"]


def test_profile_without_a_pcie_limit_says_so_and_an_invalid_one_is_refused(tmp_path):
    m = sample_measurements()
    m.limits["pcie"] = None
    d = build_profile_dict(m, "x")
    assert d["hardware"]["pcie_limit_gbps"] == pytest.approx(25.0)
    assert "hardware.pcie_limit_gbps" in d["provenance"]["notes"]
    d["hardware"]["gpu_memory_gb"] = 0.1  # weights no longer fit
    with pytest.raises(ValidateError, match="does not pass sim.profile"):
        validate_profile_dict(d)
    with pytest.raises(ValidateError):
        write_profile(d, tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_a_loader_faster_than_the_disk_probe_raises_the_disk_figure():
    m = sample_measurements()
    m.engine["load_gbps_cold"] = 3.0  # the probe said 2.0 GB/s
    d = build_profile_dict(m, "x")
    assert d["hardware"]["ssd_read_gbps"] == 3.0
    assert "2 GB/s" in d["provenance"]["notes"]["hardware.ssd_read_gbps"]


def test_latency_scale_is_the_median_ratio_over_shared_points():
    full = LatencyTable([1, 2, 4], [1.0, 2.0, 4.0])
    assert latency_scale(LatencyTable([1, 2, 4], [0.5, 1.5, 2.0]), full) == 0.5
    assert latency_scale(LatencyTable([8], [1.0]), full) == 1.0


def test_measurements_round_trip_through_json(tmp_path):
    m = sample_measurements()
    m.save(tmp_path / "m.json")
    back = Measurements.load(tmp_path / "m.json")
    assert back == m


# -- report -----------------------------------------------------------------------------------------


def test_report_shows_ratios_to_limits_and_every_section():
    text = render_report(
        sample_measurements(), "profile.json", {"latency tables": "plots/latency.png"}, "| replay |"
    )
    for heading in (
        "## Links",
        "## Cold-start phases",
        "## Time to first token from cold",
        "## Latency tables",
        "## Gate overhead",
        "## CUDA-graph invariance",
        "## Quality per stage",
        "## Replay",
        "## Plots",
    ):
        assert heading in text, heading
    assert "| host to device, pinned | 25.00 | 31.50 | 0.79 |" in text
    assert "| disk read, cold (page cache bypassed) | 2.00 | n/a | n/a |" in text
    assert "Skipped: CUDA graphs need a CUDA device" in text
    assert "![latency tables](plots/latency.png)" in text
    assert "+1.01 %" in text


def test_fmt_never_prints_unknowns_as_numbers():
    assert fmt(None) == "n/a"
    assert fmt(float("nan")) == "n/a"
    assert fmt(0.0123) == "0.0123"
    assert fmt(12345.0) == "12,345"


# -- device selection and the CLI's configuration ----------------------------------------------


def test_gpu_without_cuda_is_exit_2_with_one_sentence(monkeypatch):
    import sys
    import types

    from validate.device import NO_CUDA_MESSAGE, select_device

    fake = types.SimpleNamespace(__version__="0", cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setitem(sys.modules, "torch", fake)
    with pytest.raises(ValidateError) as info:
        select_device(gpu=True)
    assert info.value.exit_code == 2
    assert str(info.value) == NO_CUDA_MESSAGE and NO_CUDA_MESSAGE.count(". ") == 0


def test_small_cpu_runs_get_a_short_replay_segment():
    from validate.cli import build_parser, config_from_args

    args = ["--small", "--replay", "--out", "x"]
    cfg = config_from_args(build_parser().parse_args(args), args)
    assert (cfg.replay_start_min, cfg.replay_end_min, cfg.replay_compress, cfg.replay_max_per_minute) == (
        255, 285, 120.0, 1,
    )  # fmt: skip
    assert cfg.ttl_s == pytest.approx(5.0)  # 10 trace minutes at 120x
    assert cfg.command == "python -m validate --small --replay --out x"
    gpu = ["--gpu", "--replay-window", "10:20", "--ttl", "3"]
    cfg = config_from_args(build_parser().parse_args(gpu), gpu)
    assert (cfg.replay_start_min, cfg.replay_end_min, cfg.ttl_s, cfg.dtype) == (10, 20, 3.0, "float16")
    bad = ["--replay-window", "10-20"]
    with pytest.raises(ValidateError, match="START:END"):
        config_from_args(build_parser().parse_args(bad), bad)


def test_graph_check_is_skipped_off_cuda_and_node_counts_need_a_kept_graph():
    pytest.importorskip("torch")  # check_graph_invariance imports torch first (the engine extra)
    from pathlib import Path

    from policies.plan import full_plan
    from validate.coldstart import EngineSpec
    from validate.graphs import check_graph_invariance, graph_node_count

    out = check_graph_invariance(EngineSpec(Path("."), "cpu", "float32", False, 64), full_plan(2))
    assert "skipped" in out
    assert graph_node_count(object()) is None
