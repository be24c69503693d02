"""The properties every pruning strategy must have, each a named, documented check.

A property is a function ``check(subject, example)`` that raises ``AssertionError`` with a message pointing at
what is wrong, plus the Hypothesis strategy of examples it runs on (by default
:meth:`Subject.examples <prunus.testing.subject.Subject.examples>`). Properties are looked up by name and by
the strategy's granularity (``registry.info(name).granularity``): a property registered for a granularity
replaces the generic property of the same name for strategies at that granularity, and a granularity may add
properties of its own. A granularity needs none: the group properties check every granularity against what it
declares (its :class:`~prunus.plugin_api.Partition` and counts); a plugin registers a property of its own for
a rule the declaration cannot state.

Generic properties (every strategy; ``requires`` narrows some):

===========================  ===============================================================================
``mask_shape_and_dtype``     each mask is a bool tensor with its parameter's shape, on its device
``scores_valid``             scores are floating, of the parameter's shape, on its device, never NaN
``no_revival``               a mask never keeps an entry an earlier mask pruned
``input_unchanged``          the parameters, earlier masks, gradients and data are not modified
``dtype_and_device_preserved``  parameters keep their dtype, device and identity; masks and scores their device
``global_rng_untouched``     the global torch random generator is not used (seeded strategies draw locally)
``same_seed_same_mask``      the same options (the same seed) give the same masks, whatever the global RNG state
``declared_deterministic``   a strategy declared deterministic does not depend on a seed or its parameters' names
``repeated_calls``           one configured strategy called again gives what a fresh one gives
``seed_changes_mask``        a seeded random strategy gives different masks for different seeds
``amount_zero_keeps_all``    ``amount=0`` and ``amount=0.0`` prune nothing
``monotonic_in_amount``      for a deterministic strategy, a larger amount prunes a superset
``config_json_roundtrip``    the config survives JSON (``model_dump_json`` / ``model_validate_json``)
``invalid_options_rejected`` unknown, missing, mistyped or out-of-range options raise ``prunus.ConfigError``
``prunes_real_modules``      on real layers and models: ``prune``, forward, zeros, report, ``remove``, ``restore``
``calibration_leaves_model_alone``  a strategy that runs the model on a calibration batch (``inputs=True``)
                             changes no parameter, buffer, mode, hook or RNG state, and repeats its masks
===========================  ===============================================================================

Group properties, for every strategy at a registered granularity, checked against the granularity's
declaration (its :class:`~prunus.plugin_api.Partition` of each parameter and its
:meth:`~prunus.plugin_api.Granularity.prune_counts`; see :mod:`prunus.testing.partitions`):

===========================  ===============================================================================
``granularity_declared``     the granularity declares its units, groups and counts, consistently
``exact_count``              every group prunes exactly its count (``amount`` rounded as torch rounds, by default)
``amount_one_prunes_all``    ``amount=1.0`` prunes every prunable unit
``whole_units``              every unit (an entry, a slice, a block...) is kept as it was or pruned whole
``criterion_respected``      in every group, every pruned unit scores no higher than every kept unit
``signed_scores_ranked``     the same three with scores the kit draws: signed, tied, infinite
===========================  ===============================================================================

The built-in granularities also have ``declared_as_documented`` (:mod:`prunus.testing.builtin_rules`): their
declarations equal the rules their documentation states, computed independently.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

import torch
from hypothesis import reject
from hypothesis import strategies as st
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError
from torch import Tensor, nn

from .. import masking
from ..config import NoOptions
from ..engine import masks as model_masks
from ..engine import prune, remove, restore
from ..errors import ConfigError, TargetError
from ..forward import evaluation_mode
from ..report import PruneReport
from ..strategy import ComposedStrategy, Criterion, PruneContext, Target
from ..targets import select_targets
from . import generators as pst
from .partitions import (
    Layout,
    check_counts,
    check_ranking,
    check_whole_units,
    closest_call,
    expected_counts,
    fail,
    read_layout,
)
from .subject import Example, Param, Subject, eligible, note_options

__all__ = [
    "Property",
    "Requirement",
    "fail",
    "full_masks",
    "property_names",
    "register_property",
    "resolve_properties",
]

Check = Callable[[Subject, Any], None]
Requirement = Callable[[Subject], str | None]
"""``requirement(subject)``: ``None`` when a property applies to ``subject``, else the reason it does not."""


@dataclass(frozen=True)
class Property:
    """A named check that every strategy it applies to must pass on every example.

    Attributes:
        name: the property's name, e.g. ``"exact_count"``.
        check: ``check(subject, example)``; raises ``AssertionError`` naming what is wrong.
        doc: what the property states (the first line is its summary).
        granularity: the granularity it is for, or ``None`` for every granularity.
        requires: requirements, each ``None`` when met or the reason the property does not apply.
        examples: the Hypothesis strategy of examples for a subject (default: ``subject.examples()``).
        max_examples: the examples it runs at the kit's default (fewer for properties with little to vary,
            more for those that cover much); a run asking for more or fewer examples scales it in proportion.
        scope: ``"strategy"``, or ``"granularity"`` for a property of the granularity alone (checked with the
            kit's own criterion or on the declaration): it runs once per granularity in a process, from a
            seed of the granularity's name, however many criteria are composed with it.
    """

    name: str
    check: Check
    doc: str = ""
    granularity: str | None = None
    requires: tuple[Requirement, ...] = ()
    examples: Callable[[Subject], st.SearchStrategy[Any]] | None = None
    max_examples: int | None = None
    scope: str = "strategy"

    @property
    def summary(self) -> str:
        """The first line of the doc, without reStructuredText markup."""
        first = self.doc.strip().splitlines()[0] if self.doc.strip() else self.name
        return first.replace("``", "")

    def skip_reason(self, subject: Subject) -> str | None:
        """Why the property does not apply to ``subject``, or ``None`` if it does."""
        for requirement in self.requires:
            reason = requirement(subject)
            if reason is not None:
                return reason
        return None

    def strategy(self, subject: Subject) -> st.SearchStrategy[Any]:
        return self.examples(subject) if self.examples is not None else subject.examples()


_REGISTRY: dict[tuple[str, str | None], Property] = {}


def register_property(
    name: str | None = None,
    *,
    granularity: str | None = None,
    requires: Sequence[Requirement] = (),
    examples: Callable[[Subject], st.SearchStrategy[Any]] | None = None,
    max_examples: int | None = None,
    scope: str = "strategy",
) -> Callable[[Check], Check]:
    """Register ``check(subject, example)`` as a property (decorator); its docstring documents it.

    Args:
        name: the property's name (default: the function's name).
        granularity: the granularity it is for (``None``: every one). A property for a granularity replaces the
            generic one of the same name at that granularity.
        requires: requirements on the subject (see :data:`Requirement`), e.g. :func:`needs_amount`.
        examples: the Hypothesis strategy of examples for a subject (default: ``subject.examples()``).
        max_examples: the examples it runs at the kit's default (scaled in proportion by other runs).
        scope: ``"granularity"`` for a property of the granularity alone (see :class:`Property`).
    """
    if scope not in ("strategy", "granularity"):
        raise ValueError(f"scope={scope!r} must be 'strategy' or 'granularity'")

    def decorate(check: Check) -> Check:
        key = (name or check.__name__, granularity)
        _REGISTRY[key] = Property(
            name=key[0],
            check=check,
            doc=(check.__doc__ or "").strip(),
            granularity=granularity,
            requires=tuple(requires),
            examples=examples,
            max_examples=max_examples,
            scope=scope,
        )
        return check

    return decorate


def property_names() -> list[str]:
    """Every registered property name, in registration order."""
    _load_extensions()
    return list(dict.fromkeys(name for name, _ in _REGISTRY))


_BUILTIN_EXTENSIONS = ("builtin_rules",)
"""Modules of this package that register the group properties of prunus's other built-in granularities."""


