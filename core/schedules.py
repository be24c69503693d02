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

import bisect
import itertools
import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, overload

from pydantic import StrictFloat, StrictInt
from pydantic.functional_validators import AfterValidator

from .component import Component, Kind
from .errors import PluginError, UnknownScheduleError, brief

__all__ = [
    "FULL_CHECK",
    "Fraction",
    "Schedule",
    "SchedulePoint",
    "SteppedPoints",
    "UnknownScheduleError",
]

SchedulePoint = tuple[int, float]
"""``(step, target sparsity)``."""


def _check_fraction(value: int | float) -> float:
    if isinstance(value, bool) or math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"{value!r} is not a sparsity; give a fraction in [0, 1]")
    return float(value)


Fraction = Annotated[StrictInt | StrictFloat, AfterValidator(_check_fraction)]
"""A sparsity: a fraction in [0, 1] of all the targeted entries (``0`` and ``1`` may be written as ints)."""


class SteppedPoints(Sequence[SchedulePoint]):
    """The points at ``start, start + every, ...`` and ``end``, each sparsity computed when it is read.

    A gradual schedule over ``10**8`` steps has ``10**8`` points; this sequence holds four numbers and a function
    instead of them, so building one is instant and a lookup (a binary search over it) reads ~27 points.

    The steps are ``[*range(start, end, every), end]``.

    Args:
        start: the first step.
        end: the last step.
        every: steps between two points.
        value: the sparsity at a progress in ``[0, 1]`` (``(step - start) / (end - start)``; 1 when
            ``end == start``). It must not decrease.
    """

    __slots__ = ("end", "every", "start", "value")

    def __init__(self, start: int, end: int, every: int, value: Callable[[float], float]) -> None:
        if every < 1 or end < start:
            raise ValueError(f"points from {start} to {end} every {every} are not increasing")
        self.start, self.end, self.every, self.value = start, end, every, value

    def __len__(self) -> int:
        return len(range(self.start, self.end, self.every)) + 1

    @overload
    def __getitem__(self, index: int) -> SchedulePoint: ...

    @overload
    def __getitem__(self, index: slice) -> list[SchedulePoint]: ...

    def __getitem__(self, index: int | slice) -> SchedulePoint | list[SchedulePoint]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"point {index} of {size}")
        step = self.end if index == size - 1 else self.start + index * self.every
        span = self.end - self.start
        return step, float(self.value(1.0 if span == 0 else (step - self.start) / span))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SteppedPoints):
            return (self.start, self.end, self.every, self.value) == (
                other.start,
                other.end,
                other.every,
                other.value,
            )
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self):,} schedule points from step {self.start} to {self.end} every {self.every}>"


class _Steps(Sequence[int]):
    """The steps of a sequence of points, read through to it."""

    __slots__ = ("points",)

    def __init__(self, points: Sequence[SchedulePoint]) -> None:
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [step for step, _ in self.points[index]]
        return self.points[index][0]

    def __contains__(self, step: object) -> bool:
        if isinstance(step, bool) or not isinstance(step, int):
            return False
        i = bisect.bisect_left(self.points, step, key=_step_of)
        return i < len(self.points) and self.points[i][0] == step

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _step_of(point: SchedulePoint) -> int:
    return point[0]


FULL_CHECK = 100_000
"""Points checked one by one when a schedule is built; past that, the ends at once and each point when read."""


