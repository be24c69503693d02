"""A catalogue of realistic bugs in granularities and criteria, for the tests of the conformance kit.

Each :class:`Bug` is a broken component written the way a plugin author could write it from the docs: it
declares what the working one declares (its ``Partition``, its counts) and gets the masks or the scores wrong in
one place. Every bug is registered twice on a private registry (the global one is never touched):

* **built-in**: a broken granularity replaces the built-in of the same name (``unstructured``, ``nm``...), a
  broken criterion is composed with a built-in granularity;
* **third-party**: the same broken granularity under a new name (``acme_unstructured``), a broken criterion
  composed with a correct third-party granularity (:class:`AcmeRows`), registered from outside through a
  plugin's registration hooks, as an installed distribution would.

The kit must catch both, at its default settings, naming ``Bug.prop``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field, StrictInt
from torch import Tensor

import prunus
from prunus.plugin_api import (
    Amount,
    Criterion,
    Granularity,
    Partition,
    PruneContext,
    Registrar,
    StrategyConfig,
    Target,
    call_model,
    count_to_prune,
    eligible_slices,
    evaluation_mode,
    global_keep_masks,
    hookimpl,
    input_dim,
    keep_mask,
    keep_slices,
    rankable,
)
from prunus.plugins.granularities import aligned_keep
from prunus.plugins.semistructured import Block, BlockConfig, NMConfig, nm_keep_mask
from prunus.testing import StrategyCase

ScoreFn = Callable[[Target], Tensor]


class AmountOnly(StrategyConfig):
    amount: Amount = Field(description="fraction or count")


class DimConfig(StrategyConfig):
    amount: Amount = Field(description="fraction or count")
    dim: StrictInt = 0


class AlignedConfig(DimConfig):
    round_to: StrictInt = Field(default=8, ge=1)


def _view(tensor: Tensor) -> Tensor:
    return tensor.reshape(1, -1) if tensor.dim() <= 1 else tensor.reshape(tensor.shape[0], -1)


# -- a correct third-party granularity --------------------------------------------------------------------------


class AcmeRows(Granularity):
    """Every output row of the weight's 2-D view is its own group: each prunes ``amount`` of its entries."""

    name = "acme_rows"
    summary = "the lowest-scored entries of each output row"
    Config = AmountOnly

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            scores = _view(score(target))
            prior = None if target.prior is None else _view(target.prior)
            rows = []
            for row in range(scores.shape[0]):
                eligible = None if prior is None else prior[row]
                size = scores.shape[1] if eligible is None else int(eligible.sum())
                k = count_to_prune(self.config.amount, size)
                rows.append(keep_mask(scores[row], k, eligible))
            out[target.name] = torch.stack(rows).reshape(target.tensor.shape)
        return out

    def partition(self, target: Target) -> Partition:
        rows = (
            torch.arange(_view(target.tensor).shape[0])
            .unsqueeze(1)
            .expand(_view(target.tensor).shape)
        )
        return Partition.entries(target.tensor.shape, groups=rows.reshape(target.tensor.shape))


# -- broken granularities: entries ranked per parameter -----------------------------------------------------------


class Entries(Granularity):
    """Per-parameter ranking of entries, with a hook for each place a bug can sit (all correct here)."""

    name = "unstructured"
    summary = "deliberately broken"
    Config = AmountOnly

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            eligible = self.eligible(target)
            size = target.tensor.numel() if eligible is None else int(eligible.sum())
            k = self.count(self.config.amount, size, target)
            out[target.name] = self.finish(
                self.rank(self.prepare(score(target), target), k, eligible)
            )
        return out

    def partition(self, target: Target) -> Partition:
        return Partition.entries(target.tensor.shape)

    def eligible(self, target: Target) -> Tensor | None:
        return target.prior

    def count(self, amount: int | float, size: int, target: Target) -> int:
        return count_to_prune(amount, size)

    def prepare(self, scores: Tensor, target: Target) -> Tensor:
        return scores

    def rank(self, scores: Tensor, k: int, eligible: Tensor | None) -> Tensor:
        return keep_mask(scores, k, eligible)

    def finish(self, keep: Tensor) -> Tensor:
        return keep


