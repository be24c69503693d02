"""Run prunus's benchmark suite and write its tables into the docs: every figure the docs quote comes from here.

Usage (from the repository root; ``make bench`` and ``make bench-quick`` call it)::

    python benchmarks/run.py                 # every benchmark module; rewrites the tables in README.md and docs/
    python benchmarks/run.py --only sparse   # one module (repeat --only for more)
    python benchmarks/run.py --quick         # small shapes, a smoke test: prints the tables, writes no doc

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> dict[str, str]``: markdown tables by id. A
table goes between ``<!-- bench:<id>:start -->`` and ``<!-- bench:<id>:end -->`` wherever those markers stand in
README.md or docs/*.md; the module's raw figures go to ``benchmarks/results/<name>.json``. A full run fails if a
table has no place in the docs or a marker no table, so no figure is left behind from an earlier run.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import harness

HERE = Path(__file__).resolve().parent
DOCS = [harness.ROOT / "README.md", *sorted((harness.ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(
    r"(?P<start><!-- bench:(?P<id>[\w.-]+):start -->\n).*?(?P<end><!-- bench:(?P=id):end -->)", re.S
)


def discover() -> list[str]:
    """The names of the benchmark modules: ``bench_<name>.py`` beside this script."""
    return sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))


def markers(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Every table id with a place in the docs, and the files that hold it."""
    found: dict[str, list[Path]] = {}
    for path in paths:
        for match in MARKER.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match["id"], []).append(path)
    return found


def place(tables: dict[str, str], paths: Iterable[Path]) -> set[str]:
    """Write each table between its markers; return the ids placed somewhere."""
    placed: set[str] = set()
    for path in paths:
        text = path.read_text(encoding="utf-8")

        def fill(match: re.Match[str]) -> str:
            if match["id"] not in tables:
                return match[0]
            placed.add(match["id"])
            return f"{match['start']}{tables[match['id']].strip()}\n{match['end']}"

        updated = MARKER.sub(fill, text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"wrote {path.relative_to(harness.ROOT)}", file=sys.stderr)
    return placed


def main(argv: list[str] | None = None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=names, metavar="NAME", help=f"one of {', '.join(names)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small shapes, few repeats; print only"
    )
    args = parser.parse_args(argv)
    chosen = args.only or names
    harness.COMMAND = shlex.join(
        ["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]
    )

    tables: dict[str, str] = {}
    for name in chosen:
        print(f"== {name}", file=sys.stderr)
        started = time.perf_counter()
        module = importlib.import_module(f"bench_{name}")
        produced: dict[str, str] = module.run(args.quick)
        clash = produced.keys() & tables.keys()
        if clash:
            raise SystemExit(f"bench_{name} produces tables another module did: {sorted(clash)}")
        tables.update(produced)
        print(f"== {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    if args.quick:
        for table_id, markdown in tables.items():
            print(f"<!-- bench:{table_id} -->\n{markdown}\n")
        return 0

    placed = place(tables, DOCS)
    problems = [
        f"table {t!r} has no <!-- bench:{t}:start/end --> markers"
        for t in tables
        if t not in placed
    ]
    if not args.only:
        problems += [
            f"{', '.join(str(p.relative_to(harness.ROOT)) for p in paths)}: no module made table {t!r}"
            for t, paths in markers(DOCS).items()
            if t not in tables
        ]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
