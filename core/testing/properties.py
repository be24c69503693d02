"""The properties every pruning strategy must have, each a named, documented check.

A property is a function ``check(subject, example)`` that raises ``AssertionError`` with a message pointing at
what is wrong, plus the Hypothesis strategy of examples it runs on (by default
:meth:`Subject.examples <prunus.testing.subject.Subject.examples>`). Properties are looked up by name and by
the strategy's granularity (``registry.info(name).granularity``): a property registered for a granularity
replaces the generic property of the same name for strategies at that granularity, and a granularity may add
properties of its own. A plugin that adds a granularity (N:M, blocks...) registers its group properties with
:func:`register_property` and the count of its units with :func:`~prunus.testing.subject.register_units`.

Generic properties (every strategy; ``requires`` narrows some):

===========================  ===============================================================================
``mask_shape_and_dtype``     each mask is a bool tensor with its parameter's shape, on its device
``scores_valid``             scores are floating, of the parameter's shape, on its device, never NaN
``no_revival``               a mask never keeps an entry an earlier mask pruned
``input_unchanged``          the parameters, earlier masks, gradients and data are not modified
``dtype_and_device_preserved``  parameters keep their dtype, device and identity; masks and scores their device
``global_rng_untouched``     the global torch random generator is not used (seeded strategies draw locally)
``same_seed_same_mask``      the same options (the same seed) give the same masks
``seed_changes_mask``        a seeded random strategy gives different masks for different seeds
``amount_zero_keeps_all``    ``amount=0`` and ``amount=0.0`` prune nothing
``monotonic_in_amount``      for a deterministic strategy, a larger amount prunes a superset
``config_json_roundtrip``    the config survives JSON (``model_dump_json`` / ``model_validate_json``)
``invalid_options_rejected`` unknown, missing, mistyped or out-of-range options raise ``prunus.ConfigError``
``prunes_real_modules``      on real layers and models: ``prune``, forward, zeros, report, ``remove``, ``restore``
===========================  ===============================================================================

Group properties (by granularity: ``unstructured``, ``structured``, ``global``):

===========================  ===============================================================================
``exact_count``              the number pruned is what ``amount`` asks, rounded as torch rounds
``amount_one_prunes_all``    ``amount=1.0`` prunes every prunable unit
``criterion_respected``      every pruned unit scores no higher than every kept unit of its group
``whole_slices``             (structured) pruning removes whole slices along ``dim``
===========================  ===============================================================================
"""

from __future__ import annotations

import copy
import importlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import torch
from hypothesis import reject
from hypothesis import strategies as st
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError
from torch import Tensor, nn

from .. import masking
from ..engine import masks as model_masks
from ..engine import prune, remove, restore
from ..errors import ConfigError, TargetError
from ..report import PruneReport
from ..strategy import Criterion, PruneContext, Target
from ..targets import select_targets
from . import generators as pst
from .subject import Example, Param, Subject, eligible, slices

