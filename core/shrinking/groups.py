"""The plan's vocabulary: a group of coupled channels and the parameter slices each of its channels owns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .report import ChannelGroupReport

__all__ = ["Group", "Removal", "Slice"]


@dataclass
class Slice:
    """Entries of one parameter that belong to root channels: ``index[i]`` along ``dim`` for root ``roots[i]``.

    A grouped convolution's input channel is a column within one group of output rows: ``rows`` then maps each
    root channel to its ``(start, stop)`` output rows.

    Attributes:
        producer: carries the channel's signal forward (output rows, biases, norms); else a consumer (input
            columns of the next layers).
        weight: a Linear/Conv weight, scored by the criterion.
        norm: a normalization's affine parameter (its layer computes statistics across the channels).
    """

    module: nn.Module
    module_name: str
    param: str
    dim: int
    index: list[int]
    roots: list[int]
    producer: bool
    weight: bool
    rows: list[tuple[int, int]] | None = None
    norm: bool = False


@dataclass
class Removal:
    """One call of a pruning function that removes root channels from one layer (for groups built by prunus).

    ``handler(module, [index[i] for the removed roots[i]])`` removes them, as Torch-Pruning's functions do.
    """

    handler: Callable[[Any, Sequence[int]], Any]
    module: nn.Module
    index: list[int]
    roots: list[int]


@dataclass
class Group:
    """A group of coupled channels: the root layer's outputs and every parameter slice that follows them.

    Attributes:
        name: the root layer's (or attention module's) qualified name.
        root, handler: the root layer and the Torch-Pruning function that prunes it (``None`` for groups that
            prunus couples itself: attention heads, whose ``removals`` say how to remove them).
        channels: the root's channels.
        units: the removable units, each a list of root channels (single channels, heads, key/value groups).
        left: why the group cannot be pruned (``None`` if it can).
        normalized: the name of a layer that normalizes across the group's channels, if any.
        removals: for groups coupled by prunus, how to remove channels from each layer.
        after: called with the removed units once the layers are smaller (updates attributes like head counts).
        zero_preserving: every op between the group's layers maps a zero channel to zero.
        channel_wise: every op between the group's layers acts on each channel alone.
    """

    name: str
    root: nn.Module
    handler: Any
    channels: int
    slices: list[Slice] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    units: list[list[int]] = field(default_factory=list)
    unit: int = 1
    left: str | None = None
    normalized: str | None = None
    removals: list[Removal] = field(default_factory=list)
    after: Callable[[list[int]], None] | None = None
    zero_preserving: bool = True
    channel_wise: bool = True

    def unit_index(self) -> Tensor:
        """The channels of each unit, one row per unit."""
        return torch.tensor(self.units, dtype=torch.long).reshape(len(self.units), self.unit)

    def report(
        self,
        removed: Sequence[int],
        beyond_amount: dict[str, list[int]] | None = None,
        left: str | None = None,
        note: str | None = None,
    ) -> ChannelGroupReport:
        return ChannelGroupReport(
            name=self.name,
            layers=self.layers,
            channels=self.channels,
            unit=self.unit,
            removed=sorted(removed),
            beyond_amount={k: sorted(v) for k, v in (beyond_amount or {}).items() if v},
            left=left if left is not None else self.left,
            note=note,
        )
