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
