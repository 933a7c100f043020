"""The layers import downwards only: model <- training <- service <- cli, and model's modules form no circle.

Imports are read from the source with `ast`, wherever they stand: module level, inside functions, under
`if TYPE_CHECKING:`. A lazy or type-only import still ties the layers together.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "training", "service", "cli")
# what each package may not import (cli is the top: nothing imports it)
FORBIDDEN = {
    "model": {"training", "service", "cli"},
    "training": {"service", "cli"},
    "service": {"cli"},
    "cli": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module named by an import anywhere in `source` (relative imports resolved against `module`);
    `from a import b` yields both `a` and `a.b`, since b may be a submodule."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports_by_module(package: str) -> dict[str, set[str]]:
    return {
        module_name(path): set(imported_names(path.read_text(), module_name(path), path.name == "__init__.py"))
        for path in source_files(package)
    }


def test_the_scan_sees_lazy_type_only_and_relative_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from model.recommender import RecommenderConfig\n"
        "def f():\n    import service.main\n    from .sasrec import SASRec\n"
    )
    names = set(imported_names(source, "model.base", is_package=False))
    assert {"model.recommender", "service.main", "model.sasrec", "model.sasrec.SASRec"} <= names
    assert "model" in set(imported_names("from . import base\n", "model", is_package=True))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    found = imports_by_module(package)
    assert found and any(found.values()), f"no sources or no imports found under {package}/"
    above = [
        f"{module} imports {name}"
        for module, names in sorted(found.items())
        for name in sorted(names)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not above, "imports up the layers:\n" + "\n".join(above)


def test_cli_is_the_command_and_its_entry_points_name_it() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'alphafuse = "cli.main:main"' in pyproject and '"cli*"' in pyproject
    assert not (ROOT / "training" / "cli.py").exists()
    assert (ROOT / "cli" / "__main__.py").is_file()


def test_model_modules_import_each_other_without_a_circle() -> None:
    found = imports_by_module("model")
    modules = set(found)
    graph = {module: {name for name in names if name in modules and name != module} for module, names in found.items()}
    assert "model.dreamrec" in graph["model.recommender"]  # the scan sees the package's own edges
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"model's imports form a circle: {' -> '.join(reversed(e.args[1]))}")  # A -> B: A imports B
    assert set(order) == modules
