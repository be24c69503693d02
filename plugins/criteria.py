"""Built-in importance criteria: magnitude (``l1``), Ln-norm magnitude (``ln``), ``random`` and ``wanda``.

Each is composed by the registry with every granularity: ``l1_unstructured``, ``l1_structured``,
``ln_structured``, ``random_unstructured``, ``random_structured``, ``l1_global``, ``wanda_row``, ``wanda_nm``...

``wanda`` is data-aware: it reads the norm of each input feature over calibration data (``prune(...,
data=batches)``), which prunus gathers because the criterion lists :class:`~prunus.plugin_api.InputNorms` in its
``statistics``. SparseGPT's criterion lives in :mod:`prunus.plugins.sparsegpt` beside its reconstruction.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, StrictFloat, StrictInt, field_validator
from torch import Tensor

from prunus.plugin_api import (
    Criterion,
    InputNorms,
    PruneContext,
    Registrar,
    StrategyConfig,
    Target,
    hookimpl,
    input_weighted,
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


class Wanda(Criterion):
    """Wanda (pruning by weights and activations): ``|w_ij| * ||x_j||_2``.

    A weight matters as much as it moves the output, and on the calibration data that is its magnitude times
    the norm of the input feature it multiplies. Layers of language models have a few input features with huge
    activations (outliers); magnitude alone prunes their small weights, which this keeps. Best per output row
    (``wanda_row``), as in the paper; ``wanda_nm`` for 2:4. A grouped score sums the entries' scores.
    """

    name = "wanda"
    summary = "|w| times its input's L2 norm on calibration data (Wanda; needs data=)"
    statistics = (InputNorms,)

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return input_weighted(target.module, target.tensor, context.statistic(target, InputNorms))


@hookimpl
def prunus_register_criteria(register: Registrar) -> None:
    """Register ``l1``, ``ln``, ``random`` and ``wanda``."""
    for criterion in (L1, Ln, Random, Wanda):
        register(criterion)
