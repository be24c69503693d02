"""A granularity's declaration, read for the targets of one call and checked against its masks.

Every granularity declares a :class:`~prunus.plugin_api.Partition` of each parameter (the units it prunes whole,
the groups in which they compete) and how many units each group prunes
(:meth:`~prunus.plugin_api.Granularity.prune_counts`). :func:`read_layout` reads that declaration for a call's
targets into a :class:`Layout`, numbering every unit and group of the call, and fails with what to declare when
the granularity declares nothing or something inconsistent. The kit's group properties (``exact_count``,
``whole_units``, ``criterion_respected``, ``signed_scores_ranked``) check masks against a layout with the
functions below, so they hold for every granularity, built-in or third-party, with no code of its own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

import torch
from torch import Tensor

from ..ranking import rankable
from ..strategy import Granularity, Partition, Target

__all__ = [
    "DECLARE",
    "Layout",
    "amount_text",
    "check_counts",
    "check_ranking",
    "check_whole_units",
    "closest_call",
    "expected_count",
    "expected_counts",
    "fail",
    "read_layout",
    "unit_scores",
]

DECLARE = (
    "implement partition(self, target) -> Partition (prunus.plugin_api.Partition: which entries of the "
    "parameter are pruned together as a unit, and which units compete in a group; Partition.entries, "
    ".slices and .tiles build the usual ones) and, unless a fraction becomes count_to_prune(amount, units) "
    "in each group, prune_counts(self, eligible). The kit checks every mask against them: exact counts per "
    "group, whole units, the lowest-scored units pruned first"
)
"""What a granularity declares, for failure messages."""


def fail(message: str) -> NoReturn:
    """Fail the check (a kit property, a declaration) with ``message``."""
    raise AssertionError(message)


def expected_count(amount: int | float, size: int) -> int:
    """The units ``amount`` asks to prune out of ``size`` (an int is a count; a fraction rounds half to even)."""
    return amount if isinstance(amount, int) else round(amount * size)


def amount_text(amount: int | float, size: int, unit: str) -> str:
    """``amount``'s count of ``size`` units, in words: ``amount=0.5 (a fraction) asks for round(...) = 2 ...``."""
    want = expected_count(amount, size)
    if isinstance(amount, int):
        return f"amount={amount!r} (an int, so a count) asks for {want} of the {size} {unit}"
    return f"amount={amount!r} (a fraction) asks for round({amount!r} * {size}) = {want} of the {size} {unit}"


def _where(mask: Tensor, limit: int = 4) -> str:
    found = mask.nonzero()
    shown = [[int(i) for i in row] for row in found[:limit]]
    items = [str(row[0]) if len(row) == 1 else str(row) for row in shown]
    more = f", ... ({len(found)} in all)" if len(found) > limit else ""
    return "[" + ", ".join(items) + more + "]"


