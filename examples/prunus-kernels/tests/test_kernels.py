"""prunus-kernels' tests: the prunus conformance kit, then what is special about kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunus
from prunus.testing import StrategyCase, StrategyTests
from prunus.testing import generators as pst

pytest_plugins = ["prunus.testing.pytest_plugin"]

# The kernel granularity with prunus's own criteria (other installed criteria are tested by their authors).
BUILTIN = [
    name
    for name in prunus.registry.names("*_kernel")
    if prunus.registry.provider("criterion", prunus.registry.info(name).criterion).distribution
    == "prunus"
]


def case(name: str) -> str | StrategyCase:
    """The kit's case for a strategy: a data-aware one (``wanda_kernel``) gets drawn calibration statistics."""
    kinds = prunus.registry.info(name).statistics
    if not kinds:
        return name
    return StrategyCase(name, data=lambda targets: pst.statistics(targets, kinds))


class TestKernelConformance(StrategyTests):
    @pytest.fixture(scope="class", params=BUILTIN)
    @classmethod
    def prunus_strategy(cls, request: pytest.FixtureRequest) -> str | StrategyCase:
        return case(str(request.param))


def test_prunus_finds_the_installed_plugin() -> None:
    assert {"l1_kernel", "ln_kernel", "random_kernel"} <= set(BUILTIN)
    provider = prunus.registry.info("l1_kernel").provider
    assert provider.distribution == "prunus-kernels"


def test_it_prunes_whole_kernels() -> None:
    conv = nn.Conv2d(2, 2, 2, bias=False)
    with torch.no_grad():  # kernel L1 norms: [[4, 8], [12, 0.4]]
        conv.weight.copy_(
            torch.tensor([1.0, 2.0, 3.0, 0.1]).repeat_interleave(4).reshape(2, 2, 2, 2)
        )
    prunus.prune(conv, "l1_kernel", amount=2)
    kept = prunus.masks(conv)["weight"].reshape(2, 2, 4)
    assert kept.all(dim=2).tolist() == [[False, True], [True, False]]
    assert (kept.all(dim=2) | ~kept.any(dim=2)).all()  # every kernel kept whole or pruned whole


def test_balanced_prunes_the_same_share_of_every_filter() -> None:
    conv = nn.Conv2d(4, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(
            torch.arange(72.0).reshape(2, 4, 3, 3)
        )  # filter 0 scores lower than filter 1
    prunus.prune(conv, "l1_kernel", amount=0.5, balanced=True)
    kept = prunus.masks(conv)["weight"].any(dim=(2, 3))
    assert kept.sum(dim=1).tolist() == [2, 2]
    assert kept.tolist() == [[False, False, True, True], [False, False, True, True]]


def test_on_a_linear_layer_a_kernel_is_one_weight() -> None:
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    prunus.prune(layer, "l1_kernel", amount=3)
    assert layer.weight.tolist() == [[0.0, 0.0, 0.0, 4.0], [5.0, 6.0, 7.0, 8.0]]


def test_a_bad_option_is_a_clear_error() -> None:
    with pytest.raises(prunus.ConfigError, match="balanced"):
        prunus.registry.get("l1_kernel", amount=0.5, balanced="yes")
