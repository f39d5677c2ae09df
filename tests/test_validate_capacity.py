"""The replay's cluster size from measured free memory: hand-computed numbers, caps, refusals."""

from __future__ import annotations

import pytest

from validate.errors import ValidateError
from validate.replay.capacity import GiB, activation_bytes, size_replay

# LLaMA-2-7B in fp16 with the GPU run's 4,096-token KV cache: 13.48 GB of weights and
# 32 layers x 2 (K, V) x 4096 x 2 bytes = 524,288 bytes per token -> 2.147 GB of KV
WEIGHTS_7B = 6_738_415_616 * 2
KV_7B = 524_288 * 4096
FOOTPRINT_7B = WEIGHTS_7B + KV_7B


def test_activation_estimate_by_hand():
    # one prefill of 2 tokens over 8 slots, hidden 4, intermediate 6, 2 heads, 2-byte elements:
    # 2 * (6*2*4 + 3*2*6 + 3*2*2*8) = 2 * (48 + 36 + 96) = 360; the decode graph (1 token):
    # 2 * (24 + 18 + 48) = 180
    assert (
        activation_bytes(hidden=4, intermediate=6, heads=2, prompt_tokens=2, kv_tokens=8, element_size=2)
        == 540
    )


def test_h200_7b_replay_is_capped_not_the_whole_memory():
    extra = activation_bytes(hidden=4096, intermediate=11008, heads=32, prompt_tokens=2048, kv_tokens=4096,
                             element_size=2)  # fmt: skip
    # scores 3 x 32 x 2048 x 4096 x 2 B = 1,610,612,736; hidden 6 x 2048 x 4096 x 2 = 100,663,296;
    # MLP 3 x 2048 x 11008 x 2 = 135,266,304; the one-token graph 901,632
    assert extra == 1_610_612_736 + 100_663_296 + 135_266_304 + 901_632
    free = 140 * 10**9  # what an H200 (143.8 GB) leaves after a CUDA context
    cap = size_replay(free, FOOTPRINT_7B, extra, max_instances=4)
    # headroom 14 GB (10 %), 126 GB left, 17.47 GB each -> 7 fit; the cap keeps 4
    assert cap.headroom_bytes == 14 * 10**9
    assert cap.fits == 7 and cap.instances == 4
    uncapped = size_replay(free, FOOTPRINT_7B, extra, max_instances=100)
    assert uncapped.instances == 7  # not the nine of 15.6 GB the whole memory would suggest
    assert "7 fit, cap 100" in uncapped.describe()


def test_small_free_memory_uses_the_minimum_headroom_and_refuses_in_one_line():
    # 20 GB free: 10 % would be 2 GB, the floor is 4 GiB = 4.29 GB; 15.7 GB left < 15.92 GB per instance
    with pytest.raises(ValidateError) as e:
        size_replay(20 * 10**9, FOOTPRINT_7B, 300 * 10**6, where="cuda:0")
    msg = str(e.value)
    assert "\n" not in msg and "cannot fit one instance on cuda:0" in msg
    assert "20.0 GB free - 4.3 GB headroom < 15.92 GB per instance" in msg
    ok = size_replay(21 * 10**9, FOOTPRINT_7B, 300 * 10**6)
    assert ok.headroom_bytes == 4 * GiB and ok.instances == 1


def test_bad_caps_and_footprints_are_refused():
    with pytest.raises(ValidateError, match="at least 1"):
        size_replay(10**12, 10**9, 0, max_instances=0)
    with pytest.raises(ValidateError, match="positive"):
        size_replay(10**12, 0, 0)