class FloorRounding(Entries):
    def count(self, amount: int | float, size: int, target: Target) -> int:
        return amount if isinstance(amount, int) else int(amount * size)


class IntAsFraction(Entries):
    def count(self, amount: int | float, size: int, target: Target) -> int:
        return min(round(float(amount) * size), size)


class Reversed(Entries):
    def prepare(self, scores: Tensor, target: Target) -> Tensor:
        return -scores


class Magnitude(Entries):
    def prepare(self, scores: Tensor, target: Target) -> Tensor:
        return scores.abs()


class DropsInfinities(Entries):
    """Reads an infinite score as missing, and ranks it as zero."""

    def prepare(self, scores: Tensor, target: Target) -> Tensor:
        return torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)


class CountsAgainstAll(Entries):
    """Counts amount against every entry, not the entries an earlier prune kept."""

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            numel = target.tensor.numel()
            still = numel if target.prior is None else int(target.prior.sum())
            k = min(count_to_prune(self.config.amount, numel), still)
            out[target.name] = keep_mask(score(target), k, target.prior)
        return out


class Revives(Entries):
    """Ranks every entry again, ignoring what an earlier prune removed."""

    def eligible(self, target: Target) -> Tensor | None:
        return None


class FloatMasks(Entries):
    def finish(self, keep: Tensor) -> Tensor:
        return keep.float()


class KeepsOneAtFull(Entries):
    """Never prunes a whole parameter, "to keep the layer alive"."""

    def count(self, amount: int | float, size: int, target: Target) -> int:
        return min(count_to_prune(amount, size), max(size - 1, 0))


class ThresholdTies(Entries):
    """Keeps what scores above the k-th lowest score: every entry tied with it goes too."""

    def rank(self, scores: Tensor, k: int, eligible: Tensor | None) -> Tensor:
        live = torch.ones_like(scores, dtype=torch.bool) if eligible is None else eligible
        if k == 0:
            return live.clone()
        threshold = rankable(scores)[live].kthvalue(k).values
        return live & (rankable(scores) > threshold)


class Memoised(Entries):
    """Caches each parameter's scores by name on the granularity, to score once."""

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.cache: dict[str, Tensor] = {}

    def prepare(self, scores: Tensor, target: Target) -> Tensor:
        return self.cache.setdefault(target.name, scores)


# -- broken granularities: slices ---------------------------------------------------------------------------------


class Slices(Granularity):
    """Structured pruning of slices along ``dim``, with a hook for each place a bug can sit."""

    name = "structured"
    summary = "deliberately broken"
    Config = DimConfig

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, DimConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            dim = self.ranked_dim(target)
            others = tuple(d for d in range(len(shape)) if d != dim)
            eligible = self.eligible(target, dim)
            size = shape[dim] if eligible is None else int(eligible.sum())
            k = self.count(count_to_prune(self.config.amount, size), size)
            groups = self.reduce(criterion, rankable(score(target)), others)
            out[target.name] = keep_slices(groups, k, shape, dim, target.prior)
        return out

    def partition(self, target: Target) -> Partition:
        assert isinstance(self.config, DimConfig)
        return Partition.slices(target.tensor.shape, self.config.dim % target.tensor.dim())

    def ranked_dim(self, target: Target) -> int:
        assert isinstance(self.config, DimConfig)
        return self.config.dim % target.tensor.dim()

    def eligible(self, target: Target, dim: int) -> Tensor | None:
        return eligible_slices(target.prior, dim)

    def count(self, asked: int, size: int) -> int:
        return asked

    def reduce(self, criterion: Criterion, scores: Tensor, dims: tuple[int, ...]) -> Tensor:
        return criterion.reduce(scores, dims)


class WrongDim(Slices):
    def ranked_dim(self, target: Target) -> int:
        return (super().ranked_dim(target) + 1) % target.tensor.dim()


class OnlyWholeSlices(Slices):
    """Counts a slice as still kept only while all of its entries are."""

    def eligible(self, target: Target, dim: int) -> Tensor | None:
        if target.prior is None:
            return None
        others = tuple(d for d in range(target.prior.dim()) if d != dim)
        return target.prior.all(dim=others) if others else target.prior


