"""Global ranking at scale: ``l1_global`` 50 % of 12 x Linear(2048, 2048) beside torch's ``global_unstructured``.

Table ``scale-global`` (docs/scale.md). Every run is a fresh child process with one torch thread, measuring:

* the wall time of the pruning call and its peak resident memory (``ru_maxrss``) over the child's own figure once
  the model is built, as a multiple of the weight bytes;
* the minor page faults of the call (``ru_minflt``): each fresh page the call touches;
* the unit of a *pass*: one sweep that reads and writes every weight (``torch.abs(w, out=buffer)``), and the
  time this machine takes to first touch fresh memory the size of prunus's results (the masks and the pruned
  values): memory no pruning can avoid allocating;
* what the ranking itself did (:func:`prunus.chunked_ranking.recording`): its passes over the weights.

Run alone with ``python benchmarks/bench_global.py [--quick]`` (prints the table).
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunus
from prunus.chunked_ranking import recording
from prunus.testing import zoo

AMOUNT = 0.5
SCRIPT = Path(__file__)
MASKS: dict[str, torch.Tensor] = {}
METHODS = ("ranking", "prunus", "prunus_lean", "torch")
LABELS = {
    "ranking": "prunus: the ranking alone (`l1_global` masks computed, not attached)",
    "torch": "torch `global_unstructured`",
    "prunus": "prunus `l1_global` (restorable)",
    "prunus_lean": "prunus `l1_global`, `restorable=False`",
}


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "layers": 4,
            "width": 512,
            "runs": {"torch": 1, "ranking": 3, "prunus": 3, "prunus_lean": 3},
        }
    return {
        "layers": 12,
        "width": 2048,
        "runs": {"torch": 3, "ranking": 7, "prunus": 7, "prunus_lean": 7},
    }


def prune(method: str, model: nn.Module) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if method == "torch":
        torch_prune.global_unstructured(
            [(m, "weight") for m in layers],
            pruning_method=torch_prune.L1Unstructured,
            amount=AMOUNT,
        )
    elif method == "ranking":
        targets = [prunus.Target(f"{i}.weight", m, "weight") for i, m in enumerate(layers)]
        context = prunus.PruneContext(model=model, targets=targets, restorable=True)
        strategy = prunus.registry.get("l1_global", amount=AMOUNT)
        MASKS.clear()
        MASKS.update(strategy.compute_masks(context))  # kept past the call: the ranking's result
    else:
        prunus.prune(model, "l1_global", amount=AMOUNT, restorable=method == "prunus")


def fault_cost(nbytes: int = 64 << 20) -> float:
    """Seconds one minor page fault costs here: fresh memory written once, minus writing it again, per fault."""
    best = float("inf")
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        block = torch.empty(nbytes, dtype=torch.uint8)
        block.fill_(1)
        touched = time.perf_counter()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        block.fill_(2)
        again = time.perf_counter()
        del block
        if faults:
            best = min(best, max((touched - start) - (again - touched), 0.0) / faults)
    return 0.0 if best == float("inf") else best


def child(method: str, layers: int, width: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    torch.set_num_threads(1)
    prunus.registry.names()  # plugins loaded before the baseline
    warm = zoo.linear_stack(2, 256, seed=1)
    prune(method, warm)  # code paths warmed up on a small model
    del warm
    model = zoo.linear_stack(layers, width, seed=0)
    weights = [m.weight.detach() for m in model]
    total = sum(w.numel() for w in weights)
    pruned_bytes = round(AMOUNT * total) * 4 if method == "prunus" else 0  # "ranking": masks only
    result_bytes = total + pruned_bytes  # bool masks, and the pruned float32 values when restorable
    unit = harness.pass_seconds(weights, repeats=5)
    del weights
    gc.collect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with recording() as stats:
        start = time.perf_counter()
        prune(method, model)
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    per_fault = fault_cost()  # after the peak was read, so its block cannot raise it
    # Torch replaces each weight by weight_orig * mask: count the zeros of the weights the model has now.
    if method == "ranking":
        zeros = sum(int((~mask).sum()) for mask in MASKS.values())
    else:
        zeros = sum(int((m.weight == 0).sum()) for m in model if isinstance(m, nn.Linear))
    ranking = stats[0] if stats else None
    # The same call again on a second copy of the model, the first one freed: the allocator now reuses memory
    # already touched, so this time is the call's work without first touching fresh pages.
    del model
    MASKS.clear()
    gc.collect()
    again = zoo.linear_stack(layers, width, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    prune(method, again)
    warm_seconds = time.perf_counter() - start
    warm_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {
        "seconds": seconds,
        "warm_seconds": warm_seconds,
        "warm_faults": warm_faults,
        "extra_bytes": (after.ru_maxrss - usage.ru_maxrss) * 1024,
        "weight_bytes": total * 4,
        "faults": after.ru_minflt - usage.ru_minflt,
        "result_pages": result_bytes // 4096,
        "exact": zeros == round(AMOUNT * total),
        "pass_seconds": unit,
        "fault_seconds": per_fault,
        "ranking": None
        if ranking is None
        else {
            "passes": ranking.passes,
            "sweeps": ranking.sweeps,
            "candidates": ranking.candidates,
            "sampled": ranking.sampled,
            "scorings": ranking.scorings,
            "path": ranking.path,
        },
    }


def spread(values: list[float], digits: int = 2, unit: str = "") -> str:
    low, mid, high = harness.quartiles(values)
    return f"{mid:.{digits}f}{unit} [{low:.{digits}f}-{high:.{digits}f}]"


def measure(quick: bool) -> dict[str, list[dict[str, Any]]]:
    s = sizes(quick)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for i in range(max(s["runs"].values())):
        for (
            method
        ) in METHODS:  # interleaved, so a busy spell of the machine spreads over every method
            if i < s["runs"][method]:
                runs[method].append(
                    harness.in_child(
                        SCRIPT, "prune", method=method, layers=s["layers"], width=s["width"]
                    )
                )
                print(
                    f"  {method} run {i + 1}: {runs[method][-1]['seconds']:.3f} s", file=sys.stderr
                )
    return runs


def tables(runs: dict[str, list[dict[str, Any]]], quick: bool) -> dict[str, str]:
    s = sizes(quick)
    torch_median = statistics.median(r["seconds"] for r in runs["torch"])
    rows = []
    for method in METHODS:
        results = runs[method]
        seconds = [r["seconds"] for r in results]
        passes = [r["seconds"] / r["pass_seconds"] for r in results]
        warm = [r["warm_seconds"] / r["pass_seconds"] for r in results]
        ranking = results[0]["ranking"]
        rows.append(
            [
                LABELS[method],
                spread(seconds, 3, " s"),
                f"{torch_median / statistics.median(seconds):.1f}x",
                spread(passes, 1),
                f"{statistics.median(r['faults'] for r in results):,.0f}"
                + ("" if method == "torch" else f" ({results[0]['result_pages']:,})"),
                spread(warm, 1),
                f"{statistics.median(r['warm_faults'] for r in results):,.0f}",
                spread([r["extra_bytes"] / r["weight_bytes"] for r in results], 2, "x"),
                "yes" if all(r["exact"] for r in results) else "**no**",
                "" if ranking is None else " + ".join(ranking["passes"]),
                str(len(results)),
            ]
        )
    weight_mb = runs["torch"][0]["weight_bytes"] / 2**20
    pass_ms = statistics.median(r["pass_seconds"] for rs in runs.values() for r in rs) * 1e3
    fault_us = statistics.median(r["fault_seconds"] for rs in runs.values() for r in rs) * 1e6
    header = [
        "method",
        "time, median [quartiles]",
        "speed-up vs torch",
        "passes",
        "page faults (pages the results fill)",
        "passes, memory reused",
        "page faults, memory reused",
        "peak extra memory / weight bytes",
        "exact count",
        "ranking passes",
        "runs",
    ]
    spread_note = (
        f"{AMOUNT:.0%} of {s['layers']} x Linear({s['width']}, {s['width']}) ({weight_mb:.0f} MiB of float32 "
        f"weights). A pass (one read and write of every weight) took {pass_ms:.1f} ms, measured in each run's "
        f"process. 'passes, memory reused': the same call again in that process on a second copy of the model, "
        f"the first freed, so that the allocator hands back memory already touched: the call's work without "
        f"first touching fresh pages, which on this virtual machine costs several microseconds a page (a bulk "
        f"write measured {fault_us:.1f} us). The pages the results fill are the bool masks and, when "
        f"restorable, the pruned values (fewer faults when the kernel backs them with huge pages). Each run is "
        f"a fresh process; quartiles over the runs."
    )
    markdown = (
        harness.table(header, rows)
        + "\n\n"
        + harness.caption(threads=1, spread=spread_note, quick=quick)
    )
    return {"scale-global": markdown}


def run(quick: bool) -> dict[str, str]:
    """The ``scale-global`` table."""
    runs = measure(quick)
    harness.write_results("global", runs, quick=quick)
    return tables(runs, quick)


TASKS = {"prune": child}

if __name__ == "__main__" and not harness.serve_child(TASKS):
    harness.main(run)
