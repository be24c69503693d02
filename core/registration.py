"""The registry: names to configured strategies, criteria, granularities and schedules, filled by plugins.

``prunus.registry`` is the process-wide instance. It loads plugins lazily (``import prunus`` loads none): the
built-ins from :mod:`prunus.plugins` and the hook implementations of prunus's own tools, then every installed
distribution's entry point in the ``prunus`` group. A plugin that fails to load is reported by name and
skipped; the others keep working. Nothing is visible to other threads until every plugin has registered.

The registrable kinds (:class:`~prunus.component.Component` subclasses: criteria, granularities, strategies,
schedules, allocations, reconstructions) are kept in one table and checked alike; strategies named
``<criterion>_<granularity>`` are composed from every criterion and granularity.

Environment switches:

* ``PRUNUS_DISABLE_PLUGIN_AUTOLOAD=1``: load no installed (entry-point) plugins, only the built-ins.
* ``PRUNUS_DISABLED_PLUGINS=a,b``: skip these plugins, by entry-point name, distribution name or built-in
  plugin name (e.g. ``prunus.criteria``).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, cast, get_args, get_origin

import pluggy
from pydantic import ValidationError, create_model, model_validator

from . import hookspecs
from .allocation import Allocation
from .component import KINDS, Component, Kind
from .config import StrategyConfig, validate_config
from .errors import (
    ConfigTypeError,
    PluginLoadWarning,
    RegistrationError,
    UnknownCriterionError,
    UnknownScheduleError,
    UnknownStrategyError,
    brief,
)
from .hooks import Hooks
from .reconstruction import Reconstruction
from .schedules import Schedule
from .statistics import Statistic
from .strategy import ComposedStrategy, Criterion, Granularity, Strategy

__all__ = [
    "BUILTIN_TOOL_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ComponentInfo",
    "PluginFailure",
    "Provider",
    "Registrar",
    "Registry",
    "StrategyInfo",
    "registry",
]

ENTRY_POINT_GROUP = "prunus"
USER = "<user>"

BUILTIN_TOOL_PLUGINS: tuple[tuple[str, str], ...] = (
    ("prunus.hardware", "prunus.hardware.plugin"),
    ("prunus.autoplan", "prunus.autoplan.plugin"),
)
"""``(plugin name, module)`` of the hook implementations prunus's tool subpackages provide.

They are loaded by name, as the built-in strategies of :mod:`prunus.plugins` are, so the contracts and the
engine reach a tool through its hooks and never import it.
"""

_BASES: dict[Kind, type[Component]] = {
    "criterion": Criterion,
    "granularity": Granularity,
    "strategy": Strategy,
    "schedule": Schedule,
    "allocation": Allocation,
    "reconstruction": Reconstruction,
}

_UNKNOWN: dict[Kind, type[LookupError]] = {
    "criterion": UnknownCriterionError,
    "granularity": UnknownStrategyError,
    "strategy": UnknownStrategyError,
    "schedule": UnknownScheduleError,
    "allocation": UnknownStrategyError,
    "reconstruction": UnknownStrategyError,
}


@dataclass(frozen=True)
class Provider:
    """Who provided a registry entry: the plugin's name and the distribution that installed it."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return self.plugin
        version = f" {self.version}" if self.version else ""
        return f"{self.plugin} ({self.distribution}{version})"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, and why."""

    plugin: str
    distribution: str | None
    error: str


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component (criterion, granularity, schedule, allocation or reconstruction): its name, kind,
    summary, provider and class."""

    name: str
    kind: str
    summary: str
    provider: Provider
    cls: type[Component] = Component

    @property
    def config(self) -> type[StrategyConfig]:
        """The model of its options."""
        return self.cls.Config


@dataclass(frozen=True)
class _Entry:
    """A registered class and who registered it."""

    cls: type[Component]
    provider: Provider


