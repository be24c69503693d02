"""The hooks a prunus plugin can implement.

A plugin is a module (or any object) with functions named after these specs and decorated with
:data:`prunus.hookimpl`. prunus finds installed plugins through the ``prunus`` entry-point group; its own
built-in strategies are plugins too and use exactly these hooks.

As in pluggy generally, an implementation may accept fewer arguments than the spec names (so specs can grow
without breaking plugins), and plugins registered later are called first, so a third-party implementation of a
``firstresult`` hook runs before the built-in one (which is marked ``trylast``) and wins by returning a value
other than ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .hardware_profile import HardwareProfile
    from .registration import Registrar, Registry
    from .report import PruneReport
    from .selection import AutoRequest, Selection
    from .strategy import Criterion, PruneContext, Target

__all__ = ["hookimpl", "hookspec"]

PROJECT = "prunus"
hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks the hook specifications below (pluggy's ``HookspecMarker`` for the project ``prunus``)."""
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's hook implementations: ``@hookimpl`` or ``@hookimpl(trylast=True)`` (pluggy's
``HookimplMarker`` for the project ``prunus``; a plugin imports it from :mod:`prunus.plugin_api`)."""


# -- registration ---------------------------------------------------------------------------------------------


@hookspec
def prunus_register_criteria(register: Registrar) -> None:
    """Register importance criteria.

    Called once, when the registry is first used. Call ``register(CriterionClass)`` for each
    :class:`~prunus.Criterion` subclass the plugin provides; pass ``replace=True`` to take over a name another
    plugin registered. Every criterion is composed with every granularity into strategies named
    ``<criterion>_<granularity>`` (``taylor_unstructured``, ``taylor_structured``, ``taylor_global``, ...).

    Args:
        register: the registrar; records this plugin and its distribution as the provider.
    """


@hookspec
def prunus_register_granularities(register: Registrar) -> None:
    """Register granularities: the rules that turn scores into masks.

    Call ``register(GranularityClass)`` for each :class:`~prunus.Granularity` subclass. Each is composed with
    every criterion, built-in and third-party.

    Args:
        register: the registrar; records this plugin and its distribution as the provider.
    """


@hookspec
def prunus_register_strategies(register: Registrar) -> None:
    """Register whole strategies that are not a criterion at a granularity.

    Call ``register(StrategyClass)`` for each :class:`~prunus.Strategy` subclass (e.g. a user-given mask).
    Called after every plugin has registered its criteria and granularities.

    Args:
        register: the registrar; records this plugin and its distribution as the provider.
    """


@hookspec
def prunus_register_schedules(register: Registrar) -> None:
    """Register pruning schedules: target sparsities over training steps.

    Call ``register(ScheduleClass)`` for each :class:`~prunus.Schedule` subclass (``cubic``, ``linear``,
    ``iterative`` are the built-in ones). :class:`prunus.GradualPruner` and the command line find them by name.

    Args:
        register: the registrar; records this plugin and its distribution as the provider.
    """


@hookspec
def prunus_register_allocations(register: Registrar) -> None:
    """Register allocations: how a pruning budget is split across the layers of a model.

    Call ``register(AllocationClass)`` for each :class:`~prunus.Allocation` subclass (``uniform`` and ``owl``
    are the built-in ones); ``prune(..., allocation="name")`` and ``prunus.registry.allocation(...)`` find them.

    Args:
        register: the registrar; records this plugin and its distribution as the provider.
    """


@hookspec
def prunus_register_reconstructions(register: Registrar) -> None:
    """Register reconstructions: how the weights a mask keeps are adjusted to the calibration data.

    Call ``register(ReconstructionClass)`` for each :class:`~prunus.Reconstruction` subclass (``sparsegpt`` is
    the built-in one); ``prune(..., reconstruct="name")`` and ``prunus.registry.reconstruction(...)`` find them.

    Args:
        register: the registrar; records this plugin and its distribution as the provider.
    """


# -- pruning --------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def prunus_score(criterion: Criterion, target: Target, context: PruneContext) -> Tensor | None:
    """Compute the importance scores of ``target`` under ``criterion``.

    The built-in implementation (``trylast``) returns ``criterion.score(target, context)``. Implement this hook
    to score differently for some criteria or module types (e.g. cache scores, or score attention heads as
    wholes) and return ``None`` to leave the rest to others.

    Args:
        criterion: the configured criterion being ranked.
        target: the parameter being scored.
        context: the ``prune`` call being served.

    Returns:
        A floating tensor of the target's shape (higher: keep), or ``None``. Scores are checked: a wrong
        shape or a NaN is reported as a :class:`~prunus.errors.PluginError` and the model is not changed.
    """


@hookspec(firstresult=True)
def prunus_apply_mask(
    target: Target, mask: Tensor, restorable: bool, context: PruneContext
) -> Callable[[], None] | None:
    """Put a validated keep-mask on the model.

    The built-in implementation (``trylast``) zeroes the pruned entries in place and keeps the mask (one bit per
    entry) and the pruned values beside the parameter (see :mod:`prunus.masking`). Implement this hook to apply masks another
    way (a sparse format, a physical removal) for the targets you handle, and return ``None`` for the others.

    Args:
        target: the parameter to mask.
        mask: the full bool keep-mask, already combined with any earlier mask.
        restorable: whether the caller wants ``prunus.restore`` to be possible.
        context: the ``prune`` call being served.

    Returns:
        A function that undoes the application exactly (called if a later target fails, so the model is
        left as it was), or ``None`` if this implementation does not handle the target.
    """


# -- hardware -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def prunus_resolve_hardware(hardware: object) -> HardwareProfile | None:
    """Turn what a user passes as ``hardware=`` into a :class:`~prunus.HardwareProfile`.

    prunus's own implementation (``trylast``, in :mod:`prunus.hardware.plugin`) detects the current machine for
    ``"auto"`` (with its cached probe results), declares a generic target for ``"cpu"``, ``"gpu"`` and
    ``"sparse_accelerator"``, validates a dict and passes a profile through. Implement this hook to name targets
    of your own (``"jetson-orin"`` with its measured figures, say) and return ``None`` for the others.

    Args:
        hardware: the ``hardware=`` argument of :func:`prunus.select` or ``prune(model, "auto", ...)``.

    Returns:
        The profile, or ``None`` to leave the argument to other plugins.
    """


@hookspec(firstresult=True)
def prunus_select_strategy(
    model: nn.Module, hardware: Any, objective: str, sparsity: float, data: Any, registry: Registry
) -> Selection | None:
    """Choose a plan for ``model`` on a hardware target: a strategy and the steps that make it pay there.

    Args:
        model: the model to prune (read, not changed; :func:`prunus.plugin_api.model_kind` tells what it is).
        hardware: the hardware target, a :class:`~prunus.HardwareProfile` (``prunus.select`` resolves the
            names ``"auto"``, ``"gpu"``, ``"cpu"``, ``"sparse_accelerator"`` and dicts to one before calling): its
            ``kind``, GPU compute capability, CPU vector width and, when measured, ``sparse_crossover``.
        objective: what to optimise: ``"latency"``, ``"memory"`` or ``"accuracy"``.
        sparsity: the fraction of weights the user wants removed.
        data: the calibration data the user gave (``None`` when none): a plan may then rank with data-aware
            criteria and allocate amounts by sensitivity. An implementation may leave this argument out.
        registry: where the plan's strategies will be looked up: a plan names only strategies registered
            there (``name in registry``), such as data-aware ones installed by another plugin. An
            implementation may leave this argument out too.

    Returns:
        A :class:`~prunus.selection.Selection` naming a registered strategy, its options and the reason, and, for
        a plan, its :class:`~prunus.selection.PlanStep` steps (``prune``, ``shrink``, ``to_sparse``,
        ``recover``), what it predicts and what it warns about, or a ``refusal`` when the request would ruin the
        model; or ``None`` to let another plugin decide. A selection without steps is carried out as one
        ``prune`` step.
    """


@hookspec(firstresult=True)
def prunus_carry_out(
    model: nn.Module, selection: Selection, request: AutoRequest, registry: Registry
) -> PruneReport | None:
    """Carry out a plan on ``model`` in place: ``prune(model, "auto", ...)`` calls this after the selection.

    prunus's own implementation (``trylast``, in :mod:`prunus.autoplan.plugin`) runs the steps of
    :meth:`Selection.plan` in order inside one transaction (a failure leaves the model as it was), emits the
    selection's warnings, and measures what the plan gave. Implement it to carry out plans another way (on a
    remote device, say) and return ``None`` for the plans you leave to prunus.

    Args:
        model: the model, changed in place.
        selection: the plan (its ``refusal`` is ``None``: refused plans never get here).
        request: the call's data, example inputs and settings.
        registry: where strategies are looked up.

    Returns:
        The :class:`~prunus.report.PruneReport` of the call, with ``steps`` and ``outcome``; or ``None``.
    """
