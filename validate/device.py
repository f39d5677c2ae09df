"""Which device a run measures, how to time work on it, and what to say about it.

Timing GPU work without synchronising measures the launch, not the work; every timer
here synchronises the device first and last. torch is imported lazily so that
`python -m validate --help`, the report and the replay comparison work without it.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from validate.errors import ValidateError

NO_CUDA_MESSAGE = (
    "--gpu needs a CUDA GPU, and torch sees none on this machine (run without --gpu to measure on the CPU)."
)


@dataclass(frozen=True)
class DeviceInfo:
    """What was measured: the device name and memory, plus the versions that shaped the numbers."""

    kind: str  # "cuda" or "cpu"
    name: str
    memory_gb: float
    pci_bus_id: str | None = None
    versions: dict = field(default_factory=dict)
    # engines that compute side by side at full speed (the profile's hardware.compute_slots).
    # A first guess (1 on a GPU; on the CPU its cores over each engine's threads) that the
    # measuring run replaces with what validate/sharing.py measures
    compute_slots: float = 1.0

    @property
    def torch_device(self) -> str:
        return "cuda:0" if self.kind == "cuda" else "cpu"


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ValidateError(
            "validate needs torch to measure (pip install -e '.[engine]'); it is not installed."
        ) from None
    return torch


def host_memory_gb() -> float:
    """Total host DRAM from /proc/meminfo (0.0 where that file does not exist)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def select_device(gpu: bool) -> DeviceInfo:
    """The device to measure; `gpu=True` without CUDA is a user error with one clear sentence (exit 2)."""
    torch = _import_torch()
    if gpu and not torch.cuda.is_available():
        raise ValidateError(NO_CUDA_MESSAGE, exit_code=2)
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "safetensors", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    if gpu:
        props = torch.cuda.get_device_properties(0)
        versions["cuda"] = torch.version.cuda or "unknown"
        bus = None
        if hasattr(props, "pci_domain_id"):
            bus = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return DeviceInfo("cuda", props.name, props.total_memory / 1e9, bus, versions)
    threads = torch.get_num_threads()
    slots = max(1, usable_cores() // max(1, threads))
    return DeviceInfo("cpu", f"{cpu_name()} ({threads} threads)", host_memory_gb(), None, versions, slots)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def synchronize(device: str) -> None:
    """Device-wide, through the engine's one owner of such calls (never inside a capture)."""
    if device.startswith("cuda"):
        import torch

        from progressive_serve import device_guard

        device_guard.synchronize(torch.device(device))


def timed(fn: Callable[[], object], device: str) -> tuple[float, object]:
    """Run `fn` once between two device synchronisations; (seconds, its result)."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def repeat_timed(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of `repeats` runs of `fn` after `warmup` untimed ones (caches, allocator, kernels)."""
    for _ in range(warmup):
        fn()
    return [timed(fn, device)[0] for _ in range(repeats)]