@dataclass(frozen=True)
class StrategyInfo:
    """What the registry knows of a strategy, without building it.

    Attributes:
        name: the registry name.
        summary: one line for ``prunus list``.
        granularity: what one pruned unit is (``unstructured``, ``structured``, ``global``, ...).
        config: the pydantic model of its options.
        provider: the plugin and distribution that registered it.
        criterion: for a composed strategy, the criterion's name.
        deterministic: ``False`` when masks depend on a random seed.
        statistics: the calibration statistics it reads (non-empty: ``prune`` needs calibration ``data=``).
    """

    name: str
    summary: str
    granularity: str
    config: type[StrategyConfig]
    provider: Provider
    build: Callable[[StrategyConfig], Strategy] = field(repr=False)
    criterion: str | None = None
    deterministic: bool = True
    statistics: tuple[type[Statistic], ...] = ()

    def options(self) -> dict[str, str]:
        """Option names with their type, default and description, for help texts.

        >>> prunus.registry.info("ln_structured").options()["dim"]  # doctest: +SKIP
        'int, default 0: dim whose slices are pruned: ...'
        """
        out = {}
        for name, info in self.config.model_fields.items():
            default = (
                "required"
                if info.is_required()
                else f"default {info.get_default(call_default_factory=True)!r}"
            )
            about = f": {info.description}" if info.description else ""
            out[name] = f"{_type_name(info.annotation)}, {default}{about}"
        return out