@dataclass(frozen=True, eq=False)
class Layout:
    """The units and groups a granularity declares for the targets of one call, numbered across the call.

    Attributes:
        granularity: the configured granularity that declared them.
        targets: the call's targets.
        unit_of: per target, an int64 tensor of its shape: the number of each entry's unit in the call.
        group_of: one entry per unit: the number of its group in the call.
        target_of: one entry per unit: the index of its target.
        could: one entry per unit: whether it is still kept (holds an entry no earlier prune removed).
        size: one entry per unit: its number of entries.
        shared: whether the groups span the targets (a global ranking).
        budgets: the groups of each budget (the groups of one target, or every group when ``shared``), in label
            order: the slices :meth:`~prunus.plugin_api.Granularity.prune_counts` is called with.
        floor: one entry per target: the ``min_keep`` units its partition declares it keeps (0: none).
    """

    granularity: Granularity
    targets: tuple[Target, ...]
    unit_of: tuple[Tensor, ...]
    group_of: Tensor
    target_of: Tensor
    could: Tensor
    size: Tensor
    shared: bool
    budgets: tuple[Tensor, ...]
    floor: Tensor

    @property
    def groups(self) -> int:
        return int(self.group_of.max()) + 1 if self.group_of.numel() else 0

    def eligible(self) -> Tensor:
        """Per group: how many of its units are still kept."""
        return torch.bincount(self.group_of[self.could], minlength=self.groups)

    def fewest_units(self) -> int:
        """The fewest units still kept in any group (an int ``amount`` may count up to it everywhere)."""
        eligible = self.eligible()
        return int(eligible.min()) if eligible.numel() else 0

    @property
    def unit(self) -> str:
        """What a unit is called in messages: ``entries`` when every unit is one entry, else ``units``."""
        return "entries" if bool((self.size == 1).all()) else "units"

    def kept(self, full: Mapping[str, Tensor]) -> Tensor:
        """Per unit: whether the full masks keep any of its entries."""
        kept = torch.zeros(self.group_of.numel(), dtype=torch.bool)
        for target, units in zip(self.targets, self.unit_of, strict=True):
            mask = full[target.name].reshape(-1).cpu()
            kept.scatter_reduce_(0, units.reshape(-1), mask, "amax")
        return kept

    def describe_group(self, group: int) -> str:
        """The group in words: its target, and where its entries are when the target has several groups."""
        if self.shared and self.groups == 1:
            return "across all targets"
        units = (self.group_of == group).nonzero().squeeze(1)
        index = int(self.target_of[units[0]])
        target = self.targets[index]
        if not self.shared and torch.unique(self.group_of[self.target_of == index]).numel() == 1:
            return repr(target.name)
        entries = torch.isin(self.unit_of[index], units)
        scope = "shared group" if self.shared else "group"
        return f"{target.name!r}, the {scope} of the entries at {_where(entries)}"

    def describe_unit(self, unit: int) -> str:
        """The unit in words: its target and where its entries are."""
        index = int(self.target_of[unit])
        entries = self.unit_of[index] == unit
        name = self.targets[index].name
        if int(self.size[unit]) == 1:
            return f"the entry at {_where(entries)[1:-1]} of {name!r}"
        return f"the unit of {name!r} at {_where(entries)}"


