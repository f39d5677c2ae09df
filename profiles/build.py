"""Build the published H100 / H200 profiles from cited figures: `python -m profiles.build`.

Every number below carries its source in the note beside it, and the note is written into the
profile's `provenance.notes`. Byte counts come from each model's architecture (its Hugging Face
config.json), latency tables from the stated roofline (profiles/roofline.py); nothing in a
written profile is typed by hand. Stage quality is null: no one has measured it for these
models, and the simulator reports no quality for a stage it cannot know.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from profiles.roofline import Gpu, Shape, decode_table, prefill_table

HERE = Path(__file__).resolve().parent
BF16 = 2  # bytes per parameter
PREFILL_X = [1, 128, 512, 1024, 2048, 4096, 8192]
DECODE_X = [1, 8, 32, 64, 128, 256]
DECODE_CONTEXT = 1024  # tokens of KV each sequence reads per decode step (roofline assumption)
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization: the rest is never weights or KV
PCIE5_X16_GBPS = 63.0  # 32 GT/s x 16 lanes x 128/130 / 8 bits (PCIe 5.0 specification)


@dataclass(frozen=True)
class Arch:
    """A decoder's shape, as its config.json gives it."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    qk_norm: bool
    source: str

    @property
    def layer_params(self) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        attn = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        norms = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return attn + 3 * self.hidden * self.intermediate + norms

    @property
    def embedding_bytes(self) -> int:
        return self.vocab * self.hidden * BF16

    @property
    def head_bytes(self) -> int:  # untied lm_head and the final norm
        return (self.vocab * self.hidden + self.hidden) * BF16

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * BF16

    @property
    def weight_bytes(self) -> int:
        return self.layers * self.layer_params * BF16 + self.embedding_bytes + self.head_bytes

    @property
    def flops_per_token(self) -> float:
        return 2.0 * (self.layers * self.layer_params + self.vocab * self.hidden)


LLAMA_31_8B = Arch("llama-3.1-8b", layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8,
                   head_dim=128, vocab=128256, qk_norm=False,
                   source="meta-llama/Llama-3.1-8B config.json: 32 layers, hidden 4096, intermediate 14336, "
                          "32 heads, 8 KV heads, head_dim 128, vocab 128256, untied embeddings, bf16")
QWEN3_32B = Arch("qwen3-32b", layers=64, hidden=5120, intermediate=25600, heads=64, kv_heads=8,
                 head_dim=128, vocab=151936, qk_norm=True,
                 source="Qwen/Qwen3-32B config.json: 64 layers, hidden 5120, intermediate 25600, 64 heads, "
                        "8 KV heads, head_dim 128, q/k RMSNorm, vocab 151936, untied embeddings, bf16")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gb: float
    hbm_gbps: float
    tflops_bf16: float
    source: str


H100 = GpuSpec("NVIDIA H100 80GB SXM5", 80.0, 3350.0, 989.4,
               "NVIDIA H100 Tensor Core GPU datasheet (SXM5): 80 GB HBM3 (read as decimal GB, which "
               "understates the 80 GiB fitted), 3.35 TB/s, BF16 tensor 1,979 TFLOPS with sparsity = "
               "989.4 dense, PCIe Gen5 x16")
H200 = GpuSpec("NVIDIA H200 141GB SXM", 141.0, 4800.0, 989.4,
               "NVIDIA H200 Tensor Core GPU datasheet (SXM): 141 GB HBM3e, 4.8 TB/s, BF16 tensor 1,979 "
               "TFLOPS with sparsity = 989.4 dense (the H100's compute), PCIe Gen5 x16")

# ServerlessLLM's published H100 results (ServerlessLLM/ServerlessLLM
# benchmarks/results/h100_2025/README.md, "H100 SXM Benchmark Results (December 2025)", 8x H100
# SXM, NVMe at 29.4 GB/s; checked at commit 9f50241): "Random" test (30 model copies loaded in
# random order, so from the NVMe) Llama-3.1-8B-Instruct 0.678 s, Qwen/Qwen3-32B 3.216 s (the
# 3.220 s beside it is DeepSeek-R1-Distill-Qwen-32B); "Cached" test (one model loaded 5 times in
# a row) Qwen3-32B 1.253 s. That the cached load is served from host memory is this project's
# reading: the README says only "repeated loading of the same model". Its loader's achieved
# rates are taken as the links (efficiency 1).
SLLM_SOURCE = "ServerlessLLM benchmarks/results/h100_2025/README.md (Dec 2025, 8x H100 SXM)"
SLLM_SSD_S = {"llama-3.1-8b": 0.678, "qwen3-32b": 3.216}
SLLM_DRAM_S_QWEN3_32B = 1.253
SLLM_NVME_GBPS = 29.4

