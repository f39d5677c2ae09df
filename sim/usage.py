"""Per-model accounting: requests, cold starts, loads and GPU memory-time, used and idle.

The summary row answers "which policy"; this ledger answers "which model paid for it"
(a keep-alive policy's idle memory is mostly the long tail of rarely used models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

_GB_HOUR = 1e9 * 3600.0


@dataclass
class ModelUsage:
    model: str
    requests: int = 0
    cold: int = 0
    loads: int = 0
    wakes: int = 0
    evictions: int = 0
    refills: int = 0  # tokens computed by a prefill over the context because a stage bound mid-request
    bytes_loaded: float = 0.0  # weights moved onto GPUs (loads and wakes), over whatever links
    base_bytes_saved: float = 0.0  # not loaded: its shared base's copy was on the GPU already
    base_load_s_saved: float = 0.0  # what loading those would have taken (profile estimate, idle links)
    mem_byte_s: float = 0.0
    idle_byte_s: float = 0.0


class UsageLedger:
    """Integrates each instance's reserved and idle GPU bytes over time, per model."""

    def __init__(self) -> None:
        self.models: dict[str, ModelUsage] = {}
        self._held_since: dict[int, float] = {}
        self._idle_since: dict[int, float] = {}

    def of(self, model: str) -> ModelUsage:
        u = self.models.get(model)
        if u is None:
            u = self.models[model] = ModelUsage(model)
        return u

    def held(self, iid: int, now: float) -> None:
        self._held_since[iid] = now

    def freed(self, iid: int, model: str, nbytes: int, now: float) -> None:
        start = self._held_since.pop(iid)
        self.of(model).mem_byte_s += nbytes * (now - start)

    def idle(self, iid: int, now: float) -> None:
        self._idle_since[iid] = now

    def busy(self, iid: int, model: str, nbytes: int, now: float) -> None:
        start = self._idle_since.pop(iid, None)
        if start is not None:
            self.of(model).idle_byte_s += nbytes * (now - start)

    def close(self, instances, now: float) -> None:
        """Charge instances still held at the end of the run up to `now`."""
        for inst in instances:
            if inst.id in self._idle_since:
                self.busy(inst.id, inst.model, inst.memory_bytes, now)
            if inst.id in self._held_since:
                self.freed(inst.id, inst.model, inst.memory_bytes, now)

    def rows(self, label: str) -> list[dict]:
        out = []
        for name in sorted(self.models):
            d = asdict(self.models[name])
            mem, idle = d.pop("mem_byte_s"), d.pop("idle_byte_s")
            d["gb_loaded"] = d.pop("bytes_loaded") / 1e9
            d["gb_base_saved"] = d.pop("base_bytes_saved") / 1e9
            out.append({"policy": label, **d, "gpu_mem_gb_hours": mem / _GB_HOUR,
                        "gpu_idle_gb_hours": idle / _GB_HOUR})
        return out