class SumsItself(Slices):
    """Sums the entry scores of a slice instead of asking the criterion's reduce."""

    def reduce(self, criterion: Criterion, scores: Tensor, dims: tuple[int, ...]) -> Tensor:
        return scores.sum(dim=dims) if dims else scores


class AlignedFloor(Slices):
    """``aligned`` keeping the multiple of ``round_to`` below what amount keeps, not the nearest one."""

    name = "aligned"
    Config = AlignedConfig

    def count(self, asked: int, size: int) -> int:
        assert isinstance(self.config, AlignedConfig)
        multiple = self.config.round_to
        keep = size - asked
        if asked == 0 or keep == 0 or size <= multiple:
            return asked
        return size - max(multiple, keep // multiple * multiple)

    def prune_counts(self, eligible: Tensor) -> Tensor:
        assert isinstance(self.config, AlignedConfig)
        counts = [
            n - aligned_keep(n, count_to_prune(self.config.amount, n), self.config.round_to)
            for n in eligible.tolist()
        ]
        return torch.tensor(counts, dtype=torch.int64)


# -- broken granularities: one ranking across parameters ---------------------------------------------------------


class PerLayerGlobal(Granularity):
    """ "Global" pruning that ranks each parameter on its own."""

    name = "global"
    summary = "deliberately broken"
    Config = AmountOnly

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        out = {}
        for target in context.targets:
            size = target.tensor.numel() if target.prior is None else int(target.prior.sum())
            amount = self.config.amount
            if isinstance(amount, int):  # share the count out in proportion
                total = sum(t.tensor.numel() for t in context.targets)
                amount = amount / total
            out[target.name] = keep_mask(score(target), round(amount * size), target.prior)
        return out

    def partition(self, target: Target) -> Partition:
        return Partition.entries(target.tensor.shape, shared=True)


class NormalisedGlobal(PerLayerGlobal):
    """Divides each parameter's scores by their largest magnitude before the one ranking."""

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)

        def normalised(target: Target) -> Tensor:
            scores = rankable(score(target))
            peak = scores.abs().max().clamp(min=1e-12)
            return scores / peak

        return global_keep_masks(list(context.targets), normalised, self.config.amount, 0)


class FirstDtypeGlobal(PerLayerGlobal):
    """Ranks every score in the dtype of the first parameter's scores (half precision overflows)."""

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, AmountOnly)
        targets = list(context.targets)
        dtype = score(targets[0]).dtype
        return global_keep_masks(
            targets, lambda t: rankable(score(t).to(dtype)), self.config.amount, 0
        )


# -- broken granularities: N:M and blocks ---------------------------------------------------------------------------


class NMBase(Granularity):
    name = "nm"
    summary = "deliberately broken"
    Config = NMConfig

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, NMConfig)
        return {
            t.name: nm_keep_mask(
                score(t), self.config.n_keep, self.config.m_group, self.ranked_dim(t), t.prior
            )
            for t in context.targets
        }

    def dim(self, target: Target) -> int:
        assert isinstance(self.config, NMConfig)
        ndim = target.tensor.dim()
        dim = self.config.dim
        return (input_dim(target.module, ndim) if dim is None else dim) % ndim

    def ranked_dim(self, target: Target) -> int:
        return self.dim(target)

    def partition(self, target: Target) -> Partition:
        assert isinstance(self.config, NMConfig)
        shape = target.tensor.shape
        sides = [1] * len(shape)
        sides[self.dim(target)] = self.config.m_group
        return Partition.entries(shape, groups=Partition.tiles(shape, sides).units)

    def prune_counts(self, eligible: Tensor) -> Tensor:
        assert isinstance(self.config, NMConfig)
        return (eligible - self.config.n_keep).clamp(min=0)


class NMForgetsTransposed(NMBase):
    """Runs the groups along dim 1 of every weight: right for Linear and Conv, wrong for ConvTranspose."""

    def ranked_dim(self, target: Target) -> int:
        assert isinstance(self.config, NMConfig)
        ndim = target.tensor.dim()
        return (self.config.dim if self.config.dim is not None else min(1, ndim - 1)) % ndim