class Schedule(Component):
    """A pruning schedule: target sparsities at training steps.

    Subclasses set ``name`` (snake_case), ``summary`` and ``Config`` (a :class:`~prunus.StrategyConfig`), and
    implement :meth:`points`. Everything else derives from the points, which are computed and checked once:
    a lookup (:meth:`sparsity`) is a binary search, ``O(log n)`` in the number of points.
    """

    kind: ClassVar[Kind] = "schedule"

    @abstractmethod
    def points(self) -> Sequence[SchedulePoint]:
        """The ``(step, sparsity)`` points, steps strictly increasing, sparsities non-decreasing in [0, 1].

        A list, or for very many points a sequence that computes each when read (:class:`SteppedPoints`).
        """

    def checked_points(self) -> Sequence[SchedulePoint]:
        """:meth:`points`, checked once and kept: a schedule never asks to revive pruned entries.

        Up to :data:`FULL_CHECK` points are checked one by one here; a longer sequence has its ends checked
        here and each point checked against the one before it when a lookup reads it.

        Raises:
            PluginError: the points are empty, out of order, out of [0, 1] or decreasing.
        """
        cached: Sequence[SchedulePoint] | None = self.__dict__.get("_checked")
        if cached is None:
            cached = self._check(self.points())
            self.__dict__["_checked"] = cached
        return cached

    def _check(self, raw: object) -> Sequence[SchedulePoint]:
        if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
            raise PluginError(
                f"schedule {self.name!r}: points() returned {type(raw).__name__}; it must return a list "
                "of (step, sparsity) pairs"
            )
        if len(raw) > FULL_CHECK and not isinstance(raw, (list, tuple)):
            if not raw:
                raise PluginError(f"schedule {self.name!r} has no points")
            self._check_list([self._point(raw[0]), self._point(raw[-1])])
            return raw
        points = [self._point(point) for point in raw]
        self._check_list(points)
        return points

    def _point(self, point: object) -> SchedulePoint:
        try:
            step, value = point  # type: ignore[misc]
            return int(step), float(value)  # type: ignore[has-type]
        except (TypeError, ValueError):
            raise PluginError(
                f"schedule {self.name!r}: point {brief(point)} is not a (step, sparsity) pair"
            ) from None

    def _check_list(self, points: list[SchedulePoint]) -> None:
        if not points:
            raise PluginError(f"schedule {self.name!r} has no points")
        for (s0, v0), (s1, v1) in itertools.pairwise(points):
            self._check_pair(s0, v0, s1, v1)
        for step, value in points:
            if not 0.0 <= value <= 1.0 or step < 0:
                raise PluginError(
                    f"schedule {self.name!r}: point ({step}, {value}) is out of range; "
                    "steps must be >= 0 and sparsities in [0, 1]"
                )

    def _check_pair(self, s0: int, v0: float, s1: int, v1: float) -> None:
        if s1 <= s0:
            raise PluginError(
                f"schedule {self.name!r}: steps must strictly increase, got {s0} then {s1}"
            )
        if v1 < v0:
            raise PluginError(
                f"schedule {self.name!r}: sparsity decreases from {v0} at step {s0} to {v1} at "
                f"step {s1}; pruned entries are never revived"
            )

    def sparsity(self, step: int) -> float:
        """The target sparsity at ``step``: the last point at or before it (``0.0`` before the first).

        A binary search over the points: ``O(log n)``.
        """
        points = self.checked_points()
        index = bisect.bisect_right(points, step, key=_step_of)
        if index == 0:
            return 0.0
        point_step, value = points[index - 1]
        if not isinstance(points, list):
            # A long computed sequence: check what is read against the point before it.
            value = float(value)
            if not 0.0 <= value <= 1.0:
                self._check_list([(int(point_step), value)])
            if index >= 2:
                s0, v0 = points[index - 2]
                self._check_pair(int(s0), float(v0), int(point_step), value)
        return float(value)

    @property
    def steps(self) -> Sequence[int]:
        """The steps at which the target changes (where a pruner prunes), read through to the points."""
        points = self.checked_points()
        return [step for step, _ in points] if isinstance(points, list) else _Steps(points)

    @property
    def last_step(self) -> int:
        """The step of the last point: from there on the target is :attr:`final_sparsity`."""
        return int(self.checked_points()[-1][0])

    @property
    def final_sparsity(self) -> float:
        """The sparsity the schedule ends at."""
        return float(self.checked_points()[-1][1])

    def __getstate__(self) -> dict[str, Any]:
        # The checked points are a cache: recomputed after loading rather than pickled.
        return {k: v for k, v in self.__dict__.items() if k != "_checked"}
