"""prunus-kernels: kernel-level pruning, a granularity between single weights and whole filters.

A convolution's weight ``(out, in / groups, *kernel)`` holds one spatial kernel (3x3, say) for every pair of a
filter and an input channel; the ``kernel`` granularity prunes whole kernels, the lowest-scored first::

    prunus.prune(model, "l1_kernel", amount=0.5)                  # half the kernels of each layer
    prunus.prune(model, "l1_kernel", amount=0.5, balanced=True)   # half the kernels of each filter

A kernel's score is the criterion's ``reduce`` over its entries (the L1 norm for ``l1``). A Linear's weight has
kernels of one entry, so there ``kernel`` prunes single weights (each row alike when ``balanced``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field, StrictBool
from torch import Tensor

from prunus.plugin_api import (
    Amount,
    Criterion,
    Granularity,
    Partition,
    PruneContext,
    Registrar,
    StrategyConfig,
    Target,
    count_to_prune,
    hookimpl,
    keep_mask,
)

__version__ = "0.1.0"


class KernelConfig(StrategyConfig):
    """Options of the ``kernel`` granularity."""

    amount: Amount = Field(
        description="fraction in [0, 1] of the kernels still kept, or an int count"
    )
    balanced: StrictBool = Field(
        default=False,
        description="prune the same share of every slice along dim 0 (each filter, each row) instead of "
        "ranking all the kernels of a parameter together",
    )


def kernel_view(shape: torch.Size) -> tuple[int, int, int]:
    """``(dim 0, dim 1, entries per kernel)``: the weight as rows of kernels (a 1-D parameter is one row)."""
    if len(shape) == 0:
        return (1, 1, 1)
    if len(shape) == 1:
        return (1, shape[0], 1)
    return (shape[0], shape[1], shape[2:].numel())


class Kernel(Granularity):
    """Prune whole kernels: the entries of a weight that share their first two indices."""

    name = "kernel"
    summary = "prunes whole convolution kernels (balanced=True: the same share of each filter)"
    Config = KernelConfig

    def masks(
        self, criterion: Criterion, score: Callable[[Target], Tensor], context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, KernelConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            view = kernel_view(shape)
            scores = score(target).reshape(view)
            # One score per kernel; a kernel of one entry scores that entry.
            kernels = criterion.reduce(scores, (2,)) if view[2] > 1 else scores[..., 0]
            eligible = None if target.prior is None else target.prior.reshape(view).any(dim=2)
            if self.config.balanced:
                rows = [
                    self._keep(kernels[r], None if eligible is None else eligible[r])
                    for r in range(view[0])
                ]
                keep = torch.stack(rows)
            else:
                keep = self._keep(kernels, eligible)
            mask = keep.unsqueeze(2).expand(view).reshape(shape)
            out[target.name] = mask if target.prior is None else mask & target.prior
        return out

    def _keep(self, kernels: Tensor, eligible: Tensor | None) -> Tensor:
        """Keep-mask of ``kernels`` that prunes ``amount`` of those still kept, the lowest-scored first."""
        assert isinstance(self.config, KernelConfig)
        still = kernels.numel() if eligible is None else int(eligible.sum())
        return keep_mask(
            kernels, count_to_prune(self.config.amount, still, what="kernels"), eligible
        )

    def partition(self, target: Target) -> Partition:
        """What the test kit checks the masks against: kernels are the units; a parameter, or each slice
        along dim 0 when ``balanced``, is a group."""
        assert isinstance(self.config, KernelConfig)
        shape = target.tensor.shape
        view = kernel_view(shape)
        units = Partition.tiles(view, (1, 1, view[2])).units
        groups = Partition.tiles(view, (1, view[1], view[2])).units
        if not self.config.balanced:
            groups = torch.zeros_like(groups)
        return Partition(units.reshape(shape), groups.reshape(shape))


@hookimpl
def prunus_register_granularities(register: Registrar) -> None:
    """Register ``kernel``; prunus composes it with every criterion."""
    register(Kernel)
