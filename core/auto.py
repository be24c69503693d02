"""``"auto"``: the strategy the plugins choose for a hardware target, through hooks only.

``prunus.select(model, hardware=..., objective=..., sparsity=...)`` turns ``hardware=`` into a
:class:`~prunus.HardwareProfile` through the ``prunus_resolve_hardware`` hook (prunus's own implementation, in
:mod:`prunus.hardware`, detects this machine for ``"auto"``) and asks the ``prunus_select_strategy`` hook which
registered strategy suits it. The first plugin that answers decides; prunus's own policy
(``prunus.hardware_policy``) is ``trylast``, so an installed plugin that implements the hook overrides it.
``prunus.prune(model, "auto", sparsity=...)`` prunes with the selection and records it in the report.

The engine reaches all of this through the registry's hooks: nothing here imports a tool.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, PluginError, PrunusError
from .hardware_profile import HardwareProfile
from .registration import Registry
from .registration import registry as default_registry
from .selection import OBJECTIVES, Objective, Selection

if TYPE_CHECKING:
    from torch import nn

    from .strategy import Strategy

__all__ = ["resolve_auto", "select"]


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
    if registry is None:
        registry = default_registry
    profile = registry.hooks.resolve_hardware(hardware)
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
