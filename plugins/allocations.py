"""Built-in allocations of a pruning budget across layers: ``uniform`` and ``owl``.

``prune(model, "wanda_row", amount=0.7, data=batches, allocation="owl")`` prunes 70 % of the chosen weights in
total, more of them in some blocks and fewer in others. prunus makes the total exact whatever the allocation
proposes (see :func:`prunus.allocation.exact_counts`).

``uniform``
    Every layer the same fraction: what ``prune`` does without ``allocation=``.

``owl`` (options ``outlier_threshold=5``, ``max_deviation=0.08``)
    Outlier-weighted layerwise sparsity (Yin et al., 2024). A layer's *outlier ratio* is the share of its
    weights whose Wanda score ``|w_ij| * ||x_j||_2`` exceeds ``outlier_threshold`` times the layer's mean score,
    on the unpruned model. Layers with more outliers matter more: the ratios are scaled linearly onto a span of
    ``2 * max_deviation`` and each layer prunes ``amount`` minus its scaled ratio's distance from their mean, so
    the fractions average ``amount`` and spread over at most ``2 * max_deviation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field, StrictFloat, StrictInt

from prunus.plugin_api import (
    Allocation,
    InputNorms,
    Layer,
    PruneContext,
    Registrar,
    StrategyConfig,
    Target,
    hookimpl,
    input_weighted,
)

__all__ = ["OWL", "OWLConfig", "Uniform"]


class Uniform(Allocation):
    """The same fraction in every layer."""

    name = "uniform"
    summary = "the same fraction of every layer"

    def allocate(self, layers: Sequence[Layer], amount: float) -> list[float]:
        return [amount] * len(layers)


class OWLConfig(StrategyConfig):
    """Options of the ``owl`` allocation."""

    outlier_threshold: StrictFloat | StrictInt = Field(
        default=5.0,
        gt=0,
        description="M: a weight is an outlier above M times its layer's mean score",
    )
    max_deviation: StrictFloat | StrictInt = Field(
        default=0.08,
        ge=0,
        le=0.5,
        description="lambda: the layers' fractions spread over at most twice this, around amount",
    )


class OWL(Allocation):
    """Outlier-weighted layerwise sparsity: layers with more activation outliers are pruned less."""

    name = "owl"
    summary = (
        "outlier-weighted layerwise sparsity: fewer pruned where Wanda scores have outliers (OWL)"
    )
    Config = OWLConfig
    statistics = (InputNorms,)

    def measure(self, targets: Sequence[Target], context: PruneContext) -> float:
        """The layer's outlier ratio: the share of Wanda scores above ``outlier_threshold`` times their mean."""
        assert isinstance(self.config, OWLConfig)
        scores = [
            input_weighted(t.module, t.tensor, context.statistic(t, InputNorms)) for t in targets
        ]
        count = sum(s.numel() for s in scores)
        if not count:
            return 0.0
        mean = sum(float(s.sum()) for s in scores) / count
        limit = float(self.config.outlier_threshold) * mean
        return sum(int((s > limit).sum()) for s in scores) / count

    def allocate(self, layers: Sequence[Layer], amount: float) -> list[float]:
        assert isinstance(self.config, OWLConfig)
        ratios = torch.tensor([layer.measure for layer in layers], dtype=torch.float64)
        if not len(layers) or float(ratios.max() - ratios.min()) == 0.0:
            return [amount] * len(layers)
        scaled = (
            (ratios - ratios.min()) / (ratios.max() - ratios.min()) * 2 * self.config.max_deviation
        )
        return [float(f) for f in (amount - (scaled - scaled.mean())).clamp(0.0, 1.0)]


@hookimpl
def prunus_register_allocations(register: Registrar) -> None:
    """Register ``uniform`` and ``owl``."""
    for allocation in (Uniform, OWL):
        register(allocation)
