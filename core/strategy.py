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

A granularity also declares what it does, for the test kit to check: its :class:`Partition` of each parameter
(which entries are pruned together as a unit, which units compete in a group) and how ``amount`` becomes a count
per group (:meth:`Granularity.prune_counts`).

A data-aware criterion declares the calibration statistics it reads (``statistics = (InputNorms,)``); ``prune``
gathers them from ``data=`` and hands them over in ``PruneContext.statistics`` (see
:mod:`prunus.statistics` and :mod:`prunus.calibration`).
"""

from __future__ import annotations

import copy
import math
import zlib
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from .component import Component, Kind
from .config import NoOptions, StrategyConfig, count_to_prune
from .distributed import any_anywhere, count_true, local
from .errors import CalibrationError, ConfigError, PluginError, WeightError
from .statistics import Statistic, Statistics

if TYPE_CHECKING:
    from .registration import Registry

__all__ = [
    "ComposedStrategy",
    "Criterion",
    "Granularity",
    "NoOptions",
    "Partition",
    "PruneContext",
    "Scorer",
    "Strategy",
    "Target",
    "broken_weights",
    "checked_scores",
    "has_nan",
    "local_top",
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

    A criterion whose score of an entry depends on that entry's value alone (magnitude, say) sets
    ``elementwise = True`` and implements :meth:`score_values`; rankings may then score a parameter chunk by
    chunk into a reused buffer instead of materializing every score (the global ranking does: no score tensor
    is ever allocated), and a streamed checkpoint is scored straight from the file.
    """

    kind: ClassVar[Kind] = "criterion"
    deterministic: ClassVar[bool] = True
    elementwise: ClassVar[bool] = False
    """Whether the score of an entry is a function of its value alone (see :meth:`score_values`)."""
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

    def score_values(self, values: Tensor, out: Tensor | None = None) -> Tensor:
        """The scores of raw parameter values, for an ``elementwise`` criterion: ``values``' shape, floating.

        Args:
            values: any part of a parameter's values (a flat chunk, say); do not modify it.
            out: where to write the scores, when given (a buffer of ``values``' shape and the scores' dtype).

        ``score(target, context)`` must equal ``score_values(target.tensor)``: the two are used
        interchangeably.
        """
        raise NotImplementedError(
            f"criterion {self.name!r} is not elementwise; it scores whole parameters through score()"
        )

    def reduce(self, scores: Tensor, dims: tuple[int, ...]) -> Tensor:
        """Combine entry scores into one score per group (e.g. per channel) by summing over ``dims``.

        For a magnitude criterion the sum of ``|w|`` is the group's L1 norm; override for another norm.
        """
        return scores.sum(dim=dims) if dims else scores