class NMShortGroupKept(NMBase):
    """Leaves a trailing group shorter than m_group as it is."""

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, NMConfig)
        out = super().masks(criterion, score, context)
        m = self.config.m_group
        for target in context.targets:
            dim = self.dim(target)
            size = target.tensor.shape[dim]
            tail = size % m if m <= size else 0
            if tail:
                keep = out[target.name].movedim(dim, -1).clone()
                from_prior = (
                    torch.ones_like(keep) if target.prior is None else target.prior.movedim(dim, -1)
                )
                keep[..., size - tail :] = from_prior[..., size - tail :]
                out[target.name] = keep.movedim(-1, dim).contiguous()
        return out


class BlockColumnBias(Block):
    """Views a 1-D parameter as a column ``(n, 1)`` where the documented view is a row ``(1, n)``."""

    name = "block"

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        flat = [t for t in context.targets if t.tensor.dim() != 1]
        out = super().masks(criterion, score, _with(context, flat))
        for target in context.targets:
            if target.tensor.dim() == 1:
                column = Target(target.name, _Column(target), "weight", _column(target.prior))
                keep = super().masks(
                    criterion,
                    lambda _, target=target: _column(score(target)),
                    _with(context, [column]),
                )
                out[target.name] = keep[target.name].reshape(-1)
        return out


class _Column(torch.nn.Module):
    def __init__(self, target: Target) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(target.tensor.reshape(-1, 1).clone())


def _column(tensor: Tensor | None) -> Any:
    return None if tensor is None else tensor.reshape(-1, 1)


def _with(context: PruneContext, targets: list[Target]) -> PruneContext:
    return PruneContext(context.model, targets, context.data, context.restorable, context.extras)


