"""What the framework callbacks share: pruning on schedule, the sparsity log, and checkpointable state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine import is_pruned
from ..errors import StateError
from ..persistence.state import Manifest, load_pruning_state, pruning_state
from ..report import PruneReport
from ..workflow.gradual import GradualPruner

__all__ = ["DrivenCallback", "PruningDriver"]


class PruningDriver:
    """Drives ``pruner`` from any training loop: call :meth:`before_step` before each optimizer step's first
    forward pass, :meth:`after_step` after the optimizer step.

    Attributes:
        pruner: the :class:`~prunus.GradualPruner` driven.
        sparsity_log: ``(optimizer step, sparsity over the pruner's targets)`` after every step.
    """

    def __init__(self, pruner: GradualPruner) -> None:
        if not isinstance(pruner, GradualPruner):
            raise StateError(
                f"a pruning callback needs a prunus.GradualPruner, not {type(pruner).__name__}"
            )
        self.pruner = pruner
        self.sparsity_log: list[tuple[int, float]] = []
        self._sparsity: float | None = None

    @property
    def sparsity(self) -> float:
        """The sparsity over the pruner's targets now (counted once after each prune, not at every step)."""
        if self._sparsity is None:
            self._sparsity = self.pruner.sparsity
        return self._sparsity

    def before_step(self, step: int) -> PruneReport | None:
        """Prune to the schedule's sparsity at optimizer step ``step`` (does nothing when there is nothing to
        prune, so it may be called at every micro-batch)."""
        report = self.pruner.step(step)
        if report is not None:
            self._sparsity = None
        return report

    def after_step(self, step: int) -> float:
        """Record and return the sparsity after optimizer step ``step``."""
        value = self.sparsity
        self.sparsity_log.append((step, value))
        return value

    def state(self) -> dict[str, Any]:
        """The masks, restore data and pruner state (tensors and a JSON string: checkpoint-safe)."""
        return pruning_state(self.pruner.model, pruner=self.pruner)

    def load(self, state: Mapping[str, Any]) -> Manifest | None:
        """Put :meth:`state` back into the pruner's model, unless that model already carries masks (a run
        that resumed through another path); returns the manifest when it loaded."""
        if is_pruned(self.pruner.model):
            return None
        manifest = load_pruning_state(self.pruner.model, state, pruner=self.pruner)
        self._sparsity = None
        return manifest


class DrivenCallback:
    """What both framework callbacks expose of their :class:`PruningDriver` (held in ``self.driver``)."""

    driver: PruningDriver

    @property
    def pruner(self) -> GradualPruner:
        """The pruner the callback drives."""
        return self.driver.pruner

    @property
    def sparsity_log(self) -> list[tuple[int, float]]:
        """``(optimizer step, sparsity)`` after every optimizer step."""
        return self.driver.sparsity_log
