"""Physical limits of the links we measure, so every bandwidth can be printed as a ratio.

A measured 24 GB/s means little alone; 24 of a 31.5 GB/s PCIe 4.0 x16 link (0.76) says
whether the loader or the link is the bottleneck. Limits come from what the kernel
reports about the PCIe link (`/sys/bus/pci/devices/*/{max,current}_link_{speed,width}`),
never from a datasheet guess; where nothing is reported the limit is None and reports
print "n/a" rather than invent one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SYS_PCI = Path("/sys/bus/pci/devices")


@dataclass(frozen=True)
class LinkLimit:
    """One link's theoretical payload bandwidth per direction and where the figure came from."""

    gbps: float
    description: str


def encoding_efficiency(gts: float) -> float:
    """Line-code efficiency of a PCIe generation, identified by its transfer rate.

    PCIe 1.x/2.x (2.5, 5 GT/s) use 8b/10b; 3.0-5.0 (8, 16, 32 GT/s) use 128b/130b;
    6.0 (64 GT/s) uses FLIT mode with 242 payload bytes in 256.
    """
    if gts <= 5.0:
        return 8 / 10
    if gts <= 32.0:
        return 128 / 130
    return 242 / 256


def pcie_limit_gbps(gts: float, lanes: int) -> float:
    """Payload GB/s of one direction of a PCIe link: GT/s x lanes x encoding / 8 bits."""
    if gts <= 0 or lanes <= 0:
        raise ValueError(f"PCIe link needs positive speed and width, got {gts} GT/s x{lanes}")
    return gts * lanes * encoding_efficiency(gts) / 8.0


def parse_link_speed(text: str) -> float | None:
    """GT/s from sysfs text such as '16.0 GT/s PCIe' or '8 GT/s'; None when unknown."""
    m = re.search(r"([\d.]+)\s*GT/s", text)
    return float(m.group(1)) if m else None


def pci_link_limit(device_dir: Path) -> LinkLimit | None:
    """The limit of the PCIe link a device sits on, from its sysfs directory.

    The current speed is used when the device reports one at least as fast as half its
    maximum (GPUs drop to a slow link while idle, so the maximum is the honest figure
    for a transfer that wakes them); the width is the current negotiated width, since
    a card in a narrower slot never gets its maximum lanes.
    """
    try:
        max_speed = parse_link_speed((device_dir / "max_link_speed").read_text())
        cur_speed = parse_link_speed((device_dir / "current_link_speed").read_text())
        width_text = (device_dir / "current_link_width").read_text().strip()
        max_width_text = (device_dir / "max_link_width").read_text().strip()
    except OSError:
        return None
    speed = max_speed or cur_speed
    width = int(width_text) if width_text.isdigit() and int(width_text) > 0 else None
    if width is None and max_width_text.isdigit():
        width = int(max_width_text)
    if not speed or not width:
        return None
    gbps = pcie_limit_gbps(speed, width)
    return LinkLimit(gbps, f"PCIe {speed:g} GT/s x{width} ({device_dir.name}), {gbps:.1f} GB/s")


def gpu_pcie_limit(pci_bus_id: str | None) -> LinkLimit | None:
    """The PCIe limit for a GPU given its bus id as CUDA reports it ('00000000:1B:00.0')."""
    if not pci_bus_id:
        return None
    parts = pci_bus_id.lower().split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    if len(parts) != 3:
        return None
    try:
        name = f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"
    except ValueError:
        return None
    d = SYS_PCI / name
    if d.exists():
        return pci_link_limit(d)
    return None


def block_device_limit(path: str | os.PathLike) -> LinkLimit | None:
    """The PCIe limit of the storage device holding `path` (an NVMe drive), if it has one.

    Walks from the file system's block device up its sysfs ancestry to the first
    directory that reports a PCIe link. Virtual disks (virtio) usually report none.
    """
    try:
        st = os.stat(path)
        dev_dir = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
    except OSError:
        return None
    for d in [dev_dir, *dev_dir.parents]:
        if (d / "max_link_speed").exists():
            limit = pci_link_limit(d)
            if limit is not None:
                return LinkLimit(limit.gbps, f"storage on {limit.description}")
        if d == Path("/sys/devices"):
            break
    return None


def ratio(measured: float | None, limit: LinkLimit | None) -> float | None:
    """measured / limit, or None when either is unknown."""
    if measured is None or limit is None or limit.gbps <= 0:
        return None
    return measured / limit.gbps
