"""The last line of every bench: machine-readable `key=value` pairs.

Why one helper: results are tracked over time by parsing that line, so every bench writes it
alike (names of letters, digits, '_', '.' or '-'; values without spaces or '='; booleans as
0/1), and a bench that would write an unparseable line fails instead of printing it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def key_value_line(figures: Mapping[str, object]) -> str:
    """`figures` as one line of `name=value` pairs, in their order."""
    parts = []
    for name, value in figures.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"figure name {name!r}: use letters, digits, '_', '.' or '-'")
        text = str(int(value) if isinstance(value, bool) else value)
        if not text or "=" in text or any(ch.isspace() for ch in text):
            raise ValueError(f"figure {name}: value {text!r} is empty or holds a space or '='")
        parts.append(f"{name}={text}")
    return " ".join(parts)


def print_figures(figures: Mapping[str, object]) -> None:
    """Print `key_value_line(figures)`: call it last."""
    print(key_value_line(figures), flush=True)


def slug(text: str) -> str:
    """`text` as a figure-name part: runs of other characters become one '_'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def flattened(obj: object, prefix: str = "") -> dict[str, object]:
    """The numbers in nested dicts and lists, each named by its path (`shape_cold_direct_0`:
    keys as `slug`s, list items by index); strings, booleans and None are left out."""
    if isinstance(obj, Mapping):
        items = [(slug(str(k)), v) for k, v in obj.items()]
    elif isinstance(obj, list | tuple):
        items = [(str(i), v) for i, v in enumerate(obj)]
    else:
        return {prefix: obj} if isinstance(obj, int | float) and not isinstance(obj, bool) and prefix else {}
    out: dict[str, object] = {}
    for name, value in items:
        out.update(flattened(value, f"{prefix}_{name}" if prefix else name))
    return out
