"""prunus-actnorm's tests: the prunus conformance kit (with calibration batches), then what actnorm computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunus
from prunus.testing import StrategyCase, StrategyTests

pytest_plugins = ["prunus.testing.pytest_plugin"]


class TestActNormConformance(StrategyTests):
    @pytest.fixture(
        scope="class", params=["actnorm_unstructured", "actnorm_structured", "actnorm_global"]
    )
    @classmethod
    def prunus_strategy(cls, request: pytest.FixtureRequest) -> StrategyCase:
        return StrategyCase(
            request.param, inputs=True
        )  # the kit passes a calibration batch as data


def test_prunus_finds_the_installed_plugin() -> None:
    assert "actnorm_unstructured" in prunus.registry.names("actnorm_*")
    assert prunus.registry.info("actnorm_unstructured").provider.distribution == "prunus-actnorm"


def test_a_weight_scores_its_magnitude_times_its_input_norm() -> None:
    layer = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 4.0]]))
    batch = torch.tensor([[3.0, 0.5, 0.1], [4.0, 0.5, 0.1]])  # input norms 5, 0.71, 0.14
    prunus.prune(layer, "actnorm_unstructured", amount=1, data=batch)  # scores 5, 0.71, 0.57
    assert layer.weight.tolist() == [[1.0, 1.0, 0.0]]


def test_grouped_convolutions_read_their_own_input_channels() -> None:
    conv = nn.Conv2d(
        4, 2, 1, groups=2, bias=False
    )  # filter 0 reads channels 0-1, filter 1 channels 2-3
    with torch.no_grad():
        conv.weight.fill_(1.0)
    batch = torch.zeros(1, 4, 1, 1)
    batch[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 0.5])
    prunus.prune(conv, "actnorm_unstructured", amount=2, data=batch)
    assert prunus.masks(conv)["weight"].flatten().tolist() == [False, True, True, False]


def test_the_model_is_left_as_it_was() -> None:
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)
    ).train()
    stats, batch = model[1].running_mean.clone(), torch.randn(16, 4)
    state = torch.get_rng_state()
    prunus.prune(model, "actnorm_unstructured", amount=0.5, data=batch)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, stats)
    assert torch.equal(torch.get_rng_state(), state)


def test_no_batch_is_a_clear_error() -> None:
    with pytest.raises(prunus.ConfigError, match="needs a calibration batch"):
        prunus.prune(nn.Linear(3, 2), "actnorm_unstructured", amount=0.5)
