"""Hardware-aware strategy selection: :func:`select` and what it returns, a :class:`Selection`.

``prunus.select(model, hardware=..., objective=..., sparsity=...)`` resolves the hardware target to a
:class:`~prunus.hardware.HardwareProfile` and asks the plugins, through the ``prunus_select_strategy`` hook, which
registered strategy suits it. The first plugin that answers decides; prunus's own policy
(``prunus.hardware_policy``) is ``trylast``, so an installed plugin that implements the hook overrides it.
``prunus.prune(model, "auto", sparsity=...)`` prunes with the selection and records it in the report.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, PluginError, PrunusError
from .hardware import HardwareProfile, resolve_hardware

if TYPE_CHECKING:
    from torch import nn

    from .registry import Registry
    from .strategy import Strategy

__all__ = ["AUTO", "OBJECTIVES", "Objective", "Selection", "resolve_auto", "select"]

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


def _check_request(objective: object, sparsity: object) -> tuple[str, float]:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, int | float)
        or math.isnan(sparsity)
        or not 0.0 <= sparsity <= 1.0
    ):
        raise ConfigError(f"sparsity={sparsity!r} is not a fraction in [0, 1]")
    return str(objective), float(sparsity)


def select(
    model: nn.Module,
    hardware: str | HardwareProfile | dict[str, Any] = "auto",
    objective: Objective = "latency",
    sparsity: float = 0.5,
    *,
    registry: Registry | None = None,
) -> Selection:
    """Choose a registered strategy for ``model`` on a hardware target.

    Args:
        model: the model to prune (read, not changed).
        hardware: ``"auto"`` (this machine, with its probe results if cached), ``"cpu"``, ``"gpu"``,
            ``"sparse_accelerator"``, a dict of profile fields, or a :class:`~prunus.HardwareProfile`.
        objective: ``"latency"``, ``"memory"`` or ``"accuracy"``.
        sparsity: the fraction of weights to remove (an N:M selection fixes its own, and says so).
        registry: where the plugins are (the global registry by default).

    Returns:
        A :class:`Selection`: strategy name, options, the parameters to prune, the reason, and the plugin that
        decided. ``prunus.prune(model, selection.strategy, include=selection.include, **selection.options)``
        applies it; ``prunus.prune(model, "auto", ...)`` does both steps.

    Raises:
        ConfigError: a bad objective, sparsity or hardware.
        PluginError: no plugin selected, or the selection names an unknown strategy or invalid options.
    """
    objective_name, fraction = _check_request(objective, sparsity)
    profile = resolve_hardware(hardware)
    if registry is None:
        from .registry import registry as default_registry

        registry = default_registry
    selection = registry.hooks.select(model, profile, objective_name, fraction)
    if selection is None:
        raise PluginError(
            "no plugin selected a strategy; is the built-in plugin 'prunus.hardware_policy' disabled "
            "(PRUNUS_DISABLED_PLUGINS)?"
        )
    try:
        registry.get(selection.strategy, **selection.options)
    except PrunusError as error:
        raise PluginError(
            f"plugin {selection.decided_by!r} selected {selection.strategy!r} with options "
            f"{selection.options}, which prunus cannot build: {error}"
        ) from error
    return selection.model_copy(
        update={"hardware": profile, "objective": objective_name, "sparsity": fraction}
    )


def resolve_auto(
    model: nn.Module, options: dict[str, Any], registry: Registry
) -> tuple[Strategy, Selection]:
    """What ``prune(model, "auto", **options)`` prunes with: the configured strategy and its selection.

    ``options`` are ``sparsity`` (required), ``hardware`` and ``objective``.
    """
    allowed = {"sparsity", "hardware", "objective"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        hint = (
            " (the fraction to remove is sparsity=..., not amount=...)"
            if "amount" in unknown
            else ""
        )
        raise ConfigError(
            f"invalid options for 'auto': {unknown}{hint}; 'auto' takes sparsity (required), "
            "hardware='auto' and objective='latency'"
        )
    if "sparsity" not in options:
        raise ConfigError(
            "prune(model, 'auto') needs sparsity=<fraction to remove>, e.g. sparsity=0.5"
        )
    selection = select(
        model,
        hardware=options.get("hardware", "auto"),
        objective=options.get("objective", "latency"),
        sparsity=options["sparsity"],
        registry=registry,
    )
    return registry.get(selection.strategy, **selection.options), selection
