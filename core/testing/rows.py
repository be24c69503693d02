"""Group properties of the ``row`` granularity, for the conformance kit.

Registered when the kit loads its built-in extensions (see :mod:`prunus.testing.semistructured` for the
mechanism). A row is a row of the parameter's :func:`~prunus.layout.matrix_view`: one output of the layer.

=======================  ==========================================================================================
``exact_count``          each parameter loses exactly ``amount``'s count of its entries still kept, and each row
                         its share of it: ``k * kept_in_row / kept``, rounded down or up
``criterion_respected``  within each row, every entry pruned now scores no higher than every entry kept
=======================  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..layout import matrix_view
from ..strategy import Target
from .properties import (
    amount_text,
    check_order,
    criterion_scores,
    expected_count,
    fail,
    full_masks,
    needs_amount,
    needs_criterion,
    register_property,
)
from .subject import Example, Subject, eligible, register_units

__all__: list[str] = []


def _units_row(targets: Sequence[Target], options: Mapping[str, Any]) -> int:
    return min(int(eligible(t).sum()) for t in targets)


register_units("row", _units_row)


@register_property("exact_count", granularity="row", requires=[needs_amount])
def row_exact_count(subject: Subject, example: Example) -> None:
    """Each parameter loses exactly ``amount``'s count of its entries still kept, each row its proportional share.

    A row's share of the ``k`` entries is ``k * kept_in_row / kept``, rounded down or up.
    """
    assert example.amount is not None
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        could = matrix_view(target.module, eligible(target))
        pruned = could & ~matrix_view(target.module, full[target.name])
        size = int(could.sum())
        k = expected_count(example.amount, size)
        if int(pruned.sum()) != k:
            fail(
                f"{target.name!r}: pruned {int(pruned.sum())}, but "
                f"{amount_text(example.amount, size, 'entries still kept')}"
            )
        if not size:
            continue
        per_row = could.sum(dim=1).long()
        low = per_row * k // size
        high = torch.where(per_row * k % size == 0, low, low + 1)
        got = pruned.sum(dim=1).long()
        wrong = (got < low) | (got > high)
        if bool(wrong.any()):
            row = int(wrong.nonzero()[0])
            fail(
                f"{target.name!r}: row {row} pruned {int(got[row])} of its {int(per_row[row])} entries still "
                f"kept; its share of the {k} pruned is between {int(low[row])} and {int(high[row])}"
            )


@register_property(
    "criterion_respected", granularity="row", requires=[needs_amount, needs_criterion]
)
def row_criterion_respected(subject: Subject, example: Example) -> None:
    """Within each row, every entry pruned now scores no higher than every entry kept."""
    context, _, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        score = matrix_view(target.module, scores[target.name])
        kept = matrix_view(target.module, full[target.name])
        pruned = matrix_view(target.module, eligible(target)) & ~kept
        for row in range(score.shape[0]):
            check_order(f"{target.name!r} row {row}", score[row], pruned[row], kept[row])
