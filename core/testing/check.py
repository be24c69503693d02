"""Running the properties: :func:`check_strategy` and :func:`check_property`.

Runs are reproducible: each property of each strategy runs derandomised, from a seed fixed by the strategy's and
the property's names, with no example database, so a plugin's CI sees the same examples on every run (give
``seed=`` to explore others). How many examples a property runs comes from ``max_examples=``, else the
``PRUNUS_TESTING_MAX_EXAMPLES`` environment variable, else :data:`DEFAULT_MAX_EXAMPLES`. A bug that breaks
several properties the same way (a crash, say) is reported once, under the first of them.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import hypothesis
import torch
from hypothesis import HealthCheck, Phase, Verbosity, given
from hypothesis.errors import FlakyFailure, HypothesisException

from ..errors import ConfigError
from ..registration import Registry
from ..registration import registry as global_registry
from ..strategy import Strategy
from .properties import Property, property_names, resolve_properties
from .subject import StrategyCase, Subject, describe, recording_options

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "ENVIRONMENT",
    "KitFailure",
    "KitReport",
    "PropertyFailure",
    "check_property",
    "check_strategy",
    "default_max_examples",
]

DEFAULT_MAX_EXAMPLES = 25
"""Examples per property by default: enough to find the usual bugs, quick enough to run every property of
every built-in strategy in well under a minute on two CPU cores."""

ENVIRONMENT = "PRUNUS_TESTING_MAX_EXAMPLES"
"""The environment variable that sets the examples per property of every run that names none."""

StrategyLike = str | StrategyCase | type[Strategy] | Subject


def default_max_examples() -> int:
    """Examples per property when a call names none: ``PRUNUS_TESTING_MAX_EXAMPLES``, else the default.

    Raises:
        ConfigError: the variable is set to something other than an int >= 1.
    """
    value = os.environ.get(ENVIRONMENT, "").strip()
    if not value:
        return DEFAULT_MAX_EXAMPLES
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{ENVIRONMENT}={value!r} must be an int >= 1 (examples per property)")
    return count


Origin = tuple[str, str, int]
"""Where an error comes from: its type, and the file and line that raised it."""


def _origin(error: BaseException) -> Origin:
    """The error's type and the line that raised it (for a kit assertion, the line that called ``fail``).

    An error raised from another (``prune`` wraps a plugin's crash in a ``PluginError``) comes from where
    that other one does.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.name != "fail"]
    if not frames:
        return (type(error).__name__, "", 0)
    return (type(error).__name__, frames[-1].filename, frames[-1].lineno or 0)


@dataclass(frozen=True)
class PropertyFailure:
    """One property a strategy breaks, with the smallest failing example Hypothesis found.

    Attributes:
        name: the property.
        summary: what the property states.
        strategy: the strategy's name.
        example: the smallest failing example, with the options the check used.
        error: what the check raised.
        flaky: the example failed once and passed when replayed.
        rerun: how to run the property alone.
        origin: where the error comes from (failures of one origin are one bug, reported once).
        also: the other properties the same failure breaks.
    """

    name: str
    summary: str
    strategy: str
    example: str
    error: BaseException
    flaky: bool = False
    rerun: str = ""
    origin: Origin = ("", "", 0)
    also: tuple[str, ...] = ()

    @property
    def problem(self) -> str:
        if isinstance(self.error, AssertionError):
            return str(self.error)
        return f"the strategy raised {type(self.error).__name__}: {self.error}"

    def __str__(self) -> str:
        example = "\n".join(f"    {line}" for line in self.example.splitlines())
        flaky = (
            "\n  (it failed once and passed when the same example was replayed: the result depends on "
            "something besides the example, such as state kept from an earlier call, a cache, the global "
            "random state or the time)"
            if self.flaky
            else ""
        )
        also = (
            f"\n  the same failure also breaks: {', '.join(self.also)} (reported once, here)"
            if self.also
            else ""
        )
        return (
            f"property {self.name!r} fails for strategy {self.strategy!r}: {self.summary}\n"
            f"  {self.problem}{flaky}{also}\n"
            f"  smallest failing example found:\n{example}\n"
            f"  rerun: {self.rerun or self._rerun()}"
        )

    def _rerun(self) -> str:
        return f"prunus.testing.check_strategy({self.strategy!r}, properties=[{self.name!r}])"