# vLLM engine phases (per cold process, compile cache persisted as a serverless platform keeps it).
# PR #11005's description: `vllm serve meta-llama/Meta-Llama-3-8B` logs "Graph capturing finished
# in 10 secs" and "init engine (profile, create kv cache, warmup model) took 14.18 seconds" (no
# torch.compile; GPU not stated). PR #37198's table: torch.compile warm start of "llama" 7.19 s
# before the change (torch 2.12; GPU not stated).
INIT_ENGINE_S, GRAPH_CAPTURE_S = 14.18, 10.0  # vLLM PR #11005 log: Meta-Llama-3-8B
COMPILE_WARM_S = 7.19  # vLLM PR #37198: torch.compile warm start of "llama" (torch 2.12, before mega-AOT)
SEED_REST_S = (5.85 + 5.89) / 2  # seed's LLM() outside weights and init (01_both_baseline_first.json)
# vLLM PR #48337, a comment (icenfly, 2026-07-15) comparing sleep levels for Qwen3-8B *with LoRA
# enabled* on an A100: level-1 sleep 10.57 s, wake 2.19 s; level-2 sleep 0.31 s, wake 6.53 s.
# The 24 GB/s PCIe Gen4 rate used to take the copy out is this project's assumption, not the PR's.
WAKE_L1_S, QWEN3_8B_BYTES, A100_H2D_GBPS = 2.19, 8_190_735_360 * BF16, 24.0  # vLLM PR #48337 (A100)


def _r(x: float, nd: int = 4) -> float:
    return round(x, nd)


@dataclass(frozen=True)
class Build:
    gpu: GpuSpec
    arch: Arch

    @property
    def name(self) -> str:
        return f"{self.gpu.name.split()[1].lower()}-{self.arch.name.replace('llama-', 'llama')}-published"


