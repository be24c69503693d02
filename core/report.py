"""What a ``prune`` call did, per parameter and in total."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .selection import Selection

__all__ = ["ParameterReport", "PruneReport", "kib"]


class ParameterReport(BaseModel):
    """One pruned parameter.

    Attributes:
        name: its qualified name in the model.
        shape: its shape.
        numel: its number of entries.
        pruned: entries pruned in total (by this call and earlier ones).
        newly_pruned: entries this call pruned.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    shape: tuple[int, ...]
    numel: int
    pruned: int
    newly_pruned: int

    @property
    def sparsity(self) -> float:
        """Fraction of the entries that are pruned."""
        return self.pruned / self.numel if self.numel else 0.0

    @property
    def empty(self) -> bool:
        """Whether every entry is pruned: the layer computes nothing from its input ("layer collapse")."""
        return self.numel > 0 and self.pruned == self.numel


class PruneReport(BaseModel):
    """The result of :func:`prunus.prune`: the strategy, its options and what was pruned.

    ``str(report)`` is a readable table; ``report.model_dump_json()`` a machine-readable record.
    """

    model_config = ConfigDict(frozen=True)

    strategy: str
    options: dict[str, Any]
    parameters: list[ParameterReport]
    model_numel: int
    """Entries of every parameter of the model, pruned or not."""
    selection: Selection | None = None
    """The hardware-aware selection, when the strategy was ``"auto"`` (see :func:`prunus.select`)."""

    @property
    def numel(self) -> int:
        """Entries of the targeted parameters."""
        return sum(p.numel for p in self.parameters)

    @property
    def pruned(self) -> int:
        """Entries pruned in the targeted parameters."""
        return sum(p.pruned for p in self.parameters)

    @property
    def sparsity(self) -> float:
        """Fraction of the targeted entries that are pruned."""
        return self.pruned / self.numel if self.numel else 0.0

    @property
    def model_sparsity(self) -> float:
        """Fraction of all the model's parameter entries that are pruned."""
        return self.pruned / self.model_numel if self.model_numel else 0.0

    @property
    def emptied(self) -> list[str]:
        """The parameters with every entry pruned (flagged in ``str(report)``).

        Global strategies keep ``min_keep`` entries of each parameter unless the amount asks for more than that
        leaves, so a layer is emptied only when the call asked for it; this says when that happened.
        """
        return [p.name for p in self.parameters if p.empty]

    def __getitem__(self, name: str) -> ParameterReport:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(f"{name!r} was not pruned; pruned: {[p.name for p in self.parameters]}")

    def __str__(self) -> str:
        width = max([len(p.name) for p in self.parameters] + [9])
        lines = [
            f"strategy {self.strategy} " + " ".join(f"{k}={v}" for k, v in self.options.items()),
            f"{'parameter':<{width}}  {'shape':<18} {'pruned':>12} {'sparsity':>9}",
        ]
        for p in self.parameters:
            shape = "x".join(map(str, p.shape))
            empty = "  EMPTY" if p.empty else ""
            lines.append(
                f"{p.name:<{width}}  {shape:<18} {p.pruned:>12,} {p.sparsity:>9.2%}{empty}"
            )
        lines.append(
            f"{'total':<{width}}  {'':<18} {self.pruned:>12,} {self.sparsity:>9.2%}"
            f"   ({self.model_sparsity:.2%} of all {self.model_numel:,} parameters)"
        )
        if self.emptied:
            lines.append(
                f"every entry of {len(self.emptied)} parameter(s) is pruned (EMPTY): "
                f"{', '.join(self.emptied)}; those layers now compute nothing from their input"
            )
        if self.selection is not None:
            lines.append(
                f"selected by {self.selection.decided_by or 'a plugin'}: {self.selection.reason}"
            )
        return "\n".join(lines)


def kib(size: int) -> str:
    """``size`` bytes as kibibytes for report tables: ``"1,178.9 KiB"``."""
    return f"{size / 1024:,.1f} KiB"
