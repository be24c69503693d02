"""Sparse execution on this machine: the CSR crossover, and the measured speedup of each pruning option.

Run (the figures in ``docs/hardware.md`` come from this command; it prints the markdown tables)::

    python benchmarks/bench_sparse.py --repeats 25

``--quick`` runs small shapes for a smoke test; ``--threads`` sets torch's intra-op threads (default 1);
``--output`` and ``--json`` write the tables and the raw figures to files.

What is measured, all in this process, on the CPU (and on CUDA with ``--device cuda``):

1. ``prunus.probe()``: dense ``F.linear`` against CSR (``prunus.SparseLinear``'s kernel) for square layers of
   512, 1024 and 2048 at batch 1 and 32, sparsities 50 to 98 %; the crossover per shape and overall.
2. An MLP 1024-4096-4096-1024 (batch 1 and 32) pruned by each option and executed each way it can be:
   masked dense (what ``prunus.prune`` leaves), CSR or BSR through ``prunus.to_sparse``, and, for structured
   pruning, the smaller dense MLP left once the zero neurons are removed. Every latency is the median of
   interleaved runs against the dense model (dense, variant, dense, ...), so the speedup is a ratio measured
   side by side.
3. What ``prunus.select(model, "auto", ...)`` chooses here at a few sparsities, with the probe just measured.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunus
from prunus.hardware.probing import CACHE_ENV
from prunus.hardware.timing import time_interleaved


def mlp(sizes: list[int], device: str) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device).eval()


def shrink(model: nn.Sequential) -> nn.Sequential:
    """The smaller dense MLP ``prunus.shrink`` leaves when every all-zero output neuron is removed.

    The removed neurons' outputs are relu(bias), constants ``shrink(exact=False)`` folds into the next layer's
    bias, so the outputs are equal (checked here).
    """
    original, model = model, copy.deepcopy(model)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(4, linears[0].in_features, device=linears[0].weight.device)
    prunus.shrink(model, x, exact=False)
    torch.testing.assert_close(model(x), original(x), rtol=1e-4, atol=1e-4)  # the same function
    return model


def variants(sizes: list[int], device: str) -> list[tuple[str, str, Callable[[], nn.Module]]]:
    """(pruning option, execution, builder) for every case measured."""
    head = f"{2 * (len(sizes) - 2)}.weight"  # the output layer, left whole by structured options

    def pruned(strategy: str, **options: Any) -> nn.Module:
        model = mlp(sizes, device)
        exclude = head if strategy.endswith(("_aligned", "_structured")) else None
        prunus.prune(model, strategy, exclude=exclude, **options)
        return model

    def sparse(
        strategy: str, layout: str = "auto", blocksize: Any = None, **options: Any
    ) -> nn.Module:
        model = pruned(strategy, **options)
        prunus.to_sparse(model, layout=layout, blocksize=blocksize)  # type: ignore[arg-type]
        return model

    out: list[tuple[str, str, Callable[[], nn.Module]]] = [
        ("unstructured 50 %", "masked dense", partial(pruned, "l1_unstructured", amount=0.5)),
        ("unstructured 50 %", "CSR", partial(sparse, "l1_unstructured", amount=0.5)),
        ("unstructured 80 %", "CSR", partial(sparse, "l1_unstructured", amount=0.8)),
        ("unstructured 90 %", "CSR", partial(sparse, "l1_unstructured", amount=0.9)),
        ("unstructured 95 %", "CSR", partial(sparse, "l1_unstructured", amount=0.95)),
        ("unstructured 98 %", "CSR", partial(sparse, "l1_unstructured", amount=0.98)),
        ("2:4 (nm)", "masked dense", partial(pruned, "l1_nm")),
        ("2:4 (nm)", "CSR", partial(sparse, "l1_nm", layout="csr")),
        (
            "block 8x8 75 %",
            "BSR 8x8",
            partial(sparse, "l1_block", "bsr", (8, 8), amount=0.75, block=(8, 8)),
        ),
        (
            "block 8x8 90 %",
            "BSR 8x8",
            partial(sparse, "l1_block", "bsr", (8, 8), amount=0.9, block=(8, 8)),
        ),
        ("aligned 50 % (rows)", "masked dense", partial(pruned, "l1_aligned", amount=0.5)),
        ("aligned 50 % (rows)", "shrunk dense", lambda: shrink(pruned("l1_aligned", amount=0.5))),
        ("aligned 75 % (rows)", "shrunk dense", lambda: shrink(pruned("l1_aligned", amount=0.75))),
    ]
    if device == "cuda":  # pragma: no cover - needs CUDA
        out.append(("2:4 (nm)", "2:4 semi-structured fp16", partial(_semi, sizes)))
    return out


def _semi(sizes: list[int]) -> nn.Module:  # pragma: no cover - needs CUDA
    model = mlp(sizes, "cuda").half()
    prunus.prune(model, "l1_nm")
    prunus.to_sparse(model, layout="semi_structured")
    return model


def measure_options(
    sizes: list[int], batches: list[int], device: str, repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        x = torch.randn(batch, sizes[0], device=device)
        dense = mlp(sizes, device)
        for option, execution, build in variants(sizes, device):
            model = build()
            xin = x.half() if execution.startswith("2:4 semi") else x
            reference = dense.half() if execution.startswith("2:4 semi") else dense
            with torch.inference_mode():
                dense_s, variant_s = time_interleaved(
                    [partial(reference, xin), partial(model, xin)], repeats=repeats, device=device
                )
            rows.append(
                {
                    "option": option,
                    "execution": execution,
                    "batch": batch,
                    "dense_ms": dense_s * 1e3,
                    "variant_ms": variant_s * 1e3,
                    "speedup": dense_s / variant_s,
                }
            )
            print(
                f"  batch {batch:>3}  {option:<22} {execution:<24} {dense_s * 1e3:9.3f} ms "
                f"{variant_s * 1e3:9.3f} ms  {dense_s / variant_s:5.2f}x",
                file=sys.stderr,
            )
    return rows


def markdown(figures: dict[str, Any]) -> str:
    probe = prunus.ProbeResult.model_validate(figures["probe"])
    lines = [
        f"Measured {figures['date']} on {figures['machine']}, torch {figures['torch']}, "
        f"{figures['threads']} thread(s), device {figures['device']}; command: `{figures['command']}`. "
        f"Load average (1 min) {figures['load'][0]} before and {figures['load'][1]} after the run: other "
        "processes shared the machine's cores, so absolute times vary more than the side-by-side ratios.",
        "",
        "**CSR crossover** (`prunus.probe()`): the sparsity above which a CSR layer was faster than the "
        "dense one.",
        "",
        "| layer (out x in) @ batch | crossover |",
        "|---|---|",
    ]
    for config, value in probe.crossovers.items():
        lines.append(
            f"| {config} | {f'{value:.1%}' if value is not None else 'never (up to 98 %)'} |"
        )
    overall = f"{probe.crossover:.1%}" if probe.crossover is not None else "none"
    lines += [f"| **every shape** | **{overall}** |", ""]
    lines += [
        "**Speedup over the dense model**, MLP "
        f"{'-'.join(map(str, figures['sizes']))}, whole forward, median of interleaved runs:",
        "",
        "| pruning | executed as | " + " | ".join(f"batch {b}" for b in figures["batches"]) + " |",
        "|---|---|" + "---|" * len(figures["batches"]),
    ]
    keys = list(dict.fromkeys((r["option"], r["execution"]) for r in figures["options"]))
    for option, execution in keys:
        cells = []
        for batch in figures["batches"]:
            row = next(
                r
                for r in figures["options"]
                if (r["option"], r["execution"], r["batch"]) == (option, execution, batch)
            )
            cells.append(f"{row['speedup']:.2f}x ({row['variant_ms']:.2f} ms)")
        lines.append(f"| {option} | {execution} | " + " | ".join(cells) + " |")
    dense = {
        b: statistics.median(r["dense_ms"] for r in figures["options"] if r["batch"] == b)
        for b in figures["batches"]
    }
    lines += [
        "",
        "Dense model: " + ", ".join(f"{v:.2f} ms at batch {b}" for b, v in dense.items()) + ".",
        "",
        "**`prunus.select(model, 'auto', ...)` here**, with that probe cached:",
        "",
        "| objective | sparsity | strategy | options |",
        "|---|---|---|---|",
    ]
    for s in figures["selections"]:
        lines.append(
            f"| {s['objective']} | {s['sparsity']:.0%} | `{s['strategy']}` | `{s['options']}` |"
        )
    return "\n".join(lines) + "\n"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per median")
    parser.add_argument("--output", type=Path, help="write the markdown tables here")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = _load()
    repeats = args.repeats or (3 if args.quick else 15)
    sizes = [256, 512, 512, 256] if args.quick else [1024, 4096, 4096, 1024]
    batches = [1, 8] if args.quick else [1, 32]
    with tempfile.TemporaryDirectory() as cache:
        os.environ[CACHE_ENV] = cache  # leave the user's probe cache alone
        print("probe ...", file=sys.stderr)
        probe = prunus.probe(
            args.device,
            shapes=[(256, 256)] if args.quick else None,
            batches=batches if args.quick else None,
            repeats=repeats,
        )
        print(probe, file=sys.stderr)
        print("pruning options ...", file=sys.stderr)
        options = measure_options(sizes, batches, args.device, repeats)
        model = mlp(sizes, "meta")
        selections = []
        for objective, sparsity in (
            ("latency", 0.5),
            ("latency", 0.9),
            ("latency", 0.97),
            ("memory", 0.7),
        ):
            chosen = prunus.select(model, "auto", objective=objective, sparsity=sparsity)  # type: ignore[arg-type]
            selections.append(
                {
                    "objective": objective,
                    "sparsity": sparsity,
                    "strategy": chosen.strategy,
                    "options": chosen.options,
                    "reason": chosen.reason,
                }
            )
    command = "python benchmarks/bench_sparse.py" + " ".join(
        [""] + [a for a in (argv if argv is not None else sys.argv[1:])]
    )
    figures = {
        "load": [load_before, _load()],
        "date": datetime.date.today().isoformat(),
        "machine": f"{probe.device_name} ({platform.machine()}, {os.cpu_count()} logical CPUs)",
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device,
        "command": command,
        "sizes": sizes,
        "batches": batches,
        "probe": probe.model_dump(mode="json"),
        "options": options,
        "selections": selections,
    }
    text = markdown(figures)
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
