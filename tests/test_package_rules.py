"""The import rules of docs/design.md's package table, checked on the source.

`contracts` imports the standard library only (every package may import it, so it must load
nothing); `policies` never imports `sim` (a policy sees views and returns decisions; anything
they share, such as the routing row's layout, lives in `contracts`); the simulator never
imports torch or the engine; the engine never imports the simulator or the policies.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RULES = {  # package -> top-level names it must not import
    "policies": {"sim", "progressive_serve", "validate", "torch"},
    "sim": {"progressive_serve", "validate", "torch"},
    "progressive_serve": {"sim", "policies", "validate", "traces"},
}


def imported(path: Path) -> set[str]:
    """Top-level module names `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(RULES))
def test_a_package_imports_nothing_its_rule_forbids(package):
    broken = {str(p.relative_to(ROOT)): sorted(imported(p) & RULES[package]) for p in sources(package)}
    assert not {k: v for k, v in broken.items() if v}


def test_contracts_import_the_standard_library_only():
    allowed = set(sys.stdlib_module_names) | {"contracts", "__future__"}
    broken = {str(p.relative_to(ROOT)): sorted(imported(p) - allowed) for p in sources("contracts")}
    assert not {k: v for k, v in broken.items() if v}


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from sim.routing_rows import WIDTH\n    import torch.nn\n")
    assert imported(f) == {"sim", "torch"}
