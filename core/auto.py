"""``"auto"``: the plan the plugins choose for a hardware target, and carrying it out, through hooks only.

``prunus.select(model, hardware=..., objective=..., sparsity=..., data=...)`` turns ``hardware=`` into a
:class:`~prunus.HardwareProfile` through the ``prunus_resolve_hardware`` hook (prunus's own implementation, in
:mod:`prunus.hardware`, detects this machine for ``"auto"``) and asks the ``prunus_select_strategy`` hook for a
plan: a registered strategy and the steps that make it pay on that target. The first plugin that answers
decides; prunus's own policy (``prunus.hardware_policy``) is ``trylast``, so an installed plugin that implements
the hook overrides it. ``prunus.prune(model, "auto", sparsity=...)`` then carries the plan out through the
``prunus_carry_out`` hook (prunus's own, in :mod:`prunus.autoplan`): masks, physical removal of coupled channel
groups, sparse formats, recovery, and the measured speed-up, all in one call.

The engine reaches all of this through the registry's hooks: nothing here imports a tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .anatomy import model_kind
from .arguments import check_bool, check_number
from .errors import ConfigError, ConfigTypeError, PluginError, PrunusError, QualityError
from .hardware_profile import HardwareProfile
from .registration import Registry
from .registration import registry as default_registry
from .report import PruneReport
from .selection import OBJECTIVES, STEP_KINDS, AutoRequest, Objective, Selection

if TYPE_CHECKING:
    from torch import nn

    from .targets import FilterFn, Patterns

__all__ = ["AUTO_OPTIONS", "run_auto", "select"]

AUTO_OPTIONS: tuple[str, ...] = (
    "sparsity",
    "hardware",
    "objective",
    "example_inputs",
    "recover",
    "measure",
)
"""The options ``prune(model, "auto", ...)`` takes (``sparsity`` is required)."""


def _check_request(objective: object, sparsity: object) -> tuple[str, float]:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    return str(objective), check_number("sparsity", sparsity, minimum=0.0, maximum=1.0)


def select(
    model: nn.Module,
    hardware: str | HardwareProfile | dict[str, Any] = "auto",
    objective: Objective = "latency",
    sparsity: float = 0.5,
    *,
    data: Any = None,
    registry: Registry | None = None,
) -> Selection:
    """Choose a plan for ``model`` on a hardware target: a strategy and the steps that make it pay there.

    Args:
        model: the model to prune (read, not changed).
        hardware: ``"auto"`` (this machine, with its probe results if cached), ``"cpu"``, ``"gpu"``,
            ``"sparse_accelerator"``, a dict of profile fields, or a :class:`~prunus.HardwareProfile`.
        objective: ``"latency"``, ``"memory"`` or ``"accuracy"``.
        sparsity: the fraction of weights to remove (an N:M selection fixes its own, and says so).
        data: the calibration data that will be given to ``prune(model, "auto", data=...)``, if any: plans with
            data recover (and, for objective memory, allocate amounts by sensitivity) and may use data-aware
            criteria.
        registry: where the plugins are (the global registry by default).

    Returns:
        A :class:`Selection`: strategy name, options, the parameters to prune, the steps of the plan, the reason,
        warnings or a refusal, and the plugin that decided. ``prunus.prune(model, "auto", ...)`` carries it out.

    Raises:
        ConfigError: a bad objective, sparsity or hardware.
        PluginError: no plugin selected, or the plan names an unknown strategy, invalid options or an unknown
            step.
    """
    objective_name, fraction = _check_request(objective, sparsity)
    if registry is None:
        registry = default_registry
    profile = registry.hooks.resolve_hardware(hardware)
    selection = registry.hooks.select(model, profile, objective_name, fraction, data, registry)
    if selection is None:
        raise PluginError(
            "no plugin selected a strategy; is the built-in plugin 'prunus.hardware_policy' disabled "
            "(PRUNUS_DISABLED_PLUGINS)?"
        )
    _check_plan(selection, registry)
    return selection.model_copy(
        update={
            "hardware": profile,
            "objective": objective_name,
            "sparsity": fraction,
            "model_kind": model_kind(model),
        }
    )


def _check_plan(selection: Selection, registry: Registry) -> None:
    """Every strategy the plan names is registered and buildable with its options."""
    if selection.refusal is not None:
        return
    built = [(selection.strategy, selection.options, "selected")]
    for i, step in enumerate(selection.steps, 1):
        if step.kind in ("prune", "shrink"):
            if step.strategy is None:
                raise PluginError(
                    f"plugin {selection.decided_by!r} planned a {step.kind} step (step {i}) without a strategy"
                )
            built.append((step.strategy, step.options, f"planned in step {i}"))
        elif step.kind not in STEP_KINDS:  # pragma: no cover - pydantic checks the literal
            raise PluginError(f"unknown step kind {step.kind!r}")
    for name, options, how in built:
        try:
            registry.get(name, **options)
        except PrunusError as error:
            raise PluginError(
                f"plugin {selection.decided_by!r} {how} {name!r} with options {options}, which prunus cannot "
                f"build: {error}"
            ) from error


def run_auto(
    model: nn.Module,
    options: dict[str, Any],
    *,
    include: Patterns,
    exclude: Patterns,
    filter_fn: FilterFn | None,
    data: Any,
    restorable: bool,
    registry: Registry,
) -> PruneReport:
    """``prune(model, "auto", **options)``: select a plan, refuse it if it would ruin the model, carry it out.

    ``options`` are :data:`AUTO_OPTIONS`: ``sparsity`` (required), ``hardware``, ``objective``,
    ``example_inputs``, ``recover`` (``True``, ``False`` or recovery settings) and ``measure``.

    Raises:
        QualityError: the plan's ``refusal`` (nothing is changed).
    """
    unknown = sorted(set(options) - set(AUTO_OPTIONS))
    if unknown:
        hint = (
            " (the fraction to remove is sparsity=..., not amount=...)"
            if "amount" in unknown
            else ""
        )
        raise ConfigError(
            f"invalid options for 'auto': {unknown}{hint}; 'auto' takes sparsity (required), "
            "hardware='auto', objective='latency', example_inputs=None, recover=True and measure=True"
        )
    if "sparsity" not in options:
        raise ConfigError(
            "prune(model, 'auto') needs sparsity=<fraction to remove>, e.g. sparsity=0.5"
        )
    recover = options.get("recover", True)
    if not isinstance(recover, bool | Mapping):
        raise ConfigTypeError(
            f"recover={recover!r} must be True, False or a dict of recovery settings, e.g. {{'epochs': 3}}"
        )
    measure = check_bool("measure", options.get("measure", True))
    selection = select(
        model,
        hardware=options.get("hardware", "auto"),
        objective=options.get("objective", "latency"),
        sparsity=options["sparsity"],
        data=data,
        registry=registry,
    )
    if selection.refusal is not None:
        raise QualityError(
            f"prune(model, 'auto', sparsity={selection.sparsity}) is refused "
            f"(decided by {selection.decided_by}): {selection.refusal}. The model was not changed"
        )
    request = AutoRequest(
        example_inputs=options.get("example_inputs"),
        data=data,
        include=include,
        exclude=exclude,
        filter_fn=filter_fn,
        recover=recover,
        measure=measure,
        restorable=restorable,
    )
    return registry.hooks.carry_out(model, selection, request, registry)
