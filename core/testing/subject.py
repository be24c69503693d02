"""The strategy under test and the examples the kit draws for it.

A :class:`StrategyCase` says which strategy to test and how to feed it (how to draw its options, what data
or gradients it needs). :class:`Subject` is that case resolved against a registry; :class:`Example` is one
drawn input: a few parameters (values, the layer that holds them, an earlier keep-mask, maybe gradients), the
options and the amount. Property authors (see :func:`prunus.testing.register_property`) work with these three.

The parameters are drawn with 1 to 5 dims in every floating dtype, each held by a real layer (a Linear's
weight or bias, a norm's weight, a convolution's weight, transposed or grouped: see
:func:`~prunus.testing.generators.holders`). An earlier keep-mask is either none, a random one, or the mask an
earlier call of the strategy itself left (so the structured, N:M or block patterns a second call meets in
practice).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch import Tensor, nn

from ..component import Component
from ..config import StrategyConfig
from ..errors import AmountError, ConfigError
from ..registration import Registry, StrategyInfo
from ..registration import registry as global_registry
from ..statistics import Statistics
from ..strategy import ComposedStrategy, Granularity, PruneContext, Strategy, Target
from . import generators as pst
from .partitions import Layout, read_layout

__all__ = [
    "DataFn",
    "Example",
    "Layers",
    "OptionsFn",
    "Param",
    "StrategyCase",
    "Subject",
    "UnitsFn",
    "calibration_batch",
    "configs",
    "describe",
    "eligible",
    "register_granularity_options",
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
        inputs: the strategy runs the model on ``data``, a calibration batch in
            :func:`~prunus.plugin_api.call_model`'s form (an activation-aware criterion such as Wanda): on real
            models (left in train or eval mode) the kit passes their input batch as ``data``, and checks that
            computing masks leaves the model as it was (``calibration_leaves_model_alone``).
    """

    name: str
    options: OptionsFn | None = None
    data: DataFn | None = None
    gradients: bool = False
    inputs: bool = False


_OPTIONS: dict[str, OptionsFn] = {}
_GRANULARITY_OPTIONS: dict[str, OptionsFn] = {}
_UNITS: dict[str, UnitsFn] = {}


def register_options(name: str, options: OptionsFn) -> None:
    """Tell the kit how to draw the options of strategy ``name`` (those its config model cannot describe).

    A :class:`StrategyCase` given its own ``options`` overrides this.
    """
    _OPTIONS[name] = options


def register_granularity_options(granularity: str, options: OptionsFn) -> None:
    """Tell the kit how to draw the options of ``granularity`` (those its config model cannot describe).

    ``options(targets, registry)`` draws the granularity's own options (``amount`` aside); the criterion's
    options of every strategy at that granularity are drawn from its config model, field by field. Use it for
    options that depend on each other (the built-in ``nm`` draws ``n_keep < m_group`` this way).
    """
    _GRANULARITY_OPTIONS[granularity] = options


def register_units(granularity: str, units: UnitsFn) -> None:
    """Tell the kit how many units an int ``amount`` may count at ``granularity`` (so it draws valid counts).

    Rarely needed: by default the kit reads it from the granularity's declaration (the fewest units still kept
    in a group, see :class:`~prunus.plugin_api.Partition`). Without either it draws fractions only (and the
    count 0).
    """
    _UNITS[granularity] = units


def eligible(target: Target) -> Tensor:
    """The entries of ``target`` that may still be pruned: its prior keep-mask, or every entry."""
    if target.prior is not None:
        return target.prior
    return torch.ones(target.tensor.shape, dtype=torch.bool, device=target.tensor.device)


_USED: ContextVar[list[dict[str, Any]] | None] = ContextVar("prunus_testing_used", default=None)


def note_options(options: Mapping[str, Any]) -> None:
    """Record ``options`` as what a check computes with (as :meth:`Subject.compute` does by itself)."""
    used = _USED.get()
    if used is not None:
        used.append(dict(options))