def profile_dict(b: Build) -> dict:
    """The profile of GPU `b.gpu` serving `b.arch` on a ServerlessLLM-class server with vLLM."""
    g, a = b.gpu, b.arch
    reserved = _r(g.memory_gb * (1 - GPU_MEMORY_UTILIZATION), 2)
    usable = int((g.memory_gb - reserved) * 1e9)
    kv_tokens = (usable - a.weight_bytes) // a.kv_bytes_per_token
    ssd_gbps = _r(a.weight_bytes / SLLM_SSD_S[a.name] / 1e9, 2)
    h2d_gbps = _r(QWEN3_32B.weight_bytes / SLLM_DRAM_S_QWEN3_32B / 1e9, 2)
    wake_s = _r(WAKE_L1_S - QWEN3_8B_BYTES / (A100_H2D_GBPS * 1e9), 3)
    n = a.layers
    stages = [{"name": name, "num_layers": n * k // 8, "quality": None, "latency_scale": 1.0,
               "source": f"not measured: no per-stage quality of {a.name} with {n * k // 8} of {n} layers is "
                         "published or measured by this project; the simulator reports none"}
              for name, k in (("stage1", 6), ("stage2", 7))]
    stages.append({"name": "full", "num_layers": n, "quality": 1.0, "latency_scale": 1.0, "source": "full model"})
    shape = Shape(a.weight_bytes, a.flops_per_token, a.kv_bytes_per_token)
    gpu = Gpu(g.hbm_gbps, g.tflops_bf16)
    notes = {
        "hardware.gpu_memory_gb, models[0].prefill, decode (bandwidth, FLOPs)": g.source,
        "hardware.gpu_reserved_gb": f"vLLM's default gpu_memory_utilization {GPU_MEMORY_UTILIZATION}: "
                                    f"{reserved} GB never hold weights or KV",
        "hardware.ssd_read_gbps, ssd_warm_gbps, engine.loader_efficiency":
            f"ServerlessLLM's H100 result ({SLLM_SOURCE}, 'Random' test): {a.name} "
            f"({a.weight_bytes / 1e9:.2f} GB) loaded in {SLLM_SSD_S[a.name]} s from a {SLLM_NVME_GBPS} GB/s NVMe "
            f"= {ssd_gbps} GB/s achieved, taken as the link with loader_efficiency 1.0 (its loader reaches it; a "
            "ratio to the NVMe's rating would then misstate the host-cache load below)",
        "hardware.h2d_gbps, d2h_gbps, h2d_pageable_gbps":
            f"ServerlessLLM's H100 result ({SLLM_SOURCE}, 'Cached' test): Qwen3-32B "
            f"({QWEN3_32B.weight_bytes / 1e9:.2f} GB) in {SLLM_DRAM_S_QWEN3_32B} s when loaded repeatedly, read "
            f"here as a host-memory hit (the source does not name the tier) = {h2d_gbps} GB/s achieved over PCIe "
            f"Gen5 x16 (limit {PCIE5_X16_GBPS}); d2h and pageable assumed equal (the simulator reads neither)",
        "hardware.network_gbps, host_dram_gb, ssd_gb": "NVIDIA DGX H100 / DGX H200 datasheets: one 400 Gb/s "
            "ConnectX-7 storage port (50 GB/s), 2 TB system memory, 8 x 3.84 TB NVMe; assumed for the server",
        "H200 host side": "no ServerlessLLM H200 figures: the load is bound by the server's NVMe and PCIe Gen5, "
                          "which an H200 server shares with the H100 one, so the H100 rates are used",
        "engine.process_start_s, engine.cuda_context_s":
            f"{_r(SEED_REST_S, 2)} s: the seed's vLLM LLM() time outside weights and engine init (baseline "
            "first: 5.85, 5.89 s; docs/profiles.md); no vLLM V1 split of this part is published in the sources "
            "used; CUDA context included (0)",
        "engine.kv_cache_alloc_s": f"vLLM PR #11005 (Meta-Llama-3-8B, no torch.compile, GPU not stated): init "
                                   f"engine {INIT_ENGINE_S} s less graph capture {GRAPH_CAPTURE_S} s, plus vLLM PR "
                                   f"#37198's torch.compile warm start for llama {COMPILE_WARM_S} s (GPU not stated; "
                                   "the compile cache persisted; a cold compile is 27.37 s for llama in that same "
                                   "table; the figure quoted in issue #18, Qwen3-8B's 50.9 s cold start of which "
                                   "compile 27.2 s from vLLM PR #32337, is not confirmed against that PR and is not "
                                   "used)",
        "engine.graph_capture_s": f"vLLM PR #11005 (Meta-Llama-3-8B): graph capturing {GRAPH_CAPTURE_S} s; no "
                                  "published figure for this GPU or for 64-layer models (a larger model captures "
                                  "longer: understated for Qwen3-32B)",
        "engine.wake_from_sleep_s": f"vLLM PR #48337, a comment's table (Qwen3-8B with LoRA enabled, A100): level-1 "
                                    f"wake {WAKE_L1_S} s less its 16.4 GB over PCIe Gen4 at an assumed "
                                    f"{A100_H2D_GBPS} GB/s = {wake_s} s (the simulator adds the copy over this "
                                    "profile's PCIe); level-2 wake measured there 6.53 s, level-1 sleep 10.57 s; "
                                    "vLLM sleep-mode blog (2025-10-26; A100 and A4000, vLLM 0.11.0): level-1 wake "
                                    "about 0.1-0.8 s for small models, 3-6 s for large ones",
        "models[0] bytes": a.source,
        "models[0].max_tokens_in_flight": "usable GPU bytes less the weights, over KV bytes per token",
        "models[0].max_batch": "256, the seed's largest CUDA-graph batch (the default profile's)",
        "models[0].prefill, decode": f"computed by profiles/roofline.py from the datasheet: HBM {g.hbm_gbps} GB/s, "
                                     f"{g.tflops_bf16} TFLOPS, {a.flops_per_token / 1e9:.2f} GFLOP per token, "
                                     f"decode reading {DECODE_CONTEXT} tokens of KV per sequence",
        "models[0].stages": "quality null: never measured for this model; 3/4 and 7/8 of the layers as the "
                            "progressive staging's default fractions; latency_scale 1.0 (inactive layers "
                            "computed, as the seed's gate does)",
    }
    return {
        "schema_version": 1,
        "name": b.name,
        "provenance": {
            "kind": "published",
            "source": f"{g.name} and {a.name} from datasheets, config.json, ServerlessLLM's H100 loading results "
                      "and vLLM's published startup logs (each number's source below); built by "
                      "`python -m profiles.build`, not measured on this project's hardware",
            "notes": notes,
        },
        "hardware": {
            "gpu_name": g.name, "gpu_memory_gb": g.memory_gb, "gpu_reserved_gb": reserved,
            "h2d_gbps": h2d_gbps, "h2d_pageable_gbps": h2d_gbps, "d2h_gbps": h2d_gbps,
            "pcie_limit_gbps": PCIE5_X16_GBPS, "ssd_read_gbps": ssd_gbps, "ssd_warm_gbps": ssd_gbps,
            "network_gbps": 50.0, "host_dram_gb": 2000.0, "ssd_gb": 30720.0,
        },
        "engine": {
            "process_start_s": _r(SEED_REST_S, 2), "cuda_context_s": 0.0,
            "kv_cache_alloc_s": _r(INIT_ENGINE_S - GRAPH_CAPTURE_S + COMPILE_WARM_S, 2),
            "graph_capture_s": GRAPH_CAPTURE_S, "bind_s_per_layer": 0.0, "loader_efficiency": 1.0,
            "wake_from_sleep_s": wake_s,
        },
        "models": [{
            "name": a.name, "num_layers": n, "layer_bytes": a.layer_params * BF16,
            "embedding_bytes": a.embedding_bytes, "head_bytes": a.head_bytes,
            "kv_bytes_per_token": a.kv_bytes_per_token, "max_batch": 256, "max_tokens_in_flight": kv_tokens,
            "prefill": {"x": PREFILL_X, "seconds": prefill_table(gpu, shape, PREFILL_X)},
            "decode": {"x": DECODE_X, "seconds": decode_table(gpu, shape, DECODE_X, context_tokens=DECODE_CONTEXT)},
            "stages": stages,
        }],
    }


PUBLISHED = {b.name: b for b in (Build(g, a) for g in (H100, H200) for a in (LLAMA_31_8B, QWEN3_32B))}


def main(argv: list[str]) -> int:
    for name, b in PUBLISHED.items():
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(profile_dict(b), indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
