"""The documented rules of prunus's built-in granularities, computed independently of their code.

The kit's group properties check every mask against what a granularity declares (its
:class:`~prunus.plugin_api.Partition` and :meth:`~prunus.plugin_api.Granularity.prune_counts`). For the built-in
granularities, ``declared_as_documented`` checks the declaration itself: the units, the groups and the counts
each one declares must equal the rule its documentation states, computed here from the options alone, with no
code of the plugins. A built-in whose declaration drifted from its documentation (N:M groups along the wrong
dim, ``aligned`` rounding the other way) fails here even when its masks agree with its declaration.

=================  ==============================================================================================
``unstructured``   every entry a unit, one group per parameter, ``amount``'s count
``structured``     slices along ``dim`` (negative from the end), one group per parameter, ``amount``'s count
``aligned``        as ``structured``, keeping the multiple of ``round_to`` nearest to what ``amount`` keeps (larger
                   on a tie, at least ``round_to`` unless all are pruned; not rounded at ``round_to`` slices or
                   fewer)
``global``         every entry a unit, one group across every target, ``amount``'s count of their total, each
                   target keeping ``min_keep`` (default 1) units while the count leaves room
``nm``             every entry a unit, a group per ``m_group`` consecutive entries along ``dim`` (default: 0 for a
                   transposed convolution and a 1-D parameter, else 1; the whole dim when it is shorter than
                   ``m_group``), each keeping at most ``n_keep``
``block``          ``(rows, cols)`` tiles of the 2-D view (``(shape[0], -1)``; a 1-D parameter is one row, a
                   scalar one entry), sides clipped to the view, one group per parameter, ``amount``'s count
``row``            every entry a unit, a group per output (the index along dim 0, or along every other dim when
                   the input features run along dim 0; a parameter of at most one dim is one row), ``amount``'s count of the parameter's entries still kept handed to
                   the rows one at a time, each to the row whose pruned share would then be the lowest (the first
                   row among equals)
=================  ==============================================================================================

It also tells the kit how to draw ``nm``'s options, whose ``n_keep < m_group`` a field-by-field draw cannot
know (:func:`nm_options`), ``block``'s block shapes and ``aligned``'s multiples (near the drawn parameters'
sizes, where rounding shows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from ..registration import Registry
from ..strategy import Target
from ..targets import input_dim
from . import generators as pst
from .partitions import expected_count, expected_counts
from .properties import fail, needs_granularity, register_property
from .subject import Example, OptionsFn, Subject, register_granularity_options

__all__ = ["aligned_keep", "nm_options"]

Rule = tuple[Tensor, Tensor, bool, int]
"""A documented partition of one parameter: unit labels, group labels (both of its shape), shared, floor."""


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


def _coordinates(shape: Sequence[int]) -> list[Tensor]:
    """For each dim, the index of every entry along it (tensors of ``shape``)."""
    return list(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"))


def _flat_index(shape: Sequence[int]) -> Tensor:
    return torch.arange(int(torch.Size(shape).numel())).reshape(tuple(shape))


def _one_group(units: Tensor, shared: bool = False, floor: int = 0) -> Rule:
    return units, torch.zeros_like(units), shared, floor


def _entries(target: Target, options: Mapping[str, Any]) -> Rule:
    return _one_group(_flat_index(target.tensor.shape))


def _global(target: Target, options: Mapping[str, Any]) -> Rule:
    floor = int(options.get("min_keep", 1))
    return _one_group(_flat_index(target.tensor.shape), shared=True, floor=floor)


def _slices(target: Target, options: Mapping[str, Any]) -> Rule:
    shape = target.tensor.shape
    dim = int(options.get("dim", 0)) % len(shape)
    return _one_group(_coordinates(shape)[dim])


def _nm(target: Target, options: Mapping[str, Any]) -> Rule:
    shape = tuple(target.tensor.shape)
    dim = options.get("dim")
    if dim is None:
        transposed = isinstance(
            target.module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d
        )
        dim = 0 if len(shape) <= 1 or transposed else 1
    dim = int(dim) % len(shape)
    m = int(options.get("m_group", 4))
    coords = _coordinates(shape)
    window = coords[dim] // m if m <= shape[dim] else torch.zeros_like(coords[dim])
    # A group: the same position along every other dim, the same window along dim.
    others = [c for d, c in enumerate(coords) if d != dim]
    base = max(shape) + 1
    label = window
    for index, coord in enumerate(others):
        label = label + coord * base ** (index + 1)
    return _flat_index(shape), label, False, 0


def _block(target: Target, options: Mapping[str, Any]) -> Rule:
    shape = tuple(target.tensor.shape)
    if len(shape) == 0:
        view = (1, 1)
    elif len(shape) == 1:
        view = (1, shape[0])
    else:
        view = (shape[0], int(torch.Size(shape[1:]).numel()))
    rows, cols = (int(side) for side in options.get("block", (1, 4)))
    rows, cols = min(rows, view[0]), min(cols, view[1])
    row, col = _coordinates(view)
    units = (row // rows) * (view[1] + 1) + col // cols
    return _one_group(units.reshape(shape))


def _rows(target: Target, options: Mapping[str, Any]) -> Rule:
    shape = tuple(target.tensor.shape)
    flat = _flat_index(shape)
    if len(shape) <= 1:
        return flat, torch.zeros(shape, dtype=torch.int64), False, 0
    if input_dim(target.module, len(shape)) == 0:
        # The input features run along dim 0 (Conv1D, transposed convolutions): every other index is an output.
        return flat, flat % (flat.numel() // shape[0]), False, 0
    return flat, _coordinates(shape)[0], False, 0


def _standard(amount: int | float, eligible: int, options: Mapping[str, Any]) -> int:
    return expected_count(amount, eligible)


def _aligned(amount: int | float, eligible: int, options: Mapping[str, Any]) -> int:
    return eligible - aligned_keep(
        eligible, expected_count(amount, eligible), int(options.get("round_to", 8))
    )


def _nm_count(amount: int | float | None, eligible: int, options: Mapping[str, Any]) -> int:
    return max(0, eligible - int(options.get("n_keep", 2)))


Count = Callable[[Any, list[int], Mapping[str, Any]], list[int]]
"""The units to prune in each group of one budget (amount, units still kept per group, options)."""


def _each(count: Callable[[Any, int, Mapping[str, Any]], int]) -> Count:
    """A count of one group applied to every group of a budget on its own."""
    return lambda amount, eligible, options: [count(amount, n, options) for n in eligible]


def _row_quotas(amount: int | float, eligible: list[int], options: Mapping[str, Any]) -> list[int]:
    """``row``'s rule: ``amount``'s count of the parameter's entries still kept, handed out one at a time to
    the row whose pruned share would then be the lowest (``j / kept`` for its ``j``-th entry), the first row
    among equals."""
    k = expected_count(amount, sum(eligible))
    order = sorted((Fraction(j, n), row) for row, n in enumerate(eligible) for j in range(1, n + 1))
    quotas = [0] * len(eligible)
    for _, row in order[:k]:
        quotas[row] += 1
    return quotas


RULES: dict[str, tuple[Callable[[Target, Mapping[str, Any]], Rule], Count]] = {
    "unstructured": (_entries, _each(_standard)),
    "structured": (_slices, _each(_standard)),
    "aligned": (_slices, _each(_aligned)),
    "global": (_global, _each(_standard)),
    "nm": (_nm, _each(_nm_count)),
    "block": (_block, _each(_standard)),
    "row": (_rows, _row_quotas),
}
"""Each built-in granularity's documented partition, and the counts of the groups of one budget."""


