"""Pydantic building blocks for strategy options.

Every strategy, criterion and granularity describes its options with a :class:`StrategyConfig` subclass:
frozen, ``extra="forbid"`` (a misspelled option is an error, not a silent default), strict about types (``True``
is not an amount) and round-trippable through JSON. Configs never hold tensors: masks and data travel through
the :class:`~prunus.strategy.PruneContext` instead.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError

from .errors import AmountError, ConfigError, ConfigTypeError, brief

__all__ = [
    "Amount",
    "NoOptions",
    "StrategyConfig",
    "config_error",
    "count_to_prune",
    "jsonable",
    "validate_config",
]


def _check_amount(value: int | float) -> int | float:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"amount={value!r} is a negative count; a count must be an int >= 0")
        return value
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"amount={value!r} is not a fraction in [0, 1]; give a float in [0, 1] "
            "or an int count of entries"
        )
    return value


def _validate_amount(value: object) -> int | float:
    # One validator for type and range, so a wrong type gets the same "what is valid" as a wrong value.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # A custom error *type*: validate_config reports a wrong type as a ConfigTypeError (a TypeError too).
        raise PydanticCustomError(
            "amount_type",
            "amount={value} is a {kind}; give a float fraction in [0, 1] or an int count >= 0",
            {"value": brief(value), "kind": type(value).__name__},
        )
    return _check_amount(int(value) if isinstance(value, numbers.Integral) else float(value))


Amount = Annotated[
    int | float, PlainValidator(_validate_amount, json_schema_input_type=int | float)
]
"""How much to prune: a float fraction in [0, 1] of the eligible units, or an int count of them.

As in ``torch.nn.utils.prune``, a fraction is turned into a count with Python's ``round`` (half to even), and
an int is a count: ``amount=1`` prunes one unit, ``amount=1.0`` prunes all of them.
"""


class StrategyConfig(BaseModel):
    """Base class of every strategy, criterion and granularity config: frozen, no unknown keys."""

    # ser_json_inf_nan="constants": an option such as ``n=float("inf")`` is written as JSON ``Infinity`` and
    # reads back as inf (pydantic's default writes ``null``, which no number field accepts).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, ser_json_inf_nan="constants"
    )


class NoOptions(StrategyConfig):
    """The config of a criterion, granularity, strategy or schedule that takes no options."""


def config_error(owner: str, error: ValidationError) -> ConfigError:
    """Turn a pydantic ``ValidationError`` into a :class:`ConfigError` that names each bad option.

    Values are quoted cut short (:func:`~prunus.errors.brief`), so a huge value never makes a huge message. When
    every problem is a value of the wrong type, the error is a :class:`ConfigTypeError` (also a ``TypeError``).
    """
    lines = []
    items = error.errors()
    for item in items[:_SHOWN]:
        where = ".".join(str(part) for part in item["loc"])[:_LOC_LIMIT] or "<options>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown option (value {brief(item.get('input'))})")
        elif item["type"] == "missing":
            lines.append(f"  {where}: required option is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")[:_MESSAGE_LIMIT]
            lines.append(f"  {where}={brief(item.get('input'))}: {message}")
    if len(items) > _SHOWN:
        lines.append(f"  ... and {len(items) - _SHOWN} more")
    wrong_types = all(_is_type_error(item["type"]) for item in items)
    kind = ConfigTypeError if wrong_types else ConfigError
    return kind(f"invalid options for {brief(owner, 120)}:\n" + "\n".join(lines))


_SHOWN = 10
_LOC_LIMIT = 120
_MESSAGE_LIMIT = 300


def _is_type_error(kind: str) -> bool:
    """Whether a pydantic error type is a value of the wrong type (``int_type``, ``is_instance_of``...)."""
    return kind.endswith("_type") or kind == "is_instance_of"


def validate_config(
    model: type[StrategyConfig], owner: str, options: dict[str, Any]
) -> StrategyConfig:
    """Build ``model`` from ``options``, raising :class:`ConfigError` that lists the valid options."""
    try:
        return model.model_validate(options)
    except ValidationError as error:
        valid = ", ".join(
            f"{name}{'' if field.is_required() else f'={field.default!r}'}"
            for name, field in model.model_fields.items()
        )
        problem = config_error(owner, error)
        raise type(problem)(f"{problem}\nvalid options: {valid or '(none)'}") from None


def count_to_prune(amount: int | float, size: int, *, what: str = "entries") -> int:
    """The number of units ``amount`` asks to prune out of ``size``, rounded as torch rounds.

    Raises:
        AmountError: ``amount`` is an int count larger than ``size``.
    """
    if isinstance(amount, int):
        if amount > size:
            raise AmountError(
                f"amount={amount} is larger than the {size} {what} that can be pruned; "
                f"give a count <= {size} or a fraction in [0, 1]"
            )
        return amount
    return round(amount * size)


def jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every value JSON cannot hold replaced by ``"<TypeName>"`` (for reports and manifests).

    A report records the options a call was made with; a tensor (``custom_mask``'s masks) or a callable is
    named by its type rather than dropped, so the report still says which options were given.
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError):
            out[key] = f"<{type(value).__name__}>"
        else:
            out[key] = value
    return out
