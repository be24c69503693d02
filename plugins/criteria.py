"""Built-in importance criteria: magnitude (``l1``), Ln-norm magnitude (``ln``) and ``random``.

Each is composed by the registry with every granularity: ``l1_unstructured``, ``l1_structured``,
``ln_structured``, ``random_unstructured``, ``random_structured``, ``l1_global``, ...
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, StrictFloat, StrictInt, field_validator
from torch import Tensor

from prunus.plugin_api import (
    Criterion,
    PruneContext,
    Registrar,
    StrategyConfig,
    Target,
    hookimpl,
    rankable,
)


class L1(Criterion):
    """Magnitude: ``|w|``. Grouped, the score of a slice is its L1 norm (the sum of ``|w|``)."""

    name = "l1"
    summary = "magnitude |w| (a slice scores its L1 norm)"
    elementwise = True

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return self.score_values(target.tensor)

    def score_values(self, values: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.abs(values) if out is None else torch.abs(values, out=out)


class LnConfig(StrategyConfig):
    """Options of the ``ln`` criterion."""

    n: StrictInt | StrictFloat = Field(
        description="order of the norm over a slice, as torch.norm's p: 1, 2, any p, inf or -inf"
    )

    @field_validator("n")
    @classmethod
    def _finite_or_inf(cls, value: int | float) -> int | float:
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(
                "n=nan is not a norm order; give a number such as 1, 2 or float('inf')"
            )
        return value


class Ln(L1):
    """Magnitude ranked by the Ln norm of each slice (``ln_structured`` as in ``torch.nn.utils.prune``).

    Per entry the Ln norm of one value is ``|w|``, so ``ln_unstructured`` equals ``l1_unstructured``.
    """

    name = "ln"
    summary = "magnitude, a slice scores its Ln norm (n = 1, 2, ..., inf)"
    Config = LnConfig

    def reduce(self, scores: Tensor, dims: tuple[int, ...]) -> Tensor:
        if not dims:
            return scores
        assert isinstance(self.config, LnConfig)
        norms: Tensor = torch.linalg.vector_norm(rankable(scores), ord=self.config.n, dim=dims)
        return norms


class RandomConfig(StrategyConfig):
    """Options of the ``random`` criterion."""

    seed: StrictInt = Field(
        default=0,
        ge=0,
        description="seed of the local generator: the same seed gives the same mask",
    )


class Random(Criterion):
    """Uniform random scores from a local generator seeded by ``seed`` and the parameter's name."""

    name = "random"
    summary = "uniform random scores (seeded)"
    Config = RandomConfig
    deterministic = False

    def score(self, target: Target, context: PruneContext) -> Tensor:
        assert isinstance(self.config, RandomConfig)
        tensor = target.tensor
        generator = target.generator(self.config.seed)
        return torch.rand(tensor.shape, generator=generator, device=tensor.device)


@hookimpl
def prunus_register_criteria(register: Registrar) -> None:
    """Register ``l1``, ``ln`` and ``random``."""
    for criterion in (L1, Ln, Random):
        register(criterion)
