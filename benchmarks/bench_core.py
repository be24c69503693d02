"""prunus against ``torch.nn.utils.prune``, side by side, on the same models.

Regenerate ``docs/benchmarks.md`` with ``make bench`` (that is,
``python benchmarks/bench_core.py --output docs/benchmarks.md``); ``--quick`` runs small shapes for a smoke test.

What is measured (the protocol of the project's benchmark notes: medians, one thread, ratios taken in one run,
peak memory in child processes):

a. ``global_unstructured`` 50 % over 12 x Linear(2048, 2048): wall time of the pruning call, peak RSS growth
   over the built model (``ru_maxrss`` in a fresh child process per run), and exactness (zeros counted against
   ``round(0.5 * n)``) for torch, prunus ``restorable=True`` and prunus ``restorable=False``.
b. Eval forward latency of an MLP 1024-4096-4096-1024 at batch 32 pruned 50 % (global L1): dense, torch's
   forward pre-hooks, prunus with its masks still on (restorable).
c. One training step (forward, backward, SGD step) of the same MLP at batch 256 and 32.
d. Per-layer ``l1_unstructured`` 50 % over the model of (a): time, memory and exactness.

Each figure comes from child processes started by this script, so no run inherits another's memory peak.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunus

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "make bench"
AMOUNT = 0.5


# -- shapes -----------------------------------------------------------------------------------------------


def shapes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "stack": {"layers": 4, "width": 512},
            "mlp": [256, 1024, 1024, 256],
            "prune_runs": 1,
            "eval_runs": 10,
            "train_runs": 4,
            "train_batches": [64, 16],
        }
    return {
        "stack": {"layers": 12, "width": 2048},
        "mlp": [1024, 4096, 4096, 1024],
        "prune_runs": 3,
        "eval_runs": 60,
        "train_runs": 15,
        "train_batches": [256, 32],
    }


def stack(layers: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def mlp(sizes: list[int]) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


# -- the pruning calls being compared ---------------------------------------------------------------------


def torch_global(model: nn.Module) -> None:
    torch_prune.global_unstructured(
        [(m, "weight") for m in linears(model)],
        pruning_method=torch_prune.L1Unstructured,
        amount=AMOUNT,
    )


def torch_per_layer(model: nn.Module) -> None:
    for m in linears(model):
        torch_prune.l1_unstructured(m, "weight", amount=AMOUNT)


def prunus_call(strategy: str, restorable: bool) -> Callable[[nn.Module], None]:
    def run(model: nn.Module) -> None:
        prunus.prune(model, strategy, amount=AMOUNT, restorable=restorable)

    return run


METHODS: dict[str, Callable[[nn.Module], None]] = {
    "torch_global": torch_global,
    "prunus_global": prunus_call("global_unstructured", True),
    "prunus_global_norestore": prunus_call("global_unstructured", False),
    "torch_l1": torch_per_layer,
    "prunus_l1": prunus_call("l1_unstructured", True),
    "prunus_l1_norestore": prunus_call("l1_unstructured", False),
}


def maxrss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child processes --------------------------------------------------------------------------------------


def child_prune(method: str, layers: int, width: int) -> dict[str, Any]:
    """Build the stack, prune it once, report time, peak RSS growth, exactness and a mask fingerprint."""
    torch.set_num_threads(1)
    prunus.registry.get("l1_unstructured", amount=AMOUNT)  # load the plugins before the baseline
    model = stack(layers, width)
    gc.collect()
    baseline = maxrss_mb()
    start = time.perf_counter()
    METHODS[method](model)
    seconds = time.perf_counter() - start
    growth = maxrss_mb() - baseline

    weights = [m.weight.detach() for m in linears(model)]
    zeros = [int((w == 0).sum()) for w in weights]
    numel = [w.numel() for w in weights]
    if method.endswith("_global") or "_global_" in method:
        expected = round(AMOUNT * sum(numel))
    else:
        expected = sum(round(AMOUNT * n) for n in numel)
    # Which entries are zero, summarised: equal fingerprints mean equal masks (for all practical purposes).
    fingerprint = sum(
        int((w.reshape(-1) == 0).nonzero().sum()) * (i + 1) for i, w in enumerate(weights)
    )
    return {
        "seconds": seconds,
        "rss_growth_mb": growth,
        "zeros": sum(zeros),
        "expected": expected,
        "fingerprint": fingerprint,
    }


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def child_eval(sizes: list[int], runs: int) -> dict[str, Any]:
    """Eval forward latency of dense, torch-hooked and prunus-masked copies, taking turns."""
    torch.set_num_threads(1)
    dense = mlp(sizes)
    hooked = copy.deepcopy(dense)
    masked = copy.deepcopy(dense)
    torch_global(hooked)
    prunus.prune(masked, "global_unstructured", amount=AMOUNT)
    same = all(
        torch.equal(
            prunus.masks(masked)[f"{i}.weight"], hooked.get_buffer(f"{i}.weight_mask").bool()
        )
        for i, m in enumerate(masked)
        if isinstance(m, nn.Linear)
    )
    models = {"dense": dense, "torch": hooked, "prunus": masked}
    for m in models.values():
        m.eval()
    x = torch.randn(32, sizes[0], generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(3):
                m(x)
        for _ in range(runs):
            for name, m in models.items():
                start = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - start)
    weights = linears(dense)
    macs = sum(w.weight.numel() for w in weights)
    macs_nonzero = sum(int(w.weight.count_nonzero()) for w in linears(masked))
    return {
        "ms": {k: median_ms(v) for k, v in times.items()},
        "same_masks": same,
        "macs": macs,
        "macs_nonzero": macs_nonzero,
    }


def child_train(sizes: list[int], batch: int, runs: int) -> dict[str, Any]:
    """Forward + backward + SGD step of dense, torch-hooked and prunus-masked copies, taking turns."""
    torch.set_num_threads(1)
    dense = mlp(sizes)
    hooked = copy.deepcopy(dense)
    masked = copy.deepcopy(dense)
    torch_global(hooked)
    prunus.prune(masked, "global_unstructured", amount=AMOUNT)
    models = {"dense": dense, "torch": hooked, "prunus": masked}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-4) for k, m in models.items()}
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, sizes[0], generator=generator)
    y = torch.randn(batch, sizes[-1], generator=generator)

    def step(name: str) -> None:
        optimizer = optimizers[name]
        optimizer.zero_grad()
        nn.functional.mse_loss(models[name](x), y).backward()
        optimizer.step()

    for name in models:
        for _ in range(2):
            step(name)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(runs):
        for name in models:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    kept = all(
        not bool(w.weight[~prunus.masks(masked)[f"{i}.weight"]].any())
        for i, w in enumerate(masked)
        if isinstance(w, nn.Linear)
    )
    return {"ms": {k: median_ms(v) for k, v in times.items()}, "zeros_kept": kept}


CHILDREN: dict[str, Callable[..., dict[str, Any]]] = {
    "prune": child_prune,
    "eval": child_eval,
    "train": child_train,
}


def in_child(task: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter and return what it reports."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, __file__, "--child", task, json.dumps(kwargs)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- report -----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def revision() -> str:
    """The prunus version and, in a git checkout, the commit measured (``-dirty`` if it had local changes)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return f"prunus {prunus.__version__} at commit {done.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        return f"prunus {prunus.__version__}"


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.system()}"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def prune_section(
    title: str, methods: list[tuple[str, str]], config: dict[str, Any], runs: int
) -> tuple[str, dict[str, dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {m: [] for m, _ in methods}
    for _ in range(runs):
        for method, _ in methods:  # take turns, so that machine noise hits every method alike
            results[method].append(in_child("prune", method=method, **config["stack"]))
            print(f"  {method}: {results[method][-1]['seconds']:.2f} s", file=sys.stderr)
    summary = {
        m: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "rss": statistics.median(r["rss_growth_mb"] for r in rs),
            "zeros": rs[0]["zeros"],
            "expected": rs[0]["expected"],
            "fingerprint": rs[0]["fingerprint"],
            "stable": len({r["fingerprint"] for r in rs}) == 1,
        }
        for m, rs in results.items()
    }
    reference = summary[methods[0][0]]
    weights_mb = config["stack"]["layers"] * config["stack"]["width"] ** 2 * 4 / 2**20
    rows = []
    for method, label in methods:
        s = summary[method]
        rows.append(
            [
                label,
                f"{s['seconds']:.2f} s",
                f"{s['seconds'] / reference['seconds']:.2f}x",
                f"+{s['rss']:,.0f} MB",
                f"{s['rss'] / weights_mb:.1f}x",
                f"{s['zeros']:,} / {s['expected']:,}"
                + (" exact" if s["zeros"] == s["expected"] else ""),
                "yes" if s["fingerprint"] == reference["fingerprint"] else "no",
            ]
        )
    text = f"### {title}\n\n" + table(
        [
            "method",
            f"time (median of {runs})",
            "time vs torch",
            "peak RSS growth",
            "RSS growth / weights",
            "zeros / asked",
            "same mask as torch",
        ],
        rows,
    )
    return text, summary


def run(quick: bool) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    config = shapes(quick)
    layers, width = config["stack"]["layers"], config["stack"]["width"]
    n_params = layers * width * width
    sizes = config["mlp"]
    figures: dict[str, Any] = {}
    sections = []

    print(f"(a) global_unstructured over {layers} x Linear({width}, {width})", file=sys.stderr)
    text, figures["global"] = prune_section(
        f"(a) `global_unstructured` {AMOUNT:.0%} over {layers} x Linear({width}, {width}) "
        f"({n_params / 1e6:.1f} M weights, {n_params * 4 / 2**20:,.0f} MB)",
        [
            ("torch_global", "torch `prune.global_unstructured` (L1)"),
            ("prunus_global", "prunus `global_unstructured`, restorable=True"),
            ("prunus_global_norestore", "prunus `global_unstructured`, restorable=False"),
        ],
        config,
        config["prune_runs"],
    )
    sections.append(text)

    print("(b) eval forward latency", file=sys.stderr)
    shape = "-".join(map(str, sizes))
    ev = in_child("eval", sizes=sizes, runs=config["eval_runs"])
    figures["eval"] = ev
    ms = ev["ms"]
    sections.append(
        f"### (b) Eval forward latency, MLP {shape}, batch 32, {AMOUNT:.0%} global L1 "
        f"(median of {config['eval_runs']}, taking turns)\n\n"
        + table(
            ["model", "latency", "vs dense"],
            [
                ["dense", f"{ms['dense']:.2f} ms", "1.00x"],
                [
                    "torch (forward pre-hooks, `weight_orig * weight_mask`)",
                    f"{ms['torch']:.2f} ms",
                    f"{ms['torch'] / ms['dense']:.2f}x",
                ],
                [
                    "prunus (masks kept, restorable)",
                    f"{ms['prunus']:.2f} ms",
                    f"{ms['prunus'] / ms['dense']:.2f}x",
                ],
            ],
        )
        + f"\n\nSame masks as torch: {'yes' if ev['same_masks'] else 'no'}. Multiply-accumulates with a "
        f"nonzero weight: {ev['macs_nonzero']:,} of {ev['macs']:,} per sample "
        f"({ev['macs'] / ev['macs_nonzero']:.2f}x fewer in theory); neither library turns that into speed "
        "with dense kernels: the zeros are still multiplied."
    )

    rows = []
    for batch in config["train_batches"]:
        print(f"(c) training step, batch {batch}", file=sys.stderr)
        tr = in_child("train", sizes=sizes, batch=batch, runs=config["train_runs"])
        figures[f"train_{batch}"] = tr
        ms = tr["ms"]
        rows.append(
            [
                str(batch),
                f"{ms['dense']:.1f} ms",
                f"{ms['torch']:.1f} ms ({ms['torch'] / ms['dense']:.2f}x)",
                f"{ms['prunus']:.1f} ms ({ms['prunus'] / ms['dense']:.2f}x)",
                "yes" if tr["zeros_kept"] else "NO",
            ]
        )
    sections.append(
        f"### (c) Training step (forward + backward + SGD step), MLP {shape} "
        f"(median of {config['train_runs']}, taking turns)\n\n"
        + table(["batch", "dense", "torch hooks", "prunus", "prunus zeros kept"], rows)
    )

    print(
        f"(d) per-layer l1_unstructured over {layers} x Linear({width}, {width})", file=sys.stderr
    )
    text, figures["per_layer"] = prune_section(
        f"(d) Per-layer `l1_unstructured` {AMOUNT:.0%} over the model of (a)",
        [
            ("torch_l1", "torch `prune.l1_unstructured`, layer by layer"),
            ("prunus_l1", "prunus `l1_unstructured`, restorable=True"),
            ("prunus_l1_norestore", "prunus `l1_unstructured`, restorable=False"),
        ],
        config,
        config["prune_runs"],
    )
    sections.append(text)

    date = datetime.date.today().isoformat()
    mode = " (quick: small shapes, a smoke test only)" if quick else ""
    minutes = (time.perf_counter() - started) / 60
    document = (
        "# Benchmarks: prunus and `torch.nn.utils.prune`\n\n"
        f"Regenerate this page with `{REGENERATE}` (this run took {minutes:.0f} min; "
        "`python benchmarks/bench_core.py --quick` for a smoke run). "
        "Source: `benchmarks/bench_core.py`.\n\n"
        f"Measured {date}{mode}, {revision()}, on: {machine()}; load average "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n"
        "Every figure comes from child processes of the script: one fresh process per pruning run (so peak RSS "
        "is that run's own, `ru_maxrss` minus the value after building the model), and one process per "
        "latency table in which the variants take turns. Times are medians; ratios are taken within one run. "
        "Shared machines are noisy: compare ratios, not absolute times, across runs.\n\n"
        "What differs between the two: torch reparametrizes (`weight_orig` parameter, float `weight_mask` "
        "buffer, a forward pre-hook computing `weight = weight_orig * weight_mask` on every forward); prunus "
        "zeroes the weights in place, keeps the mask packed one bit per entry (and, when restorable, the pruned values) in "
        "non-persistent buffers, and re-zeroes pruned entries in an optimizer step post-hook. So prunus pays "
        "nothing at inference, and pays the re-zeroing once per optimizer step in training.\n\n"
        + "\n\n".join(sections)
        + "\n"
    )
    return document, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small shapes and few runs: a smoke test"
    )
    parser.add_argument("--output", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        task, kwargs = args.child
        print(json.dumps(CHILDREN[task](**json.loads(kwargs))))
        return 0

    document, figures = run(args.quick)
    print(document)
    if args.output:
        args.output.write_text(document)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