__all__ = [
    "Property",
    "Requirement",
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
        max_examples: the examples it needs at the kit's default (for properties with little to vary); a run
            asking for more examples than the default raises it in proportion.
    """

    name: str
    check: Check
    doc: str = ""
    granularity: str | None = None
    requires: tuple[Requirement, ...] = ()
    examples: Callable[[Subject], st.SearchStrategy[Any]] | None = None
    max_examples: int | None = None

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
) -> Callable[[Check], Check]:
    """Register ``check(subject, example)`` as a property (decorator); its docstring documents it.

    Args:
        name: the property's name (default: the function's name).
        granularity: the granularity it is for (``None``: every one). A property for a granularity replaces the
            generic one of the same name at that granularity.
        requires: requirements on the subject (see :data:`Requirement`), e.g. :func:`needs_amount`.
        examples: the Hypothesis strategy of examples for a subject (default: ``subject.examples()``).
        max_examples: the examples it needs at the kit's default (raised in proportion by longer runs).
    """

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
        )
        return check

    return decorate


def property_names() -> list[str]:
    """Every registered property name, in registration order."""
    _load_extensions()
    return list(dict.fromkeys(name for name, _ in _REGISTRY))


_BUILTIN_EXTENSIONS = ("semistructured", "rows")
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


def needs_seed(subject: Subject) -> str | None:
    """Applies to random strategies with a ``seed`` option."""
    if subject.deterministic:
        return f"{subject.name} is deterministic"
    if "seed" not in subject.info.config.model_fields:
        return f"{subject.name} has no seed option"
    return None


def needs_json_config(subject: Subject) -> str | None:
    """Applies to strategies whose config can be written as JSON (not one holding tensors)."""
    try:
        subject.info.config.model_json_schema()
    except PydanticUserError as error:
        return f"the config of {subject.name} holds values JSON cannot carry ({error})"
    return None


# -- helpers -----------------------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    """Fail the property with ``message``."""
    raise AssertionError(message)


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


def expected_count(amount: int | float, size: int) -> int:
    """The units ``amount`` asks to prune out of ``size`` (an int is a count; a fraction rounds half to even)."""
    return amount if isinstance(amount, int) else round(amount * size)


def amount_text(amount: int | float, size: int, unit: str) -> str:
    want = expected_count(amount, size)
    if isinstance(amount, int):
        return f"amount={amount!r} (an int, so a count) asks for {want} of the {size} {unit}"
    return f"amount={amount!r} (a fraction) asks for round({amount!r} * {size}) = {want} of the {size} {unit}"


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


def _order_text(pruned: float, kept: float) -> str:
    return (
        f"pruned a unit scored {pruned!r} but kept one scored {kept!r}; the lowest-scored units must be "
        "pruned first (is the ranking reversed?)"
    )


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


@register_property(max_examples=15)
def same_seed_same_mask(subject: Subject, example: Example) -> None:
    """The same options (for a random strategy: the same seed) give the same masks, every time."""
    _, first = subject.compute(example)
    for attempt in range(2):
        _, again = subject.compute(example)
        if set(again) != set(first):
            fail(
                f"two computations with the same options masked different targets: {sorted(first)} and {sorted(again)}"
            )
        for name, mask in first.items():
            other = again[name]
            if (
                isinstance(mask, Tensor)
                and isinstance(other, Tensor)
                and not torch.equal(mask, other)
            ):
                differ = int((mask != other).sum()) if mask.shape == other.shape else "all"
                fail(
                    f"computing twice with the same options {example.all_options()!r} gave different masks "
                    f"for {name!r} ({differ} entries differ, on attempt {attempt + 2}); "
                    "a seed option must decide the mask"
                )


def _seed_examples(subject: Subject) -> st.SearchStrategy[Example]:
    @st.composite
    def draw(draw: st.DrawFn) -> Example:
        # Large enough that two seeds giving the same mask by chance is out of the question.
        values = torch.arange(1, 257, dtype=torch.float32).reshape(16, 16)
        param = Param("p0.weight", values, None, values.flip(0) if subject.case.gradients else None)
        targets = Example((param,)).context().targets
        options, _, units = subject.draw_options(draw, targets)
        data = draw(subject.case.data(targets)) if subject.case.data is not None else None
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

    def describe(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def _every_parameter(module: nn.Module, name: str) -> bool:
    return True


def _real_examples(subject: Subject) -> st.SearchStrategy[RealExample]:
    @st.composite
    def draw(draw: st.DrawFn) -> RealExample:
        model, inputs = draw(pst.models(dtypes=pst.DTYPES))
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
        dtype = next(model.parameters()).dtype
        lines = [
            f"model ({str(dtype).removeprefix('torch.')}): {model!r}",
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
    with torch.enable_grad():
        model(inputs).float().square().mean().backward()


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
    with torch.no_grad():
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
    with torch.no_grad():
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
    with torch.no_grad():
        removed(inputs)

    restore(model)
    for name, param in model.named_parameters():
        if not _same_bits(param.detach(), original[name]):
            differ = int((_bits(param.detach()) != _bits(original[name])).sum())
            fail(
                f"restore did not bring back the original values of {name!r}: {differ} entries differ"
            )


# -- group properties: unstructured ------------------------------------------------------------------------


@register_property("exact_count", granularity="unstructured", requires=[needs_amount])
def exact_count_unstructured(subject: Subject, example: Example) -> None:
    """Each parameter loses exactly the entries ``amount`` asks, counted among the entries still kept.

    An int is a count, a float a fraction rounded with Python's ``round`` (half to even), as torch rounds.
    """
    assert example.amount is not None
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        keep = eligible(target)
        size = int(keep.sum())
        pruned = int((keep & ~full[target.name]).sum())
        if pruned != expected_count(example.amount, size):
            fail(
                f"{target.name!r}: pruned {pruned}, but {amount_text(example.amount, size, 'entries still kept')}"
            )


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


def check_order(
    where: str, scores: Tensor, pruned: Tensor, kept: Tensor, rtol: float = 0.0
) -> None:
    """Fail unless every pruned unit scores no higher than every kept one (beyond ``rtol`` of the larger)."""
    if not (bool(pruned.any()) and bool(kept.any())):
        return
    values = scores.double()
    high = float(values[pruned].max())
    low = float(values[kept].min())
    if high > low and (rtol == 0 or high - low > rtol * max(abs(high), abs(low))):
        fail(f"{where}: {_order_text(high, low)}")


@register_property(
    "criterion_respected", granularity="unstructured", requires=[needs_amount, needs_criterion]
)
def criterion_unstructured(subject: Subject, example: Example) -> None:
    """In each parameter, every entry pruned now scores no higher than every entry kept."""
    context, _, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        mask = full[target.name]
        check_order(repr(target.name), scores[target.name], eligible(target) & ~mask, mask)


# -- group properties: structured --------------------------------------------------------------------------


def _dim(example: Example) -> int:
    return int(example.options.get("dim", 0))


def _slice_masks(target: Target, mask: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Per slice along ``dim``: whether it could be pruned (any entry still kept), whether it is kept now."""
    _, others = slices(target, dim)
    keep = eligible(target)
    if not others:
        return keep, mask
    return keep.any(dim=others), mask.any(dim=others)