def _load_extensions() -> None:
    for name in _BUILTIN_EXTENSIONS:
        module = f"{__package__}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def resolve_properties(subject: Subject) -> tuple[list[Property], dict[str, str]]:
    """The properties that apply to ``subject``, and the others with the reason each does not apply."""
    _load_extensions()
    applicable: list[Property] = []
    skipped: dict[str, str] = {}
    for name in property_names():
        prop = _REGISTRY.get((name, subject.granularity)) or _REGISTRY.get((name, None))
        if prop is None:
            skipped[name] = (
                f"no {name!r} property for granularity {subject.granularity!r} "
                "(register one with prunus.testing.register_property)"
            )
            continue
        reason = prop.skip_reason(subject)
        if reason is None:
            applicable.append(prop)
        else:
            skipped[name] = reason
    return applicable, skipped


# -- requirements ------------------------------------------------------------------------------------------


def needs_amount(subject: Subject) -> str | None:
    """Applies to strategies with an ``amount`` option."""
    return None if subject.amount_based else f"{subject.name} has no amount option"


def needs_criterion(subject: Subject) -> str | None:
    """Applies to strategies composed of a criterion and a granularity."""
    if subject.composed:
        return None
    return f"{subject.name} is not a criterion at a granularity, so it has no scores to check"


def needs_determinism(subject: Subject) -> str | None:
    """Applies to strategies whose masks do not depend on a random seed."""
    return None if subject.deterministic else f"{subject.name} is random (deterministic=False)"


def needs_inputs(subject: Subject) -> str | None:
    """Applies to strategies that run the model on a calibration batch (``StrategyCase(inputs=True)``)."""
    if subject.case.inputs:
        return None
    return (
        f"{subject.name} reads no calibration batch (StrategyCase(name, inputs=True) says it does)"
    )


def needs_seed(subject: Subject) -> str | None:
    """Applies to random strategies with a ``seed`` option."""
    if subject.deterministic:
        return f"{subject.name} is deterministic"
    if "seed" not in subject.info.config.model_fields:
        return f"{subject.name} has no seed option"
    return None


def needs_granularity(subject: Subject) -> str | None:
    """Applies to strategies at a registered granularity (whose declaration the group properties check)."""
    return subject.without_granularity()


def needs_composition(subject: Subject) -> str | None:
    """Applies to strategies composed of a criterion and a registered granularity."""
    return needs_criterion(subject) or needs_granularity(subject)


def needs_json_config(subject: Subject) -> str | None:
    """Applies to strategies whose config can be written as JSON (not one holding tensors)."""
    try:
        subject.info.config.model_json_schema()
    except PydanticUserError as error:
        return f"the config of {subject.name} holds values JSON cannot carry ({error})"
    return None


# -- helpers -----------------------------------------------------------------------------------------------


def full_masks(context: PruneContext, masks: Mapping[str, Any]) -> dict[str, Tensor]:
    """Each target's full keep-mask after the call (a target left out keeps its earlier mask).

    Checks first that every returned mask is a bool tensor of its parameter's shape and device.
    """
    by_name = {t.name: t for t in context.targets}
    for name, mask in masks.items():
        target = by_name.get(name)
        if target is None:
            fail(
                f"returned a mask for {name!r}, which is not being pruned; targets: {list(by_name)}"
            )
        tensor = target.tensor
        if not isinstance(mask, Tensor):
            fail(f"the mask for {name!r} is a {type(mask).__name__}, not a torch.Tensor")
        if mask.dtype != torch.bool:
            fail(
                f"the mask for {name!r} has dtype {mask.dtype}; a mask must be torch.bool "
                "(True keeps an entry)"
            )
        if mask.shape != tensor.shape:
            fail(
                f"the mask for {name!r} has shape {tuple(mask.shape)}, but the parameter has shape "
                f"{tuple(tensor.shape)}"
            )
        if mask.device != tensor.device:
            fail(f"the mask for {name!r} is on {mask.device}, the parameter on {tensor.device}")
    return {t.name: masks[t.name] if t.name in masks else eligible(t) for t in context.targets}


def _indices(mask: Tensor, limit: int = 8) -> list[list[int]] | list[int]:
    found = mask.nonzero()
    if mask.dim() == 1:
        return [int(i) for i in found[:limit, 0]]
    return [[int(i) for i in row] for row in found[:limit]]


def _bits(tensor: Tensor) -> Tensor:
    """The tensor's bit pattern (so ``-0.0 != 0.0`` and a changed NaN payload shows)."""
    if tensor.dtype == torch.bool or not tensor.is_floating_point():
        return tensor
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return tensor.view(view)


