"""The decisions live in `contracts.decisions` (dependency-free); these names are kept for imports."""

from contracts.decisions import ADMIT_ACTIONS, KEEP_TIERS, PREWARM_TIERS, SERVE, Admit, Keep, Place, Prewarm

__all__ = ["ADMIT_ACTIONS", "KEEP_TIERS", "PREWARM_TIERS", "SERVE", "Admit", "Keep", "Place", "Prewarm"]