@contextmanager
def recording_options() -> Iterator[list[dict[str, Any]]]:
    """Record the options of every :meth:`Subject.compute` inside the block (the last is what a check used)."""
    used: list[dict[str, Any]] = []
    token = _USED.set(used)
    try:
        yield used
    finally:
        _USED.reset(token)


# -- examples ----------------------------------------------------------------------------------------------


class _Holder(nn.Module):
    """One parameter named ``weight``, held by a plain module (for examples built by hand)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)


class Layers(nn.Module):
    """The layers holding an example's parameters, side by side (children ``p0``, ``p1``...).

    ``forward(*inputs)`` runs each layer on its own input (``None`` skips one), so a criterion that runs the
    model on a calibration batch (``StrategyCase(inputs=True)``) can run it on drawn parameters too: the kit
    passes :func:`calibration_batch` as ``data``, a tuple that :func:`~prunus.plugin_api.call_model` spreads.
    """

    def forward(self, *inputs: Tensor | None) -> list[Tensor | None]:
        layers = list(self.children())
        if len(inputs) != len(layers):
            raise TypeError(
                f"{len(layers)} layers side by side take {len(layers)} inputs, not {len(inputs)}"
            )
        return [None if x is None else layer(x) for layer, x in zip(layers, inputs, strict=True)]


def calibration_batch(
    params: Sequence[Param], seed: int, batch: int = 4
) -> tuple[Tensor | None, ...]:
    """A batch of inputs for each parameter's layer (``None`` for a layer the kit cannot feed).

    Normal values from a generator seeded with ``seed`` (the global one is left alone), in the parameter's dtype:
    ``(batch, in_features)`` for a Linear, ``(batch, C)`` for a norm, one output position's worth for a
    convolution (``(batch, in_channels, *kernel)``) and one input position for a transposed one.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs: list[Tensor | None] = []
    for param in params:
        holder, shape = param.holder, tuple(param.values.shape)
        if holder is None:
            inputs.append(None)
            continue
        if holder.kind == "linear":
            size: tuple[int, ...] = (batch, shape[1])
        elif holder.kind == "bias":
            size = (batch, 1)
        elif holder.kind in ("layernorm", "batchnorm"):
            size = (batch, shape[0])
        elif holder.kind == "conv":
            size = (batch, shape[1] * holder.groups, *shape[2:])
        else:  # a transposed convolution
            size = (batch, shape[0], *([1] * (len(shape) - 2)))
        inputs.append(torch.randn(size, generator=generator).to(param.values.dtype))
    return tuple(inputs)


def _format(tensor: Tensor) -> str:
    values = tensor.detach().cpu()
    if values.dtype != torch.bool:
        values = values.double()
    return repr(values.tolist())


