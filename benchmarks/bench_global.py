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

import numpy as np
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunus
from prunus.chunked_ranking import recording

AMOUNT = 0.5
METHODS = ("prunus", "prunus_lean", "torch")
LABELS = {
    "torch": "torch `global_unstructured`",
    "prunus": "prunus `l1_global` (restorable)",
    "prunus_lean": "prunus `l1_global`, `restorable=False`",
}


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"layers": 4, "width": 512, "runs": {"torch": 1, "prunus": 3, "prunus_lean": 3}}
    return {"layers": 12, "width": 2048, "runs": {"torch": 3, "prunus": 7, "prunus_lean": 7}}


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
    else:
        prunus.prune(model, "l1_global", amount=AMOUNT, restorable=method == "prunus")


def first_touch(nbytes: int) -> float:
    """Seconds to obtain ``nbytes`` of fresh memory and write it once, minus writing it a second time."""
    start = time.perf_counter()
    block = torch.from_numpy(np.empty(nbytes, dtype=np.uint8))  # as prunus allocates its results
    block.fill_(1)
    touched = time.perf_counter()
    block.fill_(2)
    again = time.perf_counter()
    del block
    return max((touched - start) - (again - touched), 0.0)


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
    pruned_bytes = round(AMOUNT * total) * 4 if method == "prunus" else 0
    result_bytes = total + pruned_bytes  # bool masks, and the pruned float32 values when restorable
    buffer = torch.empty_like(weights[0])
    passes = []
    for _ in range(5):
        begin = time.perf_counter()
        for w in weights:
            torch.abs(w, out=buffer)
        passes.append(time.perf_counter() - begin)
    del buffer
    gc.collect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with recording() as stats:
        start = time.perf_counter()
        prune(method, model)
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    # After the peak was read: freed blocks this large go back to the system, so the call could not reuse it.
    touch = first_touch(result_bytes) if method != "torch" else 0.0
    zeros = sum(int((w == 0).sum()) for w in weights)
    ranking = stats[0] if stats else None
    return {
        "seconds": seconds,
        "extra_bytes": (after.ru_maxrss - usage.ru_maxrss) * 1024,
        "weight_bytes": total * 4,
        "faults": after.ru_minflt - usage.ru_minflt,
        "result_pages": result_bytes // 4096,
        "exact": zeros == round(AMOUNT * total),
        "pass_seconds": min(passes),
        "touch_seconds": touch,
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
        beyond = [max(r["seconds"] - r["touch_seconds"], 0.0) / r["pass_seconds"] for r in results]
        ranking = results[0]["ranking"]
        rows.append(
            [
                LABELS[method],
                spread(seconds, 3, " s"),
                f"{torch_median / statistics.median(seconds):.1f}x",
                spread(passes, 1),
                "" if method == "torch" else spread(beyond, 1),
                spread([r["extra_bytes"] / r["weight_bytes"] for r in results], 2, "x"),
                f"{statistics.median(r['faults'] for r in results):,.0f}"
                + ("" if method == "torch" else f" ({results[0]['result_pages']:,})"),
                "yes" if all(r["exact"] for r in results) else "**no**",
                "" if ranking is None else " + ".join(ranking["passes"]),
                str(len(results)),
            ]
        )
    weight_mb = runs["torch"][0]["weight_bytes"] / 2**20
    pass_ms = statistics.median(r["pass_seconds"] for rs in runs.values() for r in rs) * 1e3
    touch_ms = statistics.median(r["touch_seconds"] for r in runs["prunus"]) * 1e3
    header = [
        "method",
        "time, median [quartiles]",
        "speed-up vs torch",
        "passes",
        "passes beyond first touch of the results",
        "peak extra memory / weight bytes",
        "page faults (pages of results)",
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
        f"write of every weight) took {pass_ms:.1f} ms; first touching fresh memory the size of the "
        f"restorable results (bool masks and pruned values, {runs['prunus'][0]['result_pages'] * 4096 / 2**20:.0f} "
        f"MiB) took {touch_ms:.0f} ms on this virtual machine. Each run is a fresh process; quartiles over the "
        f"runs.*"
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