def _same_partition(a: Tensor, b: Tensor) -> bool:
    """Whether two labellings of the same entries split them alike (labels aside)."""
    pairs = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)], dim=1), dim=0)
    return bool(pairs.shape[0] == torch.unique(a).numel() == torch.unique(b).numel())


def _declared_as_documented(subject: Subject, example: Example) -> None:
    """The granularity declares the units, groups and counts its documentation states.

    The rule of each built-in granularity (see :mod:`prunus.testing.builtin_rules`) is computed from the
    options alone, independently of the plugin's code, and compared with its ``partition`` and
    ``prune_counts``.
    """
    context = example.context()
    layout = subject.layout(example, context)
    partition_of, count_of = RULES[subject.granularity]
    options = example.all_options()
    rules = [partition_of(t, options) for t in context.targets]
    if layout.shared != rules[0][2]:
        fail(
            f"{subject.granularity} declares {'shared' if layout.shared else 'per-parameter'} groups; "
            f"its documentation says {'one group across the targets' if rules[0][2] else 'per parameter'}"
        )
    for index, (target, (units, groups, _, _)) in enumerate(
        zip(context.targets, rules, strict=True)
    ):
        declared_units = layout.unit_of[index]
        if not _same_partition(declared_units, units):
            fail(
                f"{target.name!r} (shape {tuple(target.tensor.shape)}): the declared units "
                f"{declared_units.tolist()} are not the documented ones {units.tolist()}"
            )
        declared_groups = layout.group_of[declared_units]
        if not _same_partition(declared_groups, groups):
            fail(
                f"{target.name!r} (shape {tuple(target.tensor.shape)}): the declared groups "
                f"{declared_groups.tolist()} are not the documented ones {groups.tolist()}"
            )
    floors = [rule[3] for rule in rules]
    if layout.floor.tolist() != floors:
        fail(
            f"{subject.granularity} declares min_keep floors {layout.floor.tolist()}; its documentation says "
            f"{floors} (options {options!r})"
        )
    counts, _ = expected_counts(layout)
    eligible = layout.eligible()
    for budget in layout.budgets:
        wanted = count_of(example.amount, eligible[budget].tolist(), options)
        for group, want in zip(budget.tolist(), wanted, strict=True):
            if int(counts[group]) != want:
                fail(
                    f"{layout.describe_group(group)}: the granularity declares {int(counts[group])} of the "
                    f"{int(eligible[group])} units still kept to be pruned; its documented rule says {want} "
                    f"(options {options!r})"
                )


