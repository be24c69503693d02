"""The strategy under test and the examples the kit draws for it.

A :class:`StrategyCase` says which strategy to test and how to feed it (how to draw its options, what data
or gradients it needs). :class:`Subject` is that case resolved against a registry; :class:`Example` is one
drawn input: a few parameters (values, an earlier keep-mask, maybe gradients), the options and the amount.
Property authors (see :func:`prunus.testing.register_property`) work with these three.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch import Tensor, nn

from ..config import StrategyConfig
from ..errors import ConfigError
from ..registration import Registry, StrategyInfo
from ..registration import registry as global_registry
from ..strategy import ComposedStrategy, PruneContext, Strategy, Target
from . import generators as pst

__all__ = [
    "DataFn",
    "Example",
    "OptionsFn",
    "Param",
    "StrategyCase",
    "Subject",
    "UnitsFn",
    "configs",
    "describe",
    "eligible",
    "register_options",
    "register_units",
]

OptionsFn = Callable[[Sequence[Target], Registry], st.SearchStrategy[dict[str, Any]]]
"""``options(targets, registry)``: a Hypothesis strategy of option dicts for these targets, ``amount`` aside."""

DataFn = Callable[[Sequence[Target]], st.SearchStrategy[Any]]
"""``data(targets)``: a Hypothesis strategy of what the strategy reads from ``prune(..., data=...)``."""

UnitsFn = Callable[[Sequence[Target], Mapping[str, Any]], int]
"""``units(targets, options)``: how many units (entries, slices...) an int ``amount`` may count up to."""


@dataclass(frozen=True)
class StrategyCase:
    """A strategy to test and how to feed it.

    Attributes:
        name: the registered strategy name.
        options: draws the options other than ``amount`` (which the kit draws against the parameters' sizes);
            by default a function registered with :func:`register_options`, else drawn field by field from the
            strategy's config model (:func:`prunus.testing.generators.config_options`).
        data: draws what the strategy expects in ``prune(..., data=...)``; ``None`` passes no data.
        gradients: give every parameter a ``.grad`` before pruning (drawn values for drawn parameters, a real
            backward pass for real modules), for criteria that read gradients.
    """

    name: str
    options: OptionsFn | None = None
    data: DataFn | None = None
    gradients: bool = False


_OPTIONS: dict[str, OptionsFn] = {}
_UNITS: dict[str, UnitsFn] = {}


def register_options(name: str, options: OptionsFn) -> None:
    """Tell the kit how to draw the options of strategy ``name`` (those its config model cannot describe).

    A :class:`StrategyCase` given its own ``options`` overrides this.
    """
    _OPTIONS[name] = options


def register_units(granularity: str, units: UnitsFn) -> None:
    """Tell the kit how many units an int ``amount`` counts at ``granularity`` (so it draws valid counts).

    Without it the kit draws fractions only (and the count 0) for strategies at that granularity.
    """
    _UNITS[granularity] = units


def eligible(target: Target) -> Tensor:
    """The entries of ``target`` that may still be pruned: its prior keep-mask, or every entry."""
    if target.prior is not None:
        return target.prior
    return torch.ones(target.tensor.shape, dtype=torch.bool, device=target.tensor.device)


def slices(target: Target, dim: int) -> tuple[int, tuple[int, ...]]:
    """``dim`` made non-negative for ``target``, and the other dims (those a slice reduces over)."""
    ndim = target.tensor.dim()
    dim %= ndim
    return dim, tuple(d for d in range(ndim) if d != dim)


def _units_unstructured(targets: Sequence[Target], options: Mapping[str, Any]) -> int:
    return min(int(eligible(t).sum()) for t in targets)


def _units_structured(targets: Sequence[Target], options: Mapping[str, Any]) -> int:
    counts = []
    for target in targets:
        _, others = slices(target, int(options.get("dim", 0)))
        keep = eligible(target)
        counts.append(int((keep.any(dim=others) if others else keep).sum()))
    return min(counts)


def _units_global(targets: Sequence[Target], options: Mapping[str, Any]) -> int:
    return sum(int(eligible(t).sum()) for t in targets)


register_units("unstructured", _units_unstructured)
register_units("structured", _units_structured)
register_units("global", _units_global)


# -- examples ----------------------------------------------------------------------------------------------


class _Holder(nn.Module):
    """One parameter, as a layer would hold it."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)


def _format(tensor: Tensor) -> str:
    values = tensor.detach().cpu()
    if values.dtype != torch.bool:
        values = values.double()
    return repr(values.tolist())


@dataclass(frozen=True, eq=False)
class Param:
    """One drawn parameter: its values (pruned entries already zero), its earlier keep-mask and gradient."""

    name: str
    values: Tensor
    prior: Tensor | None = None
    grad: Tensor | None = None

    def describe(self) -> str:
        shape = "x".join(map(str, self.values.shape)) or "scalar"
        dtype = str(self.values.dtype).removeprefix("torch.")
        lines = [f"{self.name}: {dtype}[{shape}] = {_format(self.values)}"]
        if self.prior is not None:
            lines.append(f"  kept by an earlier prune: {_format(self.prior)}")
        if self.grad is not None:
            lines.append(f"  grad: {_format(self.grad)}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Example:
    """One input the kit draws: parameters, options and amount.

    Attributes:
        params: the parameters to prune.
        options: the strategy's options other than ``amount``.
        amount: the drawn ``amount`` (``None`` for a strategy without one).
        units: how many units an int amount could count up to here (``None`` when unknown).
        data: what the strategy gets as ``prune(..., data=...)``.
    """

    params: tuple[Param, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    amount: int | float | None = None
    units: int | None = None
    data: Any = None

    def all_options(self, **override: Any) -> dict[str, Any]:
        """The full options (``amount`` included), with ``override`` on top."""
        options = dict(self.options)
        if self.amount is not None:
            options["amount"] = self.amount
        options.update(override)
        return options

    def context(self) -> PruneContext:
        """A fresh model holding copies of the parameters, and the context a ``prune`` call would build."""
        model = nn.Module()
        targets = []
        for param in self.params:
            module_name, _, param_name = param.name.rpartition(".")
            holder = _Holder(param.values.clone())
            if param.grad is not None:
                holder.weight.grad = param.grad.clone()
            model.add_module(module_name, holder)
            prior = None if param.prior is None else param.prior.clone()
            targets.append(Target(param.name, holder, param_name, prior))
        return PruneContext(model=model, targets=targets, data=self.data)

    def describe(self) -> str:
        lines = [f"options: {self.all_options()!r}"]
        lines += [param.describe() for param in self.params]
        if self.data is not None:
            lines.append(f"data: {self.data!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()


def describe(example: object) -> str:
    """A readable account of a drawn example, for failure messages."""
    if isinstance(example, Example):
        return example.describe()
    if isinstance(example, tuple):
        return "\n".join(describe(part) for part in example)
    describe_method = getattr(example, "describe", None)
    if callable(describe_method):
        return str(describe_method())
    return repr(example)


# -- the subject -------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Subject:
    """A :class:`StrategyCase` resolved against a registry: what the properties test."""

    case: StrategyCase
    info: StrategyInfo
    registry: Registry

    @classmethod
    def resolve(
        cls,
        strategy: str | StrategyCase | type[Strategy] | Subject,
        *,
        registry: Registry | None = None,
    ) -> Subject:
        """The subject for a strategy name, a :class:`StrategyCase` or an unregistered Strategy subclass.

        A Strategy subclass is registered on ``registry`` if given, else on a private :class:`~prunus.Registry`.
        """
        if isinstance(strategy, Subject):
            return strategy
        if isinstance(strategy, type) and issubclass(strategy, Strategy):
            target = registry if registry is not None else Registry()
            if strategy.name not in target:
                target.register(strategy)
            return cls(StrategyCase(strategy.name), target.info(strategy.name), target)
        if isinstance(strategy, str):
            strategy = StrategyCase(strategy)
        if not isinstance(strategy, StrategyCase):
            raise InvalidArgument(
                f"cannot test {strategy!r}: give a registered strategy name, a prunus.testing.StrategyCase or "
                "a prunus.Strategy subclass (a configured strategy has fixed options, and the kit varies them)"
            )
        target = registry if registry is not None else global_registry
        return cls(strategy, target.info(strategy.name), target)

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def granularity(self) -> str:
        return self.info.granularity

    @property
    def deterministic(self) -> bool:
        return self.info.deterministic

    @property
    def composed(self) -> bool:
        """Whether it is a criterion at a granularity (so it has scores to check)."""
        return self.info.criterion is not None

    @property
    def amount_based(self) -> bool:
        """Whether it takes an ``amount`` option."""
        return "amount" in self.info.config.model_fields

    def options(self, targets: Sequence[Target]) -> st.SearchStrategy[dict[str, Any]]:
        """Option dicts for ``targets``, ``amount`` aside."""
        draw = self.case.options or _OPTIONS.get(self.name)
        if draw is not None:
            return draw(targets, self.registry).map(
                lambda options: {k: v for k, v in options.items() if k != "amount"}
            )
        # A composed config checks each option on its own; the granularity and criterion check the
        # combination when the strategy is built, so keep only the options that build.
        return _generic_options(self, pst.config_options(self.info.config, targets=targets))

    def _builds(self, options: Mapping[str, Any]) -> bool:
        stand_in = {"amount": 0.0} if self.amount_based else {}
        try:
            self.build(**stand_in, **options)
        except ConfigError:
            return False
        return True

    def units(self, targets: Sequence[Target], options: Mapping[str, Any]) -> int | None:
        """How many units an int ``amount`` may count up to, or ``None`` when the granularity is unknown."""
        count = _UNITS.get(self.granularity)
        return None if count is None else count(targets, options)

    def build(self, **options: Any) -> Strategy:
        """The strategy configured with ``options``, through the registry (so options are validated)."""
        return self.registry.get(self.name, **options)

    def compute(
        self, example: Example, context: PruneContext | None = None, **override: Any
    ) -> tuple[PruneContext, dict[str, Tensor]]:
        """Compute the masks of ``example`` (``override`` replaces options), as ``prune`` would."""
        context = context if context is not None else example.context()
        strategy = self.build(**example.all_options(**override))
        if isinstance(strategy, ComposedStrategy):
            # The plugin's own behaviour, not prunus's checks of it: the properties diagnose what it does.
            strategy = ComposedStrategy(
                strategy.config,
                strategy.criterion,
                strategy.granularity_component,
                self.registry.hooks.score_unchecked,
                strategy.name,
            )
        with torch.no_grad():
            masks = strategy.compute_masks(context)
        if not isinstance(masks, dict):
            raise AssertionError(
                f"compute_masks returned {type(masks).__name__}; it must return a dict of target name to mask"
            )
        return context, masks

    def examples(
        self, *, max_targets: int = 3, dtypes: Sequence[torch.dtype] = pst.DTYPES
    ) -> st.SearchStrategy[Example]:
        """Examples for this strategy: 1 to ``max_targets`` parameters, maybe pruned before, with options."""
        return _examples(self, max_targets=max_targets, dtypes=tuple(dtypes))

    def draw_options(
        self, draw: st.DrawFn, targets: Sequence[Target]
    ) -> tuple[dict[str, Any], int | float | None, int | None]:
        """Draw the options, the amount and the unit count for ``targets`` (inside a composite strategy)."""
        options = draw(self.options(targets))
        if not self.amount_based:
            return options, None, None
        # Without targets (a config on its own), a count of 0 or 1 fits any parameter.
        units = self.units(targets, options) if targets else 1
        amount = draw(pst.amounts(max_count=0 if units is None else units))
        return options, amount, units

    def __repr__(self) -> str:
        return f"<prunus.testing subject {self.name} ({self.granularity})>"


@functools.cache
def _generic_options(
    subject: Subject, options: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return options.filter(subject._builds)


@functools.cache
def _counts(high: int) -> st.SearchStrategy[int]:
    return st.integers(1, high)


@functools.cache
def _priors(shape: tuple[int, ...]) -> st.SearchStrategy[Tensor | None]:
    return st.none() | pst.masks(shape=shape)


@st.composite
def _examples(
    draw: st.DrawFn, subject: Subject, *, max_targets: int, dtypes: tuple[torch.dtype, ...]
) -> Example:
    count = draw(_counts(max_targets))
    params = []
    tensors = pst.tensors(dtypes=dtypes)
    for index in range(count):
        values = draw(tensors)
        prior = draw(_priors(tuple(values.shape)))
        if prior is not None:  # pruned entries read zero, as on a pruned model
            values = values.masked_fill(~prior, 0)
        grad = (
            draw(pst.tensors(dtypes=[values.dtype], shape=values.shape))
            if subject.case.gradients
            else None
        )
        params.append(Param(f"p{index}.weight", values, prior, grad))
    targets = Example(tuple(params)).context().targets
    options, amount, units = subject.draw_options(draw, targets)
    data = draw(subject.case.data(targets)) if subject.case.data is not None else None
    return Example(tuple(params), options, amount, units, data)


# -- options of the built-in strategies that their config cannot describe ----------------------------------


def _custom_mask_options(
    targets: Sequence[Target], registry: Registry
) -> st.SearchStrategy[dict[str, Any]]:
    optional = {t.name: pst.masks(shape=t.tensor.shape) for t in targets}
    return st.fixed_dictionaries({}, optional=optional).map(lambda masks: {"masks": masks})


def _threshold_options(
    targets: Sequence[Target], registry: Registry
) -> st.SearchStrategy[dict[str, Any]]:
    magnitudes = sorted({abs(float(v)) for t in targets for v in t.tensor.reshape(-1).tolist()})
    finite = [m for m in magnitudes if math.isfinite(m)] or [0.0]
    threshold = st.one_of(
        st.sampled_from(finite), st.floats(min_value=0.0, max_value=1e6), st.integers(0, 3)
    )
    return st.fixed_dictionaries({"threshold": threshold})


def _global_unstructured_options(
    targets: Sequence[Target], registry: Registry
) -> st.SearchStrategy[dict[str, Any]]:
    # Criteria that read calibration statistics need data this option draw does not give.
    builtin = [
        name
        for name in registry.criteria()
        if registry.provider("criterion", name).distribution == "prunus"
        and not registry.info(f"{name}_global").statistics
    ] or ["l1"]

    own = set(registry.info("global_unstructured").config.model_fields)

    def split(name: str, options: dict[str, Any]) -> dict[str, Any]:
        # Options of global_unstructured itself (min_keep) stay on top, the criterion's go below.
        top = {k: v for k, v in options.items() if k in own}
        rest = {k: v for k, v in options.items() if k not in own}
        return {**top, "criterion": name, "criterion_options": rest}

    def with_options(name: str) -> st.SearchStrategy[dict[str, Any]]:
        # global_unstructured builds `<criterion>_global`, whose options are amount, min_keep and the
        # criterion's.
        config = registry.info(f"{name}_global").config
        return pst.config_options(config, targets=targets).map(lambda options: split(name, options))

    return st.sampled_from(builtin).flatmap(with_options)


register_options("custom_mask", _custom_mask_options)
register_options("magnitude_threshold", _threshold_options)
register_options("global_unstructured", _global_unstructured_options)


def configs(
    strategy: str | StrategyCase,
    *,
    registry: Registry | None = None,
    targets: Sequence[Target] | None = None,
) -> st.SearchStrategy[StrategyConfig]:
    """Valid configs of a registered strategy, drawn from its pydantic model (or its options function).

    ``amount`` is drawn as a fraction, or a count that fits every one of ``targets`` (0 or 1 without them).

    Args:
        strategy: a registered name, or a :class:`~prunus.testing.StrategyCase`.
        registry: where the name is registered (``prunus.registry`` by default).
        targets: the parameters the options are for (for dims, counts and options functions that need them).
    """
    return _draw_config(Subject.resolve(strategy, registry=registry), tuple(targets or ()))


@st.composite
def _draw_config(draw: st.DrawFn, subject: Any, targets: tuple[Target, ...]) -> StrategyConfig:
    options, amount, _ = subject.draw_options(draw, targets)
    if amount is not None:
        options["amount"] = amount
    config: StrategyConfig = subject.info.config.model_validate(options)
    return config
