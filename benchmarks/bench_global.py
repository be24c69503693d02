"""Global ranking at scale: ``l1_global`` 50 % of 12 x Linear(2048, 2048) beside torch's ``global_unstructured``.

Table ``scale-global`` (docs/scale.md). Every run is a fresh child process with one torch thread, measuring:

* the wall time of the pruning call and its peak resident memory (``ru_maxrss``) over the child's own figure once
  the model is built, as a multiple of the weight bytes;
* the minor page faults of the call (``ru_minflt``): each fresh page the call touches;
* the unit of a *pass*: one sweep that reads and writes every weight (``torch.abs(w, out=buffer)``), and the
  time this machine takes to first touch fresh memory the size of prunus's results (the masks and the pruned
  values): memory no pruning can avoid allocating;
* what the ranking itself did (:func:`prunus.chunked_ranking.recording`): its passes over the weights.

Run alone: ``python benchmarks/bench_global.py [--quick]`` (prints the table).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunus
from prunus.chunked_ranking import recording

AMOUNT = 0.5
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


def stack(layers: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])


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
    warm = stack(2, 256)
    prune(method, warm)  # code paths warmed up on a small model
    del warm
    model = stack(layers, width)
    weights = [m.weight.detach() for m in model]
    total = sum(w.numel() for w in weights)
    pruned_bytes = round(AMOUNT * total) * 4 if method == "prunus" else 0  # "ranking": masks only
    result_bytes = total + pruned_bytes  # bool masks, and the pruned float32 values when restorable
    buffer = torch.empty_like(weights[0])
    passes = []
    for _ in range(5):
        begin = time.perf_counter()
        for w in weights:
            torch.abs(w, out=buffer)
        passes.append(time.perf_counter() - begin)
    del buffer, weights
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
    again = stack(layers, width)
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
        "pass_seconds": min(passes),
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


def in_child(**kwargs: Any) -> dict[str, Any]:
    payload = json.dumps(kwargs)
    done = subprocess.run(
        [sys.executable, __file__, "--child", payload],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"child {payload} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


def spread(values: list[float], digits: int = 2, unit: str = "") -> str:
    low, mid, high = quartiles(values)
    return f"{mid:.{digits}f}{unit} [{low:.{digits}f}-{high:.{digits}f}]"


def measure(quick: bool) -> dict[str, list[dict[str, Any]]]:
    s = sizes(quick)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for i in range(max(s["runs"].values())):
        for (
            method
        ) in METHODS:  # interleaved, so a busy spell of the machine spreads over every method
            if i < s["runs"][method]:
                runs[method].append(in_child(method=method, layers=s["layers"], width=s["width"]))
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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    load = os.getloadavg()[0]
    caption = (
        f"{'**Quick run: a smoke test, not reference figures.** ' if quick else ''}"
        f"*{AMOUNT:.0%} of {s['layers']} x Linear({s['width']}, {s['width']}) ({weight_mb:.0f} MiB of float32 "
        f"weights). `python benchmarks/bench_global.py{' --quick' if quick else ''}` on "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs shared with other work, "
        f"load average {load:.1f} at the end), torch {torch.__version__}, 1 thread. A pass (one read and "
        f"write of every weight) took {pass_ms:.1f} ms, measured in each run's process. *Passes, memory "
        f"reused*: the same call again in that process on a second copy of the model, the first freed, so that "
        f"the allocator hands back memory already touched: the call's work without first touching fresh "
        f"pages, which on this virtual machine costs several microseconds a page (a bulk write measured "
        f"{fault_us:.1f} us). The pages the results fill are the bool masks and, when restorable, the pruned "
        f"values (fewer faults when the kernel backs them with huge pages). Each run is a fresh process; "
        f"quartiles over the runs.*"
    )
    return {"scale-global": "\n".join(lines) + "\n\n" + caption}


def run(quick: bool) -> dict[str, str]:
    """The ``scale-global`` table."""
    return tables(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return
    for table_id, markdown in run(args.quick).items():
        print(f"<!-- bench:{table_id} -->\n{markdown}\n")


if __name__ == "__main__":
    main()
