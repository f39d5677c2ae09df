"""Policy interfaces, decisions, read-only views and the built-in policies."""

from contracts.decisions import Admit, Keep, Place, Prewarm
from contracts.plan import StagePlan
from policies.base import (
    AdmissionPolicy,
    KeepAlivePolicy,
    PlacementPolicy,
    Policy,
    PrewarmPolicy,
    RouterPolicy,
    StagingPolicy,
)
from policies.registry import PolicySpecError, load_policy, names, register, split_specs

__all__ = [
    "AdmissionPolicy", "KeepAlivePolicy", "PlacementPolicy", "Policy", "PrewarmPolicy",
    "RouterPolicy", "StagingPolicy", "Admit", "Keep", "Place", "Prewarm", "StagePlan",
    "PolicySpecError", "load_policy", "names", "register", "split_specs",
]
