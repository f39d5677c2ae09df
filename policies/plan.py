"""Staging plans live in `contracts.plan` (dependency-free); these names are kept for imports."""

from contracts.plan import StagePlan, full_plan, importance_order, pipelined_plan, progressive_plan

__all__ = ["StagePlan", "full_plan", "importance_order", "pipelined_plan", "progressive_plan"]
