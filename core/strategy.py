"""The contracts a plugin implements: criteria, granularities and strategies.

Scoring and masking are separate concerns:

* a :class:`Criterion` scores every entry of a parameter (higher means more important, keep it);
* a :class:`Granularity` turns those scores into a bool keep-mask (per entry, per slice along a dim, across
  every parameter at once, ...);
* the engine puts the mask on the model through the ``prunus_apply_mask`` hook.

The registry composes every criterion with every granularity into a strategy named
``<criterion>_<granularity>``, so a criterion registered once works at every granularity with no more code.
A :class:`Strategy` that does not fit that split (a user-given mask, say) subclasses :class:`Strategy` directly.

Masks are bool tensors with the parameter's shape: ``True`` keeps an entry, ``False`` prunes it.

A data-aware criterion declares the calibration statistics it reads (``statistics = (InputNorms,)``); ``prune``
gathers them from ``data=`` and hands them over in ``PruneContext.statistics`` (see
:mod:`prunus.statistics` and :mod:`prunus.calibration`).
"""

from __future__ import annotations

import copy
import zlib
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from .component import Component, Kind
from .config import NoOptions, StrategyConfig
from .errors import CalibrationError, PluginError, WeightError
from .statistics import Statistic, Statistics

if TYPE_CHECKING:
    from .registration import Registry

__all__ = [
    "ComposedStrategy",
    "Criterion",
    "Granularity",
    "NoOptions",
    "PruneContext",
    "Strategy",
    "Target",
    "checked_scores",
]


@dataclass(frozen=True, eq=False)
class Target:
    """One parameter chosen for pruning.

    Attributes:
        name: the parameter's fully qualified name in the model, e.g. ``"features.0.weight"``.
        module: the module that owns the parameter.
        param_name: the parameter's name in ``module``, e.g. ``"weight"``.
        prior: the keep-mask from earlier ``prune`` calls, or ``None`` if the parameter was never pruned.
            A strategy prunes among the entries it keeps and never revives one it prunes.
    """

    name: str
    module: nn.Module
    param_name: str
    prior: Tensor | None = None

    @property
    def tensor(self) -> Tensor:
        """The parameter's current values (detached; pruned entries read zero)."""
        value = getattr(self.module, self.param_name)
        assert isinstance(value, Tensor)  # guaranteed by target selection
        return value.detach()

    @property
    def parameter(self) -> Tensor:
        """The parameter itself, e.g. to read its ``.grad`` in a data-aware criterion."""
        value = getattr(self.module, self.param_name)
        assert isinstance(value, Tensor)
        return value

    def generator(self, seed: int) -> torch.Generator:
        """A local random generator for this target, seeded from ``seed`` and the target's name.

        Different parameters get different streams, the same seed gives the same stream in every process,
        and the global RNG is never touched.
        """
        generator = torch.Generator(device=self.tensor.device)
        generator.manual_seed((seed * 1_000_003 + zlib.crc32(self.name.encode())) % (2**63))
        return generator


@dataclass(eq=False)
class PruneContext:
    """What a strategy sees of one ``prune`` call.

    Attributes:
        model: the model being pruned (read it, do not change it: the engine applies the masks).
        targets: the parameters to prune, in model order.
        data: whatever the caller passed as ``prune(..., data=...)``: a batch, a data loader, a loss function,
            gradients... Data-aware criteria document what they expect here.
        restorable: whether ``prune`` keeps the pruned values for ``restore``; a strategy may size its
            temporary memory by it (the global ranking holds scores within what the restore data costs anyway).
        extras: free-form room for plugins to share information within one call (prunus itself keeps its own
            state in the typed fields, never here).
        statistics: the calibration statistics of the targets, gathered from ``data`` for what the strategy
            declares it reads (read them with :meth:`statistic`). When ``data`` itself is a
            :class:`~prunus.statistics.Statistics` table, that table.
    """

    model: nn.Module
    targets: Sequence[Target]
    data: Any = None
    restorable: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    statistics: Statistics = field(default_factory=Statistics)

    def __post_init__(self) -> None:
        if not self.statistics and isinstance(self.data, Statistics):
            self.statistics = self.data

    def statistic(self, target: Target, kind: type[Statistic]) -> Tensor:
        """The ``kind`` calibration statistic of ``target`` (e.g. ``InputNorms``: one norm per input feature).

        Raises:
            CalibrationError: it was not gathered (no calibration data was given, or the strategy does not
                declare ``kind`` in its ``statistics``).
        """
        value = self.statistics.get_statistic(target.name, kind)
        if value is None:
            label = kind.name or kind.__name__
            have = ", ".join(k.name or k.__name__ for k in self.statistics.get(target.name, {}))
            raise CalibrationError(
                f"no {label} statistic for {target.name!r} (have: {have or 'none'}): a data-aware criterion "
                "needs calibration data, prune(..., data=batches) with batches of input_ids tensors or "
                "tokenizer outputs, or statistics gathered before with prunus.calibrate(...); a criterion "
                f"that reads {label} lists it in its `statistics`"
            )
        return value


