"""Pruning schedules: how the target sparsity grows over training steps.

A :class:`Schedule` is a list of ``(step, sparsity)`` points: at ``step`` the targeted parameters should have
``sparsity`` of their entries pruned (a fraction of *all* their entries, not of the remaining ones). Between
two points the target stays where the last point put it, so a schedule can be asked for any step.

Schedules are registry entries, like criteria and granularities: a plugin registers one with the
``prunus_register_schedules(register)`` hook, and ``prunus.registry.schedule("cubic", final_sparsity=0.9,
end=1000, every=100)`` builds one. The built-ins (``one_shot``, ``iterative``, ``linear``, ``cubic``) live in
the plugin ``prunus.schedules``. :class:`prunus.GradualPruner` drives one from a training loop.
"""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from typing import Annotated, ClassVar

from pydantic import StrictFloat, StrictInt
from pydantic.functional_validators import AfterValidator

from .component import Component, Kind
from .errors import PluginError, UnknownScheduleError

__all__ = ["Fraction", "Schedule", "SchedulePoint", "UnknownScheduleError"]

SchedulePoint = tuple[int, float]
"""``(step, target sparsity)``."""


def _check_fraction(value: int | float) -> float:
    if isinstance(value, bool) or math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"{value!r} is not a sparsity; give a fraction in [0, 1]")
    return float(value)


Fraction = Annotated[StrictInt | StrictFloat, AfterValidator(_check_fraction)]
"""A sparsity: a fraction in [0, 1] of all the targeted entries (``0`` and ``1`` may be written as ints)."""


class Schedule(Component):
    """A pruning schedule: target sparsities at training steps.

    Subclasses set ``name`` (snake_case), ``summary`` and ``Config`` (a :class:`~prunus.StrategyConfig`), and
    implement :meth:`points`. Everything else derives from the points.
    """

    kind: ClassVar[Kind] = "schedule"

    @abstractmethod
    def points(self) -> list[SchedulePoint]:
        """The ``(step, sparsity)`` points, steps strictly increasing, sparsities non-decreasing in [0, 1]."""

    def checked_points(self) -> list[SchedulePoint]:
        """:meth:`points`, checked: a schedule never asks to revive pruned entries.

        Raises:
            PluginError: the points are empty, out of order, out of [0, 1] or decreasing.
        """
        points = [(int(step), float(sparsity)) for step, sparsity in self.points()]
        if not points:
            raise PluginError(f"schedule {self.name!r} has no points")
        for (s0, v0), (s1, v1) in itertools.pairwise(points):
            if s1 <= s0:
                raise PluginError(
                    f"schedule {self.name!r}: steps must strictly increase, got {s0} then {s1}"
                )
            if v1 < v0:
                raise PluginError(
                    f"schedule {self.name!r}: sparsity decreases from {v0} at step {s0} to {v1} at "
                    f"step {s1}; pruned entries are never revived"
                )
        for step, value in points:
            if not 0.0 <= value <= 1.0 or step < 0:
                raise PluginError(
                    f"schedule {self.name!r}: point ({step}, {value}) is out of range; "
                    "steps must be >= 0 and sparsities in [0, 1]"
                )
        return points

    def sparsity(self, step: int) -> float:
        """The target sparsity at ``step``: the last point at or before it (``0.0`` before the first)."""
        value = 0.0
        for point_step, point_value in self.checked_points():
            if point_step > step:
                break
            value = point_value
        return value

    @property
    def steps(self) -> list[int]:
        """The steps at which the target changes (where a pruner prunes)."""
        return [step for step, _ in self.checked_points()]

    @property
    def last_step(self) -> int:
        """The step of the last point: from there on the target is :attr:`final_sparsity`."""
        return self.checked_points()[-1][0]

    @property
    def final_sparsity(self) -> float:
        """The sparsity the schedule ends at."""
        return self.checked_points()[-1][1]
