"""What a hardware-aware selection returns (the ``prunus_select_strategy`` hook)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Selection"]


class Selection(BaseModel):
    """A strategy chosen for a model and a hardware target, with the reason a person can read.

    Attributes:
        strategy: a registered strategy name.
        options: the options to build it with (``registry.get(strategy, **options)``).
        reason: why this strategy suits the target.
        decided_by: the plugin that made the choice (filled in by prunus).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str
    options: dict[str, Any] = Field(default_factory=dict)
    reason: str
    decided_by: str = ""
