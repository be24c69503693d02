"""Checks of the plain arguments of public functions, with one wording and one error type for each mistake.

Every public function checks what it is given before it does any work, so a mistake is reported where it was
made, as a prunus error that names the argument, the value (cut short, see :func:`~prunus.errors.brief`) and what
would be valid. A value of the wrong type raises an error that is also a ``TypeError`` (what Python and torch
raise for the same mistake); a value out of range, a ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from .errors import ConfigError, ConfigTypeError, TargetTypeError, brief

__all__ = [
    "check_bool",
    "check_callable",
    "check_int",
    "check_model",
    "check_number",
    "check_options",
    "check_path",
    "optional",
]

T = TypeVar("T")


def check_model(model: object, what: str = "model") -> nn.Module:
    """``model`` if it is a ``torch.nn.Module``.

    Raises:
        TargetTypeError: it is not.
    """
    if not isinstance(model, nn.Module):
        raise TargetTypeError(
            f"{what} must be a torch.nn.Module, not {type(model).__name__} ({brief(model)})"
        )
    return model


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a ``bool`` (``None``, ``0`` or ``"yes"`` are mistakes, not flags).

    Raises:
        ConfigTypeError: it is not.
    """
    if not isinstance(value, bool):
        raise ConfigTypeError(
            f"{name}={brief(value)} is a {type(value).__name__}; give True or False"
        )
    return value


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``.

    Raises:
        ConfigTypeError: it is not an int.
        ConfigError: it is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigTypeError(f"{name}={brief(value)} is a {type(value).__name__}; give an int")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be an int >= {minimum}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """``value`` if it is a finite real number (not a bool) within the bounds given.

    ``minimum`` and ``maximum`` are inclusive, ``above`` exclusive.

    Raises:
        ConfigTypeError: it is not a number.
        ConfigError: it is NaN, infinite or out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigTypeError(f"{name}={brief(value)} is a {type(value).__name__}; give a number")
    number = float(value)
    bounds = [
        f">= {minimum}" if minimum is not None else "",
        f"> {above}" if above is not None else "",
        f"<= {maximum}" if maximum is not None else "",
    ]
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
        or (above is not None and number <= above)
    ):
        wanted = " and ".join(b for b in bounds if b)
        raise ConfigError(
            f"{name}={value!r} must be a finite number{' ' + wanted if wanted else ''}"
        )
    return number


def check_options(name: str, value: object) -> dict[str, Any]:
    """``value`` (a mapping of option names to values, or ``None``) as a dict.

    Raises:
        ConfigTypeError: it is neither.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigTypeError(
            f"{name} must be a dict of options, not {type(value).__name__} ({brief(value)})"
        )
    return dict(value)


def check_callable(name: str, value: T) -> T:
    """``value`` if it can be called.

    Raises:
        ConfigTypeError: it cannot.
    """
    if not callable(value):
        raise ConfigTypeError(
            f"{name} must be callable (a function), not {type(value).__name__} ({brief(value)})"
        )
    return value


def check_path(name: str, value: object) -> str | os.PathLike[str]:
    """``value`` if it is a ``str`` or ``os.PathLike`` naming a file.

    Raises:
        ConfigTypeError: it is not.
        ConfigError: it is empty.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigTypeError(
            f"{name} must be a path (str or pathlib.Path), not {type(value).__name__} ({brief(value)})"
        )
    if not os.fspath(value):
        raise ConfigError(f"{name} is an empty path")
    return value


def optional(check: Callable[..., T], name: str, value: object, **bounds: Any) -> T | None:
    """``None`` if ``value`` is ``None``, else ``check(name, value, **bounds)``."""
    return None if value is None else check(name, value, **bounds)
