"""`Request` lives in `contracts.request` (dependency-free); this name is kept for imports."""

from contracts.request import Request

__all__ = ["Request"]
