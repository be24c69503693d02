"""Configs of the pruning workflow, as pydantic models that load from YAML or JSON and reject unknown keys.

A prune config (``prunus prune --config prune.yaml``)::

    strategy: l1_unstructured
    options: {}                      # the strategy's options other than the amount
    amount: 0.5                      # one-shot; or per layer:
    amounts: {"fc1.weight": 0.5, "conv*.weight": 0.3}
    include: ["*.weight"]
    exclude: ["head.weight"]
    schedule:                        # gradual pruning with fine-tuning instead of one shot
      name: cubic
      options: {final_sparsity: 0.9, start: 0, end: 600, every: 50}
    fine_tune: {epochs: 5, lr: 0.001, batch_size: 64, seed: 0}
    quantize: false                  # also report the pruned + int8 model

A sensitivity config (``prunus sensitivity --config sens.yaml``)::

    strategy: l1_unstructured
    amounts: [0.25, 0.5, 0.75, 0.9]
    target_sparsity: 0.8             # or max_loss: 0.01
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.functional_validators import BeforeValidator

from .. import files
from ..arguments import check_path
from ..config import config_error
from ..errors import ConfigError, ConfigTypeError, FileFormatError, brief

__all__ = [
    "FineTuneSection",
    "PruneConfig",
    "ScheduleSection",
    "SensitivityConfig",
    "WorkflowConfig",
    "load_config",
    "parse_config",
    "read_mapping",
    "section",
]

Number = StrictInt | StrictFloat


class WorkflowConfig(BaseModel):
    """Base of the workflow configs: frozen, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_options(value: Any) -> Any:
    # `options:` with nothing after it is YAML null: no options, as an absent key.
    return {} if value is None else value


Options = Annotated[dict[str, Any], BeforeValidator(_no_options)]
"""Options of a strategy or schedule; a null (an empty YAML key) means none."""


class ScheduleSection(WorkflowConfig):
    """A registered schedule and its options (``prunus.registry.schedules()``)."""

    name: StrictStr = Field(default="cubic", description="cubic, linear, iterative, one_shot, ...")
    options: Options = Field(
        default_factory=dict, description="e.g. {final_sparsity: 0.9, end: 600, every: 50}"
    )


class FineTuneSection(WorkflowConfig):
    """The built-in classification fine-tuning loop (:func:`prunus.fine_tune`)."""

    epochs: StrictInt = Field(default=1, ge=0)
    lr: Number = Field(default=1e-3, gt=0, allow_inf_nan=False)
    batch_size: StrictInt = Field(default=64, ge=1)
    seed: StrictInt = Field(default=0, ge=0)


class PruneConfig(WorkflowConfig):
    """What ``prunus prune`` does: one-shot (``amount`` / ``amounts``) or on a ``schedule``."""

    strategy: StrictStr = Field(description="a registered strategy (prunus list)")
    options: Options = Field(
        default_factory=dict, description="the strategy's options other than the amount"
    )
    amount: Number | None = Field(default=None, description="one amount for every layer")
    amounts: dict[str, Number] | None = Field(
        default=None, description="per-layer amounts: glob pattern to amount"
    )
    include: list[StrictStr] | None = None
    exclude: list[StrictStr] | None = None
    schedule: ScheduleSection | None = None
    fine_tune: FineTuneSection | None = None
    quantize: StrictBool = Field(default=False, description="also report the pruned + int8 model")

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        if "amount" in self.options:
            raise ValueError("give the amount as 'amount', not inside 'options'")
        if self.schedule is not None:
            if self.amount is not None or self.amounts is not None:
                raise ValueError(
                    "a schedule sets the amounts itself; drop 'amount'/'amounts' or the schedule"
                )
            if self.fine_tune is None:
                raise ValueError("a schedule needs 'fine_tune' (the steps it counts are its steps)")
        return self

    def strategy_options(self) -> dict[str, Any]:
        """The keyword options of ``prunus.prune`` for a one-shot prune."""
        out = dict(self.options)
        if self.amount is not None:
            out["amount"] = self.amount
        return out


