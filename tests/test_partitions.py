"""The granularity contract: what every granularity declares (its Partition, its counts), built-ins included.

The kit checks masks against these declarations (tests/test_kit_builtins.py runs it on every built-in
strategy); here the declarations themselves: the ``Partition`` helpers, each built-in's units, groups and counts
on hand-made parameters, and the default count rule.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import prunus
from prunus.plugin_api import AmountError, ConfigError, Granularity, Partition, PluginError, Target
from prunus.testing.partitions import check_ranking, read_layout


def _target(module: nn.Module, name: str = "weight", prior: Tensor | None = None) -> Target:
    return Target(f"layer.{name}", module, name, prior)


def _granularity(name: str, **options: object) -> Granularity:
    return prunus.registry.granularity(name, **options)


def test_entries_slices_and_tiles() -> None:
    assert Partition.entries((2, 3)).units.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert Partition.entries((2, 3)).groups.tolist() == [[0, 0, 0], [0, 0, 0]]
    assert Partition.slices((2, 3), 1).units.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert Partition.slices((2, 3), 0).units.tolist() == [[0, 0, 0], [1, 1, 1]]
    # Edge tiles are smaller; a side longer than the dim covers it.
    assert Partition.tiles((3, 5), (2, 2)).units.tolist() == [
        [0, 0, 1, 1, 2],
        [0, 0, 1, 1, 2],
        [3, 3, 4, 4, 5],
    ]
    assert Partition.tiles((2, 2), (4, 1)).units.tolist() == [[0, 1], [0, 1]]
    shared = Partition.entries((4,), shared=True)
    assert shared.shared and shared.reshape((2, 2)).units.shape == (2, 2)


def test_tiles_reject_bad_sides() -> None:
    with pytest.raises(ConfigError, match="one side per dim"):
        Partition.tiles((2, 2), (1,))
    with pytest.raises(ConfigError, match=">= 1"):
        Partition.tiles((2, 2), (1, 0))


def test_a_granularity_declares_nothing_by_default() -> None:
    class Silent(Granularity):
        name = "silent"

        def masks(self, criterion, score, context):  # type: ignore[no-untyped-def]
            return {}

    assert Silent(prunus.NoOptions()).partition(_target(nn.Linear(2, 2))) is None


def test_the_default_count_is_torch_rounding_per_group() -> None:
    unstructured = _granularity("unstructured", amount=0.5)
    # round(0.5 * 3) = 2, round(0.5 * 5) = 2 (half to even), round(0.5 * 1) = 0
    assert unstructured.prune_counts(torch.tensor([3, 5, 1])).tolist() == [2, 2, 0]
    assert _granularity("unstructured", amount=2).prune_counts(torch.tensor([2, 4])).tolist() == [
        2,
        2,
    ]
    with pytest.raises(AmountError, match="larger than"):
        _granularity("unstructured", amount=3).prune_counts(torch.tensor([2]))


def test_a_granularity_without_amount_must_say_its_counts() -> None:
    class Fixed(Granularity):
        name = "fixed"

        def masks(self, criterion, score, context):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(PluginError, match="override prune_counts"):
        Fixed(prunus.NoOptions()).prune_counts(torch.tensor([3]))


def test_structured_declares_slices_along_dim() -> None:
    layer = nn.Conv2d(2, 3, 2)  # weight (3, 2, 2, 2)
    partition = _granularity("structured", amount=0.5, dim=-3).partition(_target(layer))
    assert partition is not None
    assert torch.equal(partition.units, torch.arange(2).reshape(1, 2, 1, 1).expand(3, 2, 2, 2))
    with pytest.raises(ConfigError, match="dim=4 is out of range"):
        _granularity("structured", amount=0.5, dim=4).partition(_target(layer))


def test_aligned_counts_round_what_it_keeps_to_a_multiple() -> None:
    aligned = _granularity("aligned", amount=0.3, round_to=4)
    # 16 slices, round(0.3 * 16) = 5 asked: keeps 11, rounded to 12, so 4 pruned; 3 slices are not rounded.
    assert aligned.prune_counts(torch.tensor([16, 3])).tolist() == [4, 1]


def test_global_declares_one_group_across_targets() -> None:
    partition = _granularity("global", amount=0.5).partition(_target(nn.Linear(2, 2)))
    assert partition is not None and partition.shared


def test_global_declares_its_min_keep_floor() -> None:
    assert _granularity("global", amount=0.5).partition(_target(nn.Linear(2, 2))).min_keep == 1
    plain = _granularity("global", amount=0.5, min_keep=0).partition(_target(nn.Linear(2, 2)))
    assert plain.min_keep == 0


def test_the_ranking_across_targets_honours_the_floor() -> None:
    """A global ranking keeps each target's best entry (min_keep=1): the floor is checked, not a ranking bug."""
    small, large = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        small.weight.copy_(torch.tensor([[0.1, 0.2]]))
        large.weight.copy_(torch.tensor([[5.0, 6.0]]))
    targets = [Target("small.weight", small, "weight"), Target("large.weight", large, "weight")]
    scores = {t.name: t.tensor.detach().abs() for t in targets}
    floored = _granularity("global", amount=2)  # min_keep=1: small keeps 0.2, large loses 5.0
    layout = read_layout(floored, targets)
    right = {
        "small.weight": torch.tensor([[False, True]]),
        "large.weight": torch.tensor([[False, True]]),
    }
    check_ranking(layout, right, scores, torch.sum)
    plain = {
        "small.weight": torch.tensor([[False, False]]),
        "large.weight": torch.tensor([[True, True]]),
    }
    with pytest.raises(AssertionError, match="below its declared min_keep=1"):
        check_ranking(layout, plain, scores, torch.sum)
    # Without the floor, the plain ranking is the right one and the floored masks are not.
    layout = read_layout(_granularity("global", amount=2, min_keep=0), targets)
    check_ranking(layout, plain, scores, torch.sum)
    with pytest.raises(AssertionError, match="pruned the entry"):
        check_ranking(layout, right, scores, torch.sum)