class Criterion(Component):
    """Scores the entries of a parameter: higher means more important.

    Subclasses set ``name``, ``summary`` and, if they take options, ``Config``, and implement :meth:`score`.
    Set ``deterministic = False`` for a criterion whose scores depend on a random seed, and list in
    ``statistics`` the calibration statistics it reads (then ``prune`` needs ``data=``).
    """

    kind: ClassVar[Kind] = "criterion"
    deterministic: ClassVar[bool] = True
    statistics: ClassVar[tuple[type[Statistic], ...]] = ()
    """The calibration statistics :meth:`score` reads through :meth:`PruneContext.statistic`."""

    def reconstruction(self) -> tuple[str, dict[str, Any]] | None:
        """The reconstruction ``prune`` runs after this criterion's masks by default, ``(name, options)``.

        ``None`` (the default): none. SparseGPT's criterion names SparseGPT's reconstruction here.
        """
        return None

    @abstractmethod
    def score(self, target: Target, context: PruneContext) -> Tensor:
        """Return a floating tensor of ``target.tensor``'s shape, higher for entries worth keeping.

        Scores must not be NaN; ``+inf`` means "never prune", ``-inf`` "prune first". The input tensor must not be
        modified.
        """

    def reduce(self, scores: Tensor, dims: tuple[int, ...]) -> Tensor:
        """Combine entry scores into one score per group (e.g. per channel) by summing over ``dims``.

        For a magnitude criterion the sum of ``|w|`` is the group's L1 norm; override for another norm.
        """
        return scores.sum(dim=dims) if dims else scores


class Granularity(Component):
    """Turns scores into keep-masks: per entry, per slice, across parameters...

    Subclasses implement :meth:`masks`. The options of the granularity (``amount``, ``dim``, ...) and of the
    criterion are merged into the options of each composed strategy, so their field names must not clash.
    Set ``separable = True`` when each target's mask depends on that target alone: calibration can then prune
    a model block by block.
    """

    kind: ClassVar[Kind] = "granularity"
    separable: ClassVar[bool] = False
    """Whether each target's mask depends on that target alone (not on a ranking across targets)."""

    @abstractmethod
    def masks(
        self,
        criterion: Criterion,
        score: Callable[[Target], Tensor],
        context: PruneContext,
    ) -> dict[str, Tensor]:
        """Return a bool keep-mask for each target in ``context.targets``, keyed by target name.

        Args:
            criterion: the criterion whose scores are ranked (its :meth:`Criterion.reduce` combines groups).
            score: returns the validated scores of a target (through the ``prunus_score`` hook).
            context: the call being served.
        """


class Strategy(Component):
    """A configured pruning method: given a :class:`PruneContext`, the keep-mask of each target.

    Strategies are made by :meth:`prunus.registry.get <prunus.Registry.get>`; a plugin subclasses this class directly only for a
    method that is not "a criterion at a granularity" (a user-given mask, a threshold, ...).
    """

    kind: ClassVar[Kind] = "strategy"
    granularity: str = "unstructured"
    """What one pruned unit is, for ``prunus list``: ``unstructured``, ``structured``, ``global``, ..."""
    deterministic: bool = True
    """False when the masks depend on a random seed (the test kit then skips monotonicity checks)."""
    statistics: tuple[type[Statistic], ...] = ()
    """The calibration statistics the strategy reads (``prune`` gathers them from ``data=``)."""
    separable: bool = False
    """Whether each target's mask depends on that target alone, so that calibration can prune block by block
    (each block's inputs computed from the blocks before it, already pruned)."""
    reconstruction: tuple[str, dict[str, Any]] | None = None
    """The reconstruction ``prune`` runs after the masks by default, ``(registered name, options)``."""

    @classmethod
    def create(cls, config: StrategyConfig, registry: Registry) -> Strategy:
        """Build the strategy from a validated config; override to look things up in the registry."""
        return cls(config)

    @abstractmethod
    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        """Return the full keep-mask (bool, the parameter's shape) of each target it prunes.

        A target left out is not changed. A mask must keep nothing that ``target.prior`` pruned.
        """


