"""Streaming statistics of a layer's inputs: what data-aware criteria declare and calibration gathers.

A criterion (or a reconstruction, or an allocation) lists the statistics it reads in its ``statistics`` class
attribute; when ``prune`` is given calibration data, prunus runs it through the model and gathers exactly those,
one :class:`Statistic` per layer input, updated batch after batch and never holding the activations themselves.
The results reach the criterion as a :class:`Statistics` table on the :class:`~prunus.PruneContext`
(``context.statistic(target, InputNorms)``).

Every statistic sees a layer's input as rows of input features, the columns of the weight's
:func:`~prunus.layout.matrix_view` (a Linear's tokens, a convolution's unfolded patches), in float32. The built-in
ones are :class:`InputNorms` (Wanda's ``||x_j||_2``) and :class:`InputGram` (SparseGPT's ``X^T X``); a plugin
defines its own by subclassing :class:`Statistic` (``update`` and ``result``), and it is gathered the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["InputGram", "InputNorms", "Statistic", "Statistics"]


class Statistic(ABC):
    """A streaming statistic of one layer input over the calibration data.

    Subclasses set ``name`` and ``summary`` and implement :meth:`update` and :meth:`result`. Calibration makes
    one instance per layer input (layers that read the same tensor, such as the query, key and value
    projections, share it), calls :meth:`update` for every batch and :meth:`result` once at the end.

    Args:
        features: the number of input features (columns of every batch).
        device: where the layer's inputs live.
    """

    name: ClassVar[str] = ""
    """A short ``snake_case`` name, for messages."""
    summary: ClassVar[str] = ""
    """One line: what it holds."""

    def __init__(self, features: int, device: torch.device) -> None:
        self.features = features
        self.device = device
        self.rows = 0
        """How many input rows (tokens, patches) have been folded in."""

    def add(self, columns: Tensor) -> None:
        """Fold in one batch (called by calibration): counts the rows, then :meth:`update`."""
        self.rows += columns.shape[0]
        self.update(columns)

    @abstractmethod
    def update(self, columns: Tensor) -> None:
        """Fold in one batch of inputs, ``(rows, features)`` in float32 (do not keep a reference to it)."""

    @abstractmethod
    def result(self) -> Tensor:
        """The statistic over every batch seen."""


class InputNorms(Statistic):
    """The L2 norm of each input feature over every calibration row: Wanda's ``||x_j||_2``, shape ``(features,)``."""

    name = "input_norms"
    summary = "L2 norm of each input feature over the calibration data"

    def __init__(self, features: int, device: torch.device) -> None:
        super().__init__(features, device)
        self._squares = torch.zeros(features, dtype=torch.float64, device=device)

    def update(self, columns: Tensor) -> None:
        # vector_norm needs no temporary of the batch's size; the squares add up in float64.
        self._squares += torch.linalg.vector_norm(columns, dim=0).double().square()

    def result(self) -> Tensor:
        return self._squares.sqrt().float()


class InputGram(Statistic):
    """The Gram matrix ``X^T X`` of the inputs (rows are calibration rows), shape ``(features, features)``.

    Twice it is the Hessian of the layer's squared output error, ``||X W^T - X W'^T||^2``, in the weights of one
    output row: what SparseGPT's reconstruction solves with.
    """

    name = "input_gram"
    summary = "Gram matrix X^T X of the inputs (the layer's Hessian, up to a factor 2)"

    def __init__(self, features: int, device: torch.device) -> None:
        super().__init__(features, device)
        self._gram = torch.zeros(features, features, dtype=torch.float32, device=device)

    def update(self, columns: Tensor) -> None:
        self._gram.addmm_(columns.t(), columns)

    def result(self) -> Tensor:
        return self._gram


class Statistics(Mapping[str, Mapping[type[Statistic], Tensor]]):
    """Calibration statistics by parameter name: ``statistics["fc1.weight"][InputNorms]``.

    What ``prune`` gathers from calibration data and hands to criteria through
    ``PruneContext.statistics``. Build one directly to prune with statistics gathered elsewhere
    (``prune(..., data=Statistics(...))`` then runs no calibration), or get one from :func:`prunus.calibrate`.

    Args:
        values: for each parameter's qualified name, its statistics by :class:`Statistic` class.
    """

    def __init__(
        self, values: Mapping[str, Mapping[type[Statistic], Tensor]] | None = None
    ) -> None:
        self._values: dict[str, dict[type[Statistic], Tensor]] = {
            name: dict(kinds) for name, kinds in (values or {}).items()
        }

    def get_statistic(self, name: str, kind: type[Statistic]) -> Tensor | None:
        """The ``kind`` statistic of parameter ``name``, or ``None`` if it was not gathered."""
        return self._values.get(name, {}).get(kind)

    def merged(self, other: Statistics) -> Statistics:
        """A table with the entries of both (``other`` wins where both have one)."""
        out = Statistics(self._values)
        for name, kinds in other.items():
            out._values.setdefault(name, {}).update(kinds)
        return out

    def __getitem__(self, name: str) -> Mapping[type[Statistic], Tensor]:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        parts = []
        for name, kinds in self._values.items():
            shown = ", ".join(
                f"{kind.name or kind.__name__}{list(value.shape)}" for kind, value in kinds.items()
            )
            parts.append(f"{name}: {shown}")
        return f"Statistics({{{'; '.join(parts)}}})"
