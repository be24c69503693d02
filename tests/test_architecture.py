"""The rules of the architecture that import-linter cannot see, checked on the installed layout.

``make imports`` (import-linter) checks the import graph: the layers, "the core imports no tool subpackage", "the
plugins import only the plugin API" between prunus's modules. These tests check the rest: no attribute hides a
module of the same name, ``import prunus`` stays light, every package's ``__all__`` holds, and the plugin
modules' ``import`` statements name ``prunus.plugin_api`` only (whatever they import it through).

They read the layout a wheel installs (``prunus/`` from core/, ``prunus/plugins/`` from plugins/), as a tree of
links built by tools/layout_tree.py: the editable install's import hook hides ``prunus.plugins`` from pkgutil.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support import import_in_fresh_process

ROOT = Path(__file__).resolve().parent.parent
# What tests, extras and tools need, never `import prunus`.
HEAVY = (
    "pytest",
    "hypothesis",
    "transformers",
    "torch_pruning",
    "matplotlib",
    "yaml",
    "tqdm",
    "rich",
    "sklearn",
    "mlxtend",
    "pandas",
)
PLUGIN_API = "prunus.plugin_api"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed layout of prunus, as links to the sources (``sys.path`` entry holding ``prunus/``)."""
    tree = tmp_path_factory.mktemp("layout")
    runpy.run_path(str(ROOT / "tools" / "layout_tree.py"))["main"](str(tree))
    return tree


def env_with(tree: Path) -> dict[str, str]:
    """This environment, importing prunus from ``tree``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
    }


def packages(tree: Path) -> list[str]:
    """``prunus`` and every subpackage of it in the layout, found with pkgutil (nothing is imported)."""
    found = ["prunus"]

    def visit(path: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(path)]):
            if info.ispkg:
                found.append(f"{prefix}{info.name}")
                visit(path / info.name, f"{prefix}{info.name}.")

    visit(tree / "prunus", "prunus.")
    return found


# -- no attribute hides a module --------------------------------------------------------------------------------

# In a fresh interpreter, every package is imported, then each of its submodules: before the submodule is
# imported, the package's attribute of that name (a PEP 562 `__getattr__` included) must be absent or be that
# module; after, it must be that module; and once everything is imported, still.
HIDING_PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, types
    import prunus

    problems = []

    def visit(package):
        for info in pkgutil.iter_modules(package.__path__):
            full = f"{package.__name__}.{info.name}"
            before = getattr(package, info.name, None)
            if before is not None and not isinstance(before, types.ModuleType):
                problems.append(f"{full} is hidden by a {type(before).__name__} before it is imported")
            module = importlib.import_module(full)
            if before is not None and isinstance(before, types.ModuleType) and before is not module:
                problems.append(f"{full}: the attribute is another module, {before.__name__}")
            if getattr(package, info.name, None) is not module:
                problems.append(f"{full} is hidden once imported")
            if info.ispkg:
                visit(module)

    visit(prunus)
    for name, module in sorted(sys.modules.items()):
        parent, _, leaf = name.rpartition(".")
        if name.startswith("prunus.") and getattr(sys.modules[parent], leaf, None) is not module:
            problems.append(f"{name} is hidden once everything is imported")
    print(json.dumps(problems))
    """
)


def test_no_attribute_hides_a_submodule_of_the_same_name() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HIDING_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# -- import prunus stays light ---------------------------------------------------------------------------------


def within(module: str, *packages: str) -> bool:
    """Whether ``module`` is one of ``packages`` or inside one."""
    return any(module == p or module.startswith(f"{p}.") for p in packages)


@pytest.fixture(scope="module")
def fresh_import(layout: Path) -> dict[str, Any]:
    return import_in_fresh_process(env_with(layout))


def test_import_prunus_loads_no_subpackage_and_leaves_cuda_alone(
    fresh_import: dict[str, Any], layout: Path
) -> None:
    # The tools (hardware, workflow, shrinking, cli, testing...) and the plugins.
    subpackages = [name for name in packages(layout) if name.count(".") == 1]
    assert {"prunus.cli", "prunus.hardware", "prunus.plugins", "prunus.testing"} <= set(subpackages)
    assert [m for m in fresh_import["modules"] if within(m, *subpackages)] == []
    assert fresh_import["cuda_initialized"] is False


def test_import_prunus_imports_no_optional_dependency(fresh_import: dict[str, Any]) -> None:
    assert [m for m in fresh_import["new_modules"] if m.split(".")[0] in HEAVY] == []


# -- the public names ------------------------------------------------------------------------------------------


def test_every_name_in_all_resolves(layout: Path) -> None:
    missing = {}
    for name in packages(layout):
        module = importlib.import_module(name)
        absent = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
        if absent:
            missing[name] = absent
    assert missing == {}


# -- plugins import the plugin API only ---------------------------------------------------------------------


def prunus_imports(source: str, package: str = "prunus.plugins") -> list[str]:
    """The prunus modules (or names of the ``prunus`` package) that ``source``, a module of ``package``, imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from prunus import x` and `from . import x` import what `x` names in that package.
            if base in ("prunus", package):
                found += [f"{base}.{alias.name}" for alias in node.names]
            else:
                found.append(base)
    return [name for name in found if name == "prunus" or name.startswith("prunus.")]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from prunus.plugin_api import Criterion", ["prunus.plugin_api"]),
        ("from ..plugin_api import Criterion", ["prunus.plugin_api"]),
        ("from prunus import plugin_api", ["prunus.plugin_api"]),
        ("import torch\nfrom torch import nn", []),
        ("from prunus import registry", ["prunus.registry"]),
        ("import prunus.masking as m", ["prunus.masking"]),
        ("from ..ranking import keep_mask", ["prunus.ranking"]),
        ("from . import criteria", ["prunus.plugins.criteria"]),
        ("from .criteria import L1", ["prunus.plugins.criteria"]),
        ("if TYPE_CHECKING:\n    from prunus.engine import prune", ["prunus.engine"]),
    ],
)
def test_the_import_reader_resolves_every_form(source: str, expected: list[str]) -> None:
    assert prunus_imports(source) == expected


def test_a_plugin_module_imports_only_the_plugin_api_from_prunus(layout: Path) -> None:
    files = sorted((layout / "prunus" / "plugins").glob("*.py"))
    builtin = importlib.import_module("prunus.plugins").BUILTIN_PLUGINS
    assert set(builtin) <= {p.stem for p in files}
    wrong = {}
    for path in files:
        imported = prunus_imports(path.read_text(encoding="utf-8"))
        beyond = [n for n in imported if n != PLUGIN_API and not n.startswith(f"{PLUGIN_API}.")]
        if beyond:
            wrong[path.name] = beyond
    assert wrong == {}
