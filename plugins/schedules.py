"""Built-in pruning schedules: ``one_shot``, ``iterative``, ``linear`` and ``cubic``.

Each gives ``(step, sparsity)`` points, the sparsity a fraction of all the targeted entries (see
:mod:`prunus.schedules`). ``cubic`` is the gradual schedule of Zhu & Gupta (2017), "To prune, or not to
prune": ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3`` for ``t = t0, t0 + Δt, ..., t0 + n Δt``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, model_validator
from pydantic.functional_validators import BeforeValidator

from prunus.plugin_api import (
    Fraction,
    Registrar,
    Schedule,
    SchedulePoint,
    SteppedPoints,
    StrategyConfig,
    hookimpl,
)


def _as_tuple(value: Any) -> Any:
    # YAML and JSON give lists; a point is a (step, sparsity) pair.
    return tuple(value) if isinstance(value, list) else value


Point = Annotated[tuple[StrictInt, Fraction], BeforeValidator(_as_tuple)]


class OneShotConfig(StrategyConfig):
    """Options of ``one_shot``."""

    sparsity: Fraction = Field(description="the sparsity to prune to, at once")
    step: StrictInt = Field(default=0, ge=0, description="the step at which to prune")


class OneShot(Schedule):
    """Prune to ``sparsity`` at one step."""

    name = "one_shot"
    summary = "prunes to sparsity at one step"
    Config = OneShotConfig

    def points(self) -> list[SchedulePoint]:
        assert isinstance(self.config, OneShotConfig)
        return [(self.config.step, float(self.config.sparsity))]


class IterativeConfig(StrategyConfig):
    """Options of ``iterative``."""

    steps: list[Point] = Field(
        min_length=1,
        description="(step, amount) pairs: prune at each step, fine-tune between (e.g. [[0, 0.5], "
        "[300, 0.75], [600, 0.9]])",
    )
    relative: StrictBool = Field(
        default=False,
        description="False: each amount is the total sparsity to reach; True: each amount is a fraction "
        "of the entries still kept, as in repeated torch.nn.utils.prune calls (0.5 twice reaches 0.75)",
    )

    @model_validator(mode="after")
    def _increasing(self) -> IterativeConfig:
        steps = [step for step, _ in self.steps]
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must strictly increase, got {steps}")
        if min(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if not self.relative:
            amounts = [amount for _, amount in self.steps]
            if any(b < a for a, b in itertools.pairwise(amounts)):
                raise ValueError(
                    f"total sparsities must not decrease (pruned entries are never revived), got "
                    f"{amounts}; pass relative=true for fractions of the remaining entries"
                )
        return self


class Iterative(Schedule):
    """The classic recipe: prune, fine-tune, prune again, at the given steps."""

    name = "iterative"
    summary = "prunes at given (step, amount) points, fine-tuning between"
    Config = IterativeConfig

    def points(self) -> list[SchedulePoint]:
        assert isinstance(self.config, IterativeConfig)
        if not self.config.relative:
            return [(step, float(amount)) for step, amount in self.config.steps]
        points, kept = [], 1.0
        for step, amount in self.config.steps:
            kept *= 1.0 - amount
            points.append((step, 1.0 - kept))
        return points


class GradualConfig(StrategyConfig):
    """Options of ``linear`` and ``cubic``."""

    final_sparsity: Fraction = Field(description="s_f, the sparsity reached at step end")
    initial_sparsity: Fraction = Field(default=0.0, description="s_i, the sparsity at step start")
    start: StrictInt = Field(default=0, ge=0, description="t0, the first pruning step")
    end: StrictInt = Field(ge=0, description="t0 + n Δt, the last pruning step")
    every: StrictInt = Field(default=1, ge=1, description="Δt, steps between two pruning steps")

    @model_validator(mode="after")
    def _ordered(self) -> GradualConfig:
        if self.end < self.start:
            raise ValueError(f"end={self.end} is before start={self.start}")
        if self.final_sparsity < self.initial_sparsity:
            raise ValueError(
                f"final_sparsity={self.final_sparsity} is below initial_sparsity="
                f"{self.initial_sparsity}; pruned entries are never revived"
            )
        return self


class _Gradual(Schedule):
    Config = GradualConfig

    def points(self) -> SteppedPoints:
        # Computed when read: end=10**8 costs four numbers, not 10**8 points.
        assert isinstance(self.config, GradualConfig)
        c = self.config
        shape = functools.partial(self.shape, float(c.initial_sparsity), float(c.final_sparsity))
        return SteppedPoints(c.start, c.end, c.every, shape)

    @staticmethod
    def shape(initial: float, final: float, progress: float) -> float:
        raise NotImplementedError


class Cubic(_Gradual):
    """Zhu & Gupta (2017): fast pruning first, slower as fewer weights remain."""

    name = "cubic"
    summary = "gradual, s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3 (Zhu & Gupta 2017)"

    @staticmethod
    def shape(initial: float, final: float, progress: float) -> float:
        return final + (initial - final) * (1.0 - progress) ** 3


class Linear(_Gradual):
    """The same steps as ``cubic``, the sparsity growing linearly."""

    name = "linear"
    summary = "gradual, s_i + (s_f - s_i)(t - t0)/(n Δt)"

    @staticmethod
    def shape(initial: float, final: float, progress: float) -> float:
        return initial + (final - initial) * progress


@hookimpl
def prunus_register_schedules(register: Registrar) -> None:
    """Register ``one_shot``, ``iterative``, ``linear`` and ``cubic``."""
    for schedule in (OneShot, Iterative, Linear, Cubic):
        register(schedule)