for _granularity in RULES:
    register_property(
        "declared_as_documented",
        granularity=_granularity,
        requires=[needs_granularity],
        max_examples=25,
        scope="granularity",
    )(_declared_as_documented)


# -- nm's options ---------------------------------------------------------------------------------------------


def _nm_granularity_options(
    targets: Sequence[Target], registry: Registry
) -> st.SearchStrategy[dict[str, Any]]:
    ndim = min(t.tensor.dim() for t in targets)

    @st.composite
    def draw(draw_fn: st.DrawFn) -> dict[str, Any]:
        # Mostly the groups of real N:M kernels (2:4, 1:2...), with dims they do not always divide.
        m = draw_fn(st.sampled_from([4, 2, 3, 8, 1, 5]))
        chosen: dict[str, Any] = {"n_keep": draw_fn(st.integers(0, m - 1)), "m_group": m}
        dim = draw_fn(st.none() | st.integers(-ndim, ndim - 1))
        if dim is not None:
            chosen["dim"] = dim
        return chosen

    return draw()


register_granularity_options("nm", _nm_granularity_options)


def _block_options(
    targets: Sequence[Target], registry: Registry
) -> st.SearchStrategy[dict[str, Any]]:
    # Sides up to 5 (the drawn parameters' sides), so blocks larger than a view and edge blocks are common.
    side = st.integers(1, 5)
    return st.fixed_dictionaries({}, optional={"block": st.tuples(side, side)})


register_granularity_options("block", _block_options)


def _aligned_options(
    targets: Sequence[Target], registry: Registry
) -> st.SearchStrategy[dict[str, Any]]:
    # Multiples below the drawn parameters' sides, where the rounding shows, and the default 8.
    ndim = min(t.tensor.dim() for t in targets)
    return st.fixed_dictionaries(
        {},
        optional={
            "dim": st.integers(-ndim, ndim - 1),
            "round_to": st.sampled_from([2, 3, 4, 1, 5, 8]),
        },
    )


register_granularity_options("aligned", _aligned_options)


def nm_options(name: str) -> OptionsFn:
    """The options function of strategy ``name`` at granularity ``nm``, for ``register_options``.

    It draws ``n_keep < m_group <= 8``, a ``dim`` valid for every target (or none), and the strategy's other
    options field by field. (Every strategy composed at ``nm`` already gets this; a strategy of its own that
    takes nm's options registers it.)
    """

    def options(targets: Sequence[Target], registry: Registry) -> st.SearchStrategy[dict[str, Any]]:
        others = pst.config_options(
            registry.info(name).config,
            targets=targets,
            exclude=("amount", "n_keep", "m_group", "dim"),
        )
        return st.tuples(others, _nm_granularity_options(targets, registry)).map(
            lambda parts: {**parts[0], **parts[1]}
        )

    return options
