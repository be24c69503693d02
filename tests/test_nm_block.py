"""The ``nm``, ``block`` and ``aligned`` granularities, with every criterion (a third-party one included)."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import Field, StrictInt
from torch import Tensor, nn

import prunus
from prunus import Criterion, PruneContext, StrategyConfig, Target
from prunus.errors import AmountError, ConfigError, RegistrationError
from prunus.hardware.sparse import follows_nm
from prunus.plugins.granularities import aligned_keep
from prunus.plugins.semistructured import nm_keep_mask


class Inverse(Criterion):
    """A third-party criterion with an option: scores 1 / (|w| + eps), so small weights are kept."""

    class Config(StrategyConfig):
        scale: StrictInt = Field(default=1, ge=1)

    name = "inverse"
    summary = "keeps the smallest weights (test criterion)"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        assert isinstance(self.config, Inverse.Config)
        return self.config.scale / (target.tensor.abs() + 1e-3)


@pytest.fixture(scope="module")
def reg() -> prunus.Registry:
    registry = prunus.Registry()
    registry.register(Inverse)
    return registry


CRITERIA = ["l1", "ln", "random", "inverse"]
CRITERION_OPTIONS = {"ln": {"n": 2}, "random": {"seed": 3}}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 12)
        self.conv = nn.Conv2d(8, 6, 3)
        self.up = nn.ConvTranspose2d(8, 4, 3)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - not run
        return x


def make(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def groups_along(mask: Tensor, dim: int, m: int) -> Tensor:
    moved = mask.movedim(dim, -1)
    assert moved.shape[-1] % m == 0
    return moved.reshape(*moved.shape[:-1], -1, m)


# -- composition ----------------------------------------------------------------------------------------------


def test_every_criterion_composes_with_the_new_granularities(reg):
    for criterion in CRITERIA:
        for granularity in ("nm", "block", "aligned"):
            assert f"{criterion}_{granularity}" in reg
    assert reg.info("inverse_nm").granularity == "nm"
    assert set(reg.info("ln_nm").options()) == {"n", "n_keep", "m_group", "dim"}
    assert set(reg.info("inverse_block").options()) == {"amount", "block", "scale"}


def test_a_criterion_whose_option_clashes_is_refused_by_name():
    class Clash(Criterion):
        class Config(StrategyConfig):
            n_keep: StrictInt = 1

        name = "clash"

        def score(self, target: Target, context: PruneContext) -> Tensor:
            return target.tensor.abs()

    registry = prunus.Registry()
    with pytest.raises(RegistrationError, match="n_keep"):
        registry.register(Clash)
    assert "clash_unstructured" not in registry


# -- nm -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", CRITERIA)
def test_nm_keeps_two_of_every_four_inputs_with_every_criterion(reg, criterion):
    model = make()
    report = prunus.prune(
        model, f"{criterion}_nm", registry=reg, **CRITERION_OPTIONS.get(criterion, {})
    )
    masks = prunus.masks(model)
    # Linear (out, in): groups along the last dim; Conv (out, in, kh, kw): along input channels (dim 1);
    # ConvTranspose (in, out, kh, kw): along dim 0, its input channels.
    for name, dim in (("fc.weight", 1), ("conv.weight", 1), ("up.weight", 0)):
        kept = groups_along(masks[name], dim, 4).sum(dim=-1)
        assert bool((kept == 2).all()), name
        assert report[name].sparsity == 0.5
        assert follows_nm(model.get_parameter(name), 2, 4, dim)


def test_nm_keeps_the_highest_scored_in_each_group(reg):
    model = make()
    weight = model.fc.weight.detach().clone()
    prunus.prune(model, "l1_nm", include="fc.weight", registry=reg)
    mask = prunus.masks(model)["fc.weight"]
    for row, start in itertools.product(range(12), range(0, 16, 4)):
        group = weight[row, start : start + 4].abs()
        expected = torch.zeros(4, dtype=torch.bool)
        expected[group.topk(2).indices] = True
        assert torch.equal(mask[row, start : start + 4], expected)


def test_nm_with_other_n_and_m_and_an_explicit_dim(reg):
    model = make()
    prunus.prune(model, "l1_nm", n_keep=1, m_group=8, include="fc.weight", registry=reg)
    kept = groups_along(prunus.masks(model)["fc.weight"], 1, 8).sum(dim=-1)
    assert bool((kept == 1).all())

    model = make()
    prunus.prune(model, "l1_nm", dim=0, include="fc.weight", registry=reg)  # 12 outputs: 3 groups
    kept = groups_along(prunus.masks(model)["fc.weight"], 0, 4).sum(dim=-1)
    assert bool((kept == 2).all())


def test_nm_and_ln_options_do_not_clash(reg):
    model = make()
    prunus.prune(model, "ln_nm", n=1, n_keep=3, m_group=4, include="fc.weight", registry=reg)
    kept = groups_along(prunus.masks(model)["fc.weight"], 1, 4).sum(dim=-1)
    assert bool((kept == 3).all())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_keep": 4, "m_group": 4}, "must be below m_group"),
        ({"n_keep": 5, "m_group": 2}, "must be below m_group"),
        ({"m_group": 0}, "m_group"),
        ({"n_keep": -1}, "n_keep"),
        ({"n_keep": 2.0}, "n_keep"),
        ({"amount": 0.5}, "amount"),
    ],
)
def test_nm_bad_options(reg, options, message):
    with pytest.raises(ConfigError, match=message):
        reg.get("l1_nm", **options)


def test_nm_dim_out_of_range(reg):
    with pytest.raises(ConfigError, match="dim=5 is out of range"):
        prunus.prune(make(), "l1_nm", dim=5, include="fc.weight", registry=reg)


def test_nm_trailing_group_counts_as_padded():
    scores = torch.arange(10.0).reshape(1, 10)
    keep = nm_keep_mask(scores, 2, 4, 1, None)
    # Groups [0..3], [4..7], [8, 9]: the last, short one keeps at most 2 (both).
    assert keep.tolist() == [[False, False, True, True] * 2 + [True, True]]
    keep = nm_keep_mask(scores, 1, 4, 1, None)
    assert keep.tolist() == [[False, False, False, True] * 2 + [False, True]]


def test_nm_and_block_larger_than_the_weight_cover_all_of_it(reg):
    scores = torch.arange(6.0).reshape(1, 6)
    assert nm_keep_mask(scores, 2, 1000, 1, None).tolist() == [[False] * 4 + [True] * 2]
    model = nn.Sequential(nn.Linear(6, 3))
    prunus.prune(model, "l1_block", amount=1, block=(10**9, 10**9), registry=reg)
    assert not bool(prunus.masks(model)["0.weight"].any())  # one block: all of it


def test_nm_breaks_ties_by_position():
    keep = nm_keep_mask(torch.zeros(2, 8), 2, 4, 1, None)
    # Lower indices are pruned first among equal scores, as prunus.keep_mask does.
    assert keep.tolist() == [[False, False, True, True] * 2] * 2


def test_nm_handles_infinite_scores():
    scores = torch.tensor([[float("-inf"), 1.0, float("inf"), 0.0]])
    assert nm_keep_mask(scores, 2, 4, 1, None).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_nm_after_an_earlier_prune_never_revives(reg, criterion):
    model = make(1)
    prunus.prune(
        model, "random_unstructured", amount=0.6, seed=7, include="fc.weight", registry=reg
    )
    prior = prunus.masks(model)["fc.weight"].clone()
    prunus.prune(
        model,
        f"{criterion}_nm",
        include="fc.weight",
        registry=reg,
        **CRITERION_OPTIONS.get(criterion, {}),
    )
    mask = prunus.masks(model)["fc.weight"]
    assert not bool((mask & ~prior).any())
    kept = groups_along(mask, 1, 4).sum(dim=-1)
    still = groups_along(prior, 1, 4).sum(dim=-1)
    assert torch.equal(kept, still.clamp(max=2))
    prunus.restore(model)


def test_nm_in_half_precision(reg):
    model = make().half()
    prunus.prune(model, "l1_nm", include="fc.weight", registry=reg)
    assert bool((groups_along(prunus.masks(model)["fc.weight"], 1, 4).sum(-1) == 2).all())


# -- block ----------------------------------------------------------------------------------------------------


def blocks_of(mask: Tensor, rows: int, cols: int) -> list[Tensor]:
    view = mask.reshape(mask.shape[0], -1)
    return [
        view[r : r + rows, c : c + cols]
        for r in range(0, view.shape[0], rows)
        for c in range(0, view.shape[1], cols)
    ]


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("block", [(1, 4), (4, 1), (2, 2), (8, 8), (5, 3)])
def test_block_prunes_whole_blocks_with_every_criterion(reg, criterion, block):
    model = make()
    report = prunus.prune(
        model,
        f"{criterion}_block",
        amount=0.5,
        block=block,
        registry=reg,
        **CRITERION_OPTIONS.get(criterion, {}),
    )
    for name, mask in prunus.masks(model).items():
        tiles = blocks_of(mask, *block)
        assert all(bool(t.all()) or not bool(t.any()) for t in tiles), name
        pruned = sum(1 for t in tiles if not bool(t.any()))
        assert pruned == round(0.5 * len(tiles)), name
        assert report[name].pruned == sum(t.numel() for t in tiles if not bool(t.any()))


def test_block_prunes_the_lowest_l1_blocks(reg):
    model = make()
    weight = model.fc.weight.detach().abs().clone()  # 12 x 16 in 2 x 4 blocks: a 6 x 4 grid
    prunus.prune(model, "l1_block", amount=10, block=[2, 4], include="fc.weight", registry=reg)
    norms = weight.reshape(6, 2, 4, 4).sum(dim=(1, 3))
    expected = torch.ones(24, dtype=torch.bool)
    expected[norms.reshape(-1).argsort()[:10]] = False
    mask = prunus.masks(model)["fc.weight"]
    assert torch.equal(mask.reshape(6, 2, 4, 4)[:, 0, :, 0].reshape(-1), expected)


def test_block_edge_blocks_are_scored_over_what_they_hold(reg):
    # 3 x 5 weight in 2 x 2 blocks: edge blocks of 2x1, 1x2 and 1x1 entries. With l1's sum the tiny corner
    # block scores lowest, the big-valued edge column highest.
    weight = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0, 9.0],
            [1.0, 1.0, 1.0, 1.0, 9.0],
            [1.0, 1.0, 1.0, 1.0, 0.1],
        ]
    )
    model = nn.Sequential(nn.Linear(5, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    prunus.prune(model, "l1_block", amount=1, block=(2, 2), registry=reg)
    mask = prunus.masks(model)["0.weight"]
    assert mask.sum() == 14 and not bool(mask[2, 4])


def test_block_after_an_earlier_prune_counts_blocks_still_kept_and_never_revives(reg):
    model = make()
    prunus.prune(model, "l1_block", amount=0.25, block=(4, 4), include="fc.weight", registry=reg)
    prior = prunus.masks(model)["fc.weight"].clone()  # 12 blocks, 3 pruned
    prunus.prune(model, "random_block", amount=0.5, block=(2, 2), include="fc.weight", registry=reg)
    mask = prunus.masks(model)["fc.weight"]
    assert not bool((mask & ~prior).any())
    # 48 blocks of 2x2, 12 of them inside pruned 4x4 blocks: 36 eligible, half of them pruned now.
    assert sum(1 for t in blocks_of(mask, 2, 2) if not bool(t.any())) == 12 + 18


@pytest.mark.parametrize("block", [(0, 4), (4, -1)])
def test_block_bad_sizes(reg, block):
    with pytest.raises(ConfigError, match="block"):
        reg.get("l1_block", amount=0.5, block=block)


def test_block_amount_count_above_the_blocks_is_an_error(reg):
    with pytest.raises(AmountError):
        prunus.prune(make(), "l1_block", amount=1000, block=(4, 4), registry=reg)


def test_block_on_one_dim_parameters(reg):
    model = make()
    prunus.prune(model, "l1_block", amount=0.5, block=(1, 4), include="fc.bias", registry=reg)
    mask = prunus.masks(model)["fc.bias"]
    assert [bool(mask[i : i + 4].any()) for i in range(0, 12, 4)].count(False) == 2


# -- aligned --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "pruned", "round_to", "kept"),
    [
        (100, 30, 8, 72),  # 70 -> nearest multiple of 8
        (100, 0, 8, 100),  # nothing asked, nothing pruned
        (100, 1, 8, 96),  # at most the largest multiple not above the size
        (100, 97, 8, 8),  # at least one multiple
        (100, 100, 8, 0),  # everything asked, everything pruned
        (6, 3, 8, 3),  # no rounding at or below round_to slices
        (64, 28, 16, 32),  # 36 -> 32 (halves up: 40 would be 2.5 steps)
        (64, 24, 16, 48),  # 40: halfway, rounds up
    ],
)
def test_aligned_keep(size, pruned, round_to, kept):
    assert aligned_keep(size, pruned, round_to) == kept


@pytest.mark.parametrize("criterion", CRITERIA)
def test_aligned_keeps_a_multiple_of_round_to(reg, criterion):
    model = nn.Sequential(nn.Linear(8, 100), nn.Linear(100, 40))
    prunus.prune(
        model,
        f"{criterion}_aligned",
        amount=0.3,
        round_to=8,
        registry=reg,
        **CRITERION_OPTIONS.get(criterion, {}),
    )
    masks = prunus.masks(model)
    assert int(masks["0.weight"].any(dim=1).sum()) == 72
    assert int(masks["1.weight"].any(dim=1).sum()) == 32  # 28 -> 32
    # Whole rows only.
    for mask in masks.values():
        rows = mask.any(dim=1)
        assert torch.equal(mask, rows[:, None].expand_as(mask))


def test_aligned_second_prune_rounds_the_slices_still_kept(reg):
    model = nn.Sequential(nn.Linear(8, 100))
    prunus.prune(model, "l1_aligned", amount=0.3, registry=reg)  # keeps 72
    prior = prunus.masks(model)["0.weight"].clone()
    prunus.prune(model, "l1_aligned", amount=0.5, registry=reg)  # 36 -> 40
    mask = prunus.masks(model)["0.weight"]
    assert int(mask.any(dim=1).sum()) == 40
    assert not bool((mask & ~prior).any())


def test_aligned_dim_out_of_range(reg):
    with pytest.raises(ConfigError, match="out of range"):
        prunus.prune(make(), "l1_aligned", amount=0.5, dim=4, include="fc.weight", registry=reg)
