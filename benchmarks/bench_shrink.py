"""Channel pruning that really shrinks the model: ``prunus.shrink`` beside Torch-Pruning on a ResNet-18 for CIFAR.

Tables: ``shrink-resnet`` and ``shrink-targets`` (docs/performance.md), ``readme-shrink`` (README.md). Needs the
``shrink`` extra (Torch-Pruning). One torch thread.

50 % of the channels of every prunable group of a ResNet-18 for 32x32 inputs (residuals, BatchNorm with
statistics from a forward pass), at batch 8:

* Torch-Pruning's ``BasePruner`` with L1 magnitude importance (the output layer ignored), against
  ``prunus.shrink(model, x, "l1_structured", amount=0.5)``: the time to prune fresh copies (the two take turns,
  after one untimed round), and eval latency against the dense network, interleaved;
* ``torch.nn.utils.prune.ln_structured`` masks on every convolution, for contrast: zeros, not a smaller model;
* parameters and multiply-accumulates per image (``prunus.analyze``: the Linear and Conv layers) of each.

Run alone with ``python benchmarks/bench_shrink.py [--quick]`` (prints the tables).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from typing import Any

import harness
import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import prunus
from prunus.testing import zoo

AMOUNT = 0.5
BATCH = 8
LABELS = {
    "dense": "dense",
    "torch_pruning": "Torch-Pruning `BasePruner`, L1",
    "prunus": f'`prunus.shrink(model, x, "l1_structured", amount={AMOUNT})`',
    "masks": "torch `ln_structured` masks on every conv (no removal)",
}


def sizes(quick: bool) -> dict[str, Any]:
    return (
        {"width": 16, "prune_runs": 2, "rounds": 5}
        if quick
        else {
            "width": 64,
            "prune_runs": 7,
            "rounds": 21,
        }
    )


def dense_resnet(width: int) -> nn.Module:
    model = zoo.resnet18(width)
    torch.manual_seed(0)
    with (
        torch.no_grad()
    ):  # BatchNorm statistics of a forward pass, so that they are not the identity
        model.train()(torch.randn(32, 3, 32, 32))
    return model.eval()


def with_torch_pruning(model: nn.Module, x: Tensor) -> None:
    import torch_pruning as tp

    pruner = tp.pruner.BasePruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=AMOUNT,
        ignored_layers=[model.head],
    )
    pruner.step()


def with_prunus(model: nn.Module, x: Tensor) -> None:
    prunus.shrink(model, x, "l1_structured", amount=AMOUNT)


def masks_only(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            torch_prune.ln_structured(m, "weight", amount=AMOUNT, n=1, dim=0)


def counts(model: nn.Module, x: Tensor) -> dict[str, int]:
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": prunus.analyze(model, x).macs_dense // x.shape[0],
    }


def run(quick: bool) -> dict[str, str]:
    torch.set_num_threads(1)
    config = sizes(quick)
    prunus.registry.names()
    dense = dense_resnet(config["width"])
    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    print("  time to prune", file=sys.stderr)
    tools: dict[str, Callable[[nn.Module, Tensor], None]] = {
        "torch_pruning": with_torch_pruning,
        "prunus": with_prunus,
    }
    times: dict[str, list[float]] = {name: [] for name in tools}
    pruned: dict[str, nn.Module] = {}
    for r in range(config["prune_runs"] + 1):
        order = list(tools) if r % 2 else list(reversed(tools))
        for name in order:
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            tools[name](model, x)
            if r:  # the first round warms the code paths up
                times[name].append(time.perf_counter() - start)
            pruned[name] = model.eval()
    same = [p.shape for p in pruned["prunus"].parameters()] == [
        p.shape for p in pruned["torch_pruning"].parameters()
    ]
    masked = copy.deepcopy(dense)
    masks_only(masked)
    models = {"dense": dense, **pruned, "masks": masked}

    print("  eval latency", file=sys.stderr)
    latency = harness.sample(
        [partial(m, x) for m in models.values()], rounds=config["rounds"], number=3
    )
    speedups = dict(zip(models, latency.ratios(speedup=True), strict=True))
    ms = dict(zip(models, latency.medians(), strict=True))
    count = {name: counts(m, x) for name, m in models.items()}
    prune_s = {name: statistics.median(t) for name, t in times.items()}
    spread = {name: (min(t), max(t)) for name, t in times.items()}

    rows = []
    for name, label in LABELS.items():
        took = (
            f"{prune_s[name]:.2f} s [{spread[name][0]:.2f}-{spread[name][1]:.2f}]"
            if name in prune_s
            else ""
        )
        rows.append(
            [
                label,
                took,
                f"{ms[name] * 1e3:.1f} ms",
                str(speedups[name]),
                f"{count[name]['params']:,}",
                f"{count[name]['macs']:,}",
            ]
        )
    tp_version = metadata.version("torch-pruning")
    note = (
        f"Time to prune: median of {config['prune_runs']} fresh copies each [min-max], the tools taking "
        "turns. "
        + harness.ratio_note([latency.attempts])
        + f" Torch-Pruning {tp_version}; both pruned models have the same layer shapes: "
        + ("yes." if same else "**no**.")
    )
    caption = harness.caption(threads=1, quick=quick, spread=note)
    title = (
        f"{AMOUNT:.0%} of the channels of a ResNet-18 for CIFAR (width {config['width']}), batch {BATCH}, "
        f"eval latency over {config['rounds']} interleaved rounds of 3 forwards"
    )
    resnet = (
        title
        + "\n\n"
        + harness.table(
            [
                "model",
                "time to prune",
                "eval latency (median)",
                "speed-up vs dense [IQR]",
                "parameters",
                "MACs per image",
            ],
            rows,
        )
        + "\n\n"
        + caption
    )
    mac_ceiling = count["dense"]["macs"] / count["prunus"]["macs"]
    ratio = prune_s["prunus"] / prune_s["torch_pruning"]
    names = list(models)
    versus = harness.per_round(
        latency.seconds[names.index("prunus")], latency.seconds[names.index("torch_pruning")]
    )
    targets = harness.table(
        ["target", "measured", ""],
        [
            [
                "eval latency no higher than Torch-Pruning's, same layer shapes (met when the "
                "interquartile range of the ratio reaches 1.00x)",
                f"{versus} of Torch-Pruning's; shapes {'the same' if same else '**differ**'}",
                "met" if same and versus.low <= 1.0 else "**not met**",
            ],
            [
                "time to prune at most 2x Torch-Pruning's",
                f"{ratio:.2f}x",
                "met" if ratio <= 2 else "**not met**",
            ],
            ["MAC reduction (the ceiling of the speed-up)", f"{mac_ceiling:.2f}x", ""],
        ],
    )
    readme = harness.table(
        ["", "speed-up over dense, batch 8 [IQR]", "parameters", "time to prune"],
        [
            [
                LABELS[name],
                str(speedups[name]),
                f"{count[name]['params']:,}",
                f"{prune_s[name]:.2f} s",
            ]
            for name in ("torch_pruning", "prunus")
        ],
    )
    harness.write_results(
        "shrink",
        {
            "sizes": config,
            "prune_seconds": times,
            "latency": latency.as_dict(),
            "models": list(models),
            "counts": count,
            "same_architecture": same,
        },
        quick=quick,
    )
    return {
        "shrink-resnet": resnet,
        "shrink-targets": targets
        + "\n\n"
        + harness.caption(threads=1, quick=quick, spread="From the table above, in the same run."),
        "readme-shrink": f"ResNet-18 for CIFAR (width {config['width']}), {AMOUNT:.0%} of the channels "
        "removed:\n\n" + readme + "\n\n" + caption,
    }


if __name__ == "__main__":
    harness.main(run)
