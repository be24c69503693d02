"""What hardware-aware selection returns: a :class:`Selection`, the answer of the ``prunus_select_strategy`` hook.

It is part of the plugin contract; :func:`prunus.select` (in :mod:`prunus.auto`) asks the plugins for one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .hardware_profile import HardwareProfile

__all__ = ["AUTO", "OBJECTIVES", "Objective", "Selection"]

AUTO = "auto"
"""The strategy name ``prune`` reads as "select one for the hardware"."""

Objective = Literal["latency", "memory", "accuracy"]
OBJECTIVES: tuple[str, ...] = ("latency", "memory", "accuracy")


class Selection(BaseModel):
    """A strategy chosen for a model and a hardware target, with the reason a person can read.

    Attributes:
        strategy: a registered strategy name.
        options: the options to build it with (``registry.get(strategy, **options)``).
        reason: why this strategy suits the target.
        decided_by: the plugin that made the choice (filled in by prunus).
        include: the parameters to prune (``prune(include=...)`` patterns), or ``None`` for ``prune``'s
            default (every Linear and Conv weight).
        hardware: the target the selection was made for (filled in by :func:`select`).
        objective: what was optimised (filled in by :func:`select`).
        sparsity: the fraction of weights the user asked to remove (filled in by :func:`select`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str
    options: dict[str, Any] = Field(default_factory=dict)
    reason: str
    decided_by: str = ""
    include: list[str] | None = None
    hardware: HardwareProfile | None = None
    objective: str = ""
    sparsity: float | None = None

    def __str__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        where = f" on {', '.join(self.include)}" if self.include is not None else ""
        by = f" (decided by {self.decided_by})" if self.decided_by else ""
        target = f" for {self.hardware.describe()}" if self.hardware is not None else ""
        return f"{self.strategy}({options}){where}{target}{by}: {self.reason}"
