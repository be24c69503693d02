"""The docs describe the package as it is: the architecture's module map and layers, the paths the pages name,
the hook specifications they quote and their runnable examples. (The rules of the architecture itself, such as no
attribute hiding a module, are checked in tests/test_architecture.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # installed with import-linter (the dev extra) on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
TUTORIAL_PACKAGE = ROOT / "examples" / "prunus-taylor"

# The module map: a ```text block whose first line names pyproject.toml; a tree line is a connector (or none at
# the top), a name, an optional [layer], and what lives there.
MAP = re.compile(r"^```text\n(pyproject\.toml.*?)^```$", re.MULTILINE | re.DOTALL)
TREE_LINE = re.compile(
    r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>\S+)\s+(?:\[(?P<layer>\d+)\])?"
)


def _module_map() -> dict[str, int | None]:
    """Each path the architecture's tree names, with its layer when it gives one."""
    match = MAP.search(ARCHITECTURE.read_text())
    assert match is not None, "docs/architecture.md has no module map"
    paths: dict[str, int | None] = {}
    parents: list[str] = []
    for line in match[1].splitlines():
        parsed = TREE_LINE.match(line)
        assert parsed is not None, line
        depth = len(parsed["indent"]) // 4 + (1 if line[:1] in "│├└ " else 0)
        parents = [*parents[:depth], parsed["name"]]
        paths["".join(parents)] = int(parsed["layer"]) if parsed["layer"] else None
    return paths


def test_the_module_map_names_every_module_and_nothing_else() -> None:
    named = _module_map()
    for path in named:
        assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which does not exist"
    modules = {
        str(path.relative_to(ROOT))
        for folder in ("core", "plugins")
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    # A subpackage's line stands for its __init__.py.
    missing = {m for m in modules - set(named) if m.removesuffix("__init__.py") not in named}
    assert missing == set(), "modules missing from the map in docs/architecture.md"


def test_the_module_map_layers_are_the_import_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    expected: dict[str, int] = {}
    for index, layer in enumerate(reversed(layers), start=1):
        for module in layer.split("|"):
            expected[module.strip()] = index
    documented = {}
    for path, layer in _module_map().items():
        if layer is None:
            continue
        if path.startswith("plugins/"):
            documented["plugins"] = layer
        else:
            documented[path.removeprefix("core/").removesuffix("/").removesuffix(".py")] = layer
    assert documented == expected


PATH = re.compile(r"`((?:core|plugins|tests|examples|benchmarks|tools|docs)/[^`\s*<]*)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    for match in PATH.finditer(page.read_text()):
        file, _, test = match[1].partition("::")
        # The tutorial names the example package's own files relative to it.
        where = [ROOT, TUTORIAL_PACKAGE] if page.name == "tutorial-plugin.md" else [ROOT]
        found = [base / file for base in where if (base / file).exists()]
        assert found, f"{page.name} names {match[1]}, which does not exist"
        if test:
            assert f"def {test}(" in found[0].read_text(), f"{page.name} names {match[1]}"


def test_the_hook_specifications_plugins_md_quotes_are_the_real_ones() -> None:
    source = (ROOT / "core" / "hookspecs.py").read_text()
    quoted = re.findall(
        r"^```py\n(@hookspec.*?)^```$", (DOCS / "plugins.md").read_text(), re.M | re.S
    )
    specs = [spec for block in quoted for spec in block.strip().split("\n\n\n")]
    assert len(specs) == source.count("\n@hookspec")
    for spec in specs:
        assert spec in source, spec.splitlines()[1]


# Pages whose ```python blocks are complete programs; the others show fragments of a user's own code.
RUNNABLE = ["quickstart.md", "user-guide.md", "strategies.md", "plugins.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_the_examples_of_a_page_run(page: str, tmp_path: Path) -> None:
    blocks = BLOCK.findall((DOCS / page).read_text())
    assert blocks
    # One fresh process per page (the examples register plugins in the global registry), each block in a
    # fresh namespace, as a reader would paste it.
    program = "\n".join(
        [
            "import sys",
            f"blocks = {blocks!r}",
            "for i, block in enumerate(blocks):",
            "    exec(compile(block, f'<{sys.argv[1]} block {i}>', 'exec'), {'__name__': '__main__'})",
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNUS_")}
    env["PRUNUS_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", program, page],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
