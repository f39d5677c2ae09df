"""Errors in a run's input that the simulator finds only as it reads it (the CLI: exit 2)."""

from __future__ import annotations


class BadRequestError(ValueError):
    """The requests fed to a run cannot be simulated as given (bad input: exit 2 in the CLI)."""


class TraceOrderError(BadRequestError):
    """Requests must come in arrival order."""


class UnknownModelError(BadRequestError):
    """A model name the profile does not know, where the run was told to refuse such names."""
