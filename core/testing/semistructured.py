"""Group properties of the ``nm``, ``block`` and ``aligned`` granularities, for the conformance kit.

Registered through the kit's extension mechanism (:func:`~prunus.testing.register_property`,
:func:`~prunus.testing.register_units`, :func:`~prunus.testing.register_options`) when this module is imported::

    import prunus.testing.semistructured  # noqa: F401  (registers the properties below)
    prunus.testing.check_strategy("taylor_nm")

=======================  ==========================================================================================
``exact_count``          nm: every group of ``m_group`` along the input dim keeps ``min(n_keep, still kept)``;
                         block: the blocks ``amount`` asks are pruned, among the blocks still holding a kept entry;
                         aligned: the slices pruned are ``amount``'s count rounded as documented (``aligned_keep``)
``whole_blocks``         (block) each ``(rows, cols)`` block of the 2-D view is kept as it was or all pruned
``whole_slices``         (aligned) pruning removes whole slices along ``dim``
``amount_one_prunes_all``  the generic property of the kit covers block and aligned; nm has no amount
``criterion_respected``  within each group (nm), among blocks (block) or slices (aligned), every unit pruned now
                         scores no higher than every unit kept
``seed_changes_mask``    (nm) as the generic property, with 2:4 options (drawn N:M options may prune all)
=======================  ==========================================================================================

The ``nm`` options ``n_keep < m_group`` are related, which a field-by-field draw cannot know: options are
registered for every ``*_nm`` strategy known to the global registry at import; a plugin that adds a criterion
registers them for its own with ``register_options("taylor_nm", nm_options("taylor_nm"))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from ..ranking import rankable
from ..registration import Registry
from ..registration import registry as global_registry
from ..strategy import Criterion, Target
from ..targets import input_dim
from . import generators as pst
from .properties import (
    check_order,
    criterion_scores,
    expected_count,
    fail,
    full_masks,
    needs_amount,
    needs_criterion,
    needs_seed,
    register_property,
)
from .subject import (
    Example,
    OptionsFn,
    Param,
    Subject,
    eligible,
    register_options,
    register_units,
)

__all__ = ["nm_options"]


# -- oracles: the documented rules, computed independently of the plugins' implementations ------------------


def aligned_keep(size: int, pruned: int, round_to: int) -> int:
    """The slices ``aligned`` keeps, by its documented rule, found by search over the allowed widths.

    Nothing pruned keeps everything, everything pruned keeps nothing, ``size <= round_to`` is not rounded;
    otherwise the width kept is the multiple of ``round_to`` in ``[round_to, size]`` nearest to
    ``size - pruned``, the larger one on a tie.
    """
    keep = size - pruned
    if pruned == 0 or keep == 0 or size <= round_to:
        return keep
    allowed = range(round_to, size + 1, round_to)
    return min(allowed, key=lambda width: (abs(width - keep), -width))


def block_scores(criterion: Criterion, scores: Tensor, rows: int, cols: int) -> Tensor:
    """One score per ``(rows, cols)`` block of the 2-D ``scores``: ``criterion.reduce`` over its entries,
    block by block (edge blocks hold what is left).

    Reduced in the dtype the granularity ranks in (:func:`prunus.ranking.rankable`), so where the criterion's
    own reduction overflows there (an Ln norm of huge weights is inf), the oracle's does too: that is the
    criterion's arithmetic, not the granularity's ranking.
    """
    values = rankable(scores)
    height, width = values.shape
    grid = torch.empty(-(-height // rows), -(-width // cols), dtype=values.dtype)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            block = values[i * rows : (i + 1) * rows, j * cols : (j + 1) * cols]
            grid[i, j] = criterion.reduce(block, (0, 1))
    return grid


# -- nm -------------------------------------------------------------------------------------------------------


def nm_options(name: str) -> OptionsFn:
    """The options function of strategy ``name`` at granularity ``nm``, for :func:`register_options`.

    It draws ``n_keep < m_group <= 8``, a ``dim`` valid for every target (or none), and the criterion's own
    options field by field.
    """

    def options(targets: Sequence[Target], registry: Registry) -> st.SearchStrategy[dict[str, Any]]:
        ndim = min(t.tensor.dim() for t in targets)
        others = pst.config_options(
            registry.info(name).config,
            targets=targets,
            exclude=("amount", "n_keep", "m_group", "dim"),
        )

        @st.composite
        def draw(draw_fn: st.DrawFn) -> dict[str, Any]:
            m = draw_fn(st.integers(1, 8))
            chosen: dict[str, Any] = {"n_keep": draw_fn(st.integers(0, m - 1)), "m_group": m}
            dim = draw_fn(st.none() | st.integers(-ndim, ndim - 1))
            if dim is not None:
                chosen["dim"] = dim
            return {**draw_fn(others), **chosen}

        return draw()

    return options


def _nm_groups(
    target: Target, tensor: Tensor, options: Mapping[str, Any], fill: Any = False
) -> Tensor:
    """``tensor`` as ``(..., groups, m_group)`` along the nm dim, a short last group padded with ``fill``."""
    ndim = tensor.dim()
    dim = options.get("dim")
    dim = input_dim(target.module, ndim) if dim is None else int(dim) % ndim
    moved = tensor.movedim(dim, -1)
    size = moved.shape[-1]
    m = min(int(options.get("m_group", 4)), size)
    pad = (-size) % m
    if pad:
        moved = torch.cat([moved, moved.new_full((*moved.shape[:-1], pad), fill)], dim=-1)
    return moved.reshape(*moved.shape[:-1], -1, m)


@register_property("exact_count", granularity="nm")
def nm_exact_count(subject: Subject, example: Example) -> None:
    """Every group of ``m_group`` along the input dim keeps ``min(n_keep, entries still kept in it)``."""
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    n = int(example.options.get("n_keep", 2))
    for target in context.targets:
        kept = _nm_groups(target, full[target.name], example.options).sum(dim=-1)
        still = _nm_groups(target, eligible(target), example.options).sum(dim=-1)
        wrong = kept != still.clamp(max=n)
        if bool(wrong.any()):
            index = wrong.nonzero()[0].tolist()
            fail(
                f"{target.name!r}: group {index} keeps {int(kept[tuple(index)])} entries, but "
                f"min(n_keep={n}, {int(still[tuple(index)])} still kept) were to be kept"
            )


@register_property("criterion_respected", granularity="nm", requires=[needs_criterion])
def nm_criterion_respected(subject: Subject, example: Example) -> None:
    """Within each group, every entry pruned now scores no higher than every entry kept."""
    context, _, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        score = _nm_groups(target, scores[target.name].double(), example.options, 0.0)
        kept = _nm_groups(target, full[target.name], example.options)
        pruned = _nm_groups(target, eligible(target), example.options) & ~kept
        high = torch.where(pruned, score, float("-inf")).amax(dim=-1)
        low = torch.where(kept, score, float("inf")).amin(dim=-1)
        wrong = high > low
        if bool(wrong.any()):
            index = tuple(wrong.nonzero()[0].tolist())
            fail(
                f"{target.name!r} group {list(index)}: pruned an entry scored {float(high[index])!r} but kept "
                f"one scored {float(low[index])!r}"
            )


def _nm_seed_examples(subject: Subject) -> st.SearchStrategy[Example]:
    @st.composite
    def draw(draw_fn: st.DrawFn) -> Example:
        values = torch.arange(1, 257, dtype=torch.float32).reshape(16, 16)
        param = Param("p0.weight", values, None, values.flip(0) if subject.case.gradients else None)
        targets = Example((param,)).context().targets
        options, _, units = subject.draw_options(draw_fn, targets)
        options = {**options, "n_keep": 2, "m_group": 4}  # 2:4 leaves room for the seed to matter
        options.pop("dim", None)
        data = draw_fn(subject.case.data(targets)) if subject.case.data is not None else None
        return Example((param,), options, None, units, data)

    return draw()


@register_property(
    "seed_changes_mask",
    granularity="nm",
    requires=[needs_seed],
    examples=_nm_seed_examples,
    max_examples=3,
)
def nm_seed_changes_mask(subject: Subject, example: Example) -> None:
    """A random N:M strategy gives different masks for different seeds (2:4 on a 16x16 parameter)."""
    seen = set()
    for seed in range(6):
        _, masks = subject.compute(example, seed=seed)
        seen.add(tuple((name, tuple(m.reshape(-1).tolist())) for name, m in sorted(masks.items())))
    if len(seen) < 2:
        fail("seeds 0 to 5 all gave the same 2:4 mask: the seed option is ignored")


# -- block ----------------------------------------------------------------------------------------------------


def _view(tensor: Tensor) -> Tensor:
    return tensor.reshape(1, -1) if tensor.dim() <= 1 else tensor.reshape(tensor.shape[0], -1)


def _block_size(example: Example, view: Tensor) -> tuple[int, int]:
    rows, cols = tuple(example.options.get("block", (1, 4)))
    return min(int(rows), view.shape[0]), min(int(cols), view.shape[1])


def _per_block(mask: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """Per block: whether any entry is True, whether every entry is True."""
    height, width = mask.shape
    grid_h, grid_w = -(-height // rows), -(-width // cols)
    anyof = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    allof = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    for i in range(grid_h):
        for j in range(grid_w):
            tile = mask[i * rows : (i + 1) * rows, j * cols : (j + 1) * cols]
            anyof[i, j], allof[i, j] = bool(tile.any()), bool(tile.all())
    return anyof, allof


def _units_block(targets: Sequence[Target], options: Mapping[str, Any]) -> int:
    counts = []
    for target in targets:
        view = _view(eligible(target))
        rows, cols = tuple(options.get("block", (1, 4)))
        could, _ = _per_block(view, min(int(rows), view.shape[0]), min(int(cols), view.shape[1]))
        counts.append(int(could.sum()))
    return min(counts)


register_units("block", _units_block)


@register_property("exact_count", granularity="block", requires=[needs_amount])
def block_exact_count(subject: Subject, example: Example) -> None:
    """Each parameter loses exactly the blocks ``amount`` asks, among the blocks with an entry still kept."""
    assert example.amount is not None
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        prior, mask = _view(eligible(target)), _view(full[target.name])
        rows, cols = _block_size(example, prior)
        could, _ = _per_block(prior, rows, cols)
        kept, _ = _per_block(mask, rows, cols)
        pruned, size = int((could & ~kept).sum()), int(could.sum())
        if pruned != expected_count(example.amount, size):
            fail(
                f"{target.name!r}: pruned {pruned} blocks of {rows}x{cols}, but amount={example.amount!r} "
                f"asks for {expected_count(example.amount, size)} of the {size} still kept"
            )


@register_property("whole_blocks", granularity="block")
def whole_blocks(subject: Subject, example: Example) -> None:
    """Each ``(rows, cols)`` block of the 2-D view is either kept as it was or pruned whole."""
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        prior, mask = _view(eligible(target)), _view(full[target.name])
        rows, cols = _block_size(example, prior)
        same = _per_block(mask == prior, rows, cols)[1]
        empty = ~_per_block(mask, rows, cols)[0]
        partial = ~(same | empty)
        if bool(partial.any()):
            index = partial.nonzero()[0].tolist()
            fail(f"{target.name!r}: block {index} of {rows}x{cols} is only partly pruned")


@register_property(
    "criterion_respected", granularity="block", requires=[needs_amount, needs_criterion]
)
def block_criterion_respected(subject: Subject, example: Example) -> None:
    """Every block pruned now has a block score (``criterion.reduce``) no higher than every block kept."""
    context, criterion, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        prior, mask = _view(eligible(target)), _view(full[target.name])
        rows, cols = _block_size(example, prior)
        grid = block_scores(criterion, _view(scores[target.name]), rows, cols)
        could, _ = _per_block(prior, rows, cols)
        kept, _ = _per_block(mask, rows, cols)
        # The oracle reduces each block on its own, the granularity all blocks at once: orders within the
        # rounding of a reduction of rows * cols terms are not a bug.
        rtol = rows * cols * torch.finfo(torch.float32).eps
        check_order(f"{target.name!r} blocks of {rows}x{cols}", grid, could & ~kept, kept, rtol)


# -- aligned --------------------------------------------------------------------------------------------------


def _slices(target: Target, mask: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    dim %= target.tensor.dim()
    others = tuple(d for d in range(target.tensor.dim()) if d != dim)
    prior = eligible(target)
    if not others:
        return prior, mask
    return prior.any(dim=others), mask.any(dim=others)


def _units_aligned(targets: Sequence[Target], options: Mapping[str, Any]) -> int:
    dim = int(options.get("dim", 0))
    return min(int(_slices(t, eligible(t), dim)[0].sum()) for t in targets)


register_units("aligned", _units_aligned)


@register_property("exact_count", granularity="aligned", requires=[needs_amount])
def aligned_exact_count(subject: Subject, example: Example) -> None:
    """Each parameter keeps ``aligned_keep(slices still kept, amount's count, round_to)`` slices along ``dim``."""
    assert example.amount is not None
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    dim, multiple = int(example.options.get("dim", 0)), int(example.options.get("round_to", 8))
    for target in context.targets:
        could, kept = _slices(target, full[target.name], dim)
        size = int(could.sum())
        want = aligned_keep(size, expected_count(example.amount, size), multiple)
        if int((could & kept).sum()) != want:
            fail(
                f"{target.name!r}: kept {int((could & kept).sum())} of {size} slices along dim={dim}, not "
                f"{want} (amount={example.amount!r} rounded to a multiple of {multiple})"
            )


@register_property("whole_slices", granularity="aligned")
def aligned_whole_slices(subject: Subject, example: Example) -> None:
    """Pruning removes whole slices along ``dim``: each slice is kept as it was or all pruned."""
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    dim = int(example.options.get("dim", 0))
    for target in context.targets:
        d = dim % target.tensor.dim()
        size = target.tensor.shape[d]
        mask = full[target.name].movedim(d, 0).reshape(size, -1)
        prior = eligible(target).movedim(d, 0).reshape(size, -1)
        partial = ~((mask == prior).all(dim=1) | (~mask).all(dim=1))
        if bool(partial.any()):
            fail(
                f"{target.name!r}: slice {int(partial.nonzero()[0, 0])} along dim={d} is partly pruned"
            )


@register_property(
    "criterion_respected", granularity="aligned", requires=[needs_amount, needs_criterion]
)
def aligned_criterion_respected(subject: Subject, example: Example) -> None:
    """Every slice pruned now has a group score (``criterion.reduce``) no higher than every slice kept."""
    context, criterion, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    dim = int(example.options.get("dim", 0))
    for target in context.targets:
        d = dim % target.tensor.dim()
        others = tuple(i for i in range(target.tensor.dim()) if i != d)
        groups = criterion.reduce(scores[target.name], others)
        could, kept = _slices(target, full[target.name], d)
        check_order(f"{target.name!r} along dim={d}", groups, could & ~kept, kept)


for _name in global_registry.names("*_nm"):
    register_options(_name, nm_options(_name))
