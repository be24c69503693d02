"""prunus against ``torch.nn.utils.prune``: the same zero patterns on tie-free weights, the same counts always."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import prune as tprune

import prunus

FRACTIONS = [0.0, 0.1, 0.3, 0.5, 0.77, 1.0]


def distinct_weights(shape: tuple[int, ...], seed: int) -> Tensor:
    """Random float32 weights whose absolute values are all different (no ties to break)."""
    generator = torch.Generator().manual_seed(seed)
    numel = math.prod(shape)
    magnitude = (torch.randperm(numel, generator=generator).double() + 1) / numel
    jitter = torch.rand(numel, generator=generator, dtype=torch.float64) * 0.5 / numel
    sign = torch.randint(0, 2, (numel,), generator=generator) * 2 - 1
    values = (magnitude + jitter) * sign
    weights = values.float().reshape(shape)
    assert weights.abs().unique().numel() == numel
    return weights


def linear(out_features: int, in_features: int, seed: int = 0) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(distinct_weights((out_features, in_features), seed))
    return layer


def conv2d(out_channels: int, in_channels: int, kernel: int, seed: int = 0) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, out_channels, kernel)
    with torch.no_grad():
        layer.weight.copy_(distinct_weights(tuple(layer.weight.shape), seed))
    return layer


def layers() -> list[tuple[str, nn.Module]]:
    return [
        ("linear_7x5", linear(7, 5, seed=1)),
        ("linear_16x12", linear(16, 12, seed=2)),
        ("conv_6x4x3x3", conv2d(6, 4, 3, seed=3)),
        ("conv_5x3x2x2", conv2d(5, 3, 2, seed=4)),
    ]


LAYER_IDS = [name for name, _ in layers()]


def layer(name: str) -> nn.Module:
    return dict(layers())[name]


def torch_mask(module: nn.Module) -> Tensor:
    return module.weight_mask.bool()  # type: ignore[union-attr,operator]


def prunus_mask(module: nn.Module) -> Tensor:
    return prunus.masks(module)["weight"]


def amounts(numel: int) -> list[float | int]:
    return [*FRACTIONS, 0, 1, numel // 3, numel]


def norms_are_distinct(weight: Tensor, n: float, dim: int) -> bool:
    dims = [d for d in range(weight.dim()) if d != dim % weight.dim()]
    norms = torch.linalg.vector_norm(weight.double(), ord=n, dim=dims)
    return bool(norms.unique().numel() == norms.numel())


# -- unstructured -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_IDS)
def test_l1_unstructured_matches_torch_at_every_amount(name: str) -> None:
    base = layer(name)
    for amount in amounts(base.weight.numel()):
        ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
        prunus.prune(ours, "l1_unstructured", include="weight", amount=amount)
        tprune.l1_unstructured(theirs, "weight", amount=amount)
        assert torch.equal(prunus_mask(ours), torch_mask(theirs)), amount
        assert torch.equal(ours.weight, theirs.weight), amount


@pytest.mark.parametrize("name", LAYER_IDS)
def test_random_unstructured_prunes_as_many_entries_as_torch(name: str) -> None:
    base = layer(name)
    for amount in amounts(base.weight.numel()):
        ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
        prunus.prune(ours, "random_unstructured", include="weight", amount=amount, seed=3)
        tprune.random_unstructured(theirs, "weight", amount=amount)
        assert int((~prunus_mask(ours)).sum()) == int((~torch_mask(theirs)).sum()), amount


# -- structured ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, math.inf, -math.inf])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", LAYER_IDS)
def test_ln_structured_matches_torch(name: str, dim: int, n: float) -> None:
    base = layer(name)
    assert norms_are_distinct(base.weight, n, dim)
    slices = base.weight.shape[dim]
    for amount in [*FRACTIONS, 0, 1, slices - 1, slices]:
        ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
        prunus.prune(ours, "ln_structured", include="weight", amount=amount, n=n, dim=dim)
        tprune.ln_structured(theirs, "weight", amount=amount, n=n, dim=dim)
        assert torch.equal(prunus_mask(ours), torch_mask(theirs)), amount


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", LAYER_IDS)
def test_l1_structured_matches_torch_ln_structured_with_n_1(name: str, dim: int) -> None:
    base = layer(name)
    assert norms_are_distinct(base.weight, 1, dim)
    for amount in [*FRACTIONS, 1, base.weight.shape[dim]]:
        ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
        prunus.prune(ours, "l1_structured", include="weight", amount=amount, dim=dim)
        tprune.ln_structured(theirs, "weight", amount=amount, n=1, dim=dim)
        assert torch.equal(prunus_mask(ours), torch_mask(theirs)), amount


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("name", LAYER_IDS)
def test_random_structured_prunes_as_many_slices_as_torch(name: str, dim: int) -> None:
    base = layer(name)
    others = [d for d in range(base.weight.dim()) if d != dim]
    for amount in [*FRACTIONS, 1, base.weight.shape[dim]]:
        ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
        prunus.prune(ours, "random_structured", include="weight", amount=amount, dim=dim, seed=5)
        tprune.random_structured(theirs, "weight", amount=amount, dim=dim)
        ours_dropped = int((~prunus_mask(ours).any(dim=others)).sum())
        theirs_dropped = int((~torch_mask(theirs).any(dim=others)).sum())
        assert ours_dropped == theirs_dropped, amount
        # Whole slices: every slice is kept entirely or pruned entirely.
        kept = prunus_mask(ours).all(dim=others) | ~prunus_mask(ours).any(dim=others)
        assert bool(kept.all())


# -- global and custom ----------------------------------------------------------------------------------------


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = linear(6, 5, seed=11)
        self.b = conv2d(4, 3, 2, seed=12)
        with torch.no_grad():  # one set of distinct magnitudes across both layers
            both = distinct_weights((30 + 48,), seed=13)
            self.a.weight.copy_(both[:30].reshape(6, 5))
            self.b.weight.copy_(both[30:].reshape(4, 3, 2, 2))


def torch_global(pair: Pair, amount: float | int) -> None:
    tprune.global_unstructured(
        [(pair.a, "weight"), (pair.b, "weight")],
        pruning_method=tprune.L1Unstructured,
        amount=amount,
    )


@pytest.mark.parametrize("amount", [*FRACTIONS, 0, 1, 40, 78])
def test_global_unstructured_matches_torch(amount: float | int) -> None:
    ours, theirs = Pair(), Pair()
    theirs.load_state_dict(ours.state_dict())
    prunus.prune(ours, "global_unstructured", amount=amount)
    torch_global(theirs, amount)
    for module in ("a", "b"):
        assert torch.equal(prunus_mask(getattr(ours, module)), torch_mask(getattr(theirs, module)))


@pytest.mark.parametrize("amount", [0.0, 0.4, 1.0, 17])
def test_l1_global_is_global_unstructured(amount: float | int) -> None:
    first, second = Pair(), Pair()
    prunus.prune(first, "global_unstructured", amount=amount)
    prunus.prune(second, "l1_global", amount=amount)
    assert prunus.masks(first).keys() == prunus.masks(second).keys()
    for name, mask in prunus.masks(first).items():
        assert torch.equal(mask, prunus.masks(second)[name])


@pytest.mark.parametrize("name", LAYER_IDS)
def test_custom_mask_matches_custom_from_mask(name: str) -> None:
    base = layer(name)
    mask = torch.rand(base.weight.shape, generator=torch.Generator().manual_seed(7)) > 0.4
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    prunus.prune(ours, "custom_mask", masks={"weight": mask})
    tprune.custom_from_mask(theirs, "weight", mask)
    assert torch.equal(prunus_mask(ours), torch_mask(theirs))
    assert torch.equal(ours.weight, theirs.weight)


# -- composition ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_IDS)
@pytest.mark.parametrize(("first", "second"), [(0.5, 0.5), (0.3, 0.6), (5, 0.25), (0.2, 7)])
def test_iterative_l1_unstructured_matches_pruning_container(
    name: str, first: float | int, second: float | int
) -> None:
    base = layer(name)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    for amount in (first, second):
        prunus.prune(ours, "l1_unstructured", include="weight", amount=amount)
        tprune.l1_unstructured(theirs, "weight", amount=amount)
    assert any(isinstance(h, tprune.PruningContainer) for h in theirs._forward_pre_hooks.values())
    assert torch.equal(prunus_mask(ours), torch_mask(theirs))
    assert torch.equal(ours.weight, theirs.weight)


@pytest.mark.parametrize("name", LAYER_IDS)
@pytest.mark.parametrize("dim", [0, 1])
def test_structured_then_unstructured_matches_pruning_container(name: str, dim: int) -> None:
    base = layer(name)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    prunus.prune(ours, "ln_structured", include="weight", amount=0.4, n=2, dim=dim)
    tprune.ln_structured(theirs, "weight", amount=0.4, n=2, dim=dim)
    prunus.prune(ours, "l1_unstructured", include="weight", amount=0.3)
    tprune.l1_unstructured(theirs, "weight", amount=0.3)
    assert torch.equal(prunus_mask(ours), torch_mask(theirs))


@pytest.mark.parametrize("name", LAYER_IDS)
def test_structured_twice_matches_pruning_container(name: str) -> None:
    base = layer(name)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    for amount in (0.34, 0.5):
        prunus.prune(ours, "ln_structured", include="weight", amount=amount, n=1, dim=0)
        tprune.ln_structured(theirs, "weight", amount=amount, n=1, dim=0)
    assert torch.equal(prunus_mask(ours), torch_mask(theirs))


# -- ties ----------------------------------------------------------------------------------------------------


def tied_layer() -> nn.Linear:
    """A layer whose weights take only five values, so most comparisons are ties."""
    layer = nn.Linear(9, 8)
    generator = torch.Generator().manual_seed(21)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-2, 3, (8, 9), generator=generator).float())
    return layer


@pytest.mark.parametrize("amount", [0.0, 0.25, 0.5, 0.9, 1.0, 1, 13, 72])
def test_unstructured_counts_are_exact_with_ties(amount: float | int) -> None:
    ours, theirs = tied_layer(), tied_layer()
    prunus.prune(ours, "l1_unstructured", include="weight", amount=amount)
    tprune.l1_unstructured(theirs, "weight", amount=amount)
    assert int((~prunus_mask(ours)).sum()) == int((~torch_mask(theirs)).sum())


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.9])
def test_ties_prune_only_the_lowest_magnitudes(amount: float) -> None:
    model = tied_layer()
    original = model.weight.detach().clone()
    prunus.prune(model, "l1_unstructured", include="weight", amount=amount)
    mask = prunus_mask(model)
    assert float(original[~mask].abs().max()) <= float(original[mask].abs().min())


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("l1_unstructured", {"amount": 0.5}),
        ("l1_structured", {"amount": 0.5, "dim": 1}),
        ("ln_structured", {"amount": 0.4, "n": 2, "dim": 0}),
        ("global_unstructured", {"amount": 0.3}),
    ],
)
def test_ties_give_the_same_mask_every_time(strategy: str, options: dict[str, object]) -> None:
    first, second = tied_layer(), tied_layer()
    prunus.prune(first, strategy, include="weight", **options)
    prunus.prune(second, strategy, include="weight", **options)
    assert torch.equal(prunus_mask(first), prunus_mask(second))


def test_structured_counts_are_exact_when_every_slice_ties() -> None:
    model = nn.Linear(6, 10)
    with torch.no_grad():
        model.weight.fill_(0.5)
    prunus.prune(model, "l1_structured", include="weight", amount=0.3, dim=0)
    rows_pruned = int((~prunus_mask(model).any(dim=1)).sum())
    assert rows_pruned == 3


@pytest.mark.parametrize("name", LAYER_IDS)
@pytest.mark.parametrize("dim", [0, 1])
def test_unstructured_then_structured_matches_pruning_container(name: str, dim: int) -> None:
    # Both score the second prune on the current weights, whose pruned entries read zero.
    base = layer(name)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    prunus.prune(ours, "l1_unstructured", include="weight", amount=0.6)
    tprune.l1_unstructured(theirs, "weight", amount=0.6)
    prunus.prune(ours, "ln_structured", include="weight", amount=0.5, n=2, dim=dim)
    tprune.ln_structured(theirs, "weight", amount=0.5, n=2, dim=dim)
    assert torch.equal(prunus_mask(ours), torch_mask(theirs))


@pytest.mark.parametrize("amounts", [(0.5, 0.5), (10, 0.3)])
def test_global_twice_matches_pruning_container(amounts: tuple[float, float]) -> None:
    ours, theirs = Pair(), Pair()
    theirs.load_state_dict(ours.state_dict())
    for amount in amounts:
        prunus.prune(ours, "global_unstructured", amount=amount)
        torch_global(theirs, amount)
    for module in ("a", "b"):
        assert torch.equal(prunus_mask(getattr(ours, module)), torch_mask(getattr(theirs, module)))