class ComposedStrategy(Strategy):
    """A criterion at a granularity: the strategy the registry builds for ``<criterion>_<granularity>``.

    Attributes:
        criterion: the configured :class:`Criterion` that scores.
        granularity_component: the configured :class:`Granularity` that turns scores into masks
            (``granularity``, as on every strategy, is its name).

    ``rebuild(name, options)`` is how a pickled copy comes back (the registry passes its own lookup); a
    ``copy.deepcopy`` shares the scorer and copies the rest.
    """

    def __init__(
        self,
        config: StrategyConfig,
        criterion: Criterion,
        granularity: Granularity,
        scorer: Callable[[Criterion, Target, PruneContext], Tensor],
        name: str,
        *,
        rebuild: Callable[[str, dict[str, Any]], Strategy] | None = None,
    ) -> None:
        super().__init__(config)
        self._rebuild = rebuild
        self.criterion = criterion
        self.granularity_component = granularity
        self._scorer = scorer
        self.name = name
        self.summary = f"{criterion.summary}; {granularity.summary}"
        self.granularity = granularity.name
        self.deterministic = criterion.deterministic
        self.statistics = criterion.statistics
        self.separable = granularity.separable
        self.reconstruction = criterion.reconstruction()

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        scorer = self._scorer
        if getattr(scorer, "validates_scores", False):
            # The registry's hook caller checks the scores itself, naming the plugin that gave them.
            def score(target: Target) -> Tensor:
                return scorer(self.criterion, target, context)

        else:

            def score(target: Target) -> Tensor:
                return checked_scores(scorer(self.criterion, target, context), target, self.name)

        return self.granularity_component.masks(self.criterion, score, context)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled as its name and options and rebuilt by the registry: the scorer is the registry's hook caller
        # and the merged config class is made by the registry, neither of which pickle can find by name.
        if self._rebuild is None:
            raise PluginError(
                f"strategy {self.name!r} was composed outside the registry (no rebuild function), so it "
                "cannot be pickled; build it with prunus.registry.get"
            )
        return (self._rebuild, (self.name, dict(self.config)))

    def __deepcopy__(self, memo: dict[int, Any]) -> ComposedStrategy:
        return ComposedStrategy(
            copy.deepcopy(self.config, memo),
            copy.deepcopy(self.criterion, memo),
            copy.deepcopy(self.granularity_component, memo),
            self._scorer,
            self.name,
            rebuild=self._rebuild,
        )


def checked_scores(scores: object, target: Target, owner: str) -> Tensor:
    """Validate what a criterion returned: a floating tensor of the target's shape, with no NaN.

    Scores that are not finite are traced to their cause: weights that hold NaN or infinities raise
    :class:`~prunus.errors.WeightError` (the model is broken, not the criterion); NaN scores of finite weights
    raise :class:`~prunus.errors.PluginError` naming ``owner``. The common case costs one pass (``max``).
    """
    if not isinstance(scores, Tensor):
        raise PluginError(
            f"{owner}: the criterion returned {type(scores).__name__} for {target.name!r}; "
            "it must return a floating torch.Tensor of the parameter's shape"
        )
    shape = tuple(target.tensor.shape)
    if tuple(scores.shape) != shape:
        raise PluginError(
            f"{owner}: scores for {target.name!r} have shape {tuple(scores.shape)}, "
            f"but the parameter has shape {shape}; a criterion must score every entry"
        )
    if not scores.is_floating_point():
        raise PluginError(
            f"{owner}: scores for {target.name!r} have dtype {scores.dtype}; they must be floating point"
        )
    # max() propagates NaN: one pass with no temporary (isnan(...).any() allocates a bool tensor first).
    top = scores.max() if scores.numel() else None
    if top is not None and not bool(torch.isfinite(top)):
        _check_weights(target)
    if top is not None and bool(torch.isnan(top)):
        count = int(torch.isnan(scores).sum())
        raise PluginError(
            f"{owner}: {count} scores for {target.name!r} are NaN; a criterion must return numbers "
            "(use -inf for 'prune first', +inf for 'never prune')"
        )
    return scores


def _check_weights(target: Target) -> None:
    """Raise :class:`WeightError` if ``target``'s own values hold NaN or infinities."""
    tensor = target.tensor
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    raise WeightError(
        f"parameter {target.name!r} holds {nan} NaN and {inf} infinite values, so its entries cannot be "
        "ranked: the model's weights are broken (a diverged training run, a bad checkpoint), not the "
        "criterion; fix or reload them. The model was not changed"
    )
