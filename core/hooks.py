"""The typed face of the plugin hooks: prunus calls these methods, never ``pm.hook`` directly.

Each method calls one hook of :mod:`prunus.hookspecs` with keyword arguments, checks what came back and returns
a typed value, so a plugin that raises, returns nothing or returns the wrong thing is reported where it happened,
naming the plugin and the distribution that installed it, instead of failing later somewhere else (or being
blamed on prunus's own built-ins).

The ``firstresult`` hooks are called implementation by implementation, in pluggy's order (the last registered
first, ``tryfirst`` before and ``trylast`` after the others), so prunus knows which one answered or raised. A
hook with a wrapper implementation is left to pluggy as a whole (a wrapper wraps every other call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy
from torch import Tensor

from .errors import ConfigTypeError, PluginError, PrunusError, brief
from .hardware_profile import HardwareProfile
from .selection import Selection
from .strategy import Criterion, PruneContext, Target, checked_scores

__all__ = ["DEFAULT_PLUGIN", "Hooks"]

DEFAULT_PLUGIN = "prunus.defaults"
"""The built-in plugin whose ``prunus_score`` asks the criterion itself: a failure there is the criterion's."""

Describe = Callable[[str], str]
"""Names a plugin with its distribution, for messages: ``"taylor (prunus-taylor 1.0)"``."""


def _plain_name(name: str) -> str:
    return repr(name)


