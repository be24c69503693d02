"""Built-in granularities: ``unstructured`` (per entry), ``row`` (per entry, each output row its own group),
``structured`` (slices along ``dim``), ``aligned`` (structured, keeping a hardware-friendly multiple of slices)
and ``global`` (one ranking across parameters).

Each prunes among the entries an earlier ``prune`` kept and counts ``amount`` against them, as
``torch.nn.utils.prune``'s ``PruningContainer`` does; ties are broken by position (see :mod:`prunus.ranking`).

``row`` (option ``amount``)
    Each output row of a weight (a Linear's row, a convolution's filter, a column of GPT-2's transposed
    ``Conv1D``: the rows of :func:`~prunus.plugin_api.matrix_view`) is its own comparison group: the
    parameter prunes exactly ``amount``'s count of its entries still kept, as ``unstructured`` does, spread over
    the rows in proportion to what each row still keeps (the remainder of the rounding to the rows with the
    largest shares, ties to the first), and each row prunes its own lowest-scored entries. Without an earlier
    mask every row prunes the same number of entries (up to one). Wanda found per-output groups far better
    than per-layer ones for language models.

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
    from_matrix,
    global_keep_masks,
    hookimpl,
    keep_mask,
    keep_slices,
    matrix_view,
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
    separable = True

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
    separable = True

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


# -- row ----------------------------------------------------------------------------------------------------------

_ROW_CHUNK = 1 << 22
"""Entries ranked at once by ``row``: its sort holds an int64 index per entry, so big layers go in slices."""


class Row(Granularity):
    """Prune the lowest-scored entries of every output row, each row its own group (Wanda's comparison group)."""

    name = "row"
    summary = "prunes the lowest-scored entries of each output row (the same share of every row)"
    Config = AmountConfig
    separable = True

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            scores = matrix_view(target.module, score(target))
            eligible = None if target.prior is None else matrix_view(target.module, target.prior)
            per_row = (
                torch.full((scores.shape[0],), scores.shape[1], dtype=torch.int64)
                if eligible is None
                else eligible.sum(dim=1).cpu()
            )
            k = count_to_prune(
                self.config.amount,
                int(per_row.sum()),
                what=f"entries of {target.name!r} still kept",
            )
            keep = row_keep_mask(scores, row_quotas(per_row, k).to(scores.device), eligible)
            out[target.name] = from_matrix(target.module, keep, shape).contiguous()
        return out

    def partition(self, target: Target) -> Partition:
        """Every entry is a unit; each output row (a row of the weight's ``matrix_view``) is a group."""
        shape = target.tensor.shape
        rows, columns = matrix_view(target.module, target.tensor).shape
        labels = torch.arange(rows).unsqueeze(1).expand(rows, columns)
        return Partition.entries(shape, groups=from_matrix(target.module, labels, shape))

    def prune_counts(self, eligible: Tensor) -> Tensor:
        """``amount``'s count of the entries the parameter still keeps, shared among its rows by
        :func:`row_quotas`."""
        assert isinstance(self.config, AmountConfig)
        k = count_to_prune(self.config.amount, int(eligible.sum()), what="entries still kept")
        return row_quotas(eligible, k)


def row_quotas(eligible: Tensor, k: int) -> Tensor:
    """How many of ``k`` pruned entries each row takes (``k`` in all), in proportion to its ``eligible`` count.

    The entries go one at a time to the row whose pruned share would then be the lowest (``j / eligible`` for its
    ``j``-th entry; the first row among equals): one fixed order of every entry a row could lose, so a larger
    ``k`` prunes what a smaller one does and more. (Rounding the shares down and giving the rest to the largest
    remainders would not: a larger ``k`` can take an entry back from a row, the Alabama paradox.) Each row takes
    at least its share rounded down; rows that keep the same count take the same number, up to one (the first
    rows take the extra ones).
    """
    rows = eligible.numel()
    total = int(eligible.sum())
    if total == 0 or k == 0:
        return torch.zeros_like(eligible)
    if bool(
        (eligible == eligible[0]).all()
    ):  # every row alike (no earlier mask): the order is row by row
        quotas = torch.full_like(eligible, k // rows)
        quotas[: k % rows] += 1
        return quotas
    # Every entry a row could lose, row after row: its row and the share the row has lost once it goes. Shares
    # are exact in float64 (equal fractions give equal doubles), and a stable sort puts lower rows first.
    owner = torch.repeat_interleave(torch.arange(rows), eligible.cpu())
    start = torch.cumsum(eligible.cpu(), 0) - eligible.cpu()
    step = torch.arange(total) - start[owner] + 1
    share = step.double() / eligible.cpu()[owner].double()
    first = torch.argsort(share, stable=True)[:k]
    return torch.bincount(owner[first], minlength=rows).to(eligible.device, eligible.dtype)


def row_keep_mask(scores: Tensor, quotas: Tensor, eligible: Tensor | None) -> Tensor:
    """Keep-mask of a ``(rows, cols)`` score matrix that prunes ``quotas[r]`` lowest-scored eligible entries of
    row ``r`` (ties: the lower column first; entries not ``eligible`` stay pruned and count for nothing)."""
    rows, cols = scores.shape
    keep = torch.empty(rows, cols, dtype=torch.bool, device=scores.device)
    step = max(1, _ROW_CHUNK // max(cols, 1))
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        part = rankable(scores[start:stop])
        quota = quotas[start:stop]
        if eligible is None:
            # No earlier mask: a selection per distinct quota (at most two) instead of a sort.
            for value in sorted(set(quota.tolist())):
                chosen = (quota == value).nonzero().squeeze(1)
                keep[start + chosen] = _row_selection(part[chosen], int(value))
            continue
        ok = eligible[start:stop]
        order = part.argsort(dim=1, stable=True)
        # Entries pruned earlier first (stable: the score order among the others stays).
        order = order.gather(1, ok.gather(1, order).to(torch.int8).argsort(dim=1, stable=True))
        ranks = torch.empty_like(order).scatter_(
            1, order, torch.arange(cols, device=scores.device).expand(stop - start, cols)
        )
        keep[start:stop] = ranks >= ((~ok).sum(dim=1) + quota).unsqueeze(1)
    return keep


def _row_selection(scores: Tensor, k: int) -> Tensor:
    """Prune the ``k`` lowest entries of every row (ties: the lower column first), in linear time."""
    rows, cols = scores.shape
    if k <= 0:
        return torch.ones(rows, cols, dtype=torch.bool, device=scores.device)
    if k >= cols:
        return torch.zeros(rows, cols, dtype=torch.bool, device=scores.device)
    threshold = scores.kthvalue(k, dim=1, keepdim=True).values
    below = (scores < threshold).sum(dim=1, keepdim=True)
    tied = scores == threshold
    # Among the entries tied with the threshold, the first ones by column are pruned until k are.
    keep = (scores > threshold) | (tied & (tied.cumsum(dim=1) > k - below))
    return keep


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
    """Register ``unstructured``, ``row``, ``structured``, ``aligned`` and ``global``."""
    for granularity in (Unstructured, Row, Structured, Aligned, Global):
        register(granularity)