def _same_bits(a: Tensor, b: Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _tensors_in(data: Any, path: str = "data", depth: int = 0) -> Iterator[tuple[str, Tensor]]:
    if isinstance(data, Tensor):
        yield path, data
    elif depth < 4 and isinstance(data, tuple | list):
        for index, item in enumerate(data):
            yield from _tensors_in(item, f"{path}[{index}]", depth + 1)
    elif depth < 4 and isinstance(data, dict):
        for key, item in data.items():
            yield from _tensors_in(item, f"{path}[{key!r}]", depth + 1)


def _criterion_of(subject: Subject, example: Example) -> Criterion:
    strategy = subject.build(**example.all_options())
    criterion = getattr(strategy, "criterion", None)
    if not isinstance(criterion, Criterion):
        fail(f"{subject.name} is registered as a composed strategy but has no criterion")
    return criterion


def criterion_scores(
    subject: Subject, example: Example
) -> tuple[PruneContext, Criterion, dict[str, Tensor]]:
    """The example's context, the subject's criterion and its scores of every target (through the hooks)."""
    context = example.context()
    criterion = _criterion_of(subject, example)
    with torch.no_grad():
        scores = {
            t.name: subject.registry.hooks.score_unchecked(criterion, t, context)
            for t in context.targets
        }
    return context, criterion, scores


# -- generic properties ------------------------------------------------------------------------------------


@register_property()
def mask_shape_and_dtype(subject: Subject, example: Example) -> None:
    """Each mask is a bool tensor with its parameter's shape, on its device, keyed by a target's name.

    ``True`` keeps an entry. A target the strategy leaves out of the dict is left as it is.
    """
    context, masks = subject.compute(example)
    full_masks(context, masks)


@register_property(requires=[needs_criterion], max_examples=15)
def scores_valid(subject: Subject, example: Example) -> None:
    """The criterion's scores are a floating tensor of the parameter's shape, on its device, with no NaN.

    ``+inf`` ("never prune") and ``-inf`` ("prune first") are allowed.
    """
    context, _, scores = criterion_scores(subject, example)
    for target in context.targets:
        score: Any = scores[target.name]
        if not isinstance(score, Tensor):
            fail(f"the scores for {target.name!r} are a {type(score).__name__}, not a torch.Tensor")
        shape = tuple(target.tensor.shape)
        if tuple(score.shape) != shape:
            fail(
                f"the scores for {target.name!r} have shape {tuple(score.shape)}, but the parameter has "
                f"shape {shape}; a criterion scores every entry"
            )
        if not score.is_floating_point():
            fail(
                f"the scores for {target.name!r} have dtype {score.dtype}; they must be floating point"
            )
        if score.device != target.tensor.device:
            fail(
                f"the scores for {target.name!r} are on {score.device}, the parameter on {target.tensor.device}"
            )
        nan = torch.isnan(score)
        if bool(nan.any()):
            fail(
                f"{int(nan.sum())} scores for {target.name!r} are NaN (at {_indices(nan)}); use -inf for "
                "'prune first' and +inf for 'never prune'"
            )


@register_property()
def no_revival(subject: Subject, example: Example) -> None:
    """A mask never keeps an entry an earlier mask pruned: a strategy prunes among ``target.prior``'s entries."""
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        if target.prior is None:
            continue
        revived = full[target.name] & ~target.prior
        if bool(revived.any()):
            fail(
                f"the mask for {target.name!r} revives {int(revived.sum())} entries an earlier prune removed "
                f"(at {_indices(revived)}); keep nothing that target.prior prunes"
            )


@register_property(max_examples=15)
def input_unchanged(subject: Subject, example: Example) -> None:
    """Computing masks modifies nothing: not the parameters, their earlier masks, gradients or the data."""
    context = example.context()
    before = []
    for target in context.targets:
        param = target.parameter
        grad = None if param.grad is None else param.grad.clone()
        prior = None if target.prior is None else target.prior.clone()
        before.append((target, param, param.detach().clone(), prior, grad))
    data = [(path, tensor, tensor.clone()) for path, tensor in _tensors_in(context.data)]
    subject.compute(example, context)
    for target, param, values, prior, grad in before:
        if getattr(target.module, target.param_name) is not param:
            fail(f"the parameter {target.name!r} was replaced by another object")
        if not _same_bits(param.detach(), values):
            changed = (
                (_bits(param.detach()) != _bits(values)) if param.shape == values.shape else None
            )
            where = "" if changed is None else f" at {_indices(changed)}"
            fail(
                f"the values of {target.name!r} were modified{where}: before {values.tolist()}, after "
                f"{param.detach().tolist()}; score a copy (e.g. target.tensor.abs(), not .abs_())"
            )
        if prior is not None and (target.prior is None or not torch.equal(target.prior, prior)):
            fail(f"the earlier mask (target.prior) of {target.name!r} was modified")
        if grad is not None and (param.grad is None or not _same_bits(param.grad, grad)):
            fail(f"the gradient of {target.name!r} was modified")
    for path, tensor, original in data:
        if not _same_bits(tensor, original):
            fail(f"{path} was modified")


@register_property(max_examples=15)
def dtype_and_device_preserved(subject: Subject, example: Example) -> None:
    """Parameters keep their dtype, device and identity; masks (and scores) are on the parameter's device."""
    context = example.context()
    before = [(t, t.parameter, t.parameter.dtype, t.parameter.device) for t in context.targets]
    _, masks = subject.compute(example, context)
    for target, param, dtype, device in before:
        now = getattr(target.module, target.param_name)
        if now is not param or now.dtype != dtype or now.device != device:
            fail(
                f"{target.name!r} was {dtype} on {device} and is now {now.dtype} on {now.device}; "
                "a strategy computes masks, the engine applies them"
            )
        mask = masks.get(target.name)
        if isinstance(mask, Tensor) and mask.device != device:
            fail(f"the mask for {target.name!r} is on {mask.device}, the parameter on {device}")
    if subject.composed:
        context, _, scores = criterion_scores(subject, example)
        for target in context.targets:
            score = scores[target.name]
            if isinstance(score, Tensor) and score.device != target.tensor.device:
                fail(
                    f"the scores for {target.name!r} are on {score.device}, the parameter on {target.tensor.device}"
                )


@register_property(max_examples=10)
def global_rng_untouched(subject: Subject, example: Example) -> None:
    """Computing masks leaves torch's global random generator alone.

    A random strategy draws from ``target.generator(seed)``, so the same seed gives the same mask whatever else
    the program does, and the caller's random state is not disturbed.
    """
    state = torch.get_rng_state()
    subject.compute(example)
    if not torch.equal(state, torch.get_rng_state()):
        fail(
            "computing masks drew from torch's global random generator; draw from a local generator, "
            "target.generator(seed), so that the seed option decides the mask"
        )


def _differ(
    first: Mapping[str, Any], again: Mapping[str, Any], names: Mapping[str, str]
) -> str | None:
    """How two results of ``compute`` differ (``names`` maps the first's target names to the second's)."""
    if {names.get(n, n) for n in first} != set(again):
        return f"masked different targets: {sorted(first)} and {sorted(again)}"
    for name, mask in first.items():
        other = again[names.get(name, name)]
        if isinstance(mask, Tensor) and isinstance(other, Tensor) and not torch.equal(mask, other):
            count = int((mask != other).sum()) if mask.shape == other.shape else "all"
            return f"gave different masks for {name!r} ({count} entries differ)"
    return None


@register_property(max_examples=15)
def same_seed_same_mask(subject: Subject, example: Example) -> None:
    """The same options (for a random strategy: the same seed) give the same masks, whatever the global RNG state.

    A random strategy draws from ``target.generator(seed)``: its masks follow from the options, not from
    torch's global random state, which the program around it may have set to anything.
    """
    _, first = subject.compute(example)
    _, again = subject.compute(example)
    differ = _differ(first, again, {})
    if differ is not None:
        cause = (
            "the seed option must decide the mask"
            if "seed" in subject.info.config.model_fields
            else "the masks must follow from the parameters and the options alone (is something kept "
            "from one call to the next, or drawn at random?)"
        )
        fail(f"computing twice with the same options {example.all_options()!r} {differ}; {cause}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2**31 - 1)
        _, reseeded = subject.compute(example)
    differ = _differ(first, reseeded, {})
    if differ is not None:
        fail(
            f"after torch.manual_seed(2**31 - 1) the same options {differ}: the masks depend on torch's global "
            "random state; a random strategy draws from a local generator, target.generator(seed)"
        )


@register_property(requires=[needs_determinism], max_examples=10)
def declared_deterministic(subject: Subject, example: Example) -> None:
    """A strategy declared deterministic gives masks that depend on the parameters and the options alone.

    The flag is checked, not trusted: renaming the parameters (``p0.weight`` to ``q0.weight``), or changing an
    option named ``seed``, must not change the masks. A criterion seeded by a parameter's name or by a seed
    (``target.generator(...)``) is random: it sets ``deterministic = False``, and the kit checks its seed.
    """
    options = example.all_options()
    if not subject.build(**options).deterministic:
        return  # this configuration declares itself random (global_unstructured with a random criterion)
    context, first = subject.compute(example)
    renamed_context = example.context(prefix="q")
    names = {a.name: b.name for a, b in zip(context.targets, renamed_context.targets, strict=True)}
    # Options that name the targets (custom_mask's masks) do not survive a renaming.
    differ = None
    if not any(name in repr(options) for name in names):
        _, renamed = subject.compute(example, renamed_context)
        differ = _differ(first, renamed, names)
    if differ is not None:
        fail(
            f"renaming the parameters (p0 to q0, ...) {differ}: the masks depend on the parameters' names, so "
            "the strategy draws at random (target.generator seeds from the name); set deterministic = False "
            "on the criterion (or strategy)"
        )
    if "seed" not in subject.info.config.model_fields:
        return
    seed = options.get("seed", subject.info.config.model_fields["seed"].default)
    for other in (seed + 1, seed - 1) if isinstance(seed, int) else ():
        try:
            _, reseeded = subject.compute(example, seed=other)
        except ConfigError:
            continue
        differ = _differ(first, reseeded, {})
        if differ is not None:
            fail(
                f"seed={other} instead of seed={seed} {differ}, but the strategy is declared deterministic; "
                "set deterministic = False on the criterion (or strategy) that reads the seed"
            )
        return


@dataclass(frozen=True, eq=False)
class RepeatedExample:
    """Two calls of one configured strategy: on ``example``, then on its parameters with other values."""

    example: Example
    continues: bool

    def describe(self, options: Mapping[str, Any] | None = None) -> str:
        second = (
            "the same parameters again, values reversed, keeping the first call's masks"
            if self.continues
            else "the same parameters again, values reversed, nothing pruned"
        )
        return (
            f"{self.example.describe(options)}\nsecond call of the same strategy object: {second}"
        )


def _repeated_examples(subject: Subject) -> st.SearchStrategy[RepeatedExample]:
    return st.builds(RepeatedExample, subject.examples(), st.booleans())


def _second_call(example: Example, full: Mapping[str, Tensor], continues: bool) -> Example:
    """``example``'s parameters with their values reversed, after the first call's masks or afresh."""
    params = []
    for param in example.params:
        dims = tuple(range(param.values.dim()))
        values = param.values.flip(dims)
        grad = None if param.grad is None else param.grad.flip(dims)
        prior = full[param.name] if continues else None
        if prior is not None:
            values = values.masked_fill(~prior, 0)
        params.append(replace(param, values=values, prior=prior, grad=grad))
    return replace(example, params=tuple(params))


@register_property(examples=_repeated_examples, max_examples=15)
def repeated_calls(subject: Subject, drawn: RepeatedExample) -> None:
    """One configured strategy, called again, gives what a fresh one gives: nothing carries over between calls.

    ``prune(model, strategy)`` takes a configured strategy and may be called with it many times (on other
    models, or again on the same one): scores or counts memoised on the strategy, its criterion or its
    granularity must not leak from one call into the next.
    """
    example = drawn.example
    strategy = subject.build(**example.all_options())
    context, masks = subject.compute(example, strategy=strategy)
    # An int amount may count more than a first call leaves: only a fraction continues from its masks.
    continues = drawn.continues and not isinstance(example.amount, int)
    second = _second_call(example, full_masks(context, masks), continues)
    _, reused = subject.compute(second, strategy=strategy)
    _, fresh = subject.compute(second)
    differ = _differ(fresh, reused, {})
    if differ is not None:
        fail(
            f"called a second time, on other values, the same configured strategy {differ} from a fresh one: "
            "something of the first call was kept (scores or counts memoised on the strategy, its criterion "
            "or its granularity?); compute everything from the context of each call"
        )


def _seed_examples(subject: Subject) -> st.SearchStrategy[Example]:
    @st.composite
    def draw(draw: st.DrawFn) -> Example:
        # Large enough that two seeds giving the same mask by chance is out of the question.
        values = torch.arange(1, 257, dtype=torch.float32).reshape(16, 16)
        grad = values.flip(0) if subject.case.gradients else None
        param = Param("p0.weight", values, None, grad, pst.Holder("linear"))
        targets = Example((param,)).context().targets
        options, _, units = subject.draw_options(draw, targets)
        data = subject.draw_data(draw, (param,), targets)
        amount = 0.5 if subject.amount_based else None
        return Example((param,), options, amount, units, data)

    return draw()


@register_property(requires=[needs_seed], examples=_seed_examples, max_examples=3)
def seed_changes_mask(subject: Subject, example: Example) -> None:
    """A random strategy gives different masks for different seeds (on a 16x16 parameter, pruning half)."""
    seen = set()
    for seed in range(6):
        context, masks = subject.compute(example, seed=seed)
        seen.add(tuple((name, tuple(m.reshape(-1).tolist())) for name, m in sorted(masks.items())))
    if len(seen) < 2:
        full = full_masks(context, masks)
        if all(bool(m.all()) or not bool(m.any()) for m in full.values()):
            reject()  # options that keep or prune everything leave nothing for the seed to decide
        fail("seeds 0 to 5 all gave the same mask: the seed option is ignored")


@register_property(requires=[needs_amount], max_examples=10)
def amount_zero_keeps_all(subject: Subject, example: Example) -> None:
    """``amount=0`` (a count) and ``amount=0.0`` (a fraction) prune nothing."""
    for amount in (0, 0.0):
        context, masks = subject.compute(example, amount=amount)
        full = full_masks(context, masks)
        for target in context.targets:
            pruned = eligible(target) & ~full[target.name]
            if bool(pruned.any()):
                fail(
                    f"amount={amount!r} pruned {int(pruned.sum())} entries of {target.name!r} (at {_indices(pruned)})"
                )


def _two_amounts(subject: Subject) -> st.SearchStrategy[tuple[Example, int | float]]:
    def second(example: Example) -> st.SearchStrategy[tuple[Example, int | float]]:
        other: st.SearchStrategy[int | float]
        if isinstance(example.amount, int):
            other = st.integers(0, example.units or 0)
        else:
            other = pst.amounts()
        return other.map(lambda amount: (example, amount))

    return subject.examples().flatmap(second)


@register_property(requires=[needs_amount, needs_determinism], examples=_two_amounts)
def monotonic_in_amount(subject: Subject, drawn: tuple[Example, int | float]) -> None:
    """A deterministic strategy prunes a superset when asked for more: masks shrink as ``amount`` grows."""
    example, other = drawn
    assert example.amount is not None
    if not subject.build(**example.all_options()).deterministic:
        return  # this configuration declares itself random (global_unstructured with a random criterion)
    low, high = sorted([example.amount, other])
    context, masks_low = subject.compute(example, amount=low)
    low_full = full_masks(context, masks_low)
    context, masks_high = subject.compute(example, amount=high)
    high_full = full_masks(context, masks_high)
    for target in context.targets:
        unpruned = ~low_full[target.name] & high_full[target.name]
        if bool(unpruned.any()):
            fail(
                f"amount={low!r} prunes entries of {target.name!r} at {_indices(unpruned)} that the larger "
                f"amount={high!r} keeps; masks must shrink as the amount grows"
            )


def _wrong_values(subject: Subject, name: str) -> list[Any]:
    """Values of the wrong type for option ``name``, judged by its annotation in strict mode."""
    info = subject.info.config.model_fields[name]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(
            annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True)
        )
    except (PydanticUserError, TypeError):
        return []
    wrong = []
    for value in ("not-a-value", True, 1.5, None, [1]):
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError:
            wrong.append(value)
    return wrong


def _invalid_options(subject: Subject, example: Example) -> list[tuple[str, dict[str, Any]]]:
    base = example.all_options()
    fields = subject.info.config.model_fields
    cases = [("an unknown option", {**base, "not_an_option": 1})]
    for name, info in fields.items():
        if info.is_required():
            cases.append(
                (
                    f"the required option {name!r} missing",
                    {k: v for k, v in base.items() if k != name},
                )
            )
        for value in _wrong_values(subject, name):
            cases.append((f"{name}={value!r}", {**base, name: value}))
    if "amount" in fields:
        for value in (-0.1, 1.5, math.inf, math.nan, -1, True, "0.5", None):
            cases.append((f"amount={value!r}", {**base, "amount": value}))
    return cases


@register_property(max_examples=5)
def invalid_options_rejected(subject: Subject, example: Example) -> None:
    """Unknown, missing, mistyped or out-of-range options raise ``prunus.ConfigError`` when the strategy is made.

    Configs are strict: ``True`` is not an amount, ``"0.5"`` is not a number, an amount is a fraction in
    [0, 1] or an int count >= 0, and a misspelled option is an error, not a silent default.
    """
    for what, options in _invalid_options(subject, example):
        try:
            subject.build(**options)
        except ConfigError:
            continue
        except Exception as error:
            fail(
                f"{what} raised {type(error).__name__}: {error}; invalid options must raise prunus.ConfigError "
                "(validate them with the strategy's Config model)"
            )
        fail(f"{what} was accepted; it must raise prunus.ConfigError")


@register_property(requires=[needs_json_config], max_examples=10)
def config_json_roundtrip(subject: Subject, example: Example) -> None:
    """The config survives JSON: ``model_validate_json(config.model_dump_json())`` equals it, types included.

    So a strategy's options can be stored in a file or a report and built again.
    """
    config_model = subject.info.config
    config = config_model.model_validate(example.all_options())
    text = config.model_dump_json()
    try:
        back = config_model.model_validate_json(text)
    except ValidationError as error:
        fail(f"the config {dict(config)!r} dumps to {text} but does not load back: {error}")
    for name, value in config:
        again = getattr(back, name)
        if again != value or type(again) is not type(value):
            fail(
                f"option {name}={value!r} ({type(value).__name__}) comes back from JSON {text} as {again!r} "
                f"({type(again).__name__})"
            )
    subject.build(**json.loads(text))


# -- real modules ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RealExample:
    """A real model to prune: which parameters, an earlier mask on some, and the options."""

    model: nn.Module
    inputs: Tensor
    every_parameter: bool
    priors: dict[str, Tensor]
    options: dict[str, Any]
    data: Any
    text: str

    def describe(self, options: Mapping[str, Any] | None = None) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def _every_parameter(module: nn.Module, name: str) -> bool:
    return True


def _real_examples(
    subject: Subject, kinds: Sequence[str] = pst.MODEL_KINDS
) -> st.SearchStrategy[RealExample]:
    @st.composite
    def draw(draw: st.DrawFn) -> RealExample:
        model, inputs = draw(pst.models(kinds=kinds, dtypes=pst.DTYPES))
        every = draw(st.booleans())
        try:
            chosen = select_targets(model, filter_fn=_every_parameter if every else None)
        except TargetError:  # a lone BatchNorm has no Linear or Conv weight
            every = True
            chosen = select_targets(model, filter_fn=_every_parameter)
        priors: dict[str, Tensor] = {}
        if draw(st.booleans()):
            for name, module, pname in chosen:
                if draw(st.booleans()):
                    priors[name] = draw(pst.masks(shape=getattr(module, pname).shape))
        targets = [Target(n, m, p, priors.get(n)) for n, m, p in chosen]
        options, amount, _ = subject.draw_options(draw, targets)
        if amount is not None:
            options["amount"] = amount
        data = draw(subject.case.data(targets)) if subject.case.data is not None else None
        mode = ""
        if subject.case.inputs:
            # The calibration batch is the model's own (at least two rows: BatchNorm in train mode needs them);
            # the model comes in either mode, as users leave it.
            data = torch.cat([inputs, inputs * 0.5])
            model.train(draw(st.booleans()))
            mode = ", in train mode" if model.training else ", in eval mode"
        dtype = next(model.parameters()).dtype
        lines = [
            f"model ({str(dtype).removeprefix('torch.')}{mode}): {model!r}",
            f"inputs: shape {tuple(inputs.shape)}",
            f"targets: {'every parameter' if every else 'the Linear and Conv weights'}",
            f"options: {options!r}",
        ]
        lines += [f"kept by an earlier prune of {n}: {_format(m)}" for n, m in priors.items()]
        return RealExample(model, inputs, every, priors, options, data, "\n".join(lines))

    return draw()


def _format(tensor: Tensor) -> str:
    return repr(tensor.tolist())


def _prune_before(model: nn.Module, priors: dict[str, Tensor], subject: Subject) -> None:
    """Prune some parameters first, as an earlier ``prune`` call would have."""
    if "custom_mask" in subject.registry:
        prune(model, "custom_mask", include=list(priors), masks=priors, registry=subject.registry)
        return
    modules = {
        name: (module, pname) for name, module, pname in select_targets(model, include=list(priors))
    }
    for name, mask in priors.items():
        module, pname = modules[name]
        masking.attach_mask(module, pname, mask)


def _backward(model: nn.Module, inputs: Tensor) -> None:
    model.zero_grad()
    with torch.enable_grad(), evaluation_mode(model):
        model(inputs).float().square().mean().backward()


def _model_state(model: nn.Module) -> dict[str, Any]:
    """What a calibration forward must leave alone: values, buffers, modes, hooks and the global RNG."""
    return {
        "parameters": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in model.named_modules()
        },
        "grad": torch.is_grad_enabled(),
        "rng": torch.get_rng_state(),
    }


