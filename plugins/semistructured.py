"""Hardware-shaped granularities: ``nm`` (N:M semi-structured) and ``block``.

Like every granularity they compose with every criterion, built-in or third-party: ``l1_nm``, ``random_nm``,
``ln_block``, ``taylor_aligned``... Each prunes among the entries an earlier ``prune`` kept and never revives one.

``nm`` (options ``n_keep=2``, ``m_group=4``, ``dim=None``)
    Keeps at most ``n_keep`` entries in every group of ``m_group`` consecutive weights along the *input* dim:
    the last dim of a Linear weight ``(out, in)``; for a convolution ``(out, in, *kernel)`` the input-channel
    dim 1, so a group is ``m_group`` consecutive input channels at one output channel and kernel position (the
    layout NVIDIA's 2:4 kernels read in a channels-last implicit GEMM); for a transposed convolution
    ``(in, out, *kernel)`` dim 0; for a 1-D parameter its only dim. ``dim`` overrides the choice. A trailing
    group shorter than ``m_group`` counts as padded with zeros: it keeps at most ``n_keep`` too. The sparsity
    is fixed, ``1 - n_keep / m_group``: there is no ``amount``. The names are not ``n`` and ``m`` because the
    ``ln`` criterion already has an option ``n`` (the norm's order), and composed options must not clash.

``block`` (options ``amount``, ``block=(1, 4)``)
    Prunes ``(rows, cols)`` blocks of the weight's 2-D view ``weight.reshape(shape[0], -1)`` (a convolution's
    ``(out, in * kh * kw)``, the GEMM a BSR kernel reads; a 1-D parameter is one row ``(1, n)``, a scalar one
    entry) as units, ``amount`` counting the blocks an earlier prune left with a kept entry. A block larger than
    the view covers all of it along that side. A block's score is the criterion's ``reduce`` over its entries (the L1 norm
    for ``l1``). Edge blocks of a dim that ``rows`` or ``cols`` does not divide are smaller and are scored over
    the entries they have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, model_validator
from torch import Tensor

from prunus.plugin_api import (
    Amount,
    ConfigError,
    Criterion,
    Granularity,
    Partition,
    PruneContext,
    Registrar,
    StrategyConfig,
    Target,
    count_to_prune,
    count_true,
    hookimpl,
    input_dim,
    keep_mask,
    local_along,
    rankable,
)

__all__ = ["NM", "Block", "BlockConfig", "NMConfig", "block_scores", "nm_keep_mask"]


# -- nm -------------------------------------------------------------------------------------------------------


class NMConfig(StrategyConfig):
    """Options of the ``nm`` granularity."""

    n_keep: StrictInt = Field(
        default=2, ge=0, description="N: entries kept at most in each group (2 for 2:4)"
    )
    m_group: StrictInt = Field(
        default=4, ge=1, description="M: consecutive entries per group along the input dim"
    )
    dim: StrictInt | None = Field(
        default=None,
        description="dim the groups run along; default the input dim (Linear: last; Conv: 1; "
        "ConvTranspose: 0)",
    )

    @model_validator(mode="after")
    def _n_below_m(self) -> NMConfig:
        if self.n_keep >= self.m_group:
            raise ValueError(
                f"n_keep={self.n_keep} must be below m_group={self.m_group} (N:M keeps N < M of every M)"
            )
        return self


class NM(Granularity):
    """At most ``n_keep`` kept of every ``m_group`` consecutive weights along the input dim (2:4 by default)."""

    name = "nm"
    summary = "N:M semi-structured: at most n_keep of every m_group consecutive inputs (2:4)"
    Config = NMConfig
    separable = True

    def __init__(self, config: StrategyConfig) -> None:
        assert isinstance(config, NMConfig)
        if (
            config.n_keep >= config.m_group
        ):  # also checked here: composed options may skip model validators
            raise ConfigError(
                f"n_keep={config.n_keep} must be below m_group={config.m_group} (N:M keeps N < M of every M)"
            )
        super().__init__(config)

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, NMConfig)
        n, m = self.config.n_keep, self.config.m_group
        return {
            target.name: nm_keep_mask(score(target), n, m, self._dim(target), target.prior)
            for target in context.targets
        }

    def partition(self, target: Target) -> Partition:
        """Every entry is a unit; each run of ``m_group`` consecutive entries along the dim is a group."""
        assert isinstance(self.config, NMConfig)
        shape = target.tensor.shape
        sides = [1] * len(shape)
        sides[self._dim(target)] = self.config.m_group
        return Partition.entries(shape, groups=Partition.tiles(shape, sides).units)

    def prune_counts(self, eligible: Tensor) -> Tensor:
        """All but ``n_keep`` of the entries each group still keeps (none of a group keeping fewer)."""
        assert isinstance(self.config, NMConfig)
        return (eligible - self.config.n_keep).clamp(min=0)

    def _dim(self, target: Target) -> int:
        """The dim the groups run along for ``target``, checked and made non-negative."""
        assert isinstance(self.config, NMConfig)
        shape = target.tensor.shape
        if len(shape) == 0:
            raise ConfigError(f"{target.name!r} is a scalar; N:M groups need at least one dim")
        dim = self.config.dim
        if dim is None:
            dim = input_dim(target.module, len(shape))
        if not -len(shape) <= dim < len(shape):
            raise ConfigError(
                f"dim={dim} is out of range for {target.name!r} of shape {tuple(shape)}; "
                f"valid dims are {-len(shape)} to {len(shape) - 1}"
            )
        return dim % len(shape)


def nm_keep_mask(scores: Tensor, n: int, m: int, dim: int, prior: Tensor | None) -> Tensor:
    """Keep the ``n`` highest-scored eligible entries of each group of ``m`` along ``dim``.

    Within a group, entries are pruned lowest score first, ties broken by position (the lower index is pruned
    first), as :func:`prunus.keep_mask` does. Entries ``prior`` pruned stay pruned and count as pruned.
    Sharded scores are handled shard by shard (groups run along ``dim``, which FSDP does not split).
    """
    return local_along(dim, lambda s, p: _nm_keep_mask(s, n, m, dim, p), scores, prior)


def _nm_keep_mask(scores: Tensor, n: int, m: int, dim: int, prior: Tensor | None) -> Tensor:
    if (
        prior is None
        and m <= _PAIRWISE_UP_TO
        and scores.shape[dim] % m == 0
        and scores.device.type == "cpu"
    ):
        return _nm_pairwise(scores, n, m, dim)
    moved = rankable(scores).movedim(dim, -1)
    size = moved.shape[-1]
    if size == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if m > size:  # one short group: the same as a group of the whole dim
        n, m = min(n, size), size
    eligible = (
        torch.ones_like(moved, dtype=torch.bool)
        if prior is None
        else prior.movedim(dim, -1).clone()
    )
    pad = (-size) % m
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad), value=float("-inf"))
        eligible = torch.nn.functional.pad(eligible, (0, pad), value=False)
    groups = moved.reshape(*moved.shape[:-1], -1, m)
    ok = eligible.reshape(groups.shape)
    # Sort each group by (eligible, score, position): stable sorts, the last one on the primary key.
    order = groups.argsort(dim=-1, stable=True)
    order = order.gather(-1, ok.gather(-1, order).to(torch.int8).argsort(dim=-1, stable=True))
    kept_count = ok.sum(dim=-1, keepdim=True).clamp(max=n)
    position = torch.arange(m, device=scores.device)
    keep_sorted = position >= (m - kept_count)
    keep = torch.zeros_like(ok).scatter(-1, order, keep_sorted)
    keep = keep.reshape(*moved.shape[:-1], -1)[..., :size]
    return keep.movedim(-1, dim).contiguous()


_PAIRWISE_UP_TO = 8
"""Groups of at most this many entries are ranked by pairwise comparisons rather than sorts."""
_GROUPS_PER_STEP = 1 << 16


def _nm_pairwise(scores: Tensor, n: int, m: int, dim: int) -> Tensor:
    """:func:`nm_keep_mask` without a prior, for small groups dividing the dim: rank by pairwise comparisons.

    An entry's rank in its group is the number of entries pruned before it would be: those scoring lower, and
    those scoring the same at a lower position. It is kept when ``rank >= m - n``. Done a slice of groups at a
    time, with the group's positions as rows (so every comparison is between two contiguous rows in cache):
    several times faster than the stable sorts, and exactly the same mask.
    """
    moved = scores.movedim(dim, -1)
    groups = moved.reshape(-1, m)
    count = groups.shape[0]
    keep = np.empty((count, m), dtype=np.bool_)
    step = min(_GROUPS_PER_STEP, max(count, 1))
    rows = np.empty((m, step), dtype=np.float64 if scores.dtype == torch.float64 else np.float32)
    rank = np.empty((m, step), dtype=np.int8)
    below = np.empty(step, dtype=np.bool_)
    for start in range(0, count, step):
        g = min(step, count - start)
        rows[:, :g] = rankable(groups[start : start + g]).t().numpy()
        rank[:, :g] = 0
        for i in range(m):
            for j in range(i + 1, m):
                # i (the lower position) is pruned before j on a tie: below j when it scores no higher.
                np.less_equal(rows[i, :g], rows[j, :g], out=below[:g])
                rank[j, :g] += below[:g]
                np.logical_not(below[:g], out=below[:g])
                rank[i, :g] += below[:g]
        np.greater_equal(rank[:, :g], m - n, out=keep[start : start + g].T)
    mask = torch.from_numpy(keep).reshape(moved.shape)
    return mask.movedim(-1, dim).contiguous()


# -- block ----------------------------------------------------------------------------------------------------


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _positive_sides(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] < 1 or value[1] < 1:
        raise ValueError(f"block={value!r}: both sides must be >= 1")
    return value


# Validators in the annotation travel with the field into every composed strategy's options model.
BlockShape = Annotated[
    tuple[StrictInt, StrictInt], BeforeValidator(_as_tuple), AfterValidator(_positive_sides)
]


class BlockConfig(StrategyConfig):
    """Options of the ``block`` granularity."""

    amount: Amount = Field(
        description="fraction in [0, 1] of the blocks still kept, or an int count"
    )
    block: BlockShape = Field(
        default=(1, 4), description="(rows, cols) of a block of the weight's 2-D view"
    )


def _view2d(tensor: Tensor) -> Tensor:
    if tensor.dim() == 0:
        return tensor.reshape(1, 1)
    if tensor.dim() == 1:
        return tensor.reshape(1, -1)
    return tensor.reshape(tensor.shape[0], -1)


def block_scores(criterion: Criterion, scores: Tensor, rows: int, cols: int) -> Tensor:
    """One score per ``(rows, cols)`` block of the 2-D ``scores`` (edge blocks reduced over what they hold)."""
    height, width = scores.shape
    full_h, full_w = height - height % rows, width - width % cols
    grid_h, grid_w = -(-height // rows), -(-width // cols)
    out = torch.empty(grid_h, grid_w, dtype=rankable(scores).dtype, device=scores.device)
    for r0, r1, br in ((0, full_h, rows), (full_h, height, height - full_h)):
        for c0, c1, bc in ((0, full_w, cols), (full_w, width, width - full_w)):
            if r1 <= r0 or c1 <= c0:
                continue
            part = rankable(scores[r0:r1, c0:c1])
            tiles = part.reshape((r1 - r0) // br, br, (c1 - c0) // bc, bc)
            reduced = criterion.reduce(tiles, (1, 3))
            out[
                r0 // rows : r0 // rows + tiles.shape[0], c0 // cols : c0 // cols + tiles.shape[2]
            ] = reduced
    return out


def _any_per_block(mask: Tensor, rows: int, cols: int) -> Tensor:
    """Whether each ``(rows, cols)`` block of the 2-D bool ``mask`` holds a True."""
    height, width = mask.shape
    padded = torch.nn.functional.pad(mask, (0, (-width) % cols, 0, (-height) % rows), value=False)
    grid_h, grid_w = padded.shape[0] // rows, padded.shape[1] // cols
    return padded.reshape(grid_h, rows, grid_w, cols).any(dim=3).any(dim=1)


def _expand_blocks(grid: Tensor, rows: int, cols: int, height: int, width: int) -> Tensor:
    return grid.repeat_interleave(rows, dim=0)[:height].repeat_interleave(cols, dim=1)[:, :width]


class Block(Granularity):
    """Prune ``block=(rows, cols)`` blocks of each weight's 2-D view as units (1x4, 4x1, 8x8...)."""

    name = "block"
    summary = "prunes (rows, cols) blocks of the weight's 2-D view as units (block=(1, 4))"
    Config = BlockConfig
    separable = True

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, BlockConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            scores = _view2d(score(target))
            height, width = scores.shape
            # A block larger than the weight covers all of it along that side.
            rows, cols = min(self.config.block[0], height), min(self.config.block[1], width)
            grid = block_scores(criterion, scores, rows, cols)
            eligible = None
            if target.prior is not None:
                prior = _view2d(target.prior)
                # A block can still be pruned if any of its entries is still kept.
                eligible = _any_per_block(prior, rows, cols)
            size = grid.numel() if eligible is None else count_true(eligible)
            k = count_to_prune(
                self.config.amount, size, what=f"{rows}x{cols} blocks of {target.name!r} still kept"
            )
            keep = _expand_blocks(keep_mask(grid, k, eligible), rows, cols, height, width)
            mask = keep.reshape(shape).contiguous()
            out[target.name] = mask if target.prior is None else mask & target.prior
        return out

    def partition(self, target: Target) -> Partition:
        """The ``(rows, cols)`` tiles of the 2-D view are the units; the tiles of a parameter compete."""
        assert isinstance(self.config, BlockConfig)
        shape = target.tensor.shape
        height, width = _view2d(target.tensor).shape
        sides = (min(self.config.block[0], height), min(self.config.block[1], width))
        return Partition.tiles((height, width), sides).reshape(shape)


@hookimpl
def prunus_register_granularities(register: Registrar) -> None:
    """Register ``nm`` and ``block``."""
    for granularity in (NM, Block):
        register(granularity)
