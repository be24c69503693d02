"""Built-in granularities: ``unstructured`` (per entry), ``structured`` (slices along ``dim``), ``aligned``
(structured, keeping a hardware-friendly multiple of slices) and ``global`` (one ranking across parameters).

Each prunes among the entries an earlier ``prune`` kept and counts ``amount`` against them, as
``torch.nn.utils.prune``'s ``PruningContainer`` does; ties are broken by position (see :mod:`prunus.ranking`).

``aligned`` (options ``amount``, ``dim=0``, ``round_to=8``)
    Structured pruning of whole slices along ``dim`` (``structured``'s rule) where the number of slices kept is
    rounded to the nearest multiple of ``round_to``, so the layer, once shrunk, has a width dense kernels like
    (multiples of 8 for GPU tensor cores, of the vector width on a CPU). ``amount=0`` prunes nothing; a
    parameter with ``round_to`` slices or fewer is not rounded; a nonzero count rounds to at least
    ``round_to``. The report says how many slices were actually pruned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field, StrictInt
from torch import Tensor

from prunus.plugin_api import (
    CHUNKED_FROM,
    Amount,
    ConfigError,
    Criterion,
    Granularity,
    Partition,
    PruneContext,
    Registrar,
    Scorer,
    StrategyConfig,
    Target,
    count_to_prune,
    count_true,
    eligible_slices,
    global_keep_masks,
    hookimpl,
    keep_mask,
    keep_slices,
    rankable,
)


class AmountConfig(StrategyConfig):
    """Options of the ``unstructured`` and ``global`` granularities."""

    amount: Amount = Field(
        description="fraction in [0, 1] of the entries still kept, or an int count"
    )


class GlobalConfig(AmountConfig):
    """Options of the ``global`` granularity."""

    min_keep: StrictInt = Field(
        default=1,
        ge=0,
        description="entries every parameter keeps, its best ones, while the amount leaves room (0: none)",
    )


class StructuredConfig(StrategyConfig):
    """Options of the ``structured`` granularity."""

    amount: Amount = Field(
        description="fraction in [0, 1] of the slices still kept, or an int count"
    )
    dim: StrictInt = Field(
        default=0,
        description="dim whose slices are pruned: 0 = output neurons / conv filters, 1 = input features / "
        "conv input channels; negative counts from the end",
    )


class Unstructured(Granularity):
    """Prune the lowest-scored individual entries of each parameter."""

    name = "unstructured"
    summary = "prunes the lowest-scored entries of each parameter"
    Config = AmountConfig

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountConfig)
        out = {}
        for target in context.targets:
            eligible = target.prior
            size = target.tensor.numel() if eligible is None else count_true(eligible)
            k = count_to_prune(
                self.config.amount, size, what=f"entries of {target.name!r} still kept"
            )
            if (
                isinstance(score, Scorer)
                and score.elementwise
                and size >= CHUNKED_FROM
                and target.tensor.device.type == "cpu"
            ):
                # One target ranked alone is a global ranking of one: scored chunk by chunk from the weights,
                # no score tensor allocated (the same mask).
                out[target.name] = global_keep_masks([target], score, k)[target.name]
            else:
                out[target.name] = keep_mask(score(target), k, eligible)
        return out

    def partition(self, target: Target) -> Partition:
        """Every entry is a unit; the entries of a parameter compete with each other."""
        return Partition.entries(target.tensor.shape)


class Structured(Granularity):
    """Prune whole slices along ``dim``: each slice's entry scores are combined by the criterion's reduce."""

    name = "structured"
    summary = "prunes whole slices along dim (neurons, conv channels)"
    Config = StructuredConfig

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, StructuredConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            dim = self._dim(target)
            others = tuple(d for d in range(len(shape)) if d != dim)
            # A slice can still be pruned if any of its entries is still kept.
            eligible = eligible_slices(target.prior, dim)
            size = shape[dim] if eligible is None else count_true(eligible)
            k = self.slices_to_prune(
                count_to_prune(
                    self.config.amount, size, what=f"slices of {target.name!r} along dim {dim}"
                ),
                size,
            )
            # Reduced in at least float32: a half-precision sum overflows to inf and ties what it should rank.
            groups = criterion.reduce(rankable(score(target)), others)
            out[target.name] = keep_slices(groups, k, shape, dim, target.prior)
        return out

    def partition(self, target: Target) -> Partition:
        """The slices along ``dim`` are the units; the slices of a parameter compete with each other."""
        return Partition.slices(target.tensor.shape, self._dim(target))

    def prune_counts(self, eligible: Tensor) -> Tensor:
        """``amount``'s count of the slices still kept, as ``slices_to_prune`` rounds it."""
        assert isinstance(self.config, StructuredConfig)
        counts = [
            self.slices_to_prune(count_to_prune(self.config.amount, n, what="slices still kept"), n)
            for n in eligible.tolist()
        ]
        return torch.tensor(counts, dtype=torch.int64)

    def _dim(self, target: Target) -> int:
        """``dim`` checked against ``target`` and made non-negative."""
        assert isinstance(self.config, StructuredConfig)
        ndim, dim = target.tensor.dim(), self.config.dim
        if not -ndim <= dim < ndim:
            raise ConfigError(
                f"dim={dim} is out of range for {target.name!r} of shape {tuple(target.tensor.shape)}; "
                f"valid dims are {-ndim} to {ndim - 1}"
            )
        return dim % ndim

    def slices_to_prune(self, asked: int, size: int) -> int:
        """How many of the ``size`` eligible slices to prune when ``amount`` asks for ``asked``.

        Subclasses round here (e.g. to keep a hardware-friendly number of channels).
        """
        return asked


