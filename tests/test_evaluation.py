"""Evaluation: accuracy, counts, measured file sizes, the compressed format, latency, summary, comparison."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

import prunus
from prunus import ConfigError
from prunus.testing import zoo
from prunus.workflow.evaluation import batches


def mlp(seed: int = 0) -> nn.Sequential:
    return zoo.mlp((16, 64, 4), seed=seed)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    return x, mlp()(x).argmax(dim=1).detach()


def test_accuracy_on_tensors_and_on_batches(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = mlp()
    assert prunus.accuracy(model, data) == 1.0
    x, y = data
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 100, 32)]
    assert prunus.accuracy(model, loader) == 1.0
    wrong = (x, (y + 1) % 4)
    assert prunus.accuracy(model, wrong) == 0.0
    model.train()
    prunus.accuracy(model, data)
    assert model.training  # the flag is put back


def test_batches_shuffle_is_seeded_and_complete(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    first = torch.cat([y for _, y in batches(data, 30, shuffle=True, seed=3)])
    again = torch.cat([y for _, y in batches(data, 30, shuffle=True, seed=3)])
    assert torch.equal(first, again)
    assert sorted(first.tolist()) == sorted(data[1].tolist())


@pytest.mark.parametrize("bad", [torch.zeros(3), 42, [(torch.zeros(2),)]])
def test_bad_data_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"pair|batch"):
        prunus.accuracy(mlp(), bad)  # type: ignore[arg-type]


def test_count_parameters_counts_zeros_in_the_tensors() -> None:
    model = mlp()
    total = sum(p.numel() for p in model.parameters())
    assert prunus.count_parameters(model) == (total, total)
    report = prunus.prune(model, "l1_unstructured", amount=0.75)
    assert prunus.count_parameters(model) == (total, total - report.pruned)


def test_compressed_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.9)
    size = prunus.save_compressed(model, tmp_path / "c.pt")
    assert size == (tmp_path / "c.pt").stat().st_size
    state = prunus.load_compressed(tmp_path / "c.pt")
    original = model.state_dict()
    assert list(state) == list(original)
    for key, value in original.items():
        assert torch.equal(state[key], value) and state[key].dtype == value.dtype
    fresh = mlp(seed=5)
    fresh.load_state_dict(state)
    x = torch.randn(3, 16)
    assert torch.equal(fresh(x), model(x))


def test_load_compressed_refuses_other_files(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(prunus.StateError, match="not a prunus compressed checkpoint"):
        prunus.load_compressed(tmp_path / "plain.pt")


def test_model_size_measures_real_files(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))
    dense = prunus.model_size(model, tmp_path / "dense")
    assert dense.dense_bytes == (tmp_path / "dense" / "dense.pt").stat().st_size
    assert dense.compressed_bytes == (tmp_path / "dense" / "compressed.safetensors").stat().st_size
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert dense.dense_bytes == pytest.approx(len(buffer.getvalue()), rel=0.05)
    prunus.prune(model, "l1_unstructured", amount=0.9)
    sparse = prunus.model_size(model)
    assert sparse.dense_bytes == pytest.approx(dense.dense_bytes, rel=0.01)  # zeros cost as much
    assert sparse.compressed_bytes < dense.dense_bytes / 3
    assert sparse.compression_ratio > 3


def test_latency_is_a_positive_median() -> None:
    model = mlp()
    assert prunus.latency_ms(model, torch.randn(8, 16), runs=3, warmup=1) > 0
    with pytest.raises(ConfigError, match="runs"):
        prunus.latency_ms(model, torch.randn(8, 16), runs=0)


def test_evaluate_measures_everything(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    result = prunus.evaluate(model, data=data, example_input=data[0][:8], latency_runs=3, label="p")
    assert result.label == "p"
    assert 0 <= (result.accuracy or 0) <= 1
    assert result.parameters == 1348
    assert result.nonzero_parameters == 1348 - 640
    assert result.sparsity == pytest.approx(640 / 1348)
    assert result.latency_ms is not None and result.latency_ms > 0
    assert result.compression_ratio == result.dense_bytes / result.compressed_bytes
    bare = prunus.evaluate(model)
    assert bare.accuracy is None and bare.latency_ms is None
    assert prunus.evaluate(model, evaluator=lambda m: 0.25).accuracy == 0.25
    with pytest.raises(ConfigError, match="must return a number"):
        prunus.evaluate(model, evaluator=lambda m: None)  # type: ignore[arg-type,return-value]


def test_compare_side_by_side(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    dense = mlp()
    pruned = mlp()
    prunus.prune(pruned, "l1_unstructured", amount=0.9)
    comparison = prunus.compare(
        {"dense": dense, "pruned": pruned}, data=data, example_input=data[0][:8], latency_runs=2
    )
    assert [r.label for r in comparison.rows] == ["dense", "pruned"]
    assert comparison["dense"].accuracy == 1.0
    text = str(comparison)
    for word in (
        "accuracy",
        "nonzero parameters",
        "size, torch.save",
        "size, compressed",
        "latency",
    ):
        assert word in text
    assert "compression vs dense" in text
    markdown = comparison.to_markdown()
    assert markdown.startswith("|  | dense | pruned |")
    with pytest.raises(KeyError):
        comparison["nope"]
    with pytest.raises(ConfigError):
        prunus.compare({})


def test_summary_shows_per_layer_sparsity_and_masks() -> None:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5, include=["0.weight"])
    text = prunus.summary(model)
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "0.weight" in text and "0.weight *" in text
    assert lines["0.weight"].split()[-1] == "50.0%"
    assert lines["2.weight"].split()[-1] == "0.0%"
    assert "1 parameters carry a prunus mask" in text
    prunus.remove(model)
    assert "0 parameters carry" in prunus.summary(model)