class BlockDropsEdges(Block):
    """Prunes among the full blocks only: the smaller edge blocks are never pruned."""

    name = "block"

    def masks(
        self, criterion: Criterion, score: ScoreFn, context: PruneContext
    ) -> dict[str, Tensor]:
        assert isinstance(self.config, BlockConfig)
        out = {}
        for target in context.targets:
            shape = target.tensor.shape
            view = _view(score(target))
            height, width = view.shape
            rows, cols = min(self.config.block[0], height), min(self.config.block[1], width)
            full_h, full_w = height - height % rows, width - width % cols
            prior = None if target.prior is None else _view(target.prior)
            tiles = view[:full_h, :full_w].reshape(full_h // rows, rows, full_w // cols, cols)
            grid = criterion.reduce(rankable(tiles), (1, 3))
            eligible = None
            if prior is not None:
                eligible = prior[:full_h, :full_w].reshape(grid.shape[0], rows, grid.shape[1], cols)
                eligible = eligible.any(dim=3).any(dim=1)
            size = grid.numel() if eligible is None else int(eligible.sum())
            keep_grid = keep_mask(grid, count_to_prune(self.config.amount, size), eligible)
            keep = torch.ones(height, width, dtype=torch.bool)
            keep[:full_h, :full_w] = keep_grid.repeat_interleave(rows, 0).repeat_interleave(cols, 1)
            mask = keep.reshape(shape)
            out[target.name] = mask if target.prior is None else mask & target.prior
        return out


# -- broken criteria --------------------------------------------------------------------------------------------


class SeedConfig(StrategyConfig):
    seed: StrictInt = Field(default=0, ge=0)


class GlobalRandom(Criterion):
    """Random scores from torch's global generator: the seed option is ignored."""

    name = "global_random"
    Config = SeedConfig
    deterministic = False

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.rand(target.tensor.shape)


class StuckRandom(Criterion):
    """Random scores from a local generator always seeded 0: the seed option is ignored."""

    name = "stuck_random"
    Config = SeedConfig
    deterministic = False

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.rand(target.tensor.shape, generator=target.generator(0))


class InitialSeedRandom(Criterion):
    """Random scores seeded from the seed the program gave torch: the seed option is ignored."""

    name = "initial_seed_random"
    Config = SeedConfig
    deterministic = False

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.rand(
            target.tensor.shape, generator=target.generator(torch.initial_seed() % 2**31)
        )


class SeededButDeterministic(Criterion):
    """Magnitude plus a little noise from a seeded generator, declared deterministic (the default)."""

    name = "noisy_magnitude"
    Config = SeedConfig

    def score(self, target: Target, context: PruneContext) -> Tensor:
        assert isinstance(self.config, SeedConfig)
        noise = torch.rand(target.tensor.shape, generator=target.generator(self.config.seed))
        return target.tensor.abs().double() + noise.double()


class InPlace(Criterion):
    """Scores with ``abs_()``: overwrites the parameter it scores."""

    name = "in_place"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return target.tensor.abs_()


class ThroughNumpy(Criterion):
    """Scores through numpy, which has no bfloat16: crashes on bfloat16 parameters."""

    name = "through_numpy"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return torch.from_numpy(abs(target.tensor.numpy()))


class Flat(Criterion):
    """Returns flat scores instead of scores of the parameter's shape."""

    name = "flat"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return target.tensor.abs().reshape(-1)


class RelativeMagnitude(Criterion):
    """Magnitude relative to the row's magnitude: ``0 / 0`` is NaN for a row of zeros."""

    name = "relative"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        values = target.tensor.float().abs()
        return values / values.sum(dim=-1, keepdim=True)


class MemoisedMagnitude(Criterion):
    """Magnitude, cached by parameter name on the criterion to score once."""

    name = "cached_magnitude"

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.cache: dict[str, Tensor] = {}

    def score(self, target: Target, context: PruneContext) -> Tensor:
        return self.cache.setdefault(target.name, target.tensor.abs())


# -- data-aware criteria: a forward pass over a calibration batch -------------------------------------------------


class InputScale(Criterion):
    """``|w|`` times the RMS of its layer's input over the calibration batch (``data``), a Wanda-like criterion.

    The forward runs in ``evaluation_mode`` with hooks removed in a ``finally``: the model is left as it was. A
    parameter whose layer the forward never calls (an attention block's projections read by ``F.linear``)
    scores ``|w|``.
    """

    name = "input_scale"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        if "input_scale" not in context.extras:
            context.extras["input_scale"] = self.calibrate(context)
        scale = context.extras["input_scale"].get(target.module, 1.0)
        return target.tensor.abs().double() * scale

    def calibrate(self, context: PruneContext) -> dict[torch.nn.Module, float]:
        if context.data is None:
            raise prunus.ConfigError(
                "input_scale needs a calibration batch: prune(..., data=inputs)"
            )
        scales: dict[torch.nn.Module, float] = {}

        def record(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            scales[module] = float(args[0].double().square().mean().sqrt())

        handles = [t.module.register_forward_pre_hook(record) for t in context.targets]
        try:
            self.forward(context)
        finally:
            for handle in handles:
                handle.remove()
        return scales

    def forward(self, context: PruneContext) -> None:
        with torch.no_grad(), evaluation_mode(context.model):
            call_model(context.model, context.data)


class TrainModeForward(InputScale):
    """Runs the calibration batch in whatever mode the model is in: BatchNorm's statistics move in train mode."""

    name = "train_mode_scale"

    def forward(self, context: PruneContext) -> None:
        with torch.no_grad():
            call_model(context.model, context.data)


class LeavesEvalMode(InputScale):
    """Switches the model to eval mode for the forward and never switches it back."""

    name = "eval_mode_scale"

    def forward(self, context: PruneContext) -> None:
        context.model.eval()
        with torch.no_grad():
            call_model(context.model, context.data)


class LeavesHooks(InputScale):
    """Registers its recording hooks and never removes them."""

    name = "hooked_scale"

    def calibrate(self, context: PruneContext) -> dict[torch.nn.Module, float]:
        scales: dict[torch.nn.Module, float] = {}

        def record(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            scales[module] = float(args[0].double().square().mean().sqrt())

        for target in context.targets:
            target.module.register_forward_pre_hook(record)
        self.forward(context)
        return scales


class SubsamplesGlobally(InputScale):
    """Calibrates on a random half of the batch, drawn from torch's global generator."""

    name = "subsampled_scale"

    def forward(self, context: PruneContext) -> None:
        rows = torch.randperm(context.data.shape[0])[: max(1, context.data.shape[0] // 2)]
        with torch.no_grad(), evaluation_mode(context.model):
            call_model(context.model, context.data[rows])


# -- the catalogue ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bug:
    """A broken component, the property that must catch it and what its message must say.

    Attributes:
        id: a short name.
        component: the broken granularity or criterion class.
        prop: the property of the kit that names it (see :attr:`props`).
        message: a regular expression the failure's problem matches.
        criterion: the criterion a broken granularity is tested with.
        granularity: the built-in granularity a broken criterion is tested at.
        inputs: the criterion runs the model on a calibration batch (``StrategyCase(inputs=True)``).
    """

    id: str
    component: type[Granularity] | type[Criterion]
    prop: str
    message: str
    criterion: str = "l1"
    granularity: str = "unstructured"
    inputs: bool = False

    def case(self, name: str) -> StrategyCase:
        """What ``check_strategy`` is given for the strategy ``name`` of this bug."""
        return StrategyCase(name, inputs=self.inputs)

    @property
    def props(self) -> tuple[str, ...]:
        """The properties that catch it: ``prop``, and for a granularity the check with the kit's own scores."""
        if issubclass(self.component, Granularity) and self.prop != "signed_scores_ranked":
            return (self.prop, "signed_scores_ranked")
        return (self.prop,)

    THIRD_PARTY: ClassVar[str] = "acme"

    def setups(self) -> list[tuple[str, str, prunus.Registry]]:
        """``(variant, strategy name, registry)`` for the built-in and the third-party variant."""
        return [("built-in", *self.builtin()), ("third-party", *self.third_party())]

    def builtin(self) -> tuple[str, prunus.Registry]:
        registry = prunus.Registry()
        if issubclass(self.component, Granularity):
            registry.register(self.component, replace=True)
            return f"{self.criterion}_{self.component.name}", registry
        registry.register(self.component, replace=True)
        return f"{self.component.name}_{self.granularity}", registry

    def third_party(self) -> tuple[str, prunus.Registry]:
        registry = prunus.Registry()
        if issubclass(self.component, Granularity):
            renamed = type(
                self.component.__name__, (self.component,), {"name": f"acme_{self.component.name}"}
            )
            registry.register_plugin(_plugin(granularities=[renamed]), name=self.THIRD_PARTY)
            return f"{self.criterion}_{renamed.name}", registry
        registry.register_plugin(
            _plugin(granularities=[AcmeRows], criteria=[self.component]), name=self.THIRD_PARTY
        )
        return f"{self.component.name}_{AcmeRows.name}", registry


class _Plugin:
    """An in-process plugin registering granularities and criteria through the registration hooks."""

    def __init__(self, granularities: list[type], criteria: list[type]) -> None:
        self.granularities = granularities
        self.criteria = criteria

    @hookimpl
    def prunus_register_granularities(self, register: Registrar) -> None:
        for granularity in self.granularities:
            register(granularity)

    @hookimpl
    def prunus_register_criteria(self, register: Registrar) -> None:
        for criterion in self.criteria:
            register(criterion)


def _plugin(*, granularities: list[type] = (), criteria: list[type] = ()) -> _Plugin:  # type: ignore[assignment]
    return _Plugin(list(granularities), list(criteria))


COUNT = r"pruned \d+, but "
MISCOUNT = r"(pruned \d+, but |does it count other units than it declares)"
BUGS: list[Bug] = [
    # -- granularities ---------------------------------------------------------------------------------------------
    Bug(
        "floor_rounding",
        FloorRounding,
        "exact_count",
        COUNT + r"amount=\S+ \(a fraction\) asks for round\(",
    ),
    Bug(
        "int_count_as_fraction",
        IntAsFraction,
        "exact_count",
        COUNT + r"amount=\d+ \(an int, so a count\)",
    ),
    Bug("ranks_reversed", Reversed, "criterion_respected", "the ranking is reversed"),
    Bug(
        "ranks_magnitudes",
        Magnitude,
        "signed_scores_ranked",
        r"ranks \|score\||not their magnitudes",
    ),
    Bug(
        "drops_infinities",
        DropsInfinities,
        "signed_scores_ranked",
        r"with the kit's scores, .*scored",
    ),
    Bug("counts_pruned_entries", CountsAgainstAll, "exact_count", COUNT + r".*still kept"),
    Bug("revives_pruned_entries", Revives, "no_revival", "revives .* an earlier prune removed"),
    Bug(
        "float_masks",
        FloatMasks,
        "mask_shape_and_dtype",
        r"dtype torch\.float32; a mask must be torch\.bool",
    ),
    Bug(
        "never_prunes_everything",
        KeepsOneAtFull,
        "amount_one_prunes_all",
        r"amount=1\.0 kept 1 entries",
    ),
    Bug("prunes_all_ties", ThresholdTies, "exact_count", COUNT),
    Bug("memoised_scores", Memoised, "repeated_calls", "memoised on the strategy"),
    Bug(
        "slices_along_wrong_dim",
        WrongDim,
        "whole_units",
        "only partly pruned|does it count other units",
    ),
    Bug("partly_pruned_slice_ineligible", OnlyWholeSlices, "exact_count", MISCOUNT),
    Bug(
        "sums_instead_of_reduce",
        SumsItself,
        "signed_scores_ranked",
        "with the kit's scores, .*scored",
    ),
    Bug(
        "aligned_rounds_down",
        AlignedFloor,
        "exact_count",
        COUNT + r"AlignedFloor\.prune_counts asks",
    ),
    Bug(
        "global_ranked_per_layer",
        PerLayerGlobal,
        "criterion_respected",
        "across all targets: pruned",
    ),
    Bug(
        "global_normalised_per_layer",
        NormalisedGlobal,
        "criterion_respected",
        "across all targets: pruned",
    ),
    Bug(
        "global_in_first_dtype",
        FirstDtypeGlobal,
        "criterion_respected",
        "across all targets: pruned",
    ),
    Bug("nm_forgets_transposed_conv", NMForgetsTransposed, "exact_count", r"prune_counts asks"),
    Bug("nm_keeps_short_group", NMShortGroupKept, "exact_count", r"prune_counts asks"),
    Bug("block_bias_as_column", BlockColumnBias, "whole_units", "only partly pruned"),
    Bug("block_never_prunes_edges", BlockDropsEdges, "exact_count", MISCOUNT),
    # -- criteria --------------------------------------------------------------------------------------------------
    Bug(
        "global_generator", GlobalRandom, "global_rng_untouched", "torch's global random generator"
    ),
    Bug("seed_ignored", StuckRandom, "seed_changes_mask", "the seed option is ignored"),
    Bug("seeded_by_initial_seed", InitialSeedRandom, "same_seed_same_mask", "global random state"),
    Bug(
        "seeded_but_deterministic",
        SeededButDeterministic,
        "declared_deterministic",
        "deterministic = False",
    ),
    Bug("mutates_parameter", InPlace, "input_unchanged", r"were modified.*abs_\(\)"),
    Bug(
        "crashes_on_bfloat16", ThroughNumpy, "mask_shape_and_dtype", "the strategy raised TypeError"
    ),
    Bug("scores_flat", Flat, "scores_valid", "a criterion scores every entry"),
    Bug("nan_for_zero_rows", RelativeMagnitude, "scores_valid", r"are NaN"),
    Bug("memoised_criterion", MemoisedMagnitude, "repeated_calls", "memoised on the strategy"),
    # -- data-aware criteria ---------------------------------------------------------------------------------------
    Bug(
        "calibrates_in_train_mode",
        TrainModeForward,
        "calibration_leaves_model_alone",
        r"buffer .* was modified",
        inputs=True,
    ),
    Bug(
        "leaves_eval_mode",
        LeavesEvalMode,
        "calibration_leaves_model_alone",
        "the training flag",
        inputs=True,
    ),
    Bug(
        "leaves_hooks",
        LeavesHooks,
        "calibration_leaves_model_alone",
        "hooks were left registered",
        inputs=True,
    ),
    Bug(
        "subsamples_with_global_rng",
        SubsamplesGlobally,
        "calibration_leaves_model_alone",
        "global random generator was advanced",
        inputs=True,
    ),
]
"""Every bug the kit must catch, each checked as a built-in and as a third-party component."""

assert len({bug.id for bug in BUGS}) == len(BUGS)