@register_property("exact_count", granularity="structured", requires=[needs_amount])
def exact_count_structured(subject: Subject, example: Example) -> None:
    """Each parameter loses exactly the slices along ``dim`` that ``amount`` asks, among the slices still kept.

    A slice is still kept while any of its entries is; an int is a count, a float a fraction rounded as torch
    rounds.
    """
    assert example.amount is not None
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        dim, _ = slices(target, _dim(example))
        could, kept = _slice_masks(target, full[target.name], dim)
        size = int(could.sum())
        pruned = int((could & ~kept).sum())
        if pruned != expected_count(example.amount, size):
            unit = f"slices along dim={dim} still kept"
            fail(
                f"{target.name!r}: pruned {pruned} slices, but {amount_text(example.amount, size, unit)}"
            )


@register_property("whole_slices", granularity="structured")
def whole_slices(subject: Subject, example: Example) -> None:
    """Structured pruning removes whole slices along ``dim``: each slice is either kept as it was or all pruned."""
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        dim, _ = slices(target, _dim(example))
        mask = full[target.name].movedim(dim, 0).reshape(target.tensor.shape[dim], -1)
        prior = eligible(target).movedim(dim, 0).reshape(target.tensor.shape[dim], -1)
        partial = ~((mask == prior).all(dim=1) | (~mask).all(dim=1))
        if bool(partial.any()):
            index = int(partial.nonzero()[0, 0])
            fail(
                f"{target.name!r} (shape {tuple(target.tensor.shape)}): slice {index} along dim={dim} is only "
                f"partly pruned: keeps {mask[index].tolist()} of {prior[index].tolist()}; structured pruning "
                f"removes whole slices along dim={dim}"
            )