def _state_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changes = []
    for kind in ("parameters", "buffers"):
        old, new = before[kind], after[kind]
        if old.keys() != new.keys():
            changes.append(f"the model's {kind} changed from {sorted(old)} to {sorted(new)}")
            continue
        changes += [
            f"the {kind[:-1]} {name!r} was modified (a forward in train mode updates BatchNorm's running "
            "statistics: run the calibration batch in prunus.plugin_api.evaluation_mode)"
            if kind == "buffers"
            else f"the parameter {name!r} was modified"
            for name in old
            if not _same_bits(old[name], new[name])
        ]
    flipped = [
        n or "the model" for n, t in before["training"].items() if after["training"].get(n) != t
    ]
    if flipped:
        changes.append(
            f"the training flag of {flipped[:4]} changed (model.eval() without putting it back: use "
            "prunus.plugin_api.evaluation_mode, which restores every module's own flag)"
        )
    hooked = [n or "the model" for n, h in before["hooks"].items() if after["hooks"].get(n) != h]
    if hooked:
        changes.append(
            f"hooks were left registered on {hooked[:4]} (remove their handles in a finally)"
        )
    if before["grad"] != after["grad"]:
        changes.append("autograd's grad mode was left changed")
    if not torch.equal(before["rng"], after["rng"]):
        changes.append(
            "torch's global random generator was advanced (Dropout in train mode, or a random draw: run the "
            "batch in evaluation_mode, draw from a torch.Generator of your own)"
        )
    return changes


