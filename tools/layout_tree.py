"""Mirror the installed layout of ``prunus`` as a tree of links, for mypy, import-linter and mkdocstrings.

The import package ``prunus`` is ``core/``, and ``prunus.plugins`` is ``plugins/`` (``package-dir`` in
pyproject.toml). The editable install maps them with an import hook that mypy (and griffe, which reads the
docstrings for the docs site) cannot follow, so ``make test`` type-checks and documents this tree of links
instead: one link per source file, rebuilt on every run so it is never stale, and mypy's messages name the link,
whose path mirrors the real one (``prunus/plugins/x.py`` is ``plugins/x.py``, ``prunus/x.py`` is ``core/x.py``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = {"prunus": ROOT / "core", "prunus/plugins": ROOT / "plugins"}


def main(out: str) -> None:
    tree = Path(out)
    shutil.rmtree(tree, ignore_errors=True)
    for package, source in LAYOUT.items():
        for path in source.rglob("*"):
            if path.suffix not in (".py", ".typed") or "__pycache__" in path.parts:
                continue
            link = tree / package / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/layout")
