"""How much of a total budget each layer takes: the registrable kind behind ``prune(..., allocation=...)``.

Pruning every layer of a language model by the same fraction is rarely best: OWL (outlier-weighted layerwise
sparsity) prunes layers with many outlier activations less and the others more. An :class:`Allocation` decides
the fraction of each layer (a block of the model's stack, or a lone parameter outside it) from what it
:meth:`~Allocation.measure` s of the layer on calibration data; prunus then turns those fractions into per-
parameter amounts whose total is exactly the budget the call asked (:func:`exact_counts`).

Built-in allocations (plugin ``prunus.allocations``): ``uniform`` (the same fraction everywhere) and ``owl``.
A plugin registers its own with the ``prunus_register_allocations`` hook.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from .component import Component, Kind
from .errors import PluginError
from .statistics import Statistic
from .strategy import PruneContext, Target

__all__ = ["Allocation", "Layer", "exact_counts"]


@dataclass(frozen=True)
class Layer:
    """One unit an allocation gives a fraction to.

    Attributes:
        name: the block's qualified name (``"model.layers.3"``), or the parameter's for a lone one.
        size: how many entries of its parameters may still be pruned.
        measure: what :meth:`Allocation.measure` said of it (0.0 when the allocation measures nothing).
    """

    name: str
    size: int
    measure: float = 0.0


class Allocation(Component):
    """Splits a pruning budget across the layers of a model.

    Subclasses set ``name``, ``summary``, ``Config`` if they take options, ``statistics`` if :meth:`measure`
    reads calibration statistics, and implement :meth:`allocate`.
    """

    kind: ClassVar[Kind] = "allocation"
    statistics: ClassVar[tuple[type[Statistic], ...]] = ()
    """The calibration statistics :meth:`measure` reads (gathered on the unpruned model, layer by layer)."""

    def measure(self, targets: Sequence[Target], context: PruneContext) -> float:
        """One number about a layer, from its parameters and their statistics (``context.statistic``).

        Called once per layer before anything is pruned; the default measures nothing (0.0).
        """
        return 0.0

    @abstractmethod
    def allocate(self, layers: Sequence[Layer], amount: float) -> list[float]:
        """The fraction of each layer's prunable entries to prune, in ``layers`` order, each in ``[0, 1]``.

        Aim for a size-weighted mean of ``amount``: prunus shifts every fraction by one common amount so the
        total is exactly the budget, then rounds to whole entries.
        """


def exact_counts(fractions: Sequence[float], sizes: Sequence[int], budget: int) -> list[int]:
    """Whole counts, at most ``sizes[i]`` each, that sum to exactly ``budget`` and follow ``fractions``.

    Every fraction is shifted by one common ``delta`` (and clipped to ``[0, 1]``) so that the counts add up to
    ``budget``; the leftover of the rounding goes to the largest remainders, ties to the first.

    Raises:
        PluginError: a fraction is not a finite number.
        ValueError: ``budget`` is not between 0 and ``sum(sizes)``.
    """
    total = sum(sizes)
    if not 0 <= budget <= total:
        raise ValueError(f"cannot prune {budget} of {total} entries")
    for fraction in fractions:
        if not isinstance(fraction, int | float) or not math.isfinite(fraction):
            raise PluginError(
                f"an allocation returned the fraction {fraction!r}; it must be a number"
            )

    def pruned(delta: float) -> float:
        return sum(min(1.0, max(0.0, f + delta)) * s for f, s in zip(fractions, sizes, strict=True))

    # The count grows with delta: bisect for the delta that meets the budget (to far below one entry).
    low, high = -1.0 - max(fractions, default=0.0), 1.0 - min(fractions, default=0.0)
    for _ in range(200):
        middle = (low + high) / 2
        if pruned(middle) < budget:
            low = middle
        else:
            high = middle
    ideal = [min(1.0, max(0.0, f + high)) * s for f, s in zip(fractions, sizes, strict=True)]
    counts = [min(size, math.floor(value)) for value, size in zip(ideal, sizes, strict=True)]
    order = sorted(range(len(counts)), key=lambda i: (counts[i] - ideal[i], i))
    short = budget - sum(counts)
    for i in order:
        if short <= 0:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
            short -= 1
    for i in reversed(
        order
    ):  # an overshoot (only from float error): take back from the smallest remainders
        if short >= 0:
            break
        if counts[i] > 0:
            counts[i] -= 1
            short += 1
    return counts