class Global(Granularity):
    """One ranking of the entries of every targeted parameter together; ``amount`` is of their total.

    No parameter is emptied unless asked: each keeps its ``min_keep`` (default 1) best entries while the amount
    leaves room for that, the count pruned staying exact ("layer collapse", an output layer pruned away, is what
    a plain global ranking does to a layer whose weights are small). ``min_keep=0`` is the plain ranking, as
    ``torch.nn.utils.prune.global_unstructured``; an amount that asks for more than the floor leaves is followed,
    and the report flags the emptied parameters.

    The ranking never concatenates the scores: a sample of them gives a narrow window around the threshold, one
    sweep over each parameter keeps what is above it, prunes what is below and ranks only the few entries inside
    (see :func:`prunus.plugin_api.global_keep_masks`). The mask equals ``keep_mask`` on the concatenated scores,
    ties and earlier masks included, at a few percent of its memory. An elementwise criterion (magnitude) is
    scored chunk by chunk from the weights; another is called once or twice per parameter, which is exact for
    deterministic and seeded criteria. Sharded parameters (FSDP2) are ranked where they are, the ranks agreeing
    through collectives.
    """

    name = "global"
    summary = "prunes the lowest-scored entries in one ranking across all parameters"
    Config = GlobalConfig

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, GlobalConfig)
        targets = list(context.targets)
        return global_keep_masks(
            targets,
            score,
            self.config.amount,
            _restore_bytes(targets, self.config.amount, context),
            min_keep=self.config.min_keep,
        )

    def partition(self, target: Target) -> Partition:
        """Every entry is a unit, and the entries of every target compete in one group; each target keeps its
        ``min_keep`` best entries while the amount leaves room."""
        assert isinstance(self.config, GlobalConfig)
        return Partition.entries(target.tensor.shape, shared=True, min_keep=self.config.min_keep)


def _restore_bytes(targets: list[Target], amount: int | float, context: PruneContext) -> int:
    """The bytes of pruned values ``prune`` is going to keep for ``restore`` (0 when it keeps none).

    The global ranking may hold that much of scores between its passes: the peak it adds is then no higher
    than the one the restore data brings anyway, and the targets whose scores it holds are scored once.
    """
    if not context.restorable:
        return 0
    sizes = [t.tensor.numel() if t.prior is None else count_true(t.prior) for t in targets]
    try:
        k = count_to_prune(amount, sum(sizes))
    except ConfigError:
        return 0
    return k * max((t.tensor.element_size() for t in targets), default=0)


# -- aligned ----------------------------------------------------------------------------------------------------


class AlignedConfig(StructuredConfig):
    """Options of the ``aligned`` granularity: those of ``structured`` and the multiple to keep."""

    round_to: StrictInt = Field(
        default=8, ge=1, description="the number of slices kept is rounded to a multiple of this"
    )


def aligned_keep(size: int, pruned: int, round_to: int) -> int:
    """How many of ``size`` slices to keep when ``pruned`` were asked: rounded to a multiple of ``round_to``.

    Rounds to the nearest multiple (halves up), at least ``round_to`` unless everything is pruned, at most the
    largest multiple not above ``size``. ``pruned == 0`` keeps everything; ``size <= round_to`` is not rounded.
    """
    keep = size - pruned
    if pruned == 0 or keep == 0 or size <= round_to:
        return keep
    rounded = round_to * ((keep + round_to // 2) // round_to)
    return min(max(rounded, round_to), size - size % round_to)


class Aligned(Structured):
    """Whole slices along ``dim``, keeping a multiple of ``round_to`` of them (hardware-friendly widths)."""

    name = "aligned"
    summary = "prunes whole slices along dim, keeping a multiple of round_to (8) of them"
    Config = AlignedConfig

    def slices_to_prune(self, asked: int, size: int) -> int:
        assert isinstance(self.config, AlignedConfig)
        return size - aligned_keep(size, asked, self.config.round_to)


@hookimpl
def prunus_register_granularities(register: Registrar) -> None:
    """Register ``unstructured``, ``structured``, ``aligned`` and ``global``."""
    for granularity in (Unstructured, Structured, Aligned, Global):
        register(granularity)
