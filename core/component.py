"""The one base class of everything a plugin registers: criteria, granularities, strategies, schedules,
allocations and reconstructions.

Each registrable kind is a :class:`Component`: a class with a registry ``name``, a one-line ``summary`` and a
pydantic ``Config`` of its options, built from a validated config. The registry keeps the kinds in one table
keyed by :attr:`Component.kind` and treats them alike (registration checks, provenance, collisions, lookups);
only what a kind *does* differs, and that lives in its subclass (:class:`~prunus.Criterion`,
:class:`~prunus.Granularity`, :class:`~prunus.Strategy`, :class:`~prunus.Schedule`,
:class:`~prunus.Allocation`, :class:`~prunus.Reconstruction`).
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar, Literal

from .config import NoOptions, StrategyConfig

__all__ = ["KINDS", "Component", "Kind"]

Kind = Literal["criterion", "granularity", "strategy", "schedule", "allocation", "reconstruction"]
"""The registrable kinds."""

KINDS: tuple[Kind, ...] = (
    "criterion",
    "granularity",
    "strategy",
    "schedule",
    "allocation",
    "reconstruction",
)
"""The kinds in registration order: strategies are registered after the criteria and granularities they may
build on."""


class Component(ABC):
    """A registrable, configured piece of pruning: the common shape of every kind.

    Subclasses set ``name`` (``snake_case``), ``summary`` (one line for ``prunus list``) and, if they take
    options, ``Config`` (a :class:`~prunus.StrategyConfig` subclass); the registry builds instances from a
    validated config.
    """

    kind: ClassVar[Kind]
    """Which of the registrable kinds this is (set by each kind's base class)."""
    name: str = ""
    """The registry name, ``snake_case``."""
    summary: str = ""
    """One line for ``prunus list``."""
    Config: ClassVar[type[StrategyConfig]] = NoOptions
    """The pydantic model of the options (``extra="forbid"``)."""

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config

    @property
    def options(self) -> dict[str, Any]:
        """The options this instance was configured with."""
        return dict(self.config)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config)
        return f"<{self.kind} {self.name}({options})>"
