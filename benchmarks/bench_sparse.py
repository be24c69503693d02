"""Sparse execution on this machine: the CSR crossover, and how fast each pruning option really runs.

Tables (docs/hardware.md): ``sparse-crossover``, ``sparse-speedup``, ``sparse-select``, ``sparse-analyze``. One
torch thread on the CPU (``python benchmarks/bench_sparse.py --device cuda`` prints the tables for a CUDA device,
with 2:4 semi-structured execution added):

1. ``prunus.probe()``: dense ``F.linear`` against CSR (``prunus.SparseLinear``'s kernel) on square layers of
   512, 1024 and 2048 at batch 1 and 32, sparsities 50 to 98 %; the crossover per shape and overall.
2. An MLP 1024-4096-4096-1024 at batch 1 and 32, pruned by each option and executed each way prunus offers:
   masked dense (what ``prunus.prune`` leaves), CSR or BSR through ``prunus.to_sparse``, and, for channel
   pruning, the smaller dense model ``prunus.shrink`` leaves. Every speed-up is taken round by round against
   the dense model, the two interleaved.
3. What ``prunus.select(model, "auto", ...)`` chooses here, with the probe just measured.
4. ``prunus.analyze(model, x, measure=True)`` on that MLP pruned 50 % unstructured: the report a user sees.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any

import harness
import torch
from torch import nn

import prunus
from prunus.hardware.probing import CACHE_ENV
from prunus.testing import zoo


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"mlp": (256, 512, 512, 256), "batches": (1, 8), "rounds": 5, "probe": (256,)}
    return {"mlp": (1024, 4096, 4096, 1024), "batches": (1, 32), "rounds": 25, "probe": None}


Build = Callable[[], nn.Module]


def options(widths: tuple[int, ...], device: str) -> list[tuple[str, str, Build]]:
    """``(pruning, executed as, builder)`` of every case measured."""

    def dense() -> nn.Module:
        return zoo.mlp(widths, seed=0).to(device).eval()

    def pruned(strategy: str, **options: Any) -> nn.Module:
        model = dense()
        prunus.prune(model, strategy, **options)
        return model

    def sparse(
        layout: str, blocksize: tuple[int, int] | None, strategy: str, **options: Any
    ) -> nn.Module:
        model = pruned(strategy, **options)
        prunus.to_sparse(model, layout=layout, blocksize=blocksize)  # type: ignore[arg-type]
        return model

    def shrunk(amount: float) -> nn.Module:
        model = dense()
        x = torch.randn(2, widths[0], device=device)
        prunus.shrink(model, x, "l1_structured", amount=amount)
        return model

    csr = partial(sparse, "csr", None)
    bsr = partial(sparse, "bsr", (8, 8), "l1_block", block=(8, 8))
    cases: list[tuple[str, str, Build]] = [
        ("unstructured 50 %", "masked dense", partial(pruned, "l1_unstructured", amount=0.5)),
        *(
            (
                f"unstructured {a:.0%}".replace("%", " %"),
                "CSR",
                partial(csr, "l1_unstructured", amount=a),
            )
            for a in (0.5, 0.8, 0.9, 0.95, 0.98)
        ),
        ("2:4 (`l1_nm`)", "masked dense", partial(pruned, "l1_nm")),
        ("2:4 (`l1_nm`)", "CSR", partial(csr, "l1_nm")),
        ("blocks 8x8 75 %", "BSR 8x8", partial(bsr, amount=0.75)),
        ("blocks 8x8 90 %", "BSR 8x8", partial(bsr, amount=0.9)),
        ("channels 50 % (`l1_structured`)", "`prunus.shrink`: smaller dense", partial(shrunk, 0.5)),
        (
            "channels 75 % (`l1_structured`)",
            "`prunus.shrink`: smaller dense",
            partial(shrunk, 0.75),
        ),
    ]
    if device == "cuda":  # pragma: no cover - needs CUDA
        cases.append(
            (
                "2:4 (`l1_nm`)",
                "2:4 semi-structured",
                partial(sparse, "semi_structured", None, "l1_nm"),
            )
        )
    return cases


def speedups(config: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """Each option against the dense MLP, batch by batch, the two interleaved round by round."""
    widths = config["mlp"]
    rows = []
    for batch in config["batches"]:
        dense = zoo.mlp(widths, seed=0).to(device).eval()
        for option, execution, build in options(widths, device):
            model = build()
            half = "semi-structured" in execution
            x = torch.randn(batch, widths[0], generator=torch.Generator().manual_seed(1)).to(device)
            reference, x = (dense.half(), x.half()) if half else (dense, x)
            samples = harness.sample(
                [partial(reference, x), partial(model, x)],
                rounds=config["rounds"],
                number=5
                if batch == 1
                else 1,  # a batch-1 forward is short: average a few per sample
                device=device,
            )
            ratio = samples.ratios(speedup=True)[1]
            dense_s, variant_s = samples.medians()
            rows.append(
                {
                    "option": option,
                    "execution": execution,
                    "batch": batch,
                    "dense_ms": dense_s * 1e3,
                    "variant_ms": variant_s * 1e3,
                    "speedup": ratio,
                    "attempts": samples.attempts,
                }
            )
            print(f"  batch {batch:>3}  {option:<34} {execution:<32} {ratio}", file=sys.stderr)
            if half:  # pragma: no cover - needs CUDA
                dense.float()
    return rows


def speedup_table(rows: list[dict[str, Any]], batches: tuple[int, ...]) -> str:
    keys = list(dict.fromkeys((r["option"], r["execution"]) for r in rows))
    lines = []
    for option, execution in keys:
        cells = [option, execution]
        for batch in batches:
            row = next(
                r
                for r in rows
                if (r["option"], r["execution"], r["batch"]) == (option, execution, batch)
            )
            cells.append(f"{row['speedup']} ({row['variant_ms']:.2f} ms)")
        lines.append(cells)
    return harness.table(
        ["pruning", "executed as", *(f"batch {b}: speed-up [IQR] (time)" for b in batches)], lines
    )


def measure(quick: bool, device: str = "cpu") -> dict[str, str]:
    torch.set_num_threads(1)
    config = sizes(quick)
    widths = config["mlp"]
    shape = "-".join(map(str, widths))
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = cache  # the user's probe cache is left alone
        try:
            print("  probe", file=sys.stderr)
            probe = prunus.probe(
                device,
                shapes=None if config["probe"] is None else [(n, n) for n in config["probe"]],
                batches=config["batches"],
                repeats=config["rounds"],
            )
            print("  pruning options", file=sys.stderr)
            rows = speedups(config, device)
            meta = zoo.mlp(widths).to("meta")
            selections = [
                (
                    objective,
                    sparsity,
                    prunus.select(meta, "auto", objective=objective, sparsity=sparsity),
                )
                for objective, sparsity in (
                    ("latency", 0.5),
                    ("latency", 0.9),
                    ("latency", 0.97),
                    ("memory", 0.7),
                )
            ]
            print("  analyze", file=sys.stderr)
            model = zoo.MLP(widths).to(device).eval()
            prunus.prune(model, "l1_unstructured", amount=0.5)
            x = torch.randn(config["batches"][-1], widths[0], device=device)
            analysis = prunus.analyze(model, x, measure=True, repeats=config["rounds"])
        finally:
            if previous is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = previous

    crossover_rows = [
        [config_, f"{value:.1%}" if value is not None else "never (up to 98 %)"]
        for config_, value in probe.crossovers.items()
    ]
    overall = f"{probe.crossover:.1%}" if probe.crossover is not None else "none"
    crossover_rows.append(["**every shape**", f"**{overall}**"])
    caption = partial(harness.caption, threads=1, quick=quick)
    attempts = [r["attempts"] for r in rows]
    tables = {
        "sparse-crossover": harness.table(
            ["layer (out x in) @ batch", "CSR faster than dense from"], crossover_rows
        )
        + "\n\n"
        + caption(
            spread=f'`prunus.probe("{device}")`: medians of {config["rounds"]} interleaved runs of dense and '
            "CSR per point; the crossover is interpolated where the speed-up crosses 1."
        ),
        "sparse-speedup": f"MLP {shape}, whole forward, against the dense MLP ({config['rounds']} interleaved "
        "rounds per comparison, of 5 forwards each at batch 1)\n\n"
        + speedup_table(rows, config["batches"])
        + "\n\n"
        + caption(spread=harness.ratio_note(attempts)),
        "sparse-select": harness.table(
            ["objective", "sparsity", "strategy", "options"],
            [
                [objective, f"{sparsity:.0%}", f"`{chosen.strategy}`", f"`{chosen.options}`"]
                for objective, sparsity, chosen in selections
            ],
        )
        + "\n\n"
        + caption(
            spread=f'`prunus.select(model, "auto", ...)` on the MLP {shape}, with the probe above cached.'
        ),
        "sparse-analyze": "```\n"
        + str(analysis)
        + "\n```\n\n"
        + caption(
            spread=f"`prunus.analyze(model, x, measure=True, repeats={config['rounds']})` on `zoo.MLP({widths})` "
            f"pruned with `l1_unstructured`, amount 0.5, at batch {config['batches'][-1]}, the probe above "
            "cached; latencies are medians of interleaved runs."
        ),
    }
    harness.write_results(
        "sparse",
        {
            "sizes": config,
            "device": device,
            "probe": probe.model_dump(mode="json"),
            "options": [{**r, "speedup": vars(r["speedup"])} for r in rows],
            "selections": [
                {"objective": o, "sparsity": s, **c.model_dump(mode="json")}
                for o, s, c in selections
            ],
            "analysis": analysis.model_dump(mode="json"),
        },
        quick=quick,
    )
    return tables


def run(quick: bool) -> dict[str, str]:
    return measure(quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    harness.main(partial(measure, device=args.device))