def _stateful_examples(subject: Subject) -> st.SearchStrategy[RealExample]:
    # Models with running statistics (BatchNorm), whose forward in train mode shows, and a plain Linear.
    return _real_examples(subject, kinds=("batchnorm", "sequential", "residual", "linear"))


@register_property(requires=[needs_inputs], examples=_stateful_examples, max_examples=15)
def calibration_leaves_model_alone(subject: Subject, example: RealExample) -> None:
    """A strategy that runs the model on a calibration batch leaves the model as it was, and its masks too.

    On real models with their input batch as ``data`` (with BatchNorm layers, or a Linear), left in train or eval
    mode: computing masks changes no
    parameter, buffer (BatchNorm's running statistics), module's training flag, registered hook, grad mode or
    torch's global random state; and a second call on the unchanged model gives the same masks (scores that
    depend on Dropout's draws or on statistics the first call moved do not).
    """
    model = example.model
    chosen = select_targets(model, filter_fn=_every_parameter if example.every_parameter else None)
    targets = [Target(n, m, p) for n, m, p in chosen]
    options = {k: v for k, v in example.options.items()}

    def call() -> dict[str, Tensor]:
        context = PruneContext(model=model, targets=targets, data=example.data)
        _, masks = subject.compute(Example((), options), context)
        return {name: mask.detach().clone() for name, mask in masks.items()}

    before = _model_state(model)
    first = call()
    changes = _state_changes(before, _model_state(model))
    if changes:
        fail("computing masks changed the model: " + "; ".join(changes))
    second = call()
    differ = [n for n in first if n not in second or not torch.equal(first[n], second[n])]
    if differ:
        fail(
            f"a second call on the unchanged model gave other masks for {differ[:4]}: the scores depend on "
            "something the forward draws or changes"
        )


