"""The engine on a CUDA device: masks live beside their parameters, zeros survive training, restore is exact."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import prunus

pytestmark = pytest.mark.gpu

STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("l1_unstructured", {"amount": 0.5}),
    ("ln_structured", {"amount": 0.5, "n": 2, "dim": 0}),
    ("l1_global", {"amount": 0.4}),
    ("random_unstructured", {"amount": 0.5, "seed": 3}),
    ("random_structured", {"amount": 0.5, "seed": 3, "dim": 1}),
    ("magnitude_threshold", {"threshold": 0.05}),
]


@pytest.fixture
def cuda_model(make_model: Callable[..., nn.Module]) -> nn.Module:
    return make_model("lenet").cuda()


@pytest.mark.parametrize(("strategy", "options"), STRATEGIES, ids=[s for s, _ in STRATEGIES])
def test_masks_live_on_the_parameters_device(
    strategy: str, options: dict[str, Any], cuda_model: nn.Module
) -> None:
    prunus.prune(cuda_model, strategy, **options)
    for name, mask in prunus.masks(cuda_model).items():
        param = cuda_model.get_parameter(name)
        assert mask.device == param.device
        assert bool((param[~mask] == 0).all())


@pytest.mark.parametrize(("strategy", "options"), STRATEGIES, ids=[s for s, _ in STRATEGIES])
def test_cuda_masks_equal_cpu_masks(
    strategy: str, options: dict[str, Any], make_model: Callable[..., nn.Module]
) -> None:
    cpu = make_model("lenet")
    gpu = copy.deepcopy(cpu).cuda()
    prunus.prune(cpu, strategy, **options)
    prunus.prune(gpu, strategy, **options)
    for name, mask in prunus.masks(cpu).items():
        if strategy.startswith("random"):  # the CUDA generator draws other numbers: same counts
            assert int((~mask).sum()) == int((~prunus.masks(gpu)[name]).sum())
        else:
            assert torch.equal(mask, prunus.masks(gpu)[name].cpu())


def test_zeros_survive_training_on_cuda(
    cuda_model: nn.Module, example_input: Callable[..., Tensor]
) -> None:
    prunus.prune(cuda_model, "l1_unstructured", amount=0.6)
    opt = torch.optim.Adam(cuda_model.parameters(), lr=0.05)
    x = example_input("lenet").cuda()
    cuda_model.train()
    for _ in range(3):
        opt.zero_grad()
        cuda_model(x).square().mean().backward()
        opt.step()
    for name, mask in prunus.masks(cuda_model).items():
        assert bool((cuda_model.get_parameter(name)[~mask] == 0).all())


def test_restore_on_cuda_is_bit_for_bit(
    cuda_model: nn.Module, snapshot: Callable[[nn.Module], Any]
) -> None:
    before = snapshot(cuda_model)
    prunus.prune(cuda_model, "l1_structured", amount=0.3, dim=0)
    prunus.prune(cuda_model, "l1_unstructured", amount=0.5)
    prunus.restore(cuda_model)
    assert snapshot(cuda_model) == before


def test_moving_a_pruned_model_moves_its_masks(make_model: Callable[..., nn.Module]) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    model.cuda()
    assert all(mask.is_cuda for mask in prunus.masks(model).values())
    prunus.restore(model.cpu())
    reference = make_model("mlp")
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_custom_mask_from_the_cpu_applies_to_a_cuda_parameter(cuda_model: nn.Module) -> None:
    mask = torch.ones(4, 1, 3, 3, dtype=torch.bool)
    mask[0] = False
    prunus.prune(cuda_model, "custom_mask", masks={"conv1.weight": mask})
    assert prunus.masks(cuda_model)["conv1.weight"].is_cuda
    assert not bool(cuda_model.conv1.weight[0].any())


def test_random_cuda_masks_are_reproducible(make_model: Callable[..., nn.Module]) -> None:
    a, b = make_model("lenet").cuda(), make_model("lenet").cuda()
    prunus.prune(a, "random_unstructured", amount=0.5, seed=9)
    prunus.prune(b, "random_unstructured", amount=0.5, seed=9)
    for name, mask in prunus.masks(a).items():
        assert torch.equal(mask, prunus.masks(b)[name])
