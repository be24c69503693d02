"""The one error hierarchy of prunus.

Every error prunus raises for a user's or a plugin's mistake is a :class:`PrunusError`. Each also derives
from the builtin exception a Python programmer would expect (``ValueError`` for a bad value, ``LookupError``
for an unknown name, ``TypeError`` for a wrong type), so ``except ValueError`` keeps working. Messages name
the offending value, say what would be valid, and, where there is one, how to fix it.
"""

from __future__ import annotations

import reprlib

__all__ = [
    "AmountError",
    "CalibrationError",
    "CheckpointError",
    "ConfigError",
    "ConfigTypeError",
    "CorruptShardError",
    "ExportError",
    "FileError",
    "FileFormatError",
    "MaskError",
    "MissingDependencyError",
    "MissingShardError",
    "NotPrunedError",
    "PluginError",
    "PluginLoadWarning",
    "PrunusError",
    "PrunusWarning",
    "QualityError",
    "QualityWarning",
    "RegistrationError",
    "RollbackError",
    "ShrinkError",
    "StateError",
    "TargetError",
    "TargetTypeError",
    "TargetWarning",
    "UnknownCriterionError",
    "UnknownScheduleError",
    "UnknownStrategyError",
    "WeightError",
    "brief",
]


class PrunusError(Exception):
    """Base class of every error prunus raises."""


class ConfigError(PrunusError, ValueError):
    """A strategy option is missing, misspelled, of the wrong type or out of range."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument or option has the wrong type: a :class:`ConfigError` that is also a ``TypeError``, as Python
    and torch raise for the same mistake, so code that catches ``TypeError`` keeps working."""


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


class TargetTypeError(TargetError, TypeError):
    """The model, or what chooses its parameters (patterns, ``filter_fn``), has the wrong type: a
    :class:`TargetError` that is also a ``TypeError``."""


class WeightError(PrunusError, ValueError):
    """The model's own weights cannot be ranked as they are: they hold NaN or infinite values.

    Distinct from a :class:`PluginError`: the criterion is fine, the model is not (a diverged training run, a
    bad checkpoint). The message names the parameter and how many values are not finite.
    """


class FileError(PrunusError, OSError):
    """A file could not be read or written (missing, a read-only directory, a full disk...).

    The message names the file. A write that fails leaves the previous file, if there was one, exactly as it
    was, and no temporary file behind (see :mod:`prunus.files`).
    """


class MaskError(PrunusError, ValueError):
    """A mask has the wrong shape, dtype or device for the parameter it is meant for."""


class NotPrunedError(PrunusError, ValueError):
    """``remove`` or ``restore`` was asked of a model (or parameter) that carries no prunus mask."""


class ShrinkError(PrunusError, RuntimeError):
    """Channels could not be removed (or the result would not compute what the masked model computed)."""


class CheckpointError(PrunusError, OSError):
    """A checkpoint on disk cannot be pruned as it is, or its destination cannot be written (an ``OSError``); the
    message names the file. A destination is written in full or not at all."""


class MissingShardError(CheckpointError, FileNotFoundError):
    """A shard that a checkpoint's index lists (or its only file) is not there."""


class CorruptShardError(CheckpointError, ValueError):
    """A shard of a checkpoint is not a readable safetensors file: truncated, a bad header, a tensor that does
    not fit, or tensors that contradict the index."""


class StateError(PrunusError, ValueError):
    """A saved pruning state or compressed file does not fit: not a prunus file, an unknown format version, or
    names, shapes or dtypes that differ from the model it is loaded into."""


class FileFormatError(StateError, ConfigError):
    """A file prunus reads is not what it should be: corrupt, truncated, of another format, out of range or
    inconsistent (a compressed checkpoint, a pruning state, a config). The message names the file and what is
    wrong with it. Both a :class:`StateError` and a :class:`ConfigError` (so a ``ValueError``)."""


class ExportError(PrunusError, RuntimeError):
    """A model cannot be exported (ONNX, ``torch.export``) as it is; the message says what to do instead."""


class QualityError(PrunusError, ValueError):
    """A request would ruin the model (e.g. half of a language model's neurons removed without data); the message
    says what to do instead. Nothing was changed."""


class MissingDependencyError(PrunusError, ImportError):
    """An optional dependency that a feature needs is not installed."""


class PrunusWarning(UserWarning):
    """Base class of the warnings prunus emits."""


class QualityWarning(PrunusWarning):
    """A pruning plan costs quality the user should know about before relying on the model (e.g. no data to
    recover with), or cannot deliver the speed it was asked for."""


class PluginLoadWarning(PrunusWarning):
    """An installed plugin could not be loaded; the others keep working."""


class TargetWarning(PrunusWarning):
    """The parameters chosen for pruning include some that are rarely meant (normalization layers)."""


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages that echo what a user gave.

    A message names the offending value, but a value can be huge or deep (a tensor, a structure expanded from a
    YAML alias bomb): containers are shown through :mod:`reprlib`, whose work is bounded whatever their size, and
    the result is cut to ``limit`` characters.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr raises still gets a message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: max(limit - 3, 1)]}..."


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 8
_REPR.maxstring = _REPR.maxother = 120