@register_property(examples=_real_examples, max_examples=15)
def prunes_real_modules(subject: Subject, example: RealExample) -> None:
    """On real layers and models, ``prune`` works end to end.

    Linear, Conv1d/2d, grouped conv, BatchNorm, Sequential, a residual and an attention block, in every dtype,
    some parameters pruned before: after ``prunus.prune`` the forward pass runs, parameters keep their dtype and
    device, pruned entries read zero and stay masked, nothing pruned earlier is revived, the report's counts and
    sparsity equal the zeros counted, ``remove`` keeps the zeros and drops the masks, and ``restore`` brings
    back the original values bit for bit.
    """
    model, inputs = example.model, example.inputs
    filter_fn = _every_parameter if example.every_parameter else None
    registry = subject.registry
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    # The kit's own forwards leave the model as they found it (a model may come in train mode).
    with torch.no_grad(), evaluation_mode(model):
        shape = model(inputs).shape
    if example.priors:
        _prune_before(model, example.priors, subject)
    if subject.case.gradients:
        _backward(model, inputs)
    params = dict(model.named_parameters())
    kinds = {name: (p.dtype, p.device) for name, p in params.items()}

    report = prune(
        model,
        subject.name,
        filter_fn=filter_fn,
        data=example.data,
        registry=registry,
        **example.options,
    )

    assert isinstance(report, PruneReport)
    with torch.no_grad(), evaluation_mode(model):
        out = model(inputs)
    if out.shape != shape:
        fail(f"the output shape changed from {tuple(shape)} to {tuple(out.shape)}")
    for name, param in model.named_parameters():
        if not isinstance(param, nn.Parameter) or params[name] is not param:
            fail(f"{name!r} is no longer the same nn.Parameter")
        if (param.dtype, param.device) != kinds[name]:
            fail(f"{name!r} changed from {kinds[name]} to {(param.dtype, param.device)}")
    masks = model_masks(model)
    for name, prior in example.priors.items():
        if name in masks and bool((masks[name] & ~prior).any()):
            fail(f"the mask of {name!r} revives entries the earlier prune removed")
    for entry in report.parameters:
        mask = masks.get(entry.name)
        if mask is None:
            fail(f"the report lists {entry.name!r} but the model carries no mask for it")
        value = params[entry.name].detach()
        nonzero = ~mask & (value != 0)
        if bool(nonzero.any()):
            fail(f"{int(nonzero.sum())} pruned entries of {entry.name!r} do not read zero")
        zeros = int((value[~mask] == 0).sum())
        if entry.pruned != int((~mask).sum()) or entry.pruned != zeros:
            fail(
                f"the report says {entry.pruned} entries of {entry.name!r} are pruned; the mask prunes "
                f"{int((~mask).sum())} and {zeros} of them read zero"
            )
        if entry.numel != value.numel() or not math.isclose(entry.sparsity, zeros / value.numel()):
            fail(
                f"the report's sparsity {entry.sparsity} for {entry.name!r} is not {zeros}/{value.numel()}"
            )
    if not masks:
        return  # nothing was pruned, so there is nothing to remove or restore

    removed = copy.deepcopy(model)
    values = {name: p.detach().clone() for name, p in removed.named_parameters()}
    remove(removed)
    if model_masks(removed):
        fail("remove left masks on the model")
    for name, param in removed.named_parameters():
        if not isinstance(param, nn.Parameter) or not _same_bits(param.detach(), values[name]):
            fail(
                f"remove changed the values of {name!r}; it must keep the zeros and the kept values"
            )
    for module in removed.modules():
        if any(key.startswith(masking.MASK_PREFIX) for key in module._buffers):
            fail(f"remove left a mask buffer on {type(module).__name__}")
    with torch.no_grad(), evaluation_mode(removed):
        removed(inputs)

    restore(model)
    for name, param in model.named_parameters():
        if not _same_bits(param.detach(), original[name]):
            differ = int((_bits(param.detach()) != _bits(original[name])).sum())
            fail(
                f"restore did not bring back the original values of {name!r}: {differ} entries differ"
            )