def read_layout(granularity: Granularity, targets: Sequence[Target]) -> Layout:
    """Read ``granularity``'s declaration for ``targets``; fail (``AssertionError``) naming what is wrong."""
    name = f"granularity {granularity.name!r} ({type(granularity).__name__})"
    partitions: list[Partition] = []
    for target in targets:
        declared = granularity.partition(target)
        if declared is None:
            fail(f"{name} declares no partition: {DECLARE}")
        if not isinstance(declared, Partition):
            fail(
                f"{name}.partition returned {type(declared).__name__} for {target.name!r}, not a "
                "prunus.plugin_api.Partition"
            )
        shape = tuple(target.tensor.shape)
        for field in ("units", "groups"):
            labels = getattr(declared, field)
            if (
                not isinstance(labels, Tensor)
                or labels.dtype.is_floating_point
                or labels.is_complex()
            ):
                fail(
                    f"{name}.partition({target.name!r}).{field} is {type(labels).__name__}"
                    f"{f' of dtype {labels.dtype}' if isinstance(labels, Tensor) else ''}; it must be an int "
                    "tensor of the parameter's shape (one label per entry)"
                )
            if labels.dtype == torch.bool or tuple(labels.shape) != shape:
                fail(
                    f"{name}.partition({target.name!r}).{field} has shape {tuple(labels.shape)} and dtype "
                    f"{labels.dtype}; it must be an int tensor of the parameter's shape {shape}"
                )
        partitions.append(declared)
    for target, declared in zip(targets, partitions, strict=True):
        floor = declared.min_keep
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
            fail(f"{name}.partition({target.name!r}).min_keep is {floor!r}; it must be an int >= 0")
        if floor and not declared.shared:
            fail(
                f"{name}.partition({target.name!r}) declares min_keep={floor} without shared groups; a floor "
                "per target only means something when targets compete in one ranking (shared=True)"
            )
    if len({p.shared for p in partitions}) > 1:
        fail(f"{name} declares shared groups for some targets and not for others")
    shared = bool(partitions and partitions[0].shared)

    unit_of: list[Tensor] = []
    unit_group_keys: list[Tensor] = []
    target_of: list[Tensor] = []
    could: list[Tensor] = []
    sizes: list[Tensor] = []
    offset = 0
    for index, (target, partition) in enumerate(zip(targets, partitions, strict=True)):
        units = partition.units.reshape(-1).to(torch.int64).cpu()
        groups = partition.groups.reshape(-1).to(torch.int64).cpu()
        _, local = torch.unique(units, return_inverse=True)
        count = int(local.max()) + 1 if local.numel() else 0
        low = torch.full((count,), torch.iinfo(torch.int64).max).scatter_reduce(
            0, local, groups, "amin"
        )
        high = torch.full((count,), torch.iinfo(torch.int64).min).scatter_reduce(
            0, local, groups, "amax"
        )
        if bool((low != high).any()):
            unit = int((low != high).nonzero()[0, 0])
            where = _where((local == unit).reshape(target.tensor.shape))
            fail(
                f"{name}.partition({target.name!r}) puts the entries of one unit (at {where}) in different "
                "groups; every entry of a unit must carry the same group label"
            )
        prior = target.prior
        keep = (
            torch.ones(units.numel(), dtype=torch.bool)
            if prior is None
            else prior.reshape(-1).cpu().bool()
        )
        unit_of.append((local + offset).reshape(target.tensor.shape))
        unit_group_keys.append(low)
        target_of.append(torch.full((count,), index, dtype=torch.int64))
        could.append(torch.zeros(count, dtype=torch.bool).scatter_reduce(0, local, keep, "amax"))
        sizes.append(torch.bincount(local, minlength=count))
        offset += count

    # Groups numbered across the call: per target in label order, or one numbering when shared.
    group_of_parts: list[Tensor] = []
    budgets: list[Tensor] = []
    next_group = 0
    if shared:
        labels = (
            torch.cat(unit_group_keys) if unit_group_keys else torch.zeros(0, dtype=torch.int64)
        )
        distinct, inverse = torch.unique(labels, return_inverse=True)
        group_of = inverse
        budgets.append(torch.arange(distinct.numel()))
    else:
        for keys in unit_group_keys:
            distinct, inverse = torch.unique(keys, return_inverse=True)
            group_of_parts.append(inverse + next_group)
            budgets.append(torch.arange(next_group, next_group + distinct.numel()))
            next_group += distinct.numel()
        group_of = (
            torch.cat(group_of_parts) if group_of_parts else torch.zeros(0, dtype=torch.int64)
        )
    empty = torch.zeros(0, dtype=torch.int64)
    return Layout(
        granularity=granularity,
        targets=tuple(targets),
        unit_of=tuple(unit_of),
        group_of=group_of,
        target_of=torch.cat(target_of) if target_of else empty,
        could=torch.cat(could) if could else torch.zeros(0, dtype=torch.bool),
        size=torch.cat(sizes) if sizes else empty,
        shared=shared,
        budgets=tuple(budgets),
        floor=torch.tensor([p.min_keep for p in partitions], dtype=torch.int64),
    )


