"""prunus on a real model and real data: prune an MLP trained on scikit-learn's digits.

Trains a small MLP (seeded, CPU), prunes 90 % of its weights with one magnitude ranking across all layers
(``global_unstructured``), fine-tunes a few epochs (the pruned weights stay zero through the optimizer on
their own), and compares it with a random-pruning baseline at the same sparsity. Every figure printed is
measured in this run: accuracy, zeros, sizes of files written to a temporary directory, latency.

Run it with ``make demo`` (or ``python examples/demo.py`` in an environment with ``prunus[demo]``).
It exits with status 1 if a check fails (pruned accuracy far below dense, masks lost in training, ...).
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import prunus

SEED = 0
SPARSITY = 0.9
HIDDEN = 512
EPOCHS = 30
FINE_TUNE_EPOCHS = 5
BATCH = 64
LATENCY_RUNS = 300
MAX_ACCURACY_DROP = 0.03  # fine-tuned magnitude pruning must stay within 3 points of dense

Data = tuple[Tensor, Tensor]


def make_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, 10),
    )


def load_data() -> tuple[Data, Data]:
    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images / 16.0, labels, test_size=0.2, random_state=SEED, stratify=labels
    )

    def tensors(x: np.ndarray, y: np.ndarray) -> Data:
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)

    return tensors(x_train, y_train), tensors(x_test, y_test)


def train(model: nn.Module, data: Data, epochs: int, lr: float) -> None:
    x, y = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            index = order[start : start + BATCH]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()  # prunus zeroes the pruned weights again after every step


@torch.inference_mode()
def accuracy(model: nn.Module, data: Data) -> float:
    model.eval()
    x, y = data
    return (model(x).argmax(dim=1) == y).float().mean().item()


def weights(model: nn.Module) -> list[Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def count_zeros(model: nn.Module) -> tuple[int, int]:
    """(zeros, entries) over the Linear weights, counted in the tensors themselves."""
    ws = weights(model)
    return sum(int((w == 0).sum()) for w in ws), sum(w.numel() for w in ws)


def dense_bytes(model: nn.Module, directory: Path, tag: str) -> int:
    path = directory / f"{tag}-dense.pt"
    torch.save(model.state_dict(), path)
    return path.stat().st_size


def pack(state: dict[str, Tensor]) -> dict[str, object]:
    """A compressed checkpoint: for each mostly-zero tensor, its nonzero values and a bit per entry."""
    out: dict[str, object] = {}
    for key, tensor in state.items():
        nonzero = tensor != 0
        if tensor.dim() >= 2 and nonzero.float().mean() < 0.5:
            bits = np.packbits(nonzero.reshape(-1).numpy())
            out[key] = (tuple(tensor.shape), torch.from_numpy(bits), tensor[nonzero].clone())
        else:
            out[key] = tensor.clone()
    return out


def unpack(packed: dict[str, object]) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for key, item in packed.items():
        if isinstance(item, Tensor):
            state[key] = item
            continue
        shape, bits, values = item  # type: ignore[misc]
        numel = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(bits.numpy())[:numel].astype(bool)).reshape(shape)
        tensor = torch.zeros(shape, dtype=values.dtype)
        tensor[mask] = values
        state[key] = tensor
    return state


def packed_bytes(model: nn.Module, directory: Path, tag: str) -> int:
    path = directory / f"{tag}-packed.pt"
    state = model.state_dict()
    torch.save(pack(state), path)
    loaded = unpack(torch.load(path, weights_only=True))
    if loaded.keys() != state.keys() or not all(torch.equal(loaded[k], state[k]) for k in state):
        fail("the packed checkpoint does not load back to the same state_dict")
    return path.stat().st_size


@torch.inference_mode()
def latencies_ms(forwards: dict[str, Callable[[Tensor], Tensor]], x: Tensor) -> dict[str, float]:
    """Median latency of each forward; the variants take turns so that machine noise hits them alike."""
    for forward in forwards.values():
        for _ in range(20):
            forward(x)
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(LATENCY_RUNS):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward(x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def csr_forward(model: nn.Sequential) -> Callable[[Tensor], Tensor]:
    """The same MLP with its weights in torch.sparse CSR form (what unstructured sparsity can buy on CPU)."""
    layers = [
        (m.weight.detach().to_sparse_csr(), m.bias.detach()) if isinstance(m, nn.Linear) else m
        for m in model
    ]

    def forward(x: Tensor) -> Tensor:
        for layer in layers:
            if isinstance(layer, tuple):
                weight, bias = layer
                x = torch.sparse.mm(weight, x.t()).t() + bias
            else:
                x = layer(x)
        return x

    return forward


failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"CHECK FAILED: {message}", file=sys.stderr)


def main() -> int:
    started = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # comparable latencies; the model is too small to gain from threads
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    train_data, test_data = load_data()
    print(
        f"digits: {len(train_data[0])} train / {len(test_data[0])} test images (8x8), "
        f"MLP 64-{HIDDEN}-{HIDDEN}-10, torch {torch.__version__}, 1 thread\n"
    )

    dense = make_model()
    original_keys = list(dense.state_dict())
    train(dense, train_data, EPOCHS, lr=1e-3)
    dense_acc = accuracy(dense, test_data)

    # One magnitude ranking across all three weight matrices, against random pruning of each layer.
    magnitude = copy.deepcopy(dense)
    report = prunus.prune(magnitude, "global_unstructured", amount=SPARSITY)
    print(report, "\n")
    baseline = copy.deepcopy(dense)
    prunus.prune(baseline, "random_unstructured", amount=SPARSITY, seed=SEED)

    one_shot = {
        "magnitude": accuracy(magnitude, test_data),
        "random": accuracy(baseline, test_data),
    }
    masks_before = {k: v.clone() for k, v in prunus.masks(magnitude).items()}
    for model in (magnitude, baseline):
        train(model, train_data, FINE_TUNE_EPOCHS, lr=5e-4)
    tuned = {"magnitude": accuracy(magnitude, test_data), "random": accuracy(baseline, test_data)}

    # The masks survived training: every pruned weight is still exactly zero.
    for name, mask in masks_before.items():
        weight = magnitude.get_parameter(name)
        if bool(weight[~mask].any()):
            fail(f"{name}: pruned entries became nonzero during fine-tuning")
    zeros, _ = count_zeros(magnitude)
    if zeros < report.pruned:
        fail(f"{zeros} zeros in the weights, but the report says {report.pruned} were pruned")

    masked = copy.deepcopy(magnitude)  # a copy that keeps its masks, to time beside the removed one

    # Make the pruning permanent: plain parameters, the original state_dict keys.
    removed = prunus.remove(magnitude)
    prunus.remove(baseline)
    keys = list(magnitude.state_dict())
    fresh = make_model()
    fresh.load_state_dict(magnitude.state_dict())  # strict: same keys, same shapes
    reloaded_acc = accuracy(fresh, test_data)

    timing = latencies_ms(
        {
            "dense": dense,
            "magnitude": masked,  # still carrying masks: its forward is the dense model's forward
            "removed": magnitude,
            "csr": csr_forward(magnitude),
        },
        test_data[0][:BATCH],
    )

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        sizes = {
            "dense": (
                dense_bytes(dense, directory, "dense"),
                packed_bytes(dense, directory, "dense"),
            ),
            "magnitude": (
                dense_bytes(magnitude, directory, "magnitude"),
                packed_bytes(magnitude, directory, "magnitude"),
            ),
            "random": (
                dense_bytes(baseline, directory, "random"),
                packed_bytes(baseline, directory, "random"),
            ),
        }

    columns = ["dense", "magnitude", "random"]
    headers = {
        "dense": "dense",
        "magnitude": f"global L1 {SPARSITY:.0%}",
        "random": f"random {SPARSITY:.0%}",
    }

    def row(label: str, values: dict[str, str]) -> str:
        return f"{label:<34}" + "".join(f"{values.get(c, '-'):>16}" for c in columns)

    models = {"dense": dense, "magnitude": magnitude, "random": baseline}
    params = {c: sum(p.numel() for p in m.parameters()) for c, m in models.items()}
    nonzeros = {c: sum(int(p.count_nonzero()) for p in m.parameters()) for c, m in models.items()}
    sparsity = {
        c: zeros / total for c, (zeros, total) in ((c, count_zeros(m)) for c, m in models.items())
    }
    lines = [
        row("", headers),
        row(
            "test accuracy, one-shot",
            {"dense": f"{dense_acc:.4f}"} | {k: f"{v:.4f}" for k, v in one_shot.items()},
        ),
        row(
            f"test accuracy, +{FINE_TUNE_EPOCHS} epochs fine-tuning",
            {k: f"{v:.4f}" for k, v in tuned.items()},
        ),
        row("weight sparsity (zeros counted)", {k: f"{v:.2%}" for k, v in sparsity.items()}),
        row("parameters", {k: f"{v:,}" for k, v in params.items()}),
        row("nonzero parameters", {k: f"{v:,}" for k, v in nonzeros.items()}),
        row(
            "size: torch.save(state_dict)", {k: f"{v[0] / 1024:,.1f} KiB" for k, v in sizes.items()}
        ),
        row(
            "size: nonzeros + 1-bit mask",
            {k: f"{v[1] / 1024:,.1f} KiB" for k, v in sizes.items()},
        ),
    ]
    print("\n".join(lines))
    print(
        f"\neval latency, batch {BATCH}, 1 thread, median of {LATENCY_RUNS}:\n"
        f"  dense                       {timing['dense']:.3f} ms\n"
        f"  pruned, masks kept          {timing['magnitude']:.3f} ms "
        f"({timing['magnitude'] / timing['dense']:.2f}x dense)\n"
        f"  after prunus.remove         {timing['removed']:.3f} ms "
        f"({timing['removed'] / timing['dense']:.2f}x dense)\n"
        f"  weights as torch.sparse CSR {timing['csr']:.3f} ms "
        f"({timing['csr'] / timing['dense']:.2f}x dense)"
    )
    print(
        f"\nprunus.remove made {len(removed)} parameters permanent: {', '.join(removed)}\n"
        f"state_dict keys unchanged: {keys == original_keys} ({', '.join(keys)})\n"
        f"reloaded into a fresh nn.Sequential with load_state_dict(strict=True): "
        f"accuracy {reloaded_acc:.4f}"
    )

    if tuned["magnitude"] < dense_acc - MAX_ACCURACY_DROP:
        fail(
            f"fine-tuned magnitude pruning reached {tuned['magnitude']:.4f}, more than "
            f"{MAX_ACCURACY_DROP:.0%} below dense {dense_acc:.4f}"
        )
    if one_shot["magnitude"] <= one_shot["random"]:
        fail("one-shot magnitude pruning did not beat random pruning")
    if keys != original_keys:
        fail(f"state_dict keys changed: {keys} != {original_keys}")
    if reloaded_acc != tuned["magnitude"]:
        fail("the reloaded model does not give the pruned model's accuracy")
    if prunus.is_pruned(magnitude):
        fail("the model still carries masks after prunus.remove")
    if sizes["magnitude"][1] >= sizes["magnitude"][0]:
        fail("the packed checkpoint of the pruned model is not smaller than the dense one")

    print(f"\ntotal time {time.perf_counter() - started:.1f} s")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