# -- group properties: checked against the granularity's declaration -----------------------------------------


@register_property(requires=[needs_granularity], max_examples=10, scope="granularity")
def granularity_declared(subject: Subject, example: Example) -> None:
    """The granularity declares its units, groups and counts: a ``Partition`` of each parameter, ``prune_counts``.

    Every mask is checked against them (``exact_count``, ``whole_units``, ``criterion_respected``): a
    granularity that declares nothing, or something inconsistent (a unit across groups, a count out of range),
    fails here with what to declare.
    """
    expected_counts(subject.layout(example))


@register_property(requires=[needs_granularity])
def exact_count(subject: Subject, example: Example) -> None:
    """Every group prunes exactly the units its count asks, among its units still kept.

    By default a group prunes ``amount``'s count of its units still kept: an int is a count, a float a fraction
    rounded with Python's ``round`` (half to even), as torch rounds. A granularity with another rule (N:M keeps
    ``n_keep`` of each group, ``aligned`` rounds to a multiple) declares it in ``prune_counts``.
    """
    context, masks = subject.compute(example)
    layout = subject.layout(example, context)
    check_counts(layout, full_masks(context, masks))
    if example.amount is None:
        return
    for amount in _probe_amounts(layout.eligible(), example.units):
        context, masks = subject.compute(example, amount=amount)
        check_counts(
            subject.layout(replace(example, amount=amount), context), full_masks(context, masks)
        )


