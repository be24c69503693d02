"""The conformance kit (``prunus.testing``): how surely it catches broken components, and how long it takes.

Two tables:

* ``kit-catch``: every broken component of the suite's catalogue (``tests/kit_bugs.py``: the same one
  ``tests/test_kit_bugs.py`` checks), as a built-in and as a third-party component, checked by
  ``check_strategy(name, registry=..., properties=bug.props)`` at default settings: the derandomised run a
  plugin's CI makes (the figure that must be "caught" for every bug), then with ``seed=1..SEEDS`` (other examples,
  the same number of them) to show how far the catch holds beyond the fixed examples.
* ``kit-time``: ``check_strategy(name)`` at default settings over every registered strategy (the built-ins and
  the installed example plugins), split over two worker processes as ``pytest -n 2`` would, wall seconds.

Run with ``python benchmarks/run.py --only kit`` (``--quick``: the default runs only, no other seeds).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import harness

SEEDS = 3
"""Seeded runs per bug and variant beyond the default derandomised one."""

WORKERS = 2
"""Worker processes (the 2 cores of the machine the suite is sized for)."""

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _worker_setup() -> None:
    # The catalogue is the test suite's own (one definition for the tests and this measurement).
    sys.path.insert(0, str(TESTS))
    os.environ.pop("PRUNUS_TESTING_MAX_EXAMPLES", None)
    import torch

    torch.set_num_threads(1)


def _catch(index: int, variant: str, seed: int | None) -> dict[str, Any]:
    from kit_bugs import BUGS

    from prunus.testing import KitFailure, check_strategy

    bug = BUGS[index]
    name, registry = bug.builtin() if variant == "built-in" else bug.third_party()
    started = time.perf_counter()
    named = ""
    try:
        check_strategy(bug.case(name), registry=registry, properties=bug.props, seed=seed)
    except KitFailure as failure:
        found = [f for f in failure.failures if {f.name, *f.also} & set(bug.props)]
        named = found[0].name if found else ""
    return {
        "bug": bug.id,
        "variant": variant,
        "seed": seed,
        "caught": bool(named),
        "property": named,
        "seconds": time.perf_counter() - started,
    }


FEEDS: dict[str, dict[str, Any]] = {"taylor": {"gradients": True}, "actnorm": {"inputs": True}}
"""How the example packages' criteria are fed, as their own tests say (a criterion not named here: plainly)."""


def _check_one(name: str) -> dict[str, Any]:
    import prunus
    from prunus.testing import KitFailure, StrategyCase, check_strategy

    info = prunus.registry.info(name)
    feed: dict[str, Any] = dict(FEEDS.get(info.criterion or "", {}))
    if info.statistics and not feed:
        # A data-aware criterion (wanda_*, sparsegpt_*) gets drawn calibration statistics, as in the suite.
        feed["data"] = partial(_statistics, kinds=info.statistics)
    started = time.perf_counter()
    passed = True
    try:
        check_strategy(StrategyCase(name, **feed))
    except KitFailure:
        passed = False
    return {"name": name, "passed": passed, "seconds": time.perf_counter() - started}


def _statistics(targets: Any, kinds: Any) -> Any:
    from prunus.testing import generators as pst

    return pst.statistics(targets, kinds)


def _pool() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup
    )


def catch_rates(quick: bool) -> list[dict[str, Any]]:
    """Every bug and variant at the default run and, unless ``quick``, at ``seed=1..SEEDS``."""
    _worker_setup()
    from kit_bugs import BUGS

    seeds: list[int | None] = [None] if quick else [None, *range(1, SEEDS + 1)]
    jobs = [
        (index, variant, seed)
        for index in range(len(BUGS))
        for variant in ("built-in", "third-party")
        for seed in seeds
    ]
    with _pool() as pool:
        return list(pool.map(_catch, *zip(*jobs, strict=True)))


def kit_time() -> tuple[float, list[dict[str, Any]]]:
    """Wall seconds of the kit over every registered strategy on ``WORKERS`` processes, and each one's time."""
    import prunus

    names = prunus.registry.names()
    with _pool() as pool:
        # Warm the workers (imports, plugin loading) outside the measurement, as a test session would be.
        list(pool.map(_worker_setup_noop, range(WORKERS)))
        started = time.perf_counter()
        rows = list(pool.map(_check_one, names))
        wall = time.perf_counter() - started
    return wall, rows


def _worker_setup_noop(_: int) -> None:
    import prunus
    import prunus.testing

    prunus.registry.names()


def tables(
    catches: list[dict[str, Any]], wall: float, timed: list[dict[str, Any]], quick: bool
) -> dict[str, str]:
    by_bug: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in catches:
        by_bug.setdefault((row["bug"], row["variant"]), []).append(row)
    bugs = list(dict.fromkeys(row["bug"] for row in catches))
    seeded = max(len(rows) for rows in by_bug.values()) - 1
    rows = []
    for bug in bugs:
        cells = [f"`{bug}`"]
        for variant in ("built-in", "third-party"):
            runs = by_bug[(bug, variant)]
            default = next(r for r in runs if r["seed"] is None)
            others = [r for r in runs if r["seed"] is not None]
            cells.append(f"`{default['property']}`" if default["caught"] else "**missed**")
            if seeded:
                cells.append(f"{sum(r['caught'] for r in others)}/{len(others)}")
        rows.append(cells)
    header = ["bug", "built-in: default run"]
    if seeded:
        header.append(f"built-in: seeds 1-{seeded}")
    header.append("third-party: default run")
    if seeded:
        header.append(f"third-party: seeds 1-{seeded}")
    defaults = [r for r in catches if r["seed"] is None]
    others = [r for r in catches if r["seed"] is not None]
    summary = (
        f"Caught in the default run: {sum(r['caught'] for r in defaults)} of {len(defaults)} broken components"
        + (
            f"; in the seeded runs: {sum(r['caught'] for r in others)} of {len(others)}."
            if others
            else "."
        )
    )
    catch = (
        harness.table(header, rows)
        + "\n\n"
        + summary
        + "\n\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread=f"Counts, not timings: each run either names a property that catches the bug or not "
            f"({WORKERS} worker processes of 1 thread; a run's examples do not depend on the machine).",
        )
    )
    slowest = sorted(timed, key=lambda r: -r["seconds"])[:5]
    failed = [r["name"] for r in timed if not r["passed"]]
    time_rows = [
        [
            "all strategies",
            str(len(timed)),
            f"{wall:.1f} s",
            f"{sum(r['seconds'] for r in timed):.1f} s",
        ],
        *[[f"`{r['name']}`", "1", "", f"{r['seconds']:.1f} s"] for r in slowest],
    ]
    timing = (
        harness.table(
            ["checked", "strategies", f"wall ({WORKERS} processes)", "sum of per-strategy times"],
            time_rows,
        )
        + "\n\n"
        + ("Every strategy passed." if not failed else f"**Failed: {', '.join(failed)}.**")
        + " The five slowest strategies are listed below the total.\n\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread="One run; on a machine shared with other work the wall time varies by tens of percent "
            "between runs.",
        )
    )
    return {"kit-catch": catch, "kit-time": timing}


def run(quick: bool) -> dict[str, str]:
    catches = catch_rates(quick)
    wall, timed = kit_time()
    harness.write_results(
        "kit", {"catches": catches, "wall_s": wall, "strategies": timed}, quick=quick
    )
    return tables(catches, wall, timed, quick)


if __name__ == "__main__":
    harness.main(run)
