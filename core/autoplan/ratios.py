"""Per-layer and per-group amounts from measured sensitivity: the least sensitive lose the most.

Each layer (a ``prune`` step) or group of coupled channels (a ``shrink`` step) is pruned alone at a few amounts
around the one asked, the output error against the dense model measured (:meth:`Reference.error`), and
:meth:`prunus.SensitivityResult.suggest` spreads the amounts so the total stays what was asked: every layer or
group gets the largest amount whose error stays within one tolerance, the smallest tolerance that reaches the
total. Totals are weighted by parameters for layers and by MACs for channel groups (removing channels is for
speed). Amounts are capped at :data:`MAX_GROUP_AMOUNT` so no group collapses.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict
from torch import nn

from ..errors import ConfigError
from ..registration import Registry
from ..shrinking.sensitivity import channel_sensitivity
from ..workflow.sensitivity_analysis import SensitivityCurve, SensitivityResult, sensitivity

__all__ = ["MAX_GROUP_AMOUNT", "Allocation", "group_amounts", "layer_amounts", "probe_amounts"]

MAX_GROUP_AMOUNT = 0.75
"""No layer or group is asked to lose more than this fraction (one that collapses takes the model with it)."""


class Allocation(BaseModel):
    """Amounts chosen from sensitivity, and the curves they came from (for the report)."""

    model_config = ConfigDict(frozen=True)

    amounts: dict[str, float]
    """Layer or group name to amount (``prune(amounts=...)`` / ``shrink(amounts=...)`` keys, escaped)."""
    result: SensitivityResult
    weighted_by: str

    def describe(self) -> str:
        """One line per layer or group: its amount and its error at the amounts tried."""
        lines = [
            f"amounts from sensitivity (output error vs dense; total weighted by {self.weighted_by}):"
        ]
        width = max([len(c.name) for c in self.result.curves] + [5])
        for curve in self.result.curves:
            tried = ", ".join(
                f"{a:.0%}: {-m:.3g}" for a, m in zip(curve.amounts, curve.metrics, strict=True)
            )
            amount = self.amounts.get(glob.escape(curve.name), 0.0)
            lines.append(f"  {curve.name:<{width}}  {amount:6.1%}   ({tried})")
        return "\n".join(lines)


def probe_amounts(target: float) -> list[float]:
    """The amounts each layer or group is tried at: half, all and one and a half of ``target`` (capped)."""
    found = {round(min(MAX_GROUP_AMOUNT, target * f), 4) for f in (0.5, 1.0, 1.5)}
    return sorted(a for a in found if 0 < a < 1)


def _suggest(curves: list[SensitivityCurve], target: float, weighted_by: str) -> Allocation | None:
    """Amounts from the curves reaching ``target`` (``None`` when the tried amounts cannot reach it)."""
    result = SensitivityResult(
        strategy="", options={}, baseline=0.0, higher_is_better=True, curves=curves
    )
    try:
        chosen = result.suggest(target_sparsity=target)
    except ConfigError:
        return None
    return Allocation(
        amounts={glob.escape(name): round(amount, 6) for name, amount in chosen.items()},
        result=result,
        weighted_by=weighted_by,
    )


def layer_amounts(
    model: nn.Module,
    strategy: str,
    options: dict[str, Any],
    target: float,
    error: Callable[[nn.Module], float],
    *,
    include: Any,
    registry: Registry,
) -> Allocation | None:
    """Per-parameter amounts for a ``prune`` step, from :func:`prunus.sensitivity` on the output error."""
    result = sensitivity(
        model,
        lambda m: -error(m),
        strategy=strategy,
        amounts=probe_amounts(target),
        include=include,
        strategy_options={k: v for k, v in options.items() if k != "amount"},
        registry=registry,
    )
    return _suggest(result.curves, target, "parameters")


def group_amounts(
    model: nn.Module,
    example_inputs: Any,
    strategy: str,
    options: dict[str, Any],
    settings: dict[str, Any],
    target: float,
    error: Callable[[nn.Module], float],
    *,
    data: Any,
    registry: Registry,
) -> Allocation | None:
    """Per-group amounts for a ``shrink`` step, from :func:`prunus.shrinking.sensitivity.channel_sensitivity`."""
    shrink_settings = {
        k: v for k, v in settings.items() if k in ("ignore", "heads", "min_keep", "normalized")
    }
    groups = channel_sensitivity(
        model,
        example_inputs,
        strategy,
        error,
        probe_amounts(target),
        data=data,
        registry=registry,
        **shrink_settings,
        **{k: v for k, v in options.items() if k != "amount"},
    )
    curves = [
        SensitivityCurve(
            name=g.name,
            numel=max(g.macs, 1),
            amounts=g.amounts,
            metrics=[-loss for loss in g.losses],
        )
        for g in groups
    ]
    if not curves:
        return None
    return _suggest(curves, target, "MACs")
