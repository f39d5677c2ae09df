"""Measurements shipped with validate (package data): see stage_quality.SHIPPED."""