def _probe_amounts(eligible: Tensor, units: int | None) -> list[int | float]:
    """Amounts where miscounting shows, for groups of ``eligible`` units: fractions landing on a half (even
    below, where half-to-even rounds down), on a quarter above and below, and the count 1."""
    largest = int(eligible.max()) if eligible.numel() else 0
    probes: list[int | float] = []
    if largest:
        below = largest // 2 - (largest // 2) % 2
        probes += [(below + part) / largest for part in (0.5, 0.75, 0.25)]
    if units is not None and units >= 2:
        probes.append(1)
    return probes


@register_property("amount_one_prunes_all", requires=[needs_amount], max_examples=10)
def amount_one_prunes_all(subject: Subject, example: Example) -> None:
    """``amount=1.0`` prunes everything prunable, whatever the unit (entry, slice, block, all parameters)."""
    context, masks = subject.compute(example, amount=1.0)
    full = full_masks(context, masks)
    for target in context.targets:
        kept = full[target.name]
        if bool(kept.any()):
            fail(
                f"amount=1.0 kept {int(kept.sum())} entries of {target.name!r} (at {_indices(kept)})"
            )


@register_property(requires=[needs_granularity])
def whole_units(subject: Subject, example: Example) -> None:
    """Every unit the granularity declares (an entry, a slice, a block...) is kept as it was or pruned whole."""
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    check_whole_units(subject.layout(example, context), full)


@register_property(requires=[needs_composition])
def criterion_respected(subject: Subject, example: Example) -> None:
    """In every group, every unit pruned now scores no higher than every unit kept.

    A unit's score is the criterion's ``reduce`` over its entries (a unit of one entry scores that entry).
    """
    context, criterion, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    layout = subject.layout(example, context)
    check_ranking(layout, full_masks(context, masks), scores, criterion.reduce)
    # Again with the cut between the two closest scores, where a ranking in a narrower dtype goes wrong.
    amount = closest_call(layout, scores, criterion.reduce) if example.amount is not None else None
    if amount is not None:
        context, masks = subject.compute(example, amount=amount)
        layout = subject.layout(replace(example, amount=amount), context)
        check_ranking(layout, full_masks(context, masks), scores, criterion.reduce)


class KitScores(Criterion):
    """The kit's own criterion: the scores it drew for each target (from ``context.extras``).

    Its reduce is a unit's smallest score: it ranks units unlike a sum, a mean, a norm or a maximum, so a
    granularity that combines scores its own way instead of calling ``criterion.reduce`` shows.
    """

    name = "prunus_testing_scores"
    summary = "scores drawn by the prunus test kit"
    KEY = "prunus.testing.scores"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        drawn: Tensor = context.extras[self.KEY][target.name]
        return drawn.clone()

    def reduce(self, scores: Tensor, dims: tuple[int, ...]) -> Tensor:
        if not dims:
            return scores
        return scores.amin(dim=dims)


@dataclass(frozen=True, eq=False)
class ScoredExample:
    """An example and the scores the kit's criterion gives its parameters."""

    example: Example
    scores: tuple[Tensor, ...]

    def describe(self, options: Mapping[str, Any] | None = None) -> str:
        lines = [self.example.describe(options), "scores given by the kit's criterion:"]
        lines += [
            f"  {param.name}: {_format(score)}"
            for param, score in zip(self.example.params, self.scores, strict=True)
        ]
        return "\n".join(lines)


def _scored_examples(subject: Subject) -> st.SearchStrategy[ScoredExample]:
    def with_scores(example: Example) -> st.SearchStrategy[ScoredExample]:
        # Scores in the parameter's dtype or another (a criterion may score in float32, or in half precision):
        # a granularity that ranks all scores in one target's dtype shows when they differ.
        def in_any_dtype(shape: torch.Size, dtype: torch.dtype) -> st.SearchStrategy[Tensor]:
            return st.sampled_from([dtype, *pst.DTYPES]).flatmap(
                lambda chosen: pst.scores(shape=shape, dtype=chosen)
            )

        drawn = [in_any_dtype(p.values.shape, p.values.dtype) for p in example.params]
        return st.tuples(*drawn).map(lambda scores: ScoredExample(example, scores))

    return subject.examples().flatmap(with_scores)


@register_property(
    requires=[needs_composition], examples=_scored_examples, max_examples=100, scope="granularity"
)
def signed_scores_ranked(subject: Subject, drawn: ScoredExample) -> None:
    """The granularity ranks any scores right: signed, tied, zero, ``-0.0`` and infinite ones.

    The kit puts its own criterion in front of the granularity, with the scores it draws, and checks exact
    counts, whole units and the ranking in every group. A granularity that ranks ``|score|``, or that only
    works for the non-negative scores of magnitude criteria, fails here.
    """
    example = drawn.example
    scores = {p.name: s for p, s in zip(example.params, drawn.scores, strict=True)}
    layout = _with_kit_scores(subject, example, example.all_options(), scores)
    if example.amount is not None:
        closest = closest_call(layout, scores, KitScores(NoOptions()).reduce)
        probes = _probe_amounts(layout.eligible(), example.units)
        for amount in [*probes, *([] if closest is None else [closest])]:
            _with_kit_scores(subject, example, example.all_options(amount=amount), scores)


def _with_kit_scores(
    subject: Subject, example: Example, options: dict[str, Any], scores: dict[str, Tensor]
) -> Layout:
    """Check the masks the subject's granularity gives with the kit's scores and ``options``."""
    note_options(options)
    granularity = subject.granularity_of(options)
    assert granularity is not None
    context = example.context()
    context.extras[KitScores.KEY] = scores
    criterion = KitScores(NoOptions())
    strategy = ComposedStrategy(
        granularity.config,
        criterion,
        granularity,
        lambda c, t, ctx: c.score(t, ctx),
        f"{criterion.name}_{granularity.name}",
    )
    with torch.no_grad():
        masks = strategy.compute_masks(context)
    full = full_masks(context, masks)
    layout = read_layout(granularity, context.targets)
    prefix = "with the kit's scores, "
    check_whole_units(layout, full, prefix)
    check_counts(layout, full, prefix)
    check_ranking(layout, full, scores, criterion.reduce, prefix)
    return layout