def test_nm_groups_run_along_the_input_dim() -> None:
    nm = _granularity("nm", n_keep=1, m_group=2)
    linear = nm.partition(
        _target(nn.Linear(5, 1))
    )  # (1, 5): groups along dim 1, the last one short
    assert linear is not None
    assert linear.units.tolist() == [[0, 1, 2, 3, 4]]
    assert linear.groups.tolist() == [[0, 0, 1, 1, 2]]
    transposed = nm.partition(_target(nn.ConvTranspose1d(4, 1, 1)))  # (4, 1, 1): along dim 0
    assert transposed is not None
    assert transposed.groups.reshape(-1).tolist() == [0, 0, 1, 1]
    # Each group keeps n_keep: all but one of a full group, none of a group keeping one or none.
    assert nm.prune_counts(torch.tensor([2, 1, 0])).tolist() == [1, 0, 0]


def test_block_tiles_the_2d_view_and_a_bias_is_one_row() -> None:
    block = _granularity("block", amount=0.5, block=(1, 2))
    conv = block.partition(_target(nn.Conv1d(2, 2, 2)))  # weight (2, 2, 2), view (2, 4)
    assert conv is not None
    assert conv.units.reshape(2, 4).tolist() == [[0, 0, 1, 1], [2, 2, 3, 3]]
    bias = block.partition(_target(nn.Linear(1, 5), "bias"))  # (5,), view (1, 5)
    assert bias is not None
    assert bias.units.tolist() == [0, 0, 1, 1, 2]


def test_registry_builds_a_granularity() -> None:
    granularity = prunus.registry.granularity("structured", amount=0.25, dim=1)
    assert granularity.name == "structured"
    with pytest.raises(ConfigError, match="dim"):
        prunus.registry.granularity("structured", amount=0.25, dim="x")
    info = next(c for c in prunus.registry.components("granularity") if c.name == "nm")
    assert info.config.model_fields.keys() >= {"n_keep", "m_group"}


@pytest.mark.parametrize("name", ["unstructured", "structured", "aligned", "global", "nm", "block"])
def test_every_builtin_granularity_declares(name: str) -> None:
    options = {} if name == "nm" else {"amount": 0.5}
    granularity = _granularity(name, **options)
    module = nn.Conv2d(4, 4, 1)
    partition = granularity.partition(_target(module))
    assert isinstance(partition, Partition)
    assert partition.units.shape == partition.groups.shape == module.weight.shape
    assert not partition.units.dtype.is_floating_point
