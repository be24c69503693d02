"""Running the properties: :func:`check_strategy` and :func:`check_property`."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import torch
from hypothesis import HealthCheck, Verbosity, given
from hypothesis.errors import FlakyFailure, HypothesisException

from ..registration import Registry
from ..registration import registry as global_registry
from ..strategy import Strategy
from .properties import Property, property_names, resolve_properties
from .subject import StrategyCase, Subject, describe

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "KitFailure",
    "KitReport",
    "PropertyFailure",
    "check_property",
    "check_strategy",
]

DEFAULT_MAX_EXAMPLES = 25
"""Examples per property by default: enough to find the usual bugs, quick enough to run every property of
every built-in strategy in well under a minute on two CPU cores."""

StrategyLike = str | StrategyCase | type[Strategy] | Subject


@dataclass(frozen=True)
class PropertyFailure:
    """One property a strategy breaks, with the smallest failing example Hypothesis found."""

    name: str
    summary: str
    strategy: str
    example: str
    error: BaseException
    flaky: bool = False
    rerun: str = ""

    @property
    def problem(self) -> str:
        if isinstance(self.error, AssertionError):
            return str(self.error)
        return f"the strategy raised {type(self.error).__name__}: {self.error}"

    def __str__(self) -> str:
        example = "\n".join(f"    {line}" for line in self.example.splitlines())
        flaky = (
            "\n  (it failed once and passed when replayed: the strategy is not deterministic)"
            if self.flaky
            else ""
        )
        return (
            f"property {self.name!r} fails for strategy {self.strategy!r}: {self.summary}\n"
            f"  {self.problem}{flaky}\n"
            f"  smallest failing example found:\n{example}\n"
            f"  rerun: {self.rerun or self._rerun()}"
        )

    def _rerun(self) -> str:
        return f"prunus.testing.check_strategy({self.strategy!r}, properties=[{self.name!r}])"


class KitFailure(AssertionError):
    """A strategy breaks properties of the conformance kit; ``failures`` lists each with its example."""

    def __init__(self, strategy: str, failures: list[PropertyFailure]) -> None:
        self.strategy = strategy
        self.failures = failures
        names = ", ".join(f.name for f in failures)
        header = f"strategy {strategy!r} breaks {len(failures)} propert{'y' if len(failures) == 1 else 'ies'} of the prunus conformance kit ({names})"
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


def _settings(max_examples: int) -> hypothesis.settings:
    # The rest comes from the active Hypothesis profile (database, derandomize, phases...).
    active = hypothesis.settings()
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,  # the first call of a torch op can take long
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,  # the kit reports the example itself
        suppress_health_check=[*active.suppress_health_check, HealthCheck.too_slow],
    )


def _limit(prop: Property, max_examples: int) -> int:
    """Examples for ``prop``: its cap applies at the default, and grows with ``max_examples`` past it."""
    if prop.max_examples is None:
        return max_examples
    scaled = math.ceil(prop.max_examples * max_examples / DEFAULT_MAX_EXAMPLES)
    return max(1, min(max_examples, max(prop.max_examples, scaled)))


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
        try:
            prop.check(subject, example)
        except HypothesisException:
            raise
        except Exception as error:
            raise _Falsified(describe(example), error) from error

    run.__name__ = run.__qualname__ = prop.name
    # One database entry per strategy and property, so failures replay first next time.
    run._hypothesis_internal_add_digest = f"prunus.testing/{subject.name}/{prop.name}".encode()  # type: ignore[attr-defined]
    limit = _limit(prop, max_examples)
    test = _settings(max(limit, 1))(given(prop.strategy(subject))(run))
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    # The kit's tensors are tiny: one thread is fastest, and never oversubscribes a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        test()
    except _Falsified as falsified:
        return PropertyFailure(
            prop.name,
            prop.summary,
            subject.name,
            falsified.example,
            falsified.error,
            rerun=_rerun(prop, subject),
        )
    except FlakyFailure as flaky:
        found = [e for e in flaky.exceptions if isinstance(e, _Falsified)]
        if not found:
            raise
        return PropertyFailure(
            prop.name,
            prop.summary,
            subject.name,
            found[0].example,
            found[0].error,
            flaky=True,
            rerun=_rerun(prop, subject),
        )
    finally:
        torch.set_num_threads(threads)
    return None


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
    max_examples: int = DEFAULT_MAX_EXAMPLES,
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
        max_examples: Hypothesis examples per property (some properties need fewer and take fewer).
        registry: where the name is registered (``prunus.registry`` by default).
        properties: check only these properties (by name).
        skip: do not check these properties.
        seed: a Hypothesis seed, to repeat a run exactly.

    Returns:
        A :class:`KitReport` of the properties that passed and those that do not apply.

    Raises:
        KitFailure: an ``AssertionError`` naming each property the strategy breaks, the strategy and the
            smallest failing example Hypothesis found.
    """
    __tracebackhide__ = True
    start = time.perf_counter()
    subject = Subject.resolve(strategy, registry=registry)
    chosen, skipped = _select(subject, properties, skip)
    failures = [
        failure
        for prop in chosen
        if (failure := _run(prop, subject, max_examples, seed)) is not None
    ]
    if failures:
        raise KitFailure(subject.name, failures)
    return KitReport(
        subject.name, tuple(p.name for p in chosen), skipped, time.perf_counter() - start
    )


def check_property(
    strategy: StrategyLike,
    name: str,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
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
    failure = _run(chosen[0], subject, max_examples, seed)
    if failure is not None:
        raise KitFailure(subject.name, [failure])
    return None