def expected_counts(layout: Layout) -> tuple[Tensor, list[str]]:
    """The units each group must prune, and the rule in words for each group.

    A granularity that keeps the default :meth:`~prunus.plugin_api.Granularity.prune_counts` is held to
    torch's rounding, computed here (not by its code); one that overrides it is held to what its override
    says, after checking the override answers sensibly (an int per group, between 0 and the units still kept).
    """
    granularity = layout.granularity
    eligible = layout.eligible()
    if type(granularity).prune_counts is Granularity.prune_counts:
        amount = getattr(granularity.config, "amount", None)
        if not isinstance(amount, int | float):
            fail(
                f"granularity {granularity.name!r} has no amount option and does not override prune_counts: "
                "say how many units of each group it prunes (prune_counts(self, eligible))"
            )
        counts = [expected_count(amount, int(n)) for n in eligible.tolist()]
        texts = [
            amount_text(amount, int(n), f"{layout.unit} still kept") for n in eligible.tolist()
        ]
        return torch.tensor(counts, dtype=torch.int64), texts
    counts_out = torch.zeros(layout.groups, dtype=torch.int64)
    owner = f"{type(granularity).__name__}.prune_counts"
    for budget in layout.budgets:
        asked = eligible[budget]
        answer = granularity.prune_counts(asked.clone())
        if (
            not isinstance(answer, Tensor)
            or answer.dtype.is_floating_point
            or answer.dtype == torch.bool
        ):
            fail(f"{owner}({asked.tolist()}) returned {answer!r}; it must return an int tensor")
        answer = answer.reshape(-1).cpu().to(torch.int64)
        if answer.numel() != asked.numel():
            fail(
                f"{owner}({asked.tolist()}) returned {answer.tolist()}: one count per group "
                f"({asked.numel()}) is needed"
            )
        if bool(((answer < 0) | (answer > asked)).any()):
            fail(
                f"{owner}({asked.tolist()}) returned {answer.tolist()}: a group cannot prune fewer than 0 "
                "or more units than it still keeps"
            )
        counts_out[budget] = answer
    texts = [
        f"{owner} asks for {int(c)} of the {int(n)} {layout.unit} still kept"
        for c, n in zip(counts_out.tolist(), eligible.tolist(), strict=True)
    ]
    return counts_out, texts


def check_counts(layout: Layout, full: Mapping[str, Tensor], prefix: str = "") -> None:
    """Fail unless every group prunes exactly the units its count says (among its units still kept)."""
    counts, texts = expected_counts(layout)
    pruned_units = layout.could & ~layout.kept(full)
    pruned = torch.bincount(layout.group_of[pruned_units], minlength=layout.groups)
    wrong = (pruned != counts).nonzero().squeeze(1)
    if wrong.numel():
        group = int(wrong[0])
        fail(
            f"{prefix}{layout.describe_group(group)}: pruned {int(pruned[group])}, but {texts[group]}"
        )


def check_whole_units(layout: Layout, full: Mapping[str, Tensor], prefix: str = "") -> None:
    """Fail unless every unit is kept as it was or pruned whole."""
    for target, units in zip(layout.targets, layout.unit_of, strict=True):
        mask = full[target.name].reshape(-1).cpu()
        prior = (
            torch.ones_like(mask) if target.prior is None else target.prior.reshape(-1).cpu().bool()
        )
        flat = units.reshape(-1)
        count = layout.group_of.numel()
        changed = torch.zeros(count, dtype=torch.bool).scatter_reduce(
            0, flat, mask != prior, "amax"
        )
        any_kept = torch.zeros(count, dtype=torch.bool).scatter_reduce(0, flat, mask, "amax")
        partial = changed & any_kept
        if bool(partial.any()):
            unit = int(partial.nonzero()[0, 0])
            inside = flat == unit
            fail(
                f"{prefix}{layout.describe_unit(unit)} is only partly pruned: it keeps "
                f"{int((mask & inside).sum())} of its {int((prior & inside).sum())} entries still kept; a "
                f"granularity prunes a unit whole or not at all (its Partition.units)"
            )


Reduce = Callable[[Tensor, tuple[int, ...]], Tensor]


