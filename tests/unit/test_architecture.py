"""The dependency rule, checked on the source: the core imports only the
standard library (import-linter, in ``make lint``, checks the other layers)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


CORE_FILES = sorted((SRC / "gemini_core").rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_only_the_standard_library(path: Path) -> None:
    foreign = _imported_roots(path) - set(sys.stdlib_module_names) - {"gemini_core", "__future__"}
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


@pytest.mark.parametrize("path", sorted((SRC / "adapters").rglob("*.py")), ids=lambda p: p.name)
def test_adapters_never_import_the_web_layer(path: Path) -> None:
    assert not _imported_roots(path) & {"web", "litestar"}


def test_only_the_composition_root_imports_adapters() -> None:
    importers = {
        path.name for path in (SRC / "web").rglob("*.py") if "adapters" in _imported_roots(path)
    }
    assert importers == {"composition.py"}