@dataclass(frozen=True, eq=False)
class Param:
    """One drawn parameter: its values (pruned entries already zero), its layer, earlier keep-mask and gradient.

    Attributes:
        name: the qualified name, ``<module>.<parameter>`` (``p0.weight``, ``p1.bias``...).
        values: the parameter's values.
        prior: the keep-mask an earlier prune left, or ``None``.
        grad: the gradient to put in ``.grad``, or ``None``.
        holder: the layer holding it (:class:`~prunus.testing.generators.Holder`); ``None`` for a plain module.
    """

    name: str
    values: Tensor
    prior: Tensor | None = None
    grad: Tensor | None = None
    holder: pst.Holder | None = None

    def module(self) -> nn.Module:
        """A fresh module holding a copy of the values (and the gradient)."""
        values = self.values.clone()
        module = _Holder(values) if self.holder is None else self.holder.build(values)
        if self.grad is not None:
            getattr(module, self.name.rpartition(".")[2]).grad = self.grad.clone()
        return module

    def describe(self) -> str:
        shape = "x".join(map(str, self.values.shape)) or "scalar"
        dtype = str(self.values.dtype).removeprefix("torch.")
        layer = "" if self.holder is None else f" ({self.holder.describe(self.values.dim())})"
        lines = [f"{self.name}{layer}: {dtype}[{shape}] = {_format(self.values)}"]
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

    def context(self, *, prefix: str = "p") -> PruneContext:
        """A fresh model holding copies of the parameters, and the context a ``prune`` call would build.

        Args:
            prefix: the modules are named ``p0``, ``p1``... by default; another prefix renames them (the
                parameters then have other names, and nothing else changes).
        """
        model = Layers()
        targets = []
        renamed: dict[str, str] = {}
        for param in self.params:
            module_name, _, param_name = param.name.rpartition(".")
            if prefix != "p":
                module_name = prefix + module_name.removeprefix("p")
            holder = param.module()
            model.add_module(module_name, holder)
            prior = None if param.prior is None else param.prior.clone()
            renamed[param.name] = f"{module_name}.{param_name}"
            targets.append(Target(renamed[param.name], holder, param_name, prior))
        data = self.data
        if isinstance(data, Statistics):
            # Calibration statistics are keyed by parameter name: they follow a renaming.
            data = Statistics({renamed.get(name, name): dict(data[name]) for name in data})
        return PruneContext(model=model, targets=targets, data=data)

    def describe(self, options: Mapping[str, Any] | None = None) -> str:
        """The example in words; ``options``: the options a check used instead of the drawn ones."""
        lines = [f"options: {dict(options) if options is not None else self.all_options()!r}"]
        lines += [param.describe() for param in self.params]
        if self.data is not None:
            lines.append(f"data: {self.data!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()


def describe(example: object, options: Mapping[str, Any] | None = None) -> str:
    """A readable account of a drawn example, for failure messages (with the options a check used)."""
    if isinstance(example, Example):
        return example.describe(options)
    if isinstance(example, tuple) and example and isinstance(example[0], Example):
        return "\n".join([describe(example[0], options), *(describe(p) for p in example[1:])])
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

    def _component(self, kind: str, name: str) -> type[Component] | None:
        found = [c.cls for c in self.registry.components(kind, name) if c.name == name]  # type: ignore[arg-type]
        return found[0] if found else None

    def _component_config(self, kind: str, name: str) -> type[StrategyConfig] | None:
        cls = self._component(kind, name)
        return None if cls is None else cls.Config

    def granularity_class(self) -> type[Component] | None:
        """The registered class of the granularity the strategy prunes at (``None`` when there is none)."""
        return self._component("granularity", self.granularity)

    def granularity_fields(self) -> tuple[str, ...] | None:
        """The options of the registered granularity the strategy prunes at, or ``None`` when there is none."""
        config = self._component_config("granularity", self.granularity)
        return None if config is None else tuple(config.model_fields)

    def without_granularity(self) -> str | None:
        """Why the strategy has no granularity whose declaration the kit can read, or ``None`` when it has one."""
        fields = self.granularity_fields()
        if fields is None:
            return (
                f"{self.name}'s granularity {self.granularity!r} is not a registered granularity, so it "
                "declares no groups to check"
            )
        missing = set(fields) - set(self.info.config.model_fields)
        if not self.composed and missing:
            return (
                f"{self.name} prunes at granularity {self.granularity!r} but has none of its options "
                f"{sorted(missing)}, so it cannot be checked against that granularity's declaration"
            )
        return None

    def options(self, targets: Sequence[Target]) -> st.SearchStrategy[dict[str, Any]]:
        """Option dicts for ``targets``, ``amount`` aside."""
        draw = self.case.options or _OPTIONS.get(self.name)
        if draw is None and self.composed and self.granularity in _GRANULARITY_OPTIONS:
            draw = _granularity_options(self, _GRANULARITY_OPTIONS[self.granularity])
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

    def granularity_of(self, options: Mapping[str, Any]) -> Granularity | None:
        """The configured granularity the strategy prunes at with ``options``; ``None`` when it has none."""
        if self.without_granularity() is not None:
            return None
        if self.composed:
            strategy = self.build(**options)
            if not isinstance(strategy, ComposedStrategy):
                raise AssertionError(
                    f"{self.name} is registered as a criterion at a granularity but built a "
                    f"{type(strategy).__name__}, not a prunus ComposedStrategy"
                )
            return strategy.granularity_component
        fields = self.granularity_fields() or ()
        return self.registry.granularity(
            self.granularity, **{k: v for k, v in options.items() if k in fields}
        )

    def layout(self, example: Example, context: PruneContext | None = None) -> Layout:
        """The granularity's declaration (units, groups, counts) for ``example``, checked for consistency."""
        options = example.all_options()
        granularity = self.granularity_of(options)
        if granularity is None:
            raise AssertionError(f"{self.name} has no granularity: {self.without_granularity()}")
        context = context if context is not None else example.context()
        return read_layout(granularity, context.targets)

    def units(self, targets: Sequence[Target], options: Mapping[str, Any]) -> int | None:
        """How many units an int ``amount`` may count up to, or ``None`` when unknown.

        A function given to :func:`register_units` says; otherwise the granularity's declaration: the fewest
        units still kept in any group.
        """
        count = _UNITS.get(self.granularity)
        if count is not None:
            return count(targets, options)
        try:
            granularity = self.granularity_of({**options, "amount": 0.0})
            if granularity is None:
                return None
            layout = read_layout(granularity, targets)
        except (
            Exception
        ):  # a broken declaration fails its own property; here it only means "unknown"
            return None
        return layout.fewest_units()

    def build(self, **options: Any) -> Strategy:
        """The strategy configured with ``options``, through the registry (so options are validated)."""
        return self.registry.get(self.name, **options)

    def compute(
        self,
        example: Example,
        context: PruneContext | None = None,
        *,
        strategy: Strategy | None = None,
        **override: Any,
    ) -> tuple[PruneContext, dict[str, Tensor]]:
        """Compute the masks of ``example`` (``override`` replaces options), as ``prune`` would.

        Args:
            example: the drawn example.
            context: the context to compute in (default: a fresh one from ``example``).
            strategy: an already configured strategy to call (default: a fresh one with the options).
            override: options replacing the example's.
        """
        context = context if context is not None else example.context()
        options = example.all_options(**override)
        note_options(options)
        strategy = strategy if strategy is not None else self.build(**options)
        if type(strategy) is ComposedStrategy:
            # The plugin's own behaviour, not prunus's checks of it: the properties diagnose what it does.
            # (The criterion and granularity objects are kept, so a call on a reused strategy stays one.)
            strategy = ComposedStrategy(
                strategy.config,
                strategy.criterion,
                strategy.granularity_component,
                self.registry.hooks.score_unchecked,
                strategy.name,
            )
        try:
            with torch.no_grad():
                masks = strategy.compute_masks(context)
        except AmountError as error:
            amount = options.get("amount")
            if isinstance(amount, int) and example.units is not None and amount <= example.units:
                raise AssertionError(
                    f"the strategy refused amount={amount} ({error}), but by its granularity's declaration "
                    f"every group still keeps at least {example.units} units: does it count other units "
                    "than it declares (another dim, other blocks, the entries an earlier prune removed)?"
                ) from error
            raise
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
        amount, units = self.draw_amount(draw, targets, options)
        return options, amount, units

    def draw_data(self, draw: st.DrawFn, params: Sequence[Param], targets: Sequence[Target]) -> Any:
        """Draw what the strategy gets as ``data`` for ``params`` (their ``targets``): the case's data, or a
        :func:`calibration_batch` for a strategy that runs the model (``inputs=True``)."""
        if self.case.inputs:
            return calibration_batch(params, draw(st.integers(0, 2**16)))
        return draw(self.case.data(targets)) if self.case.data is not None else None

    def draw_amount(
        self, draw: st.DrawFn, targets: Sequence[Target], options: Mapping[str, Any]
    ) -> tuple[int | float | None, int | None]:
        """Draw the amount for ``targets`` and ``options`` (``None`` without an amount option), and the units."""
        if not self.amount_based:
            return None, None
        # Without targets (a config on its own), a count of 0 or 1 fits any parameter.
        units = self.units(targets, options) if targets else 1
        return draw(pst.amounts(max_count=0 if units is None else units)), units

    def __repr__(self) -> str:
        return f"<prunus.testing subject {self.name} ({self.granularity})>"


def _granularity_options(subject: Subject, granularity_options: OptionsFn) -> OptionsFn:
    """Options of a composed strategy: the granularity's from its function, the criterion's field by field."""
    criterion = subject.info.criterion
    assert criterion is not None
    config = subject._component_config("criterion", criterion)

    def options(targets: Sequence[Target], registry: Registry) -> st.SearchStrategy[dict[str, Any]]:
        own = granularity_options(targets, registry)
        if config is None or not config.model_fields:
            return own
        others = pst.config_options(config, targets=targets)
        return st.tuples(own, others).map(lambda parts: {**parts[1], **parts[0]})

    return options


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


def _pruned(param: Param, prior: Tensor | None) -> Param:
    """``param`` after an earlier prune left ``prior``: its pruned entries read zero."""
    if prior is None:
        return param
    return replace(param, values=param.values.masked_fill(~prior, 0), prior=prior)


_LONG = st.integers(0, 3).map(lambda n: n == 3)
"""Whether a drawn parameter is a long one (one time in four)."""


@functools.cache
def _tensors(dtypes: tuple[torch.dtype, ...], long: bool) -> st.SearchStrategy[Tensor]:
    if long:
        return pst.tensors(dtypes=dtypes, max_dims=3, max_side=17, max_numel=48)
    return pst.tensors(dtypes=dtypes)


_PRIOR_KINDS = st.sampled_from(["none", "random", "earlier call"])
"""Where the parameters' earlier keep-masks come from (shrinking towards none)."""


def _earlier_masks(subject: Subject, example: Example) -> dict[str, Tensor]:
    """The masks an earlier call of the strategy leaves on ``example``'s parameters (empty if it fails)."""
    try:
        context, masks = subject.compute(example)
    except (
        Exception
    ):  # a broken strategy fails the properties themselves; here it only gives no mask
        return {}
    shapes = {t.name: t.tensor.shape for t in context.targets}
    return {
        name: mask
        for name, mask in masks.items()
        if isinstance(mask, Tensor) and mask.dtype == torch.bool and mask.shape == shapes.get(name)
    }


@st.composite
def _examples(
    draw: st.DrawFn, subject: Subject, *, max_targets: int, dtypes: tuple[torch.dtype, ...]
) -> Example:
    count = draw(_counts(max_targets))
    params = []
    for index in range(count):
        # Now and then a long parameter (up to 17 along one dim), where wide groups, roundings to a multiple
        # and short trailing groups show.
        values = draw(_tensors(dtypes, draw(_LONG)))
        holder = draw(pst.holders(shape=values.shape))
        grad = (
            draw(pst.tensors(dtypes=[values.dtype], shape=values.shape))
            if subject.case.gradients
            else None
        )
        params.append(Param(f"p{index}.{holder.param_name}", values, None, grad, holder))
    targets = Example(tuple(params)).context().targets
    options = draw(subject.options(targets))
    data = subject.draw_data(draw, params, targets)

    kind = draw(_PRIOR_KINDS)
    priors: dict[str, Tensor | None] = {}
    if kind == "random":
        priors = {p.name: draw(_priors(tuple(p.values.shape))) for p in params}
    elif kind == "earlier call":
        earlier = draw(pst.amounts()) if subject.amount_based else None
        priors = dict(_earlier_masks(subject, Example(tuple(params), options, earlier, None, data)))
    if any(mask is not None for mask in priors.values()):
        params = [_pruned(p, priors.get(p.name)) for p in params]
        targets = Example(tuple(params)).context().targets
    amount, units = subject.draw_amount(draw, targets, options)
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