class Hooks:
    """Calls the hooks of one plugin manager (the registry's).

    Args:
        pm: the plugin manager.
        plugin: names a plugin (by its registered name) with its distribution, for error messages.
        criterion: names a criterion (by its registry name) with the plugin and distribution that registered
            it, for failures of the criterion itself.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        plugin: Describe = _plain_name,
        criterion: Describe | None = None,
    ) -> None:
        self._pm = pm
        self._plugin = plugin
        self._criterion = criterion or (lambda name: f"criterion {name!r}")

    def _first(
        self, hook: str, who: Describe | None = None, **kwargs: Any
    ) -> tuple[Any, str | None]:
        """The first non-``None`` result of a ``firstresult`` hook, and the name of the plugin that gave it.

        ``who(plugin name)`` describes, for an error, what failed when that plugin's implementation raised
        (by default the plugin's hook, with its distribution).

        Raises:
            PluginError: an implementation raised (a :class:`PrunusError` passes as it is: it is already
                typed, e.g. a user's bad option found by a plugin).
        """
        caller = getattr(self._pm.hook, hook)
        impls = caller.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            try:
                return caller(**kwargs), None
            except PrunusError:
                raise
            except Exception as error:
                raise PluginError(
                    f"a {hook} implementation raised {type(error).__name__}: {_text(error)}"
                ) from error
        for impl in reversed(impls):  # the order pluggy calls them in
            try:
                result = impl.function(*[kwargs[name] for name in impl.argnames])
            except PrunusError:
                raise
            except Exception as error:
                culprit = (
                    who(impl.plugin_name)
                    if who is not None
                    else f"the {hook} hook of plugin {self._plugin(impl.plugin_name)}"
                )
                raise PluginError(
                    f"{culprit} raised {type(error).__name__}: {_text(error)}"
                ) from error
            if result is not None:
                return result, impl.plugin_name
        return None, None

    def score(self, criterion: Criterion, target: Target, context: PruneContext) -> Tensor:
        """Scores of ``target`` under ``criterion`` from the first plugin that gives them, checked.

        The scores must be a floating tensor of the target's shape without NaN, and scoring must not write into
        the weights (their version counter is compared before and after: no copy, no extra pass).

        Raises:
            PluginError: naming the criterion's plugin (or the hook implementation that scored instead of the
                criterion) and its distribution.
            WeightError: the scores are not finite because the weights themselves are not.
        """

        def who(plugin: str | None) -> str:
            # The built-in hook asks the criterion itself: what it returns or raises is the criterion's doing.
            if plugin in (DEFAULT_PLUGIN, None):
                return self._criterion(criterion.name)
            return f"criterion {criterion.name!r} scored by the prunus_score hook of plugin {self._plugin(plugin)}"

        parameter = target.parameter
        version = parameter._version
        result, plugin = self._first(
            "prunus_score", who, criterion=criterion, target=target, context=context
        )
        owner = who(plugin)
        if parameter._version != version:
            raise PluginError(
                f"{owner} wrote into the weights of {target.name!r} while scoring them; a criterion must only "
                "read target.tensor (prunus cannot undo a plugin's own writes: the weights may be changed)"
            )
        if result is None:
            raise PluginError(
                f"no plugin scored {target.name!r} with criterion {criterion.name!r}; "
                f"is the built-in plugin {DEFAULT_PLUGIN!r} disabled?"
            )
        return checked_scores(result, target, owner)

    def score_unchecked(self, criterion: Criterion, target: Target, context: PruneContext) -> Any:
        """What the ``prunus_score`` hook returns, as it is: no check, exceptions as raised.

        For diagnosis tools (the conformance kit of :mod:`prunus.testing` reports a plugin's raw behaviour);
        ``prune`` always scores through :meth:`score`.
        """
        return self._pm.hook.prunus_score(criterion=criterion, target=target, context=context)

    # Lets ComposedStrategy know these scores are checked already (one NaN pass, not two).
    score.validates_scores = True  # type: ignore[attr-defined]

    def apply_mask(
        self, target: Target, mask: Tensor, restorable: bool, context: PruneContext
    ) -> Callable[[], None]:
        """Put ``mask`` on the model; returns the function that undoes it."""
        undo, plugin = self._first(
            "prunus_apply_mask", target=target, mask=mask, restorable=restorable, context=context
        )
        if undo is None:
            raise PluginError(
                f"no plugin applied the mask of {target.name!r}; "
                f"is the built-in plugin {DEFAULT_PLUGIN!r} disabled?"
            )
        if not callable(undo):
            # Checked here: a bad one would only fail when a later target fails and the engine undoes.
            raise PluginError(
                f"the prunus_apply_mask hook of plugin {self._plugin(plugin or '?')} returned "
                f"{type(undo).__name__} for {target.name!r}; it must return a function that undoes the "
                "application"
            )
        return undo  # type: ignore[no-any-return]

    def resolve_hardware(self, hardware: object) -> HardwareProfile:
        """The profile of a ``hardware=`` argument, from the first plugin that knows it."""
        profile, plugin = self._first("prunus_resolve_hardware", hardware=hardware)
        if profile is None:
            raise PluginError(
                f"no plugin describes the hardware target {brief(hardware)}; is the built-in plugin "
                "'prunus.hardware' disabled (PRUNUS_DISABLED_PLUGINS)?"
            )
        if not isinstance(profile, HardwareProfile):
            raise PluginError(
                f"the prunus_resolve_hardware hook of plugin {self._plugin(plugin or '?')} returned "
                f"{type(profile).__name__} for {brief(hardware)}; it must return a prunus.HardwareProfile or None"
            )
        return profile

    def select(
        self, model: Any, hardware: HardwareProfile, objective: str, sparsity: float
    ) -> Selection | None:
        """The first plugin's strategy selection for a hardware target, or ``None``."""
        result, plugin = self._first(
            "prunus_select_strategy",
            model=model,
            hardware=hardware,
            objective=objective,
            sparsity=sparsity,
        )
        if result is None:
            return None
        if not isinstance(result, Selection):
            raise PluginError(
                f"the prunus_select_strategy hook of plugin {self._plugin(plugin or '?')} returned "
                f"{type(result).__name__} ({brief(result)}); it must return a prunus.Selection or None"
            )
        return result.model_copy(update={"decided_by": plugin or result.decided_by})

    def __deepcopy__(self, memo: dict[int, Any]) -> Hooks:
        return self  # the registry's service, shared by everything built from it

    def __reduce__(self) -> Any:
        raise ConfigTypeError(
            "the registry's hook caller cannot be pickled; pickle strategies (rebuilt from the registry by "
            "name) rather than what they were built with"
        )


def _text(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
