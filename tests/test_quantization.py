"""Pruning plus dynamic int8 quantization: the zeros survive, and the three models side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import prunus
from prunus.testing import zoo


def mlp(seed: int = 0) -> nn.Sequential:
    return zoo.mlp((32, 64, 64, 5), seed=seed)


@pytest.fixture
def pruned() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.8)
    return model, {name: mask.clone() for name, mask in prunus.masks(model).items()}


def test_quantize_replaces_linear_layers_and_keeps_the_original(
    pruned: tuple[nn.Module, dict[str, torch.Tensor]],
) -> None:
    model, _ = pruned
    quantized = prunus.quantize(model)
    assert quantized is not model
    assert isinstance(model[0], nn.Linear)  # the original is untouched, masks and all
    assert prunus.is_pruned(model)
    assert not isinstance(quantized[0], nn.Linear)
    assert set(prunus.quantized_weights(quantized)) == {"0", "2", "4"}
    x = torch.randn(16, 32)
    assert torch.allclose(quantized(x), model(x), atol=0.05)


@pytest.mark.parametrize("remove_first", [False, True])
def test_pruned_entries_are_still_zero_after_quantization(
    pruned: tuple[nn.Module, dict[str, torch.Tensor]], remove_first: bool
) -> None:
    model, masks = pruned
    if remove_first:
        prunus.remove(model)
    quantized = prunus.quantize(model)
    for name, weight in prunus.quantized_weights(quantized).items():
        mask = masks[f"{name}.weight"]
        assert bool((weight[~mask] == 0).all()), name
        # Kept entries stay nonzero unless they were tiny enough to round to zero.
        assert int((weight[mask] != 0).sum()) >= 0.95 * int(mask.sum())
    total, nonzero = prunus.count_parameters(quantized)
    assert total == prunus.count_parameters(model)[0]
    assert nonzero <= prunus.count_parameters(model)[1]


def test_quantize_in_place_and_bad_dtype(pruned: tuple[nn.Module, dict[str, torch.Tensor]]) -> None:
    model, _ = pruned
    with pytest.raises(prunus.ConfigError, match="dtype"):
        prunus.quantize(model, dtype=torch.int32)
    same = prunus.quantize(model, inplace=True)
    assert same is model


def test_compressed_checkpoint_of_a_quantized_model_round_trips(
    pruned: tuple[nn.Module, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    model, _ = pruned
    quantized = prunus.quantize(model)
    prunus.save_compressed(quantized, tmp_path / "q.pt")
    state = prunus.load_compressed(tmp_path / "q.pt")
    fresh = prunus.quantize(mlp(seed=9))
    fresh.load_state_dict(state)
    x = torch.randn(4, 32)
    assert torch.equal(fresh(x), quantized(x))


def test_dense_pruned_and_quantized_side_by_side(
    pruned: tuple[nn.Module, dict[str, torch.Tensor]],
) -> None:
    model, _ = pruned
    dense = mlp()
    x = torch.randn(64, 32)
    data = (x, dense(x).argmax(dim=1).detach())
    comparison = prunus.compare_quantized(
        dense, model, data=data, example_input=x[:8], latency_runs=2, quantize_dense=True
    )
    labels = [r.label for r in comparison.rows]
    assert labels == ["dense", "dense + int8", "pruned", "pruned + int8"]
    rows = {r.label: r for r in comparison.rows}
    assert rows["dense"].accuracy == 1.0
    assert all(r.latency_ms is not None for r in comparison.rows)
    assert rows["pruned + int8"].dense_bytes < rows["pruned"].dense_bytes / 2
    assert rows["pruned + int8"].compressed_bytes < rows["pruned"].compressed_bytes
    assert rows["pruned"].compressed_bytes < rows["dense"].compressed_bytes / 2
    assert rows["pruned + int8"].nonzero_parameters <= rows["pruned"].nonzero_parameters
    assert "pruned + int8" in str(comparison)
    three = prunus.compare_quantized(dense, model, data=data)
    assert [r.label for r in three.rows] == ["dense", "pruned", "pruned + int8"]