def merge_failures(failures: Iterable[PropertyFailure]) -> list[PropertyFailure]:
    """One failure per origin, under the first property it broke, naming the others in ``also``."""
    merged: list[PropertyFailure] = []
    where: dict[Origin, int] = {}
    for failure in failures:
        index = where.get(failure.origin)
        if index is None:
            where[failure.origin] = len(merged)
            merged.append(failure)
        else:
            first = merged[index]
            merged[index] = replace(first, also=(*first.also, failure.name, *failure.also))
    return merged


class KitFailure(AssertionError):
    """A strategy breaks properties of the conformance kit; ``failures`` lists each bug once, with its example."""

    def __init__(self, strategy: str, failures: list[PropertyFailure]) -> None:
        self.strategy = strategy
        self.failures = failures
        names = [name for f in failures for name in (f.name, *f.also)]
        count = len(names)
        header = (
            f"strategy {strategy!r} breaks {count} propert{'y' if count == 1 else 'ies'} of the prunus "
            f"conformance kit ({', '.join(names)})"
        )
        super().__init__(header + "\n\n" + "\n\n".join(str(f) for f in failures))


@dataclass(frozen=True)
class KitReport:
    """What :func:`check_strategy` ran: the properties that passed and those that do not apply (with why)."""

    strategy: str
    passed: tuple[str, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"{self.strategy}: {len(self.passed)} properties passed in {self.seconds:.1f}s"]
        lines += [f"  passed  {name}" for name in self.passed]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


class _Falsified(Exception):
    """Carries the example a property failed on out of Hypothesis."""

    def __init__(self, example: str, error: BaseException) -> None:
        super().__init__(str(error))
        self.example = example
        self.error = error


