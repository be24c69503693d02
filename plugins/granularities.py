"""Built-in granularities: ``unstructured`` (per entry), ``structured`` (slices along ``dim``) and ``global``.

Each prunes among the entries an earlier ``prune`` kept and counts ``amount`` against them, as
``torch.nn.utils.prune``'s ``PruningContainer`` does; ties are broken by position (see :mod:`prunus.ranking`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field, StrictInt
from torch import Tensor

import prunus
from prunus import Amount, Criterion, Granularity, PruneContext, Registrar, StrategyConfig, Target
from prunus.config import count_to_prune
from prunus.errors import ConfigError
from prunus.plugins._lean_global import global_keep_masks
from prunus.ranking import keep_mask


class AmountConfig(StrategyConfig):
    """Options of the ``unstructured`` and ``global`` granularities."""

    amount: Amount = Field(
        description="fraction in [0, 1] of the entries still kept, or an int count"
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
            size = target.tensor.numel() if eligible is None else int(eligible.sum())
            k = count_to_prune(
                self.config.amount, size, what=f"entries of {target.name!r} still kept"
            )
            out[target.name] = keep_mask(score(target), k, eligible)
        return out


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
            dim = self.config.dim
            if not -len(shape) <= dim < len(shape):
                raise ConfigError(
                    f"dim={dim} is out of range for {target.name!r} of shape {tuple(shape)}; "
                    f"valid dims are {-len(shape)} to {len(shape) - 1}"
                )
            dim %= len(shape)
            others = tuple(d for d in range(len(shape)) if d != dim)
            # A slice can still be pruned if any of its entries is still kept.
            eligible = (
                None
                if target.prior is None
                else target.prior.any(dim=others)
                if others
                else target.prior
            )
            size = shape[dim] if eligible is None else int(eligible.sum())
            k = self.slices_to_prune(
                count_to_prune(
                    self.config.amount, size, what=f"slices of {target.name!r} along dim {dim}"
                ),
                size,
            )
            groups = criterion.reduce(score(target), others)
            keep = keep_mask(groups, k, eligible)
            view = [1] * len(shape)
            view[dim] = shape[dim]
            mask = keep.reshape(view).expand(shape).clone()
            out[target.name] = mask if target.prior is None else mask & target.prior
        return out

    def slices_to_prune(self, asked: int, size: int) -> int:
        """How many of the ``size`` eligible slices to prune when ``amount`` asks for ``asked``.

        Subclasses round here (e.g. to keep a hardware-friendly number of channels).
        """
        return asked


class Global(Granularity):
    """One ranking of the entries of every targeted parameter together; ``amount`` is of their total.

    The ranking never concatenates the scores: it scores one parameter at a time, finds the threshold's bin
    with a histogram of the scores' bits and ranks only the few entries in that bin (see
    :mod:`prunus.plugins._lean_global`). The mask equals ``keep_mask`` on the concatenated scores, ties and
    earlier masks included, at a few percent of its memory. The criterion is called two or three times per
    parameter, which is exact for deterministic and seeded criteria.
    """

    name = "global"
    summary = "prunes the lowest-scored entries in one ranking across all parameters"
    Config = AmountConfig

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountConfig)
        targets = list(context.targets)
        return global_keep_masks(
            targets, score, self.config.amount, _restore_bytes(targets, self.config.amount, context)
        )


def _restore_bytes(targets: list[Target], amount: int | float, context: PruneContext) -> int:
    """The bytes of pruned values ``prune`` is going to keep for ``restore`` (0 when it keeps none).

    The global ranking may hold that much of scores between its passes: the peak it adds is then no higher
    than the one the restore data brings anyway, and the targets whose scores it holds are scored once.
    """
    if not context.extras.get("prunus.restorable"):
        return 0
    sizes = [
        t.tensor.numel() if t.prior is None else int(torch.count_nonzero(t.prior)) for t in targets
    ]
    try:
        k = count_to_prune(amount, sum(sizes))
    except ConfigError:
        return 0
    return k * max((t.tensor.element_size() for t in targets), default=0)


@prunus.hookimpl
def prunus_register_granularities(register: Registrar) -> None:
    """Register ``unstructured``, ``structured`` and ``global``."""
    for granularity in (Unstructured, Structured, Global):
        register(granularity)