def _type_name(annotation: Any) -> str:
    """``int | float`` rather than ``Union[Annotated[int, Strict()], ...]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join(_type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", None) or str(annotation)


class Registrar:
    """The ``register`` argument of the registration hooks: ``register(cls, replace=False)``.

    It records the calling plugin and its distribution as the provider of what it registers.
    """

    def __init__(self, registry: Registry, kind: Kind, provider: Provider) -> None:
        self._registry = registry
        self._kind = kind
        self.provider = provider

    def __call__(self, cls: Any, *, replace: bool = False) -> Any:
        """Register ``cls``, a subclass of the kind the hook registers (Criterion, Granularity, ...)."""
        self._registry._register(self._kind, cls, provider=self.provider, replace=replace)
        return cls


class Registry:
    """Strategies by name: ``get``, ``names``, ``info``, ``in``, ``len`` and iteration.

    Args:
        autoload: load plugins on first use (built-ins always; installed ones unless disabled).
    """

    def __init__(self, *, autoload: bool = True) -> None:
        self._autoload = autoload
        self._entries: dict[Kind, dict[str, _Entry]] = {kind: {} for kind in KINDS}
        self._strategies: dict[str, StrategyInfo] = {}
        self._pm: pluggy.PluginManager | None = None
        self._hooks: Hooks | None = None
        self._lock = threading.RLock()
        self._plugins: dict[str, Provider] = {}
        """Every loaded plugin by its registered name, with its distribution (for error messages)."""
        # Set last, once every plugin has registered: until then other threads wait on the lock.
        self._ready = False
        self._loading = False
        self.plugin_failures: list[PluginFailure] = []
        """Plugins that failed to load or register, with the error."""

    # -- user verbs ---------------------------------------------------------------------------------------

    def get(self, name: str, /, **options: Any) -> Strategy:
        """A strategy configured with ``options``, validated by its config model.

        Raises:
            UnknownStrategyError: no strategy has that name (the message lists the closest ones).
            ConfigError: an option is unknown, missing, of the wrong type or out of range.
        """
        info = self.info(name)
        config = validate_config(info.config, name, options)
        return info.build(config)

    def info(self, name: str) -> StrategyInfo:
        """What is known of strategy ``name`` (summary, granularity, options, provider)."""
        self._ensure_loaded()
        if not isinstance(name, str):
            raise UnknownStrategyError(
                f"a strategy name must be a str, not {type(name).__name__} ({name!r:.80}); "
                f"available: {', '.join(self.names())}"
            )
        try:
            return self._strategies[name]
        except KeyError:
            raise UnknownStrategyError(self._unknown("strategy", name, self.names())) from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted strategy names, optionally filtered by a glob ``pattern`` such as ``"*_structured"``."""
        self._ensure_loaded()
        return _filtered(self._strategies, pattern)

    def criteria(self, pattern: str | None = None) -> list[str]:
        """Sorted criterion names, optionally filtered by a glob ``pattern``."""
        return self._names("criterion", pattern)

    def granularities(self, pattern: str | None = None) -> list[str]:
        """Sorted granularity names, optionally filtered by a glob ``pattern``."""
        return self._names("granularity", pattern)

    def schedules(self, pattern: str | None = None) -> list[str]:
        """Sorted schedule names (``cubic``, ``linear``, ``iterative``, ...), optionally filtered by ``pattern``."""
        return self._names("schedule", pattern)

    def criterion(self, name: str, /, **options: Any) -> Criterion:
        """A criterion configured with ``options`` (for plugins that combine criteria)."""
        return cast(Criterion, self._build("criterion", name, options))

    def granularity(self, name: str, /, **options: Any) -> Granularity:
        """A granularity configured with ``options`` (e.g. to read what it declares: its ``partition``)."""
        return cast(Granularity, self._build("granularity", name, options))

    def schedule(self, name: str, /, **options: Any) -> Schedule:
        """A pruning schedule configured with ``options``, validated by its config model.

        Raises:
            UnknownScheduleError: no schedule has that name (the message lists the closest ones).
            ConfigError: an option is unknown, missing, of the wrong type or out of range.
        """
        return cast(Schedule, self._build("schedule", name, options))

    def allocations(self, pattern: str | None = None) -> list[str]:
        """Sorted allocation names (``uniform``, ``owl``, ...), optionally filtered by ``pattern``."""
        return self._names("allocation", pattern)

    def reconstructions(self, pattern: str | None = None) -> list[str]:
        """Sorted reconstruction names (``sparsegpt``, ...), optionally filtered by ``pattern``."""
        return self._names("reconstruction", pattern)

    def allocation(self, name: str, /, **options: Any) -> Allocation:
        """An allocation across layers (``prune(..., allocation=...)``) configured with ``options``.

        Raises:
            UnknownStrategyError: no allocation has that name.
            ConfigError: an option is unknown, missing, of the wrong type or out of range.
        """
        return cast(Allocation, self._build("allocation", name, options))

    def reconstruction(self, name: str, /, **options: Any) -> Reconstruction:
        """A weight reconstruction (``prune(..., reconstruct=...)``) configured with ``options``.

        Raises:
            UnknownStrategyError: no reconstruction has that name.
            ConfigError: an option is unknown, missing, of the wrong type or out of range.
        """
        return cast(Reconstruction, self._build("reconstruction", name, options))

    def components(
        self,
        kind: Literal["criterion", "granularity", "schedule", "allocation", "reconstruction"],
        pattern: str | None = None,
    ) -> list[ComponentInfo]:
        """The registered components of one kind (not strategies), sorted, optionally filtered by ``pattern``."""
        self._ensure_loaded()
        table = self._entries[kind]
        return [
            ComponentInfo(n, kind, table[n].cls.summary, table[n].provider, table[n].cls)
            for n in _filtered(table, pattern)
        ]

    def provider(self, kind: Kind, name: str) -> Provider:
        """Who registered the criterion, granularity, strategy or schedule ``name``."""
        self._ensure_loaded()
        if kind == "strategy":
            return self.info(name).provider
        entry = self._entries[kind].get(name)
        if entry is None:
            raise _UNKNOWN[kind](self._unknown(kind, name, self._names(kind)))
        return entry.provider

    @property
    def hooks(self) -> Hooks:
        """The typed hook caller (loads plugins if needed)."""
        self._ensure_loaded()
        assert self._hooks is not None
        return self._hooks

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._strategies

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._strategies)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        if not self._ready:
            return "<prunus.Registry (plugins not loaded yet)>"
        rows = [
            f"  {i.name:<28} {i.granularity:<13} {i.provider}" for i in self._strategies.values()
        ]
        return f"<prunus.Registry with {len(rows)} strategies>\n" + "\n".join(sorted(rows))

    def _names(self, kind: Kind, pattern: str | None = None) -> list[str]:
        self._ensure_loaded()
        return _filtered(self._entries[kind], pattern)

    def _build(self, kind: Kind, name: str, options: dict[str, Any]) -> Component:
        self._ensure_loaded()
        entry = self._entries[kind].get(name) if isinstance(name, str) else None
        if entry is None:
            raise _UNKNOWN[kind](self._unknown(kind, name, self._names(kind)))
        return entry.cls(validate_config(entry.cls.Config, f"{kind} {name}", options))

    def describe_plugin(self, name: str) -> str:
        """A plugin by its registered name with the distribution that installed it, for messages:
        ``"taylor (prunus-taylor 1.0)"``."""
        return str(self._plugins.get(name, Provider(name)))

    def _describe_criterion(self, name: str) -> str:
        entry = self._entries["criterion"].get(name)
        where = f" from {entry.provider}" if entry is not None else ""
        return f"criterion {name!r}{where}"

    def blame(self, strategy: Strategy) -> str:
        """Who answers for ``strategy``'s masks, for error messages: the strategy and, for a composed one, the
        granularity that made its masks, each with its plugin and distribution."""
        name = strategy.name
        if not isinstance(name, str) or name not in self._strategies:
            return f"strategy {brief(name)}"
        info = self._strategies[name]
        if info.criterion is not None:
            entry = self._entries["granularity"].get(strategy.granularity)
            if entry is not None:
                return f"strategy {name!r} (granularity {strategy.granularity!r} from {entry.provider})"
        return f"strategy {name!r} from {info.provider}"

    def __reduce__(self) -> Any:
        # What is built from the registry (a GradualPruner, say) pickles with a reference to it: the global one
        # comes back as the global one of the unpickling process. A private registry holds plugin code and
        # hook callers that pickle cannot carry.
        if self is registry:
            return (_global_registry, ())
        raise ConfigTypeError(
            "a private prunus.Registry cannot be pickled (it holds plugins and hook callers); pickle what was "
            "built from the global prunus.registry, or rebuild it after loading"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Registry:
        return self  # a service shared by everything built from it, not a value to copy

    # -- registration -------------------------------------------------------------------------------------

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        """Register an in-process plugin (a module or object with hook implementations) and run its hooks.

        Useful in tests and notebooks; installed plugins are found through entry points instead.
        Returns the plugin's name. If the plugin's registration fails, nothing of it stays registered.
        """
        self._ensure_loaded()
        assert self._pm is not None
        with self._lock:
            try:
                # pluggy raises ValueError for a name or object already registered, PluginValidationError for
                # a hook implementation whose arguments the spec does not have.
                registered = self._pm.register(plugin, name=name)
            except (ValueError, pluggy.PluginValidationError) as error:
                raise RegistrationError(
                    f"plugin {name or plugin!r} cannot be registered: {error}"
                ) from None
            if registered is None:
                raise RegistrationError(
                    f"plugin {name or plugin!r} is blocked (named in PRUNUS_DISABLED_PLUGINS?)"
                )
            self._plugins[registered] = Provider(registered)
            try:
                self._pm.check_pending()
                self._run_registration(registered, Provider(registered))
            except pluggy.PluginValidationError as error:
                self._forget(registered)
                raise RegistrationError(
                    f"plugin {registered!r} cannot be registered: {error}"
                ) from None
            except BaseException:
                self._forget(registered)
                raise
            return registered

    def unregister_plugin(self, name: str) -> None:
        """Remove an in-process plugin and everything it registered."""
        self._ensure_loaded()
        with self._lock:
            self._forget(name)

    def register(self, cls: type[Component], *, replace: bool = False) -> None:
        """Register a component class in-process (provider ``<user>``), of whatever kind it is."""
        self._ensure_loaded()
        kind = cls.kind if isinstance(cls, type) and issubclass(cls, Component) else "strategy"
        self._register(kind, cls, provider=Provider(USER), replace=replace)

    def unregister(self, name: str) -> None:
        """Remove the component ``name`` of every kind (and the strategies composed from it)."""
        self._ensure_loaded()
        with self._lock:
            found = False
            for table in self._entries.values():
                if name in table:
                    del table[name]
                    found = True
            if not found:
                raise UnknownStrategyError(self._unknown("entry", name, self.names()))
            self._rebuild_strategies()

    def _register(self, kind: Kind, cls: Any, *, provider: Provider, replace: bool) -> None:
        """Check ``cls`` and add it; on any error the registry is left as it was."""
        expected = _BASES[kind]
        if not (isinstance(cls, type) and issubclass(cls, expected)):
            raise RegistrationError(
                f"{provider} registered {cls!r:.80} as a {kind}; it must be a subclass of "
                f"prunus.{expected.__name__}"
            )
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            raise RegistrationError(
                f"{provider} registered {cls.__name__}, which does not implement {missing}"
            )
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
            raise RegistrationError(
                f"{provider} registered {cls.__name__} with name {name!r:.80}; "
                "a name must be a snake_case identifier"
            )
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, StrategyConfig)):
            raise RegistrationError(
                f"{cls.__name__}.Config must subclass prunus.StrategyConfig, not {config!r:.80}"
            )
        with self._lock:
            table = self._entries[kind]
            previous = table.get(name)
            if previous is not None and not replace:
                raise RegistrationError(
                    f"{kind} {name!r} is already registered by {previous.provider}; "
                    f"{provider} cannot register it too (pass replace=True to take it over)"
                )
            table[name] = _Entry(cls, provider)
            try:
                self._rebuild_strategies()
            except RegistrationError:
                if previous is None:
                    del table[name]
                else:
                    table[name] = previous
                self._rebuild_strategies()
                raise

    def _rebuild_strategies(self) -> None:
        """The strategy table: every registered strategy class, and every criterion at every granularity."""
        strategies = {
            name: self._explicit_info(cast(type[Strategy], entry.cls), entry.provider)
            for name, entry in self._entries["strategy"].items()
        }
        for cname, crit in self._entries["criterion"].items():
            for gname, gran in self._entries["granularity"].items():
                info = self._composed_info(cname, crit, gname, gran)
                held = strategies.get(info.name)
                if held is not None:
                    raise RegistrationError(
                        f"strategy {info.name!r} (criterion {cname!r} from {crit.provider} at granularity "
                        f"{gname!r} from {gran.provider}) clashes with the strategy registered by "
                        f"{held.provider}; rename one of them"
                    )
                strategies[info.name] = info
        self._strategies = strategies

    def _explicit_info(self, cls: type[Strategy], provider: Provider) -> StrategyInfo:
        def build(config: StrategyConfig) -> Strategy:
            return cls.create(config, self)

        return StrategyInfo(
            name=cls.name,
            summary=cls.summary,
            granularity=cls.granularity,
            config=cls.Config,
            provider=provider,
            build=build,
            deterministic=cls.deterministic,
            statistics=tuple(cls.statistics),
        )

    def _composed_info(self, cname: str, crit: _Entry, gname: str, gran: _Entry) -> StrategyInfo:
        ccls, gcls = crit.cls, gran.cls
        assert issubclass(ccls, Criterion) and issubclass(gcls, Granularity)
        name = f"{cname}_{gname}"
        clash = set(ccls.Config.model_fields) & set(gcls.Config.model_fields)
        if clash:
            raise RegistrationError(
                f"criterion {cname!r} ({crit.provider}) and granularity {gname!r} ({gran.provider}) "
                f"both define the options {sorted(clash)}; option names must differ"
            )
        config = _merged_config(name, (gcls.Config, ccls.Config))

        def build(cfg: StrategyConfig) -> Strategy:
            values = dict(cfg)
            # Validated again by each component's own Config: the merged model above carries the fields'
            # types and constraints but not the components' @field_validator / @model_validator checks.
            criterion = ccls(
                validate_config(ccls.Config, name, {k: values[k] for k in ccls.Config.model_fields})
            )
            granularity = gcls(
                validate_config(gcls.Config, name, {k: values[k] for k in gcls.Config.model_fields})
            )
            return ComposedStrategy(
                cfg,
                criterion,
                granularity,
                self.hooks.score,
                name,
                self.hooks.scores_directly,
                rebuild=_rebuild_strategy,
            )

        return StrategyInfo(
            name=name,
            summary=f"{ccls.summary}; {gcls.summary}",
            granularity=gname,
            config=config,
            # Credited to the criterion's provider, unless only the granularity is not built in.
            provider=gran.provider
            if _is_builtin(crit.provider) and not _is_builtin(gran.provider)
            else crit.provider,
            build=build,
            criterion=cname,
            deterministic=ccls.deterministic,
            statistics=tuple(ccls.statistics),
        )

    # -- loading ------------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._ready:
            return
        with self._lock:
            # The loading thread itself gets here again (registration builds strategies through the hooks);
            # any other thread waits on the lock until the load is complete.
            if not self._ready and not self._loading:
                self._loading = True
                try:
                    self._load()
                    self._ready = True
                finally:
                    self._loading = False

    def _load(self) -> None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        disabled = {
            name.strip()
            for name in os.environ.get("PRUNUS_DISABLED_PLUGINS", "").split(",")
            if name.strip()
        }
        # Distributions match however their name is spelt (PEP 503: prunus_taylor == prunus-taylor).
        normalized = {_normalized(name) for name in disabled}
        for name in disabled:
            pm.set_blocked(name)
        loaded: list[tuple[str, Provider]] = []

        if self._autoload:
            version = _version("prunus")
            # The built-in plugins are a sibling package and the tools' hooks live in subpackages: both are
            # loaded by name, so the contracts never import them.
            builtin = importlib.import_module(f"{__package__}.plugins")
            modules = [
                (f"prunus.{name}", f"{builtin.__name__}.{name}") for name in builtin.BUILTIN_PLUGINS
            ]
            for plugin_name, module_name in [*modules, *BUILTIN_TOOL_PLUGINS]:
                if plugin_name in disabled:
                    continue
                pm.register(importlib.import_module(module_name), name=plugin_name)
                loaded.append((plugin_name, Provider(plugin_name, "prunus", version)))

        if self._autoload and not _truthy(os.environ.get("PRUNUS_DISABLE_PLUGIN_AUTOLOAD")):
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else None
                if ep.name in disabled or (dist is not None and _normalized(dist) in normalized):
                    continue
                if pm.has_plugin(ep.name):
                    continue  # the same distribution seen twice on sys.path
                provider = Provider(ep.name, dist, ep.dist.version if ep.dist else None)
                try:
                    plugin = ep.load()
                    pm.register(plugin, name=ep.name)
                    pm.check_pending()
                except Exception as error:
                    if pm.has_plugin(ep.name):
                        pm.unregister(name=ep.name)
                    self._fail(provider, f"failed to load: {type(error).__name__}: {error}")
                    continue
                loaded.append((ep.name, provider))

        self._pm = pm
        self._plugins.update(loaded)
        self._hooks = Hooks(pm, plugin=self.describe_plugin, criterion=self._describe_criterion)
        for plugin_name, provider in loaded:
            try:
                self._run_registration(plugin_name, provider)
            except Exception as error:
                if _is_builtin(provider):
                    raise  # a broken built-in is a bug in prunus itself, not something to skip
                self._forget(plugin_name)
                self._fail(provider, f"failed to register: {type(error).__name__}: {error}")

    _REGISTRATION_HOOKS: tuple[tuple[str, Kind], ...] = (
        ("prunus_register_criteria", "criterion"),
        ("prunus_register_granularities", "granularity"),
        ("prunus_register_strategies", "strategy"),
        ("prunus_register_schedules", "schedule"),
        ("prunus_register_allocations", "allocation"),
        ("prunus_register_reconstructions", "reconstruction"),
    )

    def _run_registration(self, plugin_name: str, provider: Provider) -> None:
        """Call one plugin's registration hooks with a registrar that records it as the provider."""
        assert self._pm is not None
        plugin = self._pm.get_plugin(plugin_name)
        others = [p for p in self._pm.get_plugins() if p is not plugin]
        for hook, kind in self._REGISTRATION_HOOKS:
            caller = self._pm.subset_hook_caller(hook, remove_plugins=others)
            caller(register=Registrar(self, kind, provider))

    def _forget(self, plugin_name: str) -> None:
        """Drop everything ``plugin_name`` registered, and the plugin itself."""
        assert self._pm is not None
        if self._pm.has_plugin(plugin_name):
            self._pm.unregister(name=plugin_name)
        self._plugins.pop(plugin_name, None)
        for table in self._entries.values():
            for key in [k for k, v in table.items() if v.provider.plugin == plugin_name]:
                del table[key]
        self._rebuild_strategies()

    def _fail(self, provider: Provider, message: str) -> None:
        self.plugin_failures.append(PluginFailure(provider.plugin, provider.distribution, message))
        warnings.warn(
            f"prunus plugin {provider} {message}. The other plugins keep working; to skip this one, "
            f"set PRUNUS_DISABLED_PLUGINS={provider.plugin}",
            PluginLoadWarning,
            stacklevel=4,
        )

    @staticmethod
    def _unknown(kind: str, name: object, available: list[str]) -> str:
        close = difflib.get_close_matches(str(name), available, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"no {kind} named {name!r:.80}.{hint} Available: {', '.join(available) or '(none)'}. "
            f"Strategies come from prunus's built-in plugins and from installed distributions that "
            f"declare an entry point in the {ENTRY_POINT_GROUP!r} group (see `prunus list`)."
        )