def _settings(max_examples: int, seed: int | None) -> hypothesis.settings:
    # Derandomised (a seed from the test's digest: the strategy and the property) unless a seed is given; no
    # example database either way, so a run depends on the code alone. The rest comes from the active profile.
    active = hypothesis.settings()
    return hypothesis.settings(
        max_examples=max_examples,
        # Not the explain phase: the kit says what is wrong itself, and explaining costs as much as shrinking.
        phases=[p for p in active.phases if p is not Phase.explain],
        derandomize=seed is None,
        database=None,
        deadline=None,  # the first call of a torch op can take long
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,  # the kit reports the example itself
        # Options are drawn field by field and kept when the strategy builds: a validator the kit cannot read
        # may turn many down, which is no fault of the strategy.
        suppress_health_check=[
            *active.suppress_health_check,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )


def _limit(prop: Property, max_examples: int) -> int:
    """Examples for ``prop``: its own number at the default, scaled in proportion to ``max_examples``."""
    if prop.max_examples is None:
        return max_examples
    return max(1, math.ceil(prop.max_examples * max_examples / DEFAULT_MAX_EXAMPLES))


_GRANULARITY_PASSES: set[tuple[Any, ...]] = set()
"""Granularity-scoped properties already passed in this process: (granularity class, property, how run)."""


def _rerun(prop: Property, subject: Subject) -> str:
    """How to run the failing property alone."""
    call = f"properties=[{prop.name!r}]"
    if subject.case == StrategyCase(subject.name) and subject.registry is global_registry:
        return f"prunus.testing.check_strategy({subject.name!r}, {call})"
    return f"prunus.testing.check_strategy(<the same strategy case>, registry=<the same registry>, {call})"


def _run(
    prop: Property, subject: Subject, max_examples: int, seed: int | None
) -> PropertyFailure | None:
    def run(example: Any) -> None:
        with recording_options() as used:
            try:
                prop.check(subject, example)
            except HypothesisException:
                raise
            except Exception as error:
                raise _Falsified(describe(example, used[-1] if used else None), error) from error

    run.__name__ = run.__qualname__ = prop.name
    # The digest seeds the derandomised run: one fixed seed per strategy (or granularity) and property.
    scope = subject.name
    key: tuple[Any, ...] | None = None
    if prop.scope == "granularity":
        scope = f"granularity/{subject.granularity}"
        key = (subject.granularity_class(), prop.name, max_examples, seed, subject.case.options)
        if key in _GRANULARITY_PASSES:
            return None
    run._hypothesis_internal_add_digest = f"prunus.testing/{scope}/{prop.name}".encode()  # type: ignore[attr-defined]
    limit = _limit(prop, max_examples)
    test = _settings(max(limit, 1), seed)(given(prop.strategy(subject))(run))
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    # The kit's tensors are tiny: one thread is fastest, and never oversubscribes a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        test()
    except _Falsified as falsified:
        return _failure(prop, subject, falsified)
    except FlakyFailure as flaky:
        found = [e for e in flaky.exceptions if isinstance(e, _Falsified)]
        if not found:
            raise
        return _failure(prop, subject, found[0], flaky=True)
    finally:
        torch.set_num_threads(threads)
    if key is not None:
        _GRANULARITY_PASSES.add(key)
    return None


def _failure(
    prop: Property, subject: Subject, falsified: _Falsified, *, flaky: bool = False
) -> PropertyFailure:
    return PropertyFailure(
        prop.name,
        prop.summary,
        subject.name,
        falsified.example,
        falsified.error,
        flaky=flaky,
        rerun=_rerun(prop, subject),
        origin=_origin(falsified.error),
    )


def _select(
    subject: Subject, properties: Iterable[str] | None, skip: Iterable[str]
) -> tuple[list[Property], dict[str, str]]:
    applicable, skipped = resolve_properties(subject)
    known = set(property_names())
    wanted = None if properties is None else list(properties)
    excluded = set(skip)
    for name in [*(wanted or []), *excluded]:
        if name not in known:
            raise ValueError(f"no property named {name!r}; properties: {', '.join(sorted(known))}")
    chosen = [
        p for p in applicable if (wanted is None or p.name in wanted) and p.name not in excluded
    ]
    if wanted is not None:
        skipped = {k: v for k, v in skipped.items() if k in wanted}
    return chosen, skipped


def check_strategy(
    strategy: StrategyLike,
    *,
    max_examples: int | None = None,
    registry: Registry | None = None,
    properties: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    seed: int | None = None,
) -> KitReport:
    """Check that a strategy has every property that applies to it (its granularity, its options).

    Usable from any test, a script or a notebook::

        prunus.testing.check_strategy("taylor_structured")

    Args:
        strategy: a registered name, a :class:`StrategyCase` (to say how to draw its options or data), or a
            :class:`~prunus.Strategy` subclass (registered on a private registry).
        max_examples: Hypothesis examples per property (some properties need fewer and take fewer); by
            default ``PRUNUS_TESTING_MAX_EXAMPLES`` or :data:`DEFAULT_MAX_EXAMPLES`.
        registry: where the name is registered (``prunus.registry`` by default).
        properties: check only these properties (by name).
        skip: do not check these properties.
        seed: a Hypothesis seed, to explore other examples than the fixed ones of a default run.

    Returns:
        A :class:`KitReport` of the properties that passed and those that do not apply.

    Raises:
        KitFailure: an ``AssertionError`` naming each property the strategy breaks, the strategy and the
            smallest failing example Hypothesis found (a failure that breaks several properties the same
            way is reported once).
    """
    __tracebackhide__ = True
    start = time.perf_counter()
    examples = default_max_examples() if max_examples is None else max_examples
    subject = Subject.resolve(strategy, registry=registry)
    chosen, skipped = _select(subject, properties, skip)
    failures = [
        failure for prop in chosen if (failure := _run(prop, subject, examples, seed)) is not None
    ]
    if failures:
        raise KitFailure(subject.name, merge_failures(failures))
    return KitReport(
        subject.name, tuple(p.name for p in chosen), skipped, time.perf_counter() - start
    )


def check_property(
    strategy: StrategyLike,
    name: str,
    *,
    max_examples: int | None = None,
    registry: Registry | None = None,
    seed: int | None = None,
) -> str | None:
    """Check one property; return ``None`` when it passed, or the reason it does not apply.

    Raises:
        KitFailure: the strategy breaks the property.
    """
    __tracebackhide__ = True
    subject = Subject.resolve(strategy, registry=registry)
    chosen, skipped = _select(subject, [name], ())
    if not chosen:
        return skipped.get(name, f"{name!r} does not apply to {subject.name}")
    examples = default_max_examples() if max_examples is None else max_examples
    failure = _run(chosen[0], subject, examples, seed)
    if failure is not None:
        raise KitFailure(subject.name, [failure])
    return None
