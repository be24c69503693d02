"""Built-in strategies that are not a criterion at a granularity.

* ``global_unstructured``: torch's name for one ranking across parameters, with any registered criterion.
* ``magnitude_threshold``: prune every entry whose absolute value is below a threshold.
* ``custom_mask``: apply masks the user gives.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator
from torch import Tensor

from prunus.plugin_api import (
    Amount,
    MaskError,
    PruneContext,
    Registrar,
    Registry,
    Strategy,
    StrategyConfig,
    hookimpl,
)


class GlobalUnstructuredConfig(StrategyConfig):
    """Options of ``global_unstructured``."""

    amount: Amount = Field(
        description="fraction in [0, 1] of all targeted entries still kept, or a count"
    )
    criterion: StrictStr = Field(default="l1", description="any registered criterion (prunus list)")
    criterion_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the criterion, e.g. {'seed': 3} for random"
    )
    min_keep: StrictInt = Field(
        default=1,
        ge=0,
        description="entries every parameter keeps, its best ones, while the amount leaves room (0: none)",
    )


class GlobalUnstructured(Strategy):
    """One ranking of every targeted entry under any criterion (``torch.nn.utils.prune.global_unstructured``)."""

    name = "global_unstructured"
    summary = "one ranking across all parameters, with any criterion (criterion='l1')"
    granularity = "global"
    Config = GlobalUnstructuredConfig

    def __init__(self, config: StrategyConfig, inner: Strategy) -> None:
        super().__init__(config)
        self.inner = inner
        self.deterministic = inner.deterministic
        self.statistics = inner.statistics
        self.reconstruction = inner.reconstruction

    @classmethod
    def create(cls, config: StrategyConfig, registry: Registry) -> Strategy:
        assert isinstance(config, GlobalUnstructuredConfig)
        registry.criterion(
            config.criterion, **config.criterion_options
        )  # names a bad criterion early
        inner = registry.get(
            f"{config.criterion}_global",
            amount=config.amount,
            min_keep=config.min_keep,
            **config.criterion_options,
        )
        return cls(config, inner)

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        return self.inner.compute_masks(context)


class ThresholdConfig(StrategyConfig):
    """Options of ``magnitude_threshold``."""

    threshold: StrictFloat | StrictInt = Field(
        description="entries with |w| below this are pruned; >= 0"
    )

    @field_validator("threshold")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"threshold={value!r} must be a finite number >= 0")
        return value


class MagnitudeThreshold(Strategy):
    """Prune every entry whose absolute value is below ``threshold`` (the count follows from the weights)."""

    name = "magnitude_threshold"
    summary = "every entry with |w| below threshold"
    granularity = "unstructured"
    Config = ThresholdConfig
    separable = True

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        assert isinstance(self.config, ThresholdConfig)
        out = {}
        for target in context.targets:
            keep = target.tensor.abs() >= self.config.threshold
            out[target.name] = keep if target.prior is None else keep & target.prior
        return out


class CustomMaskConfig(StrategyConfig):
    """Options of ``custom_mask``: bool keep-masks by qualified parameter name (the one config with tensors)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    masks: dict[StrictStr, Tensor] = Field(
        description="bool keep-mask for each parameter to prune, e.g. {'fc1.weight': mask}"
    )


class CustomMask(Strategy):
    """Apply user-given bool masks (``torch.nn.utils.prune.custom_from_mask``), checked for shape and dtype."""

    name = "custom_mask"
    summary = "masks given by the user (masks={'fc1.weight': bool tensor})"
    granularity = "custom"
    Config = CustomMaskConfig
    separable = True

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        assert isinstance(self.config, CustomMaskConfig)
        targets = {t.name: t for t in context.targets}
        out = {}
        for name, mask in self.config.masks.items():
            target = targets.get(name)
            if target is None:
                raise MaskError(
                    f"custom_mask has a mask for {name!r}, which is not being pruned; targets: "
                    f"{', '.join(targets)} (choose others with prune(..., include=[{name!r}]))"
                )
            shape = tuple(target.tensor.shape)
            if mask.dtype != torch.bool:
                raise MaskError(
                    f"the mask for {name!r} has dtype {mask.dtype}; masks must be torch.bool "
                    "(True keeps an entry): pass mask.bool()"
                )
            if tuple(mask.shape) != shape:
                raise MaskError(
                    f"the mask for {name!r} has shape {tuple(mask.shape)}, but the parameter has shape {shape}"
                )
            # A copy: the mask becomes the model's buffer, and the caller may reuse its tensor.
            keep = mask.to(target.tensor.device, copy=True)
            out[name] = keep if target.prior is None else keep & target.prior
        return out


@hookimpl
def prunus_register_strategies(register: Registrar) -> None:
    """Register ``global_unstructured``, ``magnitude_threshold`` and ``custom_mask``."""
    for strategy in (GlobalUnstructured, MagnitudeThreshold, CustomMask):
        register(strategy)
