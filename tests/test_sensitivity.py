"""Per-layer amounts in ``prune``, and sensitivity analysis with suggested per-layer amounts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from support import pruned_counts
from torch import nn

import prunus
from prunus import ConfigError, SensitivityCurve, SensitivityResult, TargetError
from prunus.testing import zoo


def mlp(seed: int = 0) -> nn.Sequential:
    return zoo.mlp((12, 20, 9, 3), seed=seed)


# -- prune(amounts=...) -----------------------------------------------------------------------------------


def test_per_layer_amounts_by_pattern_first_match_wins() -> None:
    model = mlp()
    report = prunus.prune(model, "l1_unstructured", amounts={"0.weight": 0.5, "*.weight": 3})
    assert pruned_counts(model) == {"0.weight": 120, "2.weight": 3, "4.weight": 3}
    assert report.options == {"amounts": {"0.weight": 0.5, "*.weight": 3}}
    assert report["0.weight"].newly_pruned == 120


def test_unmatched_layers_take_amount_or_are_left_alone() -> None:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amounts={"2.weight": 0.5})
    assert pruned_counts(model) == {"2.weight": 90}
    model = mlp()
    report = prunus.prune(model, "l1_unstructured", amounts={"2.weight": 0.5}, amount=0.25)
    assert pruned_counts(model) == {"0.weight": 60, "2.weight": 90, "4.weight": 7}
    assert report.options["amount"] == 0.25


def test_per_layer_amounts_compose_with_earlier_prunes() -> None:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.5)
    prunus.prune(model, "l1_unstructured", amounts={"0.weight": 0.5})  # of the remaining 120
    assert pruned_counts(model)["0.weight"] == 180


def test_a_global_strategy_ranks_each_amount_group_together() -> None:
    model = mlp()
    prunus.prune(model, "l1_global", amounts={"0.weight": 0.5, "[24].weight": 10})
    counts = pruned_counts(model)
    assert counts["0.weight"] == 120
    assert counts["2.weight"] + counts["4.weight"] == 10


def test_per_layer_amounts_are_atomic(snapshot: Callable[[nn.Module], Any]) -> None:
    model = mlp()
    before = snapshot(model)
    with pytest.raises(prunus.AmountError):
        prunus.prune(model, "l1_unstructured", amounts={"0.weight": 0.5, "4.weight": 1000})
    assert snapshot(model) == before


@pytest.mark.parametrize(
    ("strategy", "kwargs", "error", "message"),
    [
        ("l1_unstructured", {"amounts": {"nothing*": 0.5}}, TargetError, "matches none"),
        ("l1_unstructured", {"amounts": {"0.weight": 1.5}}, ConfigError, r"amounts\['0.weight'\]"),
        ("l1_unstructured", {"amounts": {}}, ConfigError, "empty"),
        ("l1_unstructured", {"amounts": [0.5]}, ConfigError, "glob patterns"),
        ("magnitude_threshold", {"amounts": {"0.weight": 0.5}}, ConfigError, "no 'amount' option"),
    ],
)
def test_bad_per_layer_amounts(
    strategy: str, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        prunus.prune(mlp(), strategy, **kwargs)


def test_per_layer_amounts_need_a_strategy_name() -> None:
    strategy = prunus.registry.get("l1_unstructured", amount=0.5)
    with pytest.raises(ConfigError, match="registered name"):
        prunus.prune(mlp(), strategy, amounts={"0.weight": 0.5})


# -- sensitivity --------------------------------------------------------------------------------------------


@pytest.fixture
def task() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model = mlp()
    x = torch.randn(128, 12, generator=torch.Generator().manual_seed(1))
    return model, (x, model(x).argmax(dim=1).detach())  # the dense model is 100 % right


def test_sensitivity_prunes_each_layer_alone_and_leaves_the_model_as_it_was(
    task: tuple[nn.Module, Any], snapshot: Callable[[nn.Module], Any]
) -> None:
    model, data = task
    before = snapshot(model)
    seen: list[dict[str, int]] = []

    def evaluator(m: nn.Module) -> float:
        seen.append(pruned_counts(m))
        return prunus.accuracy(m, data)

    result = prunus.sensitivity(model, evaluator, amounts=[0.5, 0.9])
    assert snapshot(model) == before
    assert not prunus.is_pruned(model)
    assert seen[0] == {}  # the baseline
    assert seen[1:] == [
        {"0.weight": 120},
        {"0.weight": 216},
        {"2.weight": 90},
        {"2.weight": 162},
        {"4.weight": 14},
        {"4.weight": 24},
    ]
    assert result.baseline == 1.0
    assert [c.name for c in result.curves] == ["0.weight", "2.weight", "4.weight"]
    assert [c.numel for c in result.curves] == [240, 180, 27]
    assert all(len(c.metrics) == 2 for c in result.curves)
    assert "0.weight" in str(result) and "90%" in str(result)


def test_sensitivity_with_data_and_include(task: tuple[nn.Module, Any]) -> None:
    model, data = task
    result = prunus.sensitivity(model, data=data, amounts=[0.3], include=["2.weight"])
    assert [c.name for c in result.curves] == ["2.weight"]
    assert 0.0 <= result["2.weight"].metrics[0] <= 1.0


def test_sensitivity_restores_even_when_the_evaluator_fails(
    task: tuple[nn.Module, Any], snapshot: Callable[[nn.Module], Any]
) -> None:
    model, _ = task
    before = snapshot(model)
    calls = []

    def evaluator(m: nn.Module) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return 0.5

    with pytest.raises(RuntimeError, match="boom"):
        prunus.sensitivity(model, evaluator, amounts=[0.5])
    assert snapshot(model) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"evaluator": lambda m: 1.0, "data": "x"}, "exactly one of"),
        ({"evaluator": lambda m: 1.0, "amounts": []}, "empty"),
        ({"evaluator": lambda m: 1.0, "amounts": [2.0]}, "not a fraction"),
        ({"evaluator": lambda m: 1.0, "strategy_options": {"amount": 0.1}}, "amount"),
        ({"evaluator": lambda m: "high"}, "must return a number"),
    ],
)
def test_sensitivity_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prunus.sensitivity(mlp(), **kwargs)


def test_sensitivity_refuses_a_pruned_model() -> None:
    model = mlp()
    prunus.prune(model, "l1_unstructured", amount=0.1)
    with pytest.raises(ConfigError, match=r"prunus\.remove"):
        prunus.sensitivity(model, lambda m: 1.0)


# -- suggestions ----------------------------------------------------------------------------------------------


def synthetic() -> SensitivityResult:
    """Layer a is robust, b fragile, c in between; sizes 100, 100, 200."""
    amounts = [0.25, 0.5, 0.75]
    return SensitivityResult(
        strategy="l1_unstructured",
        options={},
        baseline=0.9,
        higher_is_better=True,
        curves=[
            SensitivityCurve(name="a", numel=100, amounts=amounts, metrics=[0.9, 0.9, 0.89]),
            SensitivityCurve(name="b", numel=100, amounts=amounts, metrics=[0.8, 0.5, 0.2]),
            SensitivityCurve(name="c", numel=200, amounts=amounts, metrics=[0.9, 0.88, 0.7]),
        ],
    )


def test_suggest_by_max_loss() -> None:
    result = synthetic()
    assert result.suggest(max_loss=0.0) == {"a": 0.5, "b": 0.0, "c": 0.25}
    assert result.suggest(max_loss=0.02 + 1e-9) == {"a": 0.75, "b": 0.0, "c": 0.5}
    assert result.losses("b") == pytest.approx([0.1, 0.4, 0.7])


def test_suggest_hits_the_target_sparsity_exactly_least_sensitive_first() -> None:
    result = synthetic()
    for target in (0.1, 0.3, 0.4, 0.5, 0.6):
        amounts = result.suggest(target_sparsity=target)
        total = sum(amounts[c.name] * c.numel for c in result.curves) / 400
        assert total == pytest.approx(target)
        assert amounts["b"] <= amounts["a"]  # the fragile layer is pruned least
    with pytest.raises(ConfigError, match="above"):
        result.suggest(target_sparsity=0.8)
    with pytest.raises(ConfigError, match="exactly one"):
        result.suggest()


def test_suggested_amounts_feed_prune(task: tuple[nn.Module, Any]) -> None:
    model, data = task
    result = prunus.sensitivity(model, data=data, amounts=[0.25, 0.5, 0.75])
    amounts = result.suggest(target_sparsity=0.5)
    report = prunus.prune(model, "l1_unstructured", amounts=amounts)
    assert report.sparsity == pytest.approx(0.5, abs=0.01)


def test_lower_is_better_metrics() -> None:
    result = SensitivityResult(
        strategy="l1_unstructured",
        options={},
        baseline=0.1,
        higher_is_better=False,
        curves=[SensitivityCurve(name="a", numel=10, amounts=[0.5, 0.9], metrics=[0.15, 0.6])],
    )
    assert result.losses("a") == pytest.approx([0.05, 0.5])
    assert result.suggest(max_loss=0.1) == {"a": 0.5}
