"""The one error hierarchy of prunus.

Every error prunus raises for a user's or a plugin's mistake is a :class:`PrunusError`. Each also derives
from the builtin exception a Python programmer would expect (``ValueError`` for a bad value, ``LookupError``
for an unknown name, ``TypeError`` for a wrong type), so ``except ValueError`` keeps working. Messages name
the offending value, say what would be valid, and, where there is one, how to fix it.
"""

from __future__ import annotations

__all__ = [
    "AmountError",
    "CalibrationError",
    "ConfigError",
    "ExportError",
    "MaskError",
    "MissingDependencyError",
    "NotPrunedError",
    "PluginError",
    "PluginLoadWarning",
    "PrunusError",
    "PrunusWarning",
    "RegistrationError",
    "RollbackError",
    "ShrinkError",
    "StateError",
    "TargetError",
    "TargetWarning",
    "UnknownCriterionError",
    "UnknownScheduleError",
    "UnknownStrategyError",
]


class PrunusError(Exception):
    """Base class of every error prunus raises."""


class ConfigError(PrunusError, ValueError):
    """A strategy option is missing, misspelled, of the wrong type or out of range."""


class AmountError(ConfigError):
    """An ``amount`` cannot be applied to the tensor it was given (e.g. a count above its size)."""


class UnknownStrategyError(PrunusError, LookupError):
    """No strategy is registered under the asked name."""


class UnknownCriterionError(PrunusError, LookupError):
    """No importance criterion is registered under the asked name."""


class UnknownScheduleError(PrunusError, LookupError):
    """No schedule is registered under the asked name."""


class RegistrationError(PrunusError, ValueError):
    """A plugin tried to register something invalid, or a name that another plugin already holds."""


class PluginError(PrunusError, RuntimeError):
    """A plugin failed: it raised, or returned scores or masks that break the contract."""


class RollbackError(PrunusError, RuntimeError):
    """A call failed, and undoing what it had already changed failed too: the model may be partly changed."""


class TargetError(PrunusError, ValueError):
    """The parameters to prune could not be chosen (no match for a pattern, nothing prunable)."""


class CalibrationError(PrunusError, ValueError):
    """Calibration data is missing, cannot be run through the model, or gives no statistics for a parameter."""


class MaskError(PrunusError, ValueError):
    """A mask has the wrong shape, dtype or device for the parameter it is meant for."""


class NotPrunedError(PrunusError, ValueError):
    """``remove`` or ``restore`` was asked of a model (or parameter) that carries no prunus mask."""


class ShrinkError(PrunusError, RuntimeError):
    """Channels could not be removed (or the result would not compute what the masked model computed)."""


class StateError(PrunusError, ValueError):
    """A saved pruning state or compressed file does not fit: not a prunus file, an unknown format version, or
    names, shapes or dtypes that differ from the model it is loaded into."""


class ExportError(PrunusError, RuntimeError):
    """A model cannot be exported (ONNX, ``torch.export``) as it is; the message says what to do instead."""


class MissingDependencyError(PrunusError, ImportError):
    """An optional dependency that a feature needs is not installed."""


class PrunusWarning(UserWarning):
    """Base class of the warnings prunus emits."""


class PluginLoadWarning(PrunusWarning):
    """An installed plugin could not be loaded; the others keep working."""


class TargetWarning(PrunusWarning):
    """The parameters chosen for pruning include some that are rarely meant (normalization layers)."""
