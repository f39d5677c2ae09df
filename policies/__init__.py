"""Policy interfaces, decisions, read-only views and the built-in policies."""

from policies.base import (
    AdmissionPolicy,
    KeepAlivePolicy,
    PlacementPolicy,
    Policy,
    PrewarmPolicy,
    RouterPolicy,
    StagingPolicy,
)
from policies.decisions import Admit, Keep, Place, Prewarm
from policies.plan import StagePlan
from policies.registry import PolicySpecError, load_policy, names, register, split_specs

__all__ = [
    "AdmissionPolicy", "KeepAlivePolicy", "PlacementPolicy", "Policy", "PrewarmPolicy",
    "RouterPolicy", "StagingPolicy", "Admit", "Keep", "Place", "Prewarm", "StagePlan",
    "PolicySpecError", "load_policy", "names", "register", "split_specs",
]