@dataclass(frozen=True, eq=False)
class Partition:
    """How a granularity divides one parameter: into units it prunes whole, and groups whose units compete.

    A granularity declares one for each target (:meth:`Granularity.partition`), and the test kit
    (:mod:`prunus.testing`) checks every mask against it:

    * every unit is either kept as it was or pruned whole;
    * each group prunes exactly :meth:`Granularity.prune_counts` of its units still kept (a unit is still kept
      while an earlier prune left any of its entries);
    * within a group, no unit pruned scores higher than a unit kept (a unit's score is the criterion's
      :meth:`~Criterion.reduce` over its entries).

    Both tensors label the parameter's entries: int tensors of its shape whose values are labels (only equality
    matters). All the entries of a unit carry the same group label.

    The built-in granularities declare:

    * ``unstructured``: every entry a unit (:meth:`entries`), one group per parameter;
    * ``structured`` and ``aligned``: slices along ``dim`` (:meth:`slices`), one group per parameter;
    * ``global``: every entry a unit, one group across every target (``shared``), ``min_keep`` its option;
    * ``nm``: every entry a unit, a group per ``m_group`` consecutive entries along the input dim;
    * ``block``: the ``(rows, cols)`` tiles of the weight's 2-D view (:meth:`tiles`), one group per parameter.

    Attributes:
        units: the unit of each entry: ``arange(numel)`` when every entry is its own unit, the index along
            ``dim`` for slices, a tile's number for blocks.
        groups: the group of each entry: all zeros for one group per parameter.
        shared: the groups span the call's targets: the entries labelled ``g`` in every target form one group,
            ranked and counted together (a global ranking).
        min_keep: with ``shared``, a floor per target: each target keeps at least this many of its units still
            kept (all of them if it has fewer), its highest-scored ones, whenever the count leaves room for every
            target's floor; the count stays exact, and the ranking across targets holds among the units no floor
            holds (``global``'s ``min_keep`` option).
    """

    units: Tensor
    groups: Tensor
    shared: bool = False
    min_keep: int = 0

    @classmethod
    def entries(
        cls,
        shape: Sequence[int],
        groups: Tensor | None = None,
        *,
        shared: bool = False,
        min_keep: int = 0,
    ) -> Partition:
        """Every entry its own unit; one group, or the groups ``groups`` labels (a tensor of ``shape``)."""
        size = torch.Size(shape)
        units = torch.arange(size.numel()).reshape(size)
        return cls(units, torch.zeros_like(units) if groups is None else groups, shared, min_keep)

    @classmethod
    def slices(cls, shape: Sequence[int], dim: int) -> Partition:
        """Slices along ``dim`` (a non-negative dim of ``shape``) as units, all in one group."""
        size = torch.Size(shape)
        view = [1] * len(size)
        view[dim] = size[dim]
        units = torch.arange(size[dim]).reshape(view).expand(size).contiguous()
        return cls(units, torch.zeros_like(units))

    @classmethod
    def tiles(cls, shape: Sequence[int], sides: Sequence[int]) -> Partition:
        """Tiles of ``sides`` (one side per dim of ``shape``) as units, all in one group.

        Tiles start at index 0 of every dim; the last tile along a dim that its side does not divide is
        smaller, and a side larger than the dim covers all of it.
        """
        size = torch.Size(shape)
        if len(sides) != len(size):
            raise ConfigError(
                f"sides={tuple(sides)} must give one side per dim of shape {tuple(size)}"
            )
        units = torch.zeros(size, dtype=torch.int64)
        for dim, (length, side) in enumerate(zip(size, sides, strict=True)):
            if side < 1:
                raise ConfigError(f"sides={tuple(sides)}: every side must be >= 1")
            view = [1] * len(size)
            view[dim] = length
            count = -(-length // side)
            units = units * count + (torch.arange(length) // side).reshape(view)
        return cls(units, torch.zeros_like(units))

    def reshape(self, shape: Sequence[int]) -> Partition:
        """The same labels on a parameter of ``shape`` (e.g. a partition of a 2-D view, back on the weight)."""
        size = torch.Size(shape)
        return Partition(
            self.units.reshape(size), self.groups.reshape(size), self.shared, self.min_keep
        )


class Granularity(Component):
    """Turns scores into keep-masks: per entry, per slice, across parameters...

    Subclasses implement :meth:`masks`, and declare what the masks are (what the test kit checks them against):
    :meth:`partition`, the units pruned whole and the groups they compete in, and, unless a fraction becomes
    :func:`~prunus.config.count_to_prune` of the units in each group, :meth:`prune_counts`. The options of the
    granularity (``amount``, ``dim``, ...) and of the criterion are merged into the options of each composed
    strategy, so their field names must not clash. Set ``separable = True`` when each target's mask depends on
    that target alone: calibration can then prune a model block by block.
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

    def partition(self, target: Target) -> Partition | None:
        """The units this granularity prunes whole in ``target``, and the groups in which they compete.

        The declaration the test kit checks every mask against (see :class:`Partition`). The default, ``None``,
        declares nothing, and the kit fails the granularity with a message saying what to declare.
        """
        return None

    def prune_counts(self, eligible: Tensor) -> Tensor:
        """How many units of each group to prune, given how many each still keeps.

        Args:
            eligible: int64, one entry per group, in the order of the group labels: how many units of the group
                are still kept (have an entry no earlier prune removed). The groups of one target, or of every
                target when the partition is ``shared``.

        Returns:
            int64 of the same shape: the units to prune in each group. The default, for a granularity with an
            ``amount`` option, is ``count_to_prune(amount, n)`` in every group (torch's rounding; an int amount
            is a count per group). Override it for any other rule: N:M prunes all but ``n_keep`` of each group,
            ``aligned`` rounds what it keeps to a multiple.

        Raises:
            AmountError: an int ``amount`` is larger than a group.
            PluginError: the granularity has no ``amount`` option and does not override this method.
        """
        amount = getattr(self.config, "amount", None)
        if not isinstance(amount, int | float):
            raise PluginError(
                f"granularity {self.name!r} has no amount option, so the default prune_counts cannot count "
                "what it prunes; override prune_counts(eligible) to say how many units of each group to prune"
            )
        counts = [
            count_to_prune(amount, n, what="units still kept in a group") for n in eligible.tolist()
        ]
        return torch.tensor(counts, dtype=torch.int64)


class Scorer:
    """The validated scores of a criterion: what a granularity receives as its ``score`` argument.

    Calling it with a target returns that target's scores, computed through the ``prunus_score`` hook (so a
    plugin may take over) and checked (:func:`checked_scores`). When the criterion is ``elementwise`` and no
    plugin has taken the scoring hook over, :attr:`elementwise` is true and :meth:`values` scores any chunk of
    raw values directly, the way a ranking that never materializes whole score tensors needs.

    Args:
        criterion: the configured criterion.
        context: the call being served.
        hook: the scoring hook (``(criterion, target, context) -> scores``).
        owner: the strategy's name, for error messages.
        direct: whether the criterion's own scores are what the hook returns (no plugin takes it over).
    """

    def __init__(
        self,
        criterion: Criterion,
        context: PruneContext,
        hook: Callable[[Criterion, Target, PruneContext], Tensor],
        owner: str,
        direct: bool = False,
    ) -> None:
        self.criterion = criterion
        self.context = context
        self.hook = hook
        self.owner = owner
        self.elementwise = direct and criterion.elementwise
        """Whether :meth:`values` may score raw values directly (an elementwise criterion, no plugin hook)."""

    def __call__(self, target: Target) -> Tensor:
        scores = self.hook(self.criterion, target, self.context)
        if getattr(self.hook, "validates_scores", False):
            return (
                scores  # the registry's hook caller checked them, naming the plugin that gave them
            )
        return checked_scores(scores, target, self.owner)

    def values(
        self, target: Target, values: Tensor, out: Tensor | None = None, check_nan: bool = True
    ) -> Tensor:
        """The scores of ``values`` (part of ``target``'s values, on this rank) for an elementwise criterion.

        Checked for dtype and shape, and for NaN unless ``check_nan`` is false (a caller that checks the chunks
        itself, as the chunked global ranking does to raise on every rank together).
        """
        scores = self.criterion.score_values(values, out)
        if not scores.is_floating_point() or scores.shape != values.shape:
            raise PluginError(
                f"{self.owner}: score_values of criterion {self.criterion.name!r} returned "
                f"{scores.dtype} scores of shape {tuple(scores.shape)} for values of shape "
                f"{tuple(values.shape)}; it must return floating scores of the values' shape"
            )
        if check_nan and has_nan(scores):
            raise PluginError(self.nan_message(target))
        return scores

    def nan_message(self, target: Target) -> str:
        """The error of NaN scores of ``target``."""
        return (
            f"{self.owner}: scores for {target.name!r} are NaN; a criterion must return numbers (use -inf "
            "for 'prune first', +inf for 'never prune')"
        )


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
        direct: Callable[[], bool] | None = None,
        *,
        rebuild: Callable[[str, dict[str, Any]], Strategy] | None = None,
    ) -> None:
        super().__init__(config)
        self._rebuild = rebuild
        self.criterion = criterion
        self.granularity_component = granularity
        self._scorer = scorer
        self._direct = direct
        self.name = name
        self.summary = f"{criterion.summary}; {granularity.summary}"
        self.granularity = granularity.name
        self.deterministic = criterion.deterministic
        self.statistics = criterion.statistics
        self.separable = granularity.separable
        self.reconstruction = criterion.reconstruction()

    def compute_masks(self, context: PruneContext) -> dict[str, Tensor]:
        direct = self._direct is not None and self._direct()
        score = Scorer(self.criterion, context, self._scorer, self.name, direct)
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
            self._direct,
            rebuild=self._rebuild,
        )


def has_nan(scores: Tensor) -> bool:
    """Whether any score is NaN (on any rank, for sharded scores: every rank gets the same answer).

    One reduction (max propagates NaN), numpy's on CPU (faster on one thread).
    """
    top = local_top(scores)
    return any_anywhere(top is not None and math.isnan(top), scores)


def local_top(scores: Tensor) -> float | None:
    """The largest of this rank's scores (NaN if any is NaN), or None when it holds none."""
    part = local(scores)
    if not part.numel():
        return None
    if part.device.type == "cpu" and part.is_contiguous() and part.dtype in _NUMPY_FLOATS:
        return float(part.numpy().max())
    return float(part.max())


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


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
    top = local_top(scores)
    if any_anywhere(top is not None and not math.isfinite(top), scores):
        _check_weights(target)
    if any_anywhere(top is not None and math.isnan(top), scores):
        count = count_true(torch.isnan(scores))
        raise PluginError(
            f"{owner}: {count} scores for {target.name!r} are NaN; a criterion must return numbers "
            "(use -inf for 'prune first', +inf for 'never prune')"
        )
    return scores


def _check_weights(target: Target) -> None:
    """Raise :class:`WeightError` if ``target``'s own values hold NaN or infinities (on any rank)."""
    tensor = target.tensor
    part = local(tensor)
    broken = part.is_floating_point() and not bool(torch.isfinite(part).all())
    if not any_anywhere(broken, tensor):
        return
    nan = count_true(torch.isnan(tensor))
    inf = count_true(torch.isinf(tensor))
    raise WeightError(broken_weights(target.name, nan, inf))


def broken_weights(name: str, nan: int, inf: int) -> str:
    """The message of a :class:`~prunus.errors.WeightError`: parameter ``name`` holds ``nan`` NaN and ``inf``
    infinite values."""
    return (
        f"parameter {name!r} holds {nan} NaN and {inf} infinite values, so its entries cannot be "
        "ranked: the model's weights are broken (a diverged training run, a bad checkpoint), not the "
        "criterion; fix or reload them. The model was not changed"
    )
