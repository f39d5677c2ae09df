"""The cluster's hardware: nodes with GPUs, links and checkpoint tiers.

Where a checkpoint sits decides the path its load takes: host DRAM (page cache) -> GPU
over PCIe; local SSD -> DRAM -> GPU; remote storage -> NIC -> DRAM -> GPU. After a load
the checkpoint stays cached in the node's DRAM and SSD, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

from sim.flows import Link
from sim.profile import HardwareProfile

GB = 1e9


def base_key(name: str) -> str:
    """The name a shared base's checkpoint goes by in the storage tiers and the per-model usage
    (apart from any model's)."""
    return f"base:{name}"


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
class BaseResidency:
    """One copy of a shared base on a GPU, held while any instance there uses it.

    Its first holder loads it; the holders after it load only their task parts and wait
    (`waiters`: events that sim/lifecycle.py fires) until it is `loaded`. `uid` is its key
    in the per-model usage ledger.
    """

    name: str
    nbytes: int
    uid: int
    loaded: bool = False
    waiters: list = field(default_factory=list)
    holders: set[int] = field(default_factory=set)  # ids of the instances using it
    idle_holders: int = 0
    idle: bool = False  # counted as idle memory: every holder is idle


@dataclass(eq=False)
class Gpu:
    node: int
    index: int
    capacity_bytes: int
    pcie: Link
    used_bytes: int = 0  # written by sim.memory.MemoryLedger only
    instances: list = field(default_factory=list)  # the simulator's Instance objects
    compute: object = None  # sim.compute.GpuCompute when co-located instances share compute
    bases: dict[str, BaseResidency] = field(default_factory=dict)  # written by MemoryLedger only

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes

    def holds_base(self, name: str | None) -> bool:
        """Whether a copy of shared base `name` is on this GPU (resident or being loaded)."""
        return name is not None and name in self.bases

    def need_bytes(self, model, evict: Collection[int] = ()) -> int:
        """Bytes a new instance of `model` (a `ModelView`) would reserve here once the instances
        `evict` are gone: its footprint, less its shared base where a copy stays resident."""
        base = model.gpu_base
        if base is not None:
            r = self.bases.get(base)
            if r is not None and not (evict and r.holders <= set(evict)):
                return model.footprint_bytes - model.base_bytes
        return model.footprint_bytes

    def freed_by(self, evict: Collection) -> int:
        """Bytes evicting the instances `evict` (views of instances on this GPU) would free: their
        own memory, and each shared base none of the remaining instances uses."""
        freed = sum(i.memory_bytes for i in evict)
        if self.bases:
            ids = {i.id for i in evict}
            freed += sum(r.nbytes for r in self.bases.values() if r.holders <= ids)
        return freed


@dataclass(eq=False)
class Node:
    index: int
    gpus: list[Gpu]
    ssd_link: Link
    net_link: Link
    dram: Tier
    ssd: Tier
    # Reads from storage under way, by (checkpoint part, stage, bytes): their completion events
    # (sim/lifecycle.py: a load of the same bytes meanwhile waits for them: the page cache).
    reads: dict = field(default_factory=dict)

    def tier_of(self, key: str) -> str:
        """Where checkpoint part `key` sits on this node now: "dram", "ssd" or "remote"
        (read-only: `load_path` is what marks it used)."""
        return "dram" if key in self.dram else "ssd" if key in self.ssd else "remote"


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


# The kinds of link a load from each checkpoint tier crosses, storage first: the one rule that
# the loads (`load_path`) and the profile's estimates (`Deployment.cold_start_s`) share.
TIER_LINKS: dict[str, tuple[str, ...]] = {"dram": ("pcie",), "ssd": ("ssd", "pcie"), "remote": ("network", "pcie")}


def load_path(node: Node, gpu: Gpu, model: str) -> tuple[tuple[Link, ...], str]:
    """The links a load of checkpoint `model` (a model's name, or a shared base's key) onto
    `gpu` crosses, and the tier it comes from."""
    if model in node.dram:
        node.dram.touch(model)
        tier = "dram"
    elif model in node.ssd:
        node.ssd.touch(model)
        tier = "ssd"
    else:
        tier = "remote"
    links = {"pcie": gpu.pcie, "ssd": node.ssd_link, "network": node.net_link}
    return tuple(links[kind] for kind in TIER_LINKS[tier]), tier
