"""prunus-taylor's tests: the prunus conformance kit, then what is special about Taylor scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunus
from prunus.testing import StrategyCase, StrategyTests

pytest_plugins = ["prunus.testing.pytest_plugin"]


class TestTaylorConformance(StrategyTests):
    @pytest.fixture(scope="class", params=prunus.registry.names("taylor_*"))
    @classmethod
    def prunus_strategy(cls, request: pytest.FixtureRequest) -> StrategyCase:
        return StrategyCase(request.param, gradients=True)  # the kit fills .grad before pruning


def test_prunus_finds_the_installed_plugin() -> None:
    names = prunus.registry.names("taylor_*")
    assert {"taylor_unstructured", "taylor_structured", "taylor_global"} <= set(names)
    provider = prunus.registry.info("taylor_structured").provider
    assert provider.distribution == "prunus-taylor"


def test_it_prunes_the_smallest_weight_times_gradient() -> None:
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    layer.weight.grad = torch.tensor([[0.1, 1.0, 1.0, 10.0]])  # |w * grad| = 0.4, 3, 2, 10
    prunus.prune(layer, "taylor_unstructured", amount=2)
    assert layer.weight.tolist() == [[0.0, 3.0, 0.0, 1.0]]


def test_structured_sums_each_slice() -> None:
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0], [5.0, 5.0], [1.0, 2.0]]))
    layer.weight.grad = torch.ones(3, 2)  # row scores 2, 10, 3
    prunus.prune(layer, "taylor_structured", amount=1, dim=0)
    assert layer.weight.tolist() == [[0.0, 0.0], [5.0, 5.0], [1.0, 2.0]]


def test_after_a_real_backward_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    inputs, targets = torch.randn(32, 8), torch.randint(0, 3, (32,))
    nn.functional.cross_entropy(model(inputs), targets).backward()
    report = prunus.prune(model, "taylor_global", amount=0.5)
    assert report.pruned == round(0.5 * (8 * 16 + 16 * 3))


def test_no_gradient_is_a_clear_error() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(prunus.ConfigError, match=r"no gradient: call loss\.backward\(\)"):
        prunus.prune(model, "taylor_unstructured", amount=0.5)
    assert not prunus.is_pruned(model)  # the model was left as it was


def test_a_non_finite_gradient_is_a_clear_error() -> None:
    model = nn.Linear(3, 2)
    model.weight.grad = torch.full((2, 3), float("nan"))
    model.bias.grad = torch.zeros(2)
    with pytest.raises(prunus.ConfigError, match="inf or NaN"):
        prunus.prune(model, "taylor_unstructured", amount=0.5)