@register_property(
    "criterion_respected", granularity="structured", requires=[needs_amount, needs_criterion]
)
def criterion_structured(subject: Subject, example: Example) -> None:
    """In each parameter, every slice pruned now has a group score (``criterion.reduce``) no higher than every kept one."""
    context, criterion, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    for target in context.targets:
        dim, others = slices(target, _dim(example))
        groups = criterion.reduce(scores[target.name], others)
        if tuple(groups.shape) != (target.tensor.shape[dim],):
            fail(
                f"criterion.reduce over dims {others} of {target.name!r} gave shape {tuple(groups.shape)}, "
                f"not one score per slice ({target.tensor.shape[dim]},)"
            )
        if bool(torch.isnan(groups).any()):
            fail(f"criterion.reduce gave NaN slice scores for {target.name!r}: {groups.tolist()}")
        could, kept = _slice_masks(target, full[target.name], dim)
        check_order(f"{target.name!r} along dim={dim}", groups, could & ~kept, kept)


# -- group properties: global ------------------------------------------------------------------------------


@register_property("exact_count", granularity="global", requires=[needs_amount])
def exact_count_global(subject: Subject, example: Example) -> None:
    """The masks meet the budget across parameters: together they lose exactly what ``amount`` asks of their total."""
    assert example.amount is not None
    context, masks = subject.compute(example)
    full = full_masks(context, masks)
    size = sum(int(eligible(t).sum()) for t in context.targets)
    per = {t.name: int((eligible(t) & ~full[t.name]).sum()) for t in context.targets}
    pruned = sum(per.values())
    if pruned != expected_count(example.amount, size):
        unit = "entries still kept across all targets"
        fail(f"pruned {pruned} ({per}), but {amount_text(example.amount, size, unit)}")


@register_property(
    "criterion_respected", granularity="global", requires=[needs_amount, needs_criterion]
)
def criterion_global(subject: Subject, example: Example) -> None:
    """Across all parameters, every entry pruned now scores no higher than every entry kept.

    With a ``min_keep`` option (a floor of entries each parameter keeps while the amount leaves room), every
    parameter keeps at least that many, its best ones; the entries a parameter holds at its floor are left out
    of the comparison across parameters (the floor keeps them, not their scores).
    """
    assert example.amount is not None
    context, _, scores = criterion_scores(subject, example)
    _, masks = subject.compute(example)
    full = full_masks(context, masks)
    floors = _floors(context.targets, example)
    held: set[str] = set()
    for target in context.targets:
        could = eligible(target)
        kept = full[target.name]
        count = int(kept.sum())
        if count < floors[target.name]:
            fail(
                f"{target.name!r} keeps {count} entries, below min_keep={example.options['min_keep']} "
                f"(it had {int(could.sum())} still kept)"
            )
        if floors[target.name] and count <= floors[target.name]:
            held.add(target.name)
        check_order(repr(target.name), scores[target.name], could & ~kept, kept)
    flat = torch.cat([scores[t.name].double().reshape(-1) for t in context.targets])
    could = torch.cat([eligible(t).reshape(-1) for t in context.targets])
    kept = torch.cat([full[t.name].reshape(-1) for t in context.targets])
    free = torch.cat(
        [torch.full_like(eligible(t).reshape(-1), t.name not in held) for t in context.targets]
    )
    check_order("across all targets", flat, could & ~kept, kept & free)


def _floors(targets: Sequence[Target], example: Example) -> dict[str, int]:
    """Each target's ``min_keep`` floor where the amount leaves room for all of them, else 0."""
    assert example.amount is not None
    floor = example.options.get("min_keep", 0)
    sizes = {t.name: int(eligible(t).sum()) for t in targets}
    floors = {name: min(int(floor), size) for name, size in sizes.items()}
    total = sum(sizes.values())
    k = expected_count(example.amount, total)
    if not floor or k == total or k > total - sum(floors.values()):
        return dict.fromkeys(sizes, 0)
    return floors