def _filtered(table: dict[str, Any], pattern: str | None) -> list[str]:
    if pattern is not None and not isinstance(pattern, str):
        raise ConfigTypeError(
            f"pattern must be a glob pattern such as '*_structured', not {type(pattern).__name__} "
            f"({brief(pattern)})"
        )
    names = sorted(table)
    return names if pattern is None else fnmatch.filter(names, pattern)


class _MergedConfig(StrategyConfig):
    """Base of the config classes the registry makes for composed strategies (``l1_unstructured_config``...).

    Such a class is made at run time, so pickle cannot find it by name: a config pickles as its strategy's name
    and options and comes back through the registry (``prunus.registry.info(name).config``).
    """

    strategy: ClassVar[str] = ""

    def __reduce__(self) -> Any:
        return (_rebuild_config, (self.strategy, dict(self)))


def _rebuild_config(strategy: str, options: dict[str, Any]) -> StrategyConfig:
    """A pickled composed strategy's config, rebuilt from the global registry."""
    return validate_config(registry.info(strategy).config, strategy, options)


def _rebuild_strategy(name: str, options: dict[str, Any]) -> Strategy:
    """A pickled composed strategy, rebuilt from the global registry."""
    return registry.get(name, **options)


def _global_registry() -> Registry:
    return registry


