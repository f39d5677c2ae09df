"""The stated roofline behind the published profiles' latency tables.

A profile needs prefill seconds against prompt tokens and decode-step seconds against batch
size. Where no one has published such tables for a GPU and model, the profile computes them
from datasheet figures with one formula, the same for every profile, so a table is never typed:

    prefill(n) = max(W / (B x e_bw), n x F / (P x e_mfu)) + c_prefill
    decode(b)  = W / (B x e_bw) + b x s_seq + c_step
    s_seq      = kv_bytes_per_token x context / (B x e_bw)   (unless stated)

W weight bytes, B HBM bytes/s, P dense BF16 FLOP/s (datasheet), F FLOPs per token
(2 x the parameters a token passes through), e_bw = 0.85 of the HBM bandwidth, e_mfu = 0.5
of the peak FLOPs, c_prefill = 4 ms and c_step = 3 ms of launch and scheduling per step, and
a decode step reads each sequence's KV cache at `context` tokens. These constants are the
default profile's (its A6000 tables come out of this formula to their 4 decimals, which
tests/test_profiles_published.py checks); they are assumptions, stated once here.
"""

from __future__ import annotations

from dataclasses import dataclass

BANDWIDTH_EFFICIENCY = 0.85
MFU = 0.5
PREFILL_OVERHEAD_S = 0.004
STEP_OVERHEAD_S = 0.003
DECIMALS = 4


@dataclass(frozen=True)
class Gpu:
    hbm_gbps: float  # datasheet memory bandwidth, GB/s
    tflops_bf16: float  # datasheet dense BF16/FP16 tensor TFLOPS (without sparsity)


@dataclass(frozen=True)
class Shape:
    weight_bytes: int
    flops_per_token: float
    kv_bytes_per_token: int


def _weights_read_s(gpu: Gpu, shape: Shape) -> float:
    return shape.weight_bytes / (gpu.hbm_gbps * 1e9 * BANDWIDTH_EFFICIENCY)


def prefill_table(gpu: Gpu, shape: Shape, tokens: list[int]) -> list[float]:
    """Seconds of one request's prefill at each prompt length: memory- or compute-bound."""
    flops = gpu.tflops_bf16 * 1e12 * MFU
    return [round(max(_weights_read_s(gpu, shape), n * shape.flops_per_token / flops) + PREFILL_OVERHEAD_S,
                  DECIMALS) for n in tokens]


def decode_table(gpu: Gpu, shape: Shape, batches: list[int], *, context_tokens: int = 0,
                 per_sequence_s: float | None = None) -> list[float]:
    """Seconds of one decode step at each batch size: the weights once, each sequence's KV."""
    if per_sequence_s is None:
        per_sequence_s = shape.kv_bytes_per_token * context_tokens / (gpu.hbm_gbps * 1e9 * BANDWIDTH_EFFICIENCY)
    return [round(_weights_read_s(gpu, shape) + b * per_sequence_s + STEP_OVERHEAD_S, DECIMALS) for b in batches]
