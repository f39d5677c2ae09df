"""One combination of the six policies, and the guard that names a policy that fails."""

from __future__ import annotations

from dataclasses import dataclass

from policies.base import (
    AdmissionPolicy,
    KeepAlivePolicy,
    PlacementPolicy,
    Policy,
    PrewarmPolicy,
    RouterPolicy,
    StagingPolicy,
)
from policies.registry import load_policy


class PolicyError(RuntimeError):
    """A policy raised or returned something invalid; names the policy, hook and time."""


def policy_error(policy: Policy, hook: str, now: float, err: BaseException | str) -> PolicyError:
    detail = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return PolicyError(f"policy {policy.label} failed in {hook}() at t={now:.3f} s: {detail}")


@dataclass(frozen=True)
class PolicySet:
    staging: StagingPolicy
    keepalive: KeepAlivePolicy
    prewarm: PrewarmPolicy
    placement: PlacementPolicy
    router: RouterPolicy
    admission: AdmissionPolicy

    @classmethod
    def from_specs(cls, **specs: str) -> PolicySet:
        defaults = dict(staging="full", keepalive="fixed", prewarm="none", placement="first_fit",
                        router="least_loaded", admission="always")
        defaults.update(specs)
        return cls(**{kind: load_policy(kind, spec) for kind, spec in defaults.items()})

    @property
    def label(self) -> str:
        """`staging + keepalive`, then any non-default policy, so a table row says what made it."""
        parts = [self.staging.label, self.keepalive.label]
        for p, default in ((self.prewarm, "none"), (self.placement, "first_fit"),
                           (self.router, "least_loaded"), (self.admission, "always")):
            if p.label != default:
                parts.append(p.label)
        return " + ".join(parts)
