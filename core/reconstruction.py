"""Re-solving the kept weights after pruning: the registrable kind behind ``prune(..., reconstruct=...)``.

A mask alone changes a layer's output; a :class:`Reconstruction` then adjusts the weights the mask keeps so
that, on the calibration data, the layer computes as nearly as possible what it did before. It works from any
mask, whatever criterion chose it (magnitude, Wanda, SparseGPT's own), from the statistics it declares
(SparseGPT's column sweep reads the input Gram matrix). ``restore`` still brings back the original weights bit
for bit: prunus keeps them when a reconstruction changes a parameter.

The built-in reconstruction is ``sparsegpt`` (plugin ``prunus.sparsegpt``); a plugin registers its own with
the ``prunus_register_reconstructions`` hook.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from torch import Tensor

from .component import Component, Kind
from .statistics import Statistic
from .strategy import PruneContext, Target

__all__ = ["Reconstruction"]


class Reconstruction(Component):
    """Adjusts the weights a mask keeps so the layer's output on the calibration data changes least.

    Subclasses set ``name``, ``summary``, ``Config`` if they take options and ``statistics``, and implement
    :meth:`reconstruct`.
    """

    kind: ClassVar[Kind] = "reconstruction"
    statistics: ClassVar[tuple[type[Statistic], ...]] = ()
    """The calibration statistics :meth:`reconstruct` reads through ``context.statistic``."""

    @abstractmethod
    def reconstruct(self, target: Target, mask: Tensor, context: PruneContext) -> Tensor:
        """New values of ``target``'s parameter under the bool keep-``mask``: its shape, dtype and device.

        ``target.tensor`` holds the values before this call's pruning (entries pruned by earlier calls read
        zero). Entries the mask prunes are zeroed whatever is returned there; do not modify the parameter.
        """

    def reconstruct_within(
        self, target: Target, mask: Tensor, cells: Tensor | None, context: PruneContext
    ) -> tuple[Tensor, Tensor]:
        """New values of ``target``'s parameter, and its keep-mask, which may differ from ``mask`` within cells.

        A reconstruction that chooses the pruned entries as it goes (SparseGPT picks those of each block of
        columns from the weights as the earlier columns' updates left them) overrides this. It may move which
        entries of a cell are pruned, but each cell keeps as many as ``mask`` keeps, and an entry an earlier
        call pruned (``target.prior``) stays pruned, so the strategy's counts hold exactly.

        Args:
            target: the parameter, as for :meth:`reconstruct`.
            mask: the bool keep-mask the strategy chose.
            cells: int labels of the parameter's shape: the entries sharing a label form a cell (the group
                the granularity ranks its entries in, see :class:`~prunus.strategy.Partition`). ``None`` when
                the mask may not move (the granularity prunes slices or tiles whole, or declares nothing).
            context: the call being served.

        Returns:
            ``(values, keep_mask)``; the default is :meth:`reconstruct`'s values and ``mask`` itself.
        """
        del cells
        return self.reconstruct(target, mask, context), mask
