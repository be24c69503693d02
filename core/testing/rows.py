"""Group properties of the ``row`` granularity, for the conformance kit.

Registered when the kit loads its built-in extensions (see :mod:`prunus.testing.semistructured` for the
mechanism). A row is a row of the parameter's :func:`~prunus.layout.matrix_view`: one output of the layer.

=======================  ==========================================================================================
``exact_count``          each parameter loses exactly ``amount``'s count of its entries still kept, and each row
                         at least its share of it rounded down (``k * kept_in_row / kept``), the entries handed
                         out in order of the share a row has lost once it loses them (ties to the first row)
``criterion_respected``  within each row, every entry pruned now scores no higher than every entry kept
=======================  ==========================================================================================
"""

from __future__ import annotations

import math
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

    A row loses at least its share ``k * kept_in_row / kept`` rounded down, and the entries go in order of the
    share a row has lost once it loses them (ties to the first row): no row's last pruned entry comes after
    another row's next one in that order.
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
        got = pruned.sum(dim=1).long()
        if bool((got < low).any()):
            row = int((got < low).nonzero()[0])
            fail(
                f"{target.name!r}: row {row} pruned {int(got[row])} of its {int(per_row[row])} entries still "
                f"kept; its share of the {k} pruned is at least {int(low[row])}"
            )
        # (share lost after a row's last pruned entry, row) must not exceed (share after its next one, row).
        index = torch.arange(per_row.numel(), dtype=torch.float64)
        rows = per_row.clamp(min=1).double()
        last = torch.where(got > 0, got / rows, -math.inf)
        after = torch.where(got < per_row, (got + 1) / rows, math.inf)
        if bool((got > 0).any()) and bool((got < per_row).any()):
            top, nxt = float(last.max()), float(after.min())
            late, early = int(index[last == top].max()), int(index[after == nxt].min())
            if top > nxt or (top == nxt and late > early):
                fail(
                    f"{target.name!r}: row {late} pruned {int(got[late])} of its {int(per_row[late])} entries "
                    f"while row {early} pruned only {int(got[early])} of its {int(per_row[early])}; the entries "
                    "go to the row whose pruned share would then be lowest (the first row among equals)"
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
