"""The typed face of the plugin hooks: prunus calls these methods, never ``pm.hook`` directly.

Each method calls one hook of :mod:`prunus.hookspecs` with keyword arguments, checks what came back and returns
a typed value, so a plugin that returns nothing or the wrong thing is reported where it happened (naming the
hook and, where pluggy tells, the plugin) instead of failing later somewhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy
from torch import Tensor

from .errors import PluginError
from .hardware_profile import HardwareProfile
from .selection import Selection
from .strategy import Criterion, PruneContext, Target

__all__ = ["Hooks"]


class Hooks:
    """Calls the hooks of one plugin manager (the registry's)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def score(self, criterion: Criterion, target: Target, context: PruneContext) -> Tensor:
        """Scores of ``target`` under ``criterion`` from the first plugin that gives them."""
        result = self._pm.hook.prunus_score(criterion=criterion, target=target, context=context)
        if result is None:
            raise PluginError(
                f"no plugin scored {target.name!r} with criterion {criterion.name!r}; "
                "is the built-in plugin 'prunus.defaults' disabled?"
            )
        return result  # type: ignore[no-any-return]

    def scores_directly(self) -> bool:
        """Whether every score comes from the criterion itself: no plugin but the built-in default implements
        ``prunus_score`` (a ranking may then call an elementwise criterion's ``score_values`` directly)."""
        return all(
            impl.plugin_name == "prunus.defaults"
            for impl in self._pm.hook.prunus_score.get_hookimpls()
        )

    def apply_mask(
        self, target: Target, mask: Tensor, restorable: bool, context: PruneContext
    ) -> Callable[[], None]:
        """Put ``mask`` on the model; returns the function that undoes it."""
        undo = self._pm.hook.prunus_apply_mask(
            target=target, mask=mask, restorable=restorable, context=context
        )
        if undo is None:
            raise PluginError(
                f"no plugin applied the mask of {target.name!r}; "
                "is the built-in plugin 'prunus.defaults' disabled?"
            )
        if not callable(undo):
            # Checked here: a bad one would only fail when a later target fails and the engine undoes.
            raise PluginError(
                f"the prunus_apply_mask implementation that applied the mask of {target.name!r} returned "
                f"{type(undo).__name__}; it must return a function that undoes the application"
            )
        return undo  # type: ignore[no-any-return]

    def resolve_hardware(self, hardware: object) -> HardwareProfile:
        """The profile of a ``hardware=`` argument, from the first plugin that knows it."""
        profile = self._pm.hook.prunus_resolve_hardware(hardware=hardware)
        if profile is None:
            raise PluginError(
                f"no plugin describes the hardware target {hardware!r:.80}; is the built-in plugin "
                "'prunus.hardware' disabled (PRUNUS_DISABLED_PLUGINS)?"
            )
        if not isinstance(profile, HardwareProfile):
            raise PluginError(
                f"a prunus_resolve_hardware implementation returned {type(profile).__name__} for "
                f"{hardware!r:.80}; it must return a prunus.HardwareProfile or None"
            )
        return profile

    def select(
        self, model: Any, hardware: HardwareProfile, objective: str, sparsity: float
    ) -> Selection | None:
        """The first plugin's strategy selection for a hardware target, or ``None``."""
        impls = self._pm.hook.prunus_select_strategy.get_hookimpls()
        for impl in reversed(impls):  # the order pluggy calls them in
            caller = self._pm.subset_hook_caller(
                "prunus_select_strategy",
                remove_plugins=[i.plugin for i in impls if i is not impl],
            )
            result = caller(model=model, hardware=hardware, objective=objective, sparsity=sparsity)
            if result is None:
                continue
            if not isinstance(result, Selection):
                raise PluginError(
                    f"plugin {impl.plugin_name!r} returned {type(result).__name__} from "
                    "prunus_select_strategy; it must return a prunus.Selection or None"
                )
            return result.model_copy(update={"decided_by": impl.plugin_name})
        return None
