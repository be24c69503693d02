"""prunus: a plugin-based pruning strategy registry for PyTorch.

>>> import prunus
>>> report = prunus.prune(model, "l1_unstructured", amount=0.5)   # doctest: +SKIP
>>> prunus.remove(model)                                           # doctest: +SKIP

Importing prunus loads no plugin: they load on the first use of :data:`registry`.
"""

from __future__ import annotations

from .config import Amount, StrategyConfig
from .engine import DEFAULT_LAYERS, is_pruned, masks, prune, remove, restore, select_targets
from .errors import (
    AmountError,
    ConfigError,
    MaskError,
    NotPrunedError,
    PluginError,
    PluginLoadWarning,
    PrunusError,
    PrunusWarning,
    RegistrationError,
    TargetError,
    UnknownCriterionError,
    UnknownStrategyError,
)
from .hookspecs import hookimpl, hookspec
from .ranking import keep_mask
from .registry import Registrar, Registry, StrategyInfo, registry
from .report import ParameterReport, PruneReport
from .selection import Selection
from .strategy import (
    ComposedStrategy,
    Criterion,
    Granularity,
    NoOptions,
    PruneContext,
    Strategy,
    Target,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYERS",
    "Amount",
    "AmountError",
    "ComposedStrategy",
    "ConfigError",
    "Criterion",
    "Granularity",
    "MaskError",
    "NoOptions",
    "NotPrunedError",
    "ParameterReport",
    "PluginError",
    "PluginLoadWarning",
    "PruneContext",
    "PruneReport",
    "PrunusError",
    "PrunusWarning",
    "Registrar",
    "RegistrationError",
    "Registry",
    "Selection",
    "Strategy",
    "StrategyConfig",
    "StrategyInfo",
    "Target",
    "TargetError",
    "UnknownCriterionError",
    "UnknownStrategyError",
    "hookimpl",
    "hookspec",
    "is_pruned",
    "keep_mask",
    "masks",
    "prune",
    "registry",
    "remove",
    "restore",
    "select_targets",
]