def _merged_config(strategy: str, parts: tuple[type[StrategyConfig], ...]) -> type[StrategyConfig]:
    """One config model with the fields of every part, that also runs each part's own validators."""
    fields: dict[str, Any] = {}
    for part in parts:
        for fname, finfo in part.model_fields.items():
            fields[fname] = (finfo.annotation, finfo)

    def check_parts(self: StrategyConfig) -> StrategyConfig:
        values = dict(self)
        for part in parts:
            try:
                part.model_validate({k: values[k] for k in part.model_fields})
            except ValidationError as error:
                raise ValueError(
                    "; ".join(
                        f"{'.'.join(map(str, e['loc'])) or part.__name__}: {e['msg']}"
                        for e in error.errors()
                    )
                ) from None
        return self

    merged: type[_MergedConfig] = create_model(
        f"{strategy}_config",
        __base__=_MergedConfig,
        __module__=__name__,
        __validators__={"check_parts": cast(Any, model_validator(mode="after")(check_parts))},
        **fields,
    )
    merged.strategy = strategy
    return merged


def _is_builtin(provider: Provider) -> bool:
    return provider.distribution == "prunus" and provider.plugin.startswith("prunus.")


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


registry = Registry()
"""The process-wide registry: ``prunus.registry.get("l1_structured", amount=0.3, dim=0)``."""
