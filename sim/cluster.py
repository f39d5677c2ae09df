"""The cluster's hardware: nodes with GPUs, links and checkpoint tiers.

Where a checkpoint sits decides the path its load takes: host DRAM (page cache) -> GPU
over PCIe; local SSD -> DRAM -> GPU; remote storage -> NIC -> DRAM -> GPU. After a load
the checkpoint stays cached in the node's DRAM and SSD, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from sim.flows import Link
from sim.profile import HardwareProfile

GB = 1e9


class Tier:
    """A byte-capacity cache of checkpoints with least-recently-used eviction.

    `pinned` bytes (weights of sleeping instances) count against capacity but are never
    evicted by the cache itself.
    """

    def __init__(self, name: str, capacity: float):
        self.name = name
        self.capacity = capacity
        self.entries: OrderedDict[str, int] = OrderedDict()
        self.used = 0
        self.pinned = 0

    def __contains__(self, model: str) -> bool:
        return model in self.entries

    def touch(self, model: str) -> None:
        if model in self.entries:
            self.entries.move_to_end(model)

    def pin(self, nbytes: int) -> bool:
        """Hold `nbytes` that the cache may not evict (a sleeper's weights); False if they cannot fit."""
        if nbytes + self.pinned > self.capacity:
            return False
        self.pinned += nbytes
        while self.used + self.pinned > self.capacity and self.entries:
            _, size = self.entries.popitem(last=False)
            self.used -= size
        return True

    def unpin(self, nbytes: int) -> None:
        """Release bytes held by `pin` (the sleeper woke, dropped its weights or was evicted)."""
        self.pinned -= nbytes

    def add(self, model: str, nbytes: int) -> bool:
        """Cache `model`, evicting LRU entries; False if it can never fit."""
        if model in self.entries:
            self.entries.move_to_end(model)
            return True
        if nbytes + self.pinned > self.capacity:
            return False
        while self.used + self.pinned + nbytes > self.capacity and self.entries:
            _, size = self.entries.popitem(last=False)
            self.used -= size
        self.entries[model] = nbytes
        self.used += nbytes
        return True


@dataclass(eq=False)
class Gpu:
    node: int
    index: int
    capacity_bytes: int
    pcie: Link
    used_bytes: int = 0  # written by sim.memory.MemoryLedger only
    instances: list = field(default_factory=list)  # the simulator's Instance objects
    compute: object = None  # sim.compute.GpuCompute when co-located instances share compute

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes


@dataclass(eq=False)
class Node:
    index: int
    gpus: list[Gpu]
    ssd_link: Link
    net_link: Link
    dram: Tier
    ssd: Tier


def build_cluster(hw: HardwareProfile, nodes: int, gpus_per_node: int) -> list[Node]:
    """Nodes and GPUs as the profile describes one of each."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"need at least one node and one GPU per node, got {nodes} x {gpus_per_node}")
    usable = hw.usable_gpu_bytes
    out = []
    for n in range(nodes):
        gpus = [
            Gpu(n, g, usable, Link(f"pcie{n}.{g}", "pcie", hw.h2d_gbps * GB))
            for g in range(gpus_per_node)
        ]
        out.append(
            Node(
                index=n,
                gpus=gpus,
                ssd_link=Link(f"ssd{n}", "ssd", hw.ssd_read_gbps * GB),
                net_link=Link(f"net{n}", "network", hw.network_gbps * GB),
                dram=Tier(f"dram{n}", hw.host_dram_gb * GB),
                ssd=Tier(f"ssd{n}", hw.ssd_gb * GB),
            )
        )
    return out


def load_path(node: Node, gpu: Gpu, model: str) -> tuple[tuple[Link, ...], str]:
    """The links a load of `model` onto `gpu` crosses, and the tier it comes from."""
    if model in node.dram:
        node.dram.touch(model)
        return (gpu.pcie,), "dram"
    if model in node.ssd:
        node.ssd.touch(model)
        return (node.ssd_link, gpu.pcie), "ssd"
    return (node.net_link, gpu.pcie), "remote"
