"""Typed trace options: keyword arguments or `key=value` strings, checked against a dataclass.

Each trace kind declares its options as a frozen dataclass with `help` metadata; this
module turns user input (Python values from `open_trace(**options)` or strings from a
command line) into that dataclass, and rejects unknown names with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from traces.errors import TraceError

T = TypeVar("T")


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Convert `value` to the annotated type `kind` (str, int, float, bool, tuple[str, ...])."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(str(v) for v in value)
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise TraceError(f"option {name}: {value!r} is not true/false")
        return bool(value)
    if kind in (int, float):
        try:
            out = kind(value)
        except (TypeError, ValueError):
            raise TraceError(f"option {name}: {value!r} is not a {kind.__name__}") from None
        return out
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return None if value in (None, "", "none", "None") else _coerce(name, value, inner)
    return str(value)


def parse_options(cls: type[T], given: dict[str, Any], what: str) -> T:
    """Build `cls` from `given`, naming the valid options when one is unknown."""
    given = {k: v for k, v in given.items() if v is not None}  # None means "the default"
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise TraceError(f"unknown option(s) {', '.join(unknown)} for {what}; valid: {', '.join(sorted(fields))}")
    values = {k: _coerce(k, v, hints[k]) for k, v in given.items()}
    opts = cls(**values)
    check = getattr(opts, "check", None)
    if check:
        check()
    return opts


def describe(cls: type) -> list[tuple[str, str, str]]:
    """`(name, default, help)` for every option of `cls`, for `--help` and docs."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):
            default = ",".join(default)
        out.append((f.name, str(default), f.metadata.get("help", "")))
    return out


def split_kv(pairs: list[str]) -> dict[str, str]:
    """Parse `["a=1", "b=x"]` from a command line into a dict."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise TraceError(f"option {p!r} is not key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
