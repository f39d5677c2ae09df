"""How many engine instances the replay may hold at once on this device, from measured free memory.

The first sizing took the GPU's whole memory with no cap: about nine 7B instances of
15.6 GB on 141 GB, before graph pools and prefill activations, and torch's out-of-memory
retry (which frees cached blocks) then tripped over another engine's capture. Here the
replay measures the device's free memory once, keeps a headroom the engines never get,
charges each instance its weights and KV cache (the simulator's footprint) *plus* what the
simulator does not count (a prefill's activations, the decode graph's pool), and caps the
count. What cannot fit one instance is refused in one line that names every number.
The simulator is then given exactly the same capacity (`replay_profile(max_instances=n)`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from validate.errors import ValidateError

GiB = 2**30
HEADROOM_FRACTION = 0.10  # of free memory: fragmentation, cuBLAS workspaces, the allocator's slack
MIN_HEADROOM_BYTES = 4 * GiB
DEFAULT_MAX_INSTANCES = 4  # the replay maps 3 models; one more lets a busy model scale out once


@dataclass(frozen=True)
class ReplayCapacity:
    """The sizing decision and every number it came from (written to replay_details.json)."""

    free_bytes: int
    headroom_bytes: int
    footprint_bytes: int  # weights + KV cache, as the simulator counts an instance
    extra_bytes: int  # what it does not: activations of the largest prefill, the graph pool
    fits: int  # instances that fit before the cap
    cap: int
    instances: int

    @property
    def per_instance_bytes(self) -> int:
        return self.footprint_bytes + self.extra_bytes

    def describe(self) -> str:
        return (
            f"{self.instances} instances ({self.fits} fit, cap {self.cap}): {self.free_bytes / 1e9:.1f} GB free "
            f"- {self.headroom_bytes / 1e9:.1f} GB headroom, {self.per_instance_bytes / 1e9:.2f} GB each "
            f"({self.footprint_bytes / 1e9:.2f} weights+KV, {self.extra_bytes / 1e9:.2f} activations+graph)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "per_instance_bytes": self.per_instance_bytes}


def activation_bytes(
    *, hidden: int, intermediate: int, heads: int, prompt_tokens: int, kv_tokens: int, element_size: int
) -> int:
    """An upper estimate of one prefill's transient memory: a few hidden-state copies, the MLP's
    three intermediate tensors, and attention scores as the math kernel materialises them
    (heads x prompt x kv slots, three live copies around the softmax), plus the same for the
    single-token decode graph's pool."""

    def one(q: int) -> int:
        return element_size * (6 * q * hidden + 3 * q * intermediate + 3 * heads * q * kv_tokens)

    return one(prompt_tokens) + one(1)


def size_replay(
    free_bytes: int,
    footprint_bytes: int,
    extra_bytes: int,
    *,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    headroom_fraction: float = HEADROOM_FRACTION,
    min_headroom_bytes: int = MIN_HEADROOM_BYTES,
    where: str = "the device",
) -> ReplayCapacity:
    """Instances = min(cap, (free - headroom) // (footprint + extra)); at least one, or a ValidateError."""
    if max_instances < 1:
        raise ValidateError(f"the replay's instance cap must be at least 1, got {max_instances}.")
    if footprint_bytes <= 0 or extra_bytes < 0:
        raise ValidateError(
            f"an instance's footprint must be positive, got {footprint_bytes} + {extra_bytes} bytes."
        )
    headroom = max(int(headroom_fraction * free_bytes), min_headroom_bytes)
    per = footprint_bytes + extra_bytes
    fits = max(0, (free_bytes - headroom) // per)
    if fits < 1:
        raise ValidateError(
            f"the replay cannot fit one instance on {where}: {free_bytes / 1e9:.1f} GB free - "
            f"{headroom / 1e9:.1f} GB headroom < {per / 1e9:.2f} GB per instance "
            f"({footprint_bytes / 1e9:.2f} GB weights+KV, {extra_bytes / 1e9:.2f} GB activations+graph); "
            "use a smaller model or --small."
        )
    return ReplayCapacity(free_bytes, headroom, footprint_bytes, extra_bytes, int(fits), max_instances,
                          int(min(fits, max_instances)))  # fmt: skip


def measured_free_bytes(device: str) -> int:
    """Free device memory now, after returning this process's cached blocks (under the device lock)."""
    import torch

    from progressive_serve import device_guard

    dev = torch.device(device)
    device_guard.synchronize(dev)
    device_guard.empty_cache(dev)
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)