class SensitivityConfig(WorkflowConfig):
    """What ``prunus sensitivity`` does."""

    strategy: StrictStr = "l1_unstructured"
    options: Options = Field(default_factory=dict)
    amounts: list[StrictFloat] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], min_length=1
    )
    include: list[StrictStr] | None = None
    exclude: list[StrictStr] | None = None
    target_sparsity: StrictFloat | None = Field(default=None, ge=0, le=1)
    max_loss: Number | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_goal(self) -> SensitivityConfig:
        if self.target_sparsity is not None and self.max_loss is not None:
            raise ValueError("give at most one of target_sparsity and max_loss")
        return self


C = TypeVar("C", bound=WorkflowConfig)


def parse_config(kind: type[C], data: Any, *, source: str = "config") -> C:
    """Validate ``data`` (a dict) as ``kind``, raising :class:`ConfigError` that names each bad key."""
    if not isinstance(data, dict):
        raise ConfigTypeError(
            f"{source} must hold a mapping of keys to values, not {type(data).__name__}"
        )
    try:
        return kind.model_validate(data)
    except ValidationError as error:
        raise ConfigError(
            f"{config_error(source, error)}\nvalid keys: {', '.join(kind.model_fields)}"
        ) from None


CONFIG_LIMIT = 1 << 20
"""Bytes a config file may have: a real one is a few hundred."""

VALUE_LIMIT = 100_000
"""Values a config may hold once YAML aliases are expanded (a "billion laughs" file holds billions)."""


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) file into a dict, checked.

    Raises:
        FileError: the file cannot be read.
        FileFormatError: it is larger than :data:`CONFIG_LIMIT`, not UTF-8, not valid YAML or JSON, not a
            mapping at the top, or holds more than :data:`VALUE_LIMIT` values once YAML aliases are expanded
            (an alias bomb). A ``ConfigError`` too.
    """
    file = Path(check_path("config", path))
    suffix = file.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"config {file} must end in .yaml, .yml or .json")
    text = files.read_text(file, what="config", limit=CONFIG_LIMIT)
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # yaml.YAMLError, json.JSONDecodeError, RecursionError
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FileFormatError(
            f"config {file} is not valid {suffix[1:].upper()}: {first[:200]}"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FileFormatError(f"config {file} must hold a mapping, not {type(data).__name__}")
    _count_values(data, file)
    return data


def _count_values(data: Any, file: Path) -> None:
    """Refuse a config that holds more than :data:`VALUE_LIMIT` values once aliases are expanded.

    YAML aliases share objects: a few hundred bytes can describe billions of values, or a structure that holds
    itself. Walking it with a budget stops at the limit whatever the file describes.
    """
    budget = VALUE_LIMIT
    stack = [data]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            raise FileFormatError(
                f"config {file} holds more than {VALUE_LIMIT:,} values once its YAML aliases are expanded "
                "(an alias bomb, or a structure that contains itself); write the values out"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def section(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    """``data[key]`` as a dict (``{}`` when absent or null), to merge command-line options into.

    Raises:
        ConfigError: it is there but not a mapping (a list, a number...).
    """
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{source}: {key!r} must be a mapping of keys to values, not {type(value).__name__} "
            f"({brief(value)})"
        )
    return dict(value)


def load_config(path: str | Path, kind: type[C]) -> C:
    """Load a YAML or JSON file as the config ``kind`` (e.g. :class:`PruneConfig`).

    Raises:
        FileError, FileFormatError: the file cannot be read or is not a config (see :func:`read_mapping`).
        ConfigError: a key is unknown, missing or invalid (the message names it).
    """
    if not (isinstance(kind, type) and issubclass(kind, WorkflowConfig)):
        raise ConfigTypeError(
            f"kind must be a workflow config class such as prunus.PruneConfig, not {brief(kind)}"
        )
    return parse_config(kind, read_mapping(path), source=str(path))
