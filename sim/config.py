"""The run's configuration: cluster shape, serving fidelity, SLO. Frozen; no side effects."""

from __future__ import annotations

from dataclasses import dataclass

FIDELITIES = ("request", "iteration")
BATCHES = ("python", "compiled")
STORAGE = ("ssd", "remote")
COMPUTE_SHARING = ("time_slice", "none")
UNKNOWN_MODELS = ("default", "error")


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 2
    gpus_per_node: int = 4
    fidelity: str = "request"
    slo_ttft_s: float = 5.0
    storage: str = "ssd"  # where checkpoints start: pre-staged on every node's SSD, or remote only
    seed: int = 0
    # Instances packed on one GPU share its compute (sim/compute.py); "none": each at full speed.
    compute_sharing: str = "time_slice"
    # A model name the profile does not know (sim.profile.Profile.resolve): take the default
    # model's shape, reported at the end of the run, or refuse the request's trace as bad input.
    unknown_models: str = "default"
    # Seconds a policy hook may run before the run ends naming it (sim.watchdog); None: no limit.
    hook_timeout_s: float | None = 60.0
    # Request fidelity's batch loops: "python" (a SimPy process each, sim/serving.py) or
    # "compiled" (arrays advanced by a numba kernel, sim/compiled_batch.py): the same records.
    batches: str = "compiled"

    def __post_init__(self) -> None:
        if self.fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {self.fidelity!r}")
        if self.storage not in STORAGE:
            raise ValueError(f"storage must be one of {STORAGE}, got {self.storage!r}")
        if self.compute_sharing not in COMPUTE_SHARING:
            raise ValueError(f"compute_sharing must be one of {COMPUTE_SHARING}, got {self.compute_sharing!r}")
        if self.unknown_models not in UNKNOWN_MODELS:
            raise ValueError(f"unknown_models must be one of {UNKNOWN_MODELS}, got {self.unknown_models!r}")
        if self.batches not in BATCHES:
            raise ValueError(f"batches must be one of {BATCHES}, got {self.batches!r}")
        if self.hook_timeout_s is not None and not self.hook_timeout_s > 0:
            raise ValueError(f"hook timeout must be > 0 seconds, got {self.hook_timeout_s}")
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"need at least 1 node and 1 GPU per node, got {self.nodes} x {self.gpus_per_node}")
        if not self.slo_ttft_s > 0:
            raise ValueError(f"TTFT SLO must be > 0 seconds, got {self.slo_ttft_s}")