def unit_scores(
    layout: Layout, scores: Mapping[str, Tensor], reduce: Reduce
) -> tuple[Tensor, Tensor, Tensor]:
    """Each unit's score, as low and as high as a granularity may fairly take it, and its float epsilon.

    A unit's score is ``reduce`` over its entries, computed in the scores' own dtype (half precision widened,
    as :func:`~prunus.ranking.rankable` does) and in float64: a granularity may reduce either way, and the
    rounding of the two bounds what it gets. A unit of one entry may also score that entry's score itself (the
    per-entry granularities do not reduce). Returns, per unit, the lowest and highest of these (float64) and
    the epsilon of the scores' dtype.
    """
    count = layout.group_of.numel()
    low = torch.zeros(count, dtype=torch.float64)
    high = torch.zeros(count, dtype=torch.float64)
    eps = torch.zeros(count, dtype=torch.float64)
    for target, units in zip(layout.targets, layout.unit_of, strict=True):
        flat = rankable(scores[target.name].detach()).reshape(-1).cpu()
        ids = units.reshape(-1)
        order = torch.argsort(ids, stable=True)
        present, counts = torch.unique_consecutive(ids[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        eps[present] = float(torch.finfo(flat.dtype).eps)
        for size in counts.unique().tolist():
            chosen = present[counts == size]
            entries = flat[order[starts[counts == size].unsqueeze(1) + torch.arange(size)]]
            candidates = [reduce(entries, (1,)).double()]
            # A reduce that works in its own dtype only has no float64 reading.
            with contextlib.suppress(RuntimeError, TypeError):
                candidates.append(reduce(entries.double(), (1,)).double())
            if size == 1:
                candidates.append(entries[:, 0].double())
            stacked = torch.stack([c.reshape(-1) for c in candidates])
            low[chosen] = stacked.amin(dim=0)
            high[chosen] = stacked.amax(dim=0)
    return low, high, eps


def check_ranking(
    layout: Layout,
    full: Mapping[str, Tensor],
    scores: Mapping[str, Tensor],
    reduce: Reduce,
    prefix: str = "",
) -> None:
    """Fail unless, in every group, no unit pruned now scores higher than a unit kept.

    A unit's score is ``reduce`` over its entries (see :func:`unit_scores`); an order that the float rounding
    of a reduce can explain is not a failure.
    """
    kept = layout.kept(full)
    pruned = layout.could & ~kept
    if bool(layout.floor.any()):
        kept = kept & ~_held(layout, kept, full, scores, reduce, prefix)
    low, high, eps = unit_scores(layout, scores, reduce)
    groups, inf = layout.groups, math.inf

    def per_group(values: Tensor, reduction: str, fill: float) -> Tensor:
        start = torch.full((groups,), fill, dtype=values.dtype)
        return start.scatter_reduce(0, layout.group_of, values, reduction)

    # The most favourable reading: a pruned unit at its lowest score, a kept one at its highest.
    worst_pruned = per_group(
        low.where(pruned, torch.tensor(-inf, dtype=torch.float64)), "amax", -inf
    )
    best_kept = per_group(high.where(kept, torch.tensor(inf, dtype=torch.float64)), "amin", inf)
    size = per_group(layout.size.double(), "amax", 1.0)
    slack_eps = per_group(eps, "amax", 0.0)
    finite = torch.isfinite(worst_pruned) & torch.isfinite(best_kept)
    scale = torch.maximum(worst_pruned.abs(), best_kept.abs()).where(
        finite, torch.zeros(groups).double()
    )
    slack = 2 * (size - 1) * slack_eps * scale
    wrong = (worst_pruned > best_kept) & ((worst_pruned - best_kept > slack) | ~finite)
    if not bool(wrong.any()):
        return
    group = int(wrong.nonzero()[0, 0])
    inside = layout.group_of == group
    worst = int(torch.where(pruned & inside, low, torch.tensor(-inf).double()).argmax())
    best = int(torch.where(kept & inside, high, torch.tensor(inf).double()).argmin())
    fail(
        f"{prefix}{layout.describe_group(group)}: pruned {layout.describe_unit(worst)} scored "
        f"{float(low[worst])!r} but kept {layout.describe_unit(best)} scored {float(high[best])!r}; "
        f"{_hint(low[pruned & inside], high[kept & inside])}"
    )


def _held(
    layout: Layout,
    kept: Tensor,
    full: Mapping[str, Tensor],
    scores: Mapping[str, Tensor],
    reduce: Reduce,
    prefix: str,
) -> Tensor:
    """The units kept by a target's ``min_keep`` floor rather than by their scores (a bool per unit).

    Fails when a target keeps fewer units than its floor while the count leaves room for every floor, or when a
    target's own ranking is wrong (a floor keeps a target's best units, never others).
    """
    per_target = torch.bincount(layout.target_of[layout.could], minlength=len(layout.targets))
    floors = torch.minimum(layout.floor, per_target)
    total = int(per_target.sum())
    count = int(expected_counts(layout)[0].sum())
    if count == total or count > total - int(floors.sum()):
        # The amount asks for more than the floors leave: no floor holds.
        return torch.zeros_like(kept)
    keeps = torch.bincount(layout.target_of[kept & layout.could], minlength=len(layout.targets))
    short = (keeps < floors).nonzero().squeeze(1)
    if short.numel():
        index = int(short[0])
        fail(
            f"{prefix}{layout.targets[index].name!r} keeps {int(keeps[index])} units, below its declared "
            f"min_keep={int(layout.floor[index])} (it had {int(per_target[index])} still kept, and the count of "
            f"{count} of {total} leaves room for every target's floor)"
        )
    own = replace(
        layout, group_of=layout.target_of, shared=False, floor=torch.zeros_like(layout.floor)
    )
    check_ranking(own, full, scores, reduce, prefix)
    held_targets = (floors > 0) & (keeps <= floors)
    return held_targets[layout.target_of] & kept


def closest_call(layout: Layout, scores: Mapping[str, Tensor], reduce: Reduce) -> float | None:
    """A fraction that puts a group's cut between its two closest distinct unit scores, or ``None``.

    Where two units score a hair apart, a granularity that ranks in a narrower dtype, or sums in another order,
    is most likely to keep the wrong one: the fraction of the largest group's units still kept below that gap
    makes the cut fall right there.
    """
    low, _, _ = unit_scores(layout, scores, reduce)
    eligible = layout.eligible()
    if not eligible.numel():
        return None
    group = int(eligible.argmax())
    values = torch.sort(low[layout.could & (layout.group_of == group)]).values
    finite = values[torch.isfinite(values)]
    if finite.numel() < 2:
        return None
    gaps = (finite[1:] - finite[:-1]) / torch.maximum(finite[1:].abs(), finite[:-1].abs()).clamp(
        min=1e-300
    )
    gaps = gaps.where(gaps > 0, torch.tensor(math.inf, dtype=gaps.dtype))
    if not bool(torch.isfinite(gaps).any()):
        return None
    below = (
        int((values < finite[int(gaps.argmin())]).sum()) + 1
    )  # units at or below the lower score
    return below / int(eligible[group])


def _hint(pruned: Tensor, kept: Tensor) -> str:
    """What the pruned and kept scores of a group suggest, pointing only where the evidence points."""
    reversed_ = float(pruned.min()) >= float(kept.max())
    magnitudes = float(pruned.abs().max()) <= float(kept.abs().min())
    if reversed_ and magnitudes:
        return (
            "the units pruned score highest and have the smallest |score|: the ranking is reversed, or it "
            "ranks |score|; rank the scores themselves, not their magnitudes, lowest first"
        )
    if reversed_:
        return (
            "every unit pruned scores at least as high as every unit kept: the ranking is reversed "
            "(the lowest scores must be pruned first)"
        )
    if magnitudes:
        return (
            "the units pruned are those of the smallest |score|: rank the scores themselves, not their "
            "magnitudes (scores may be negative, and -inf means prune first)"
        )
    return "the lowest-scored units of each group must be pruned first"
