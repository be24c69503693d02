"""The pytest form of the kit: subclass :class:`StrategyTests` and name the strategies to test.

.. code-block:: python

    import pytest
    from prunus.testing import StrategyTests

    pytest_plugins = ["prunus.testing.pytest_plugin"]

    class TestMyStrategies(StrategyTests):
        @pytest.fixture(scope="class", params=["taylor_unstructured", "taylor_structured"])
        @classmethod
        def prunus_strategy(cls, request):
            return request.param          # or a StrategyCase(request.param, gradients=True, ...)

(``@classmethod`` below ``@pytest.fixture`` is how pytest 9.1 and later want class-scoped fixtures in a class; a
module-level ``prunus_strategy`` fixture works too, for every class of the module.)

Each property is one test per strategy (``test_exact_count[taylor_structured]``); a property that does not apply
to a strategy is skipped with the reason. The strategies come through a class-scoped fixture, so the Hypothesis
tests run inside the kit and never see a function-scoped fixture, and any number of subclasses can share one
pytest session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from .check import KitFailure, Origin, check_property
from .properties import _REGISTRY, property_names
from .subject import Subject

__all__ = ["KitCase", "StrategyTests"]


@dataclass(frozen=True)
class KitCase:
    """What the ``prunus_case`` fixture gives a test: the subject and how hard to test it.

    Attributes:
        subject: the strategy under test.
        max_examples: Hypothesis examples per property.
        seed: a Hypothesis seed (``None``: the kit's fixed seeds).
        reported: the failures already reported in full by this class's tests, by origin (a bug that breaks
            several properties the same way is reported in full once; the other tests fail with a pointer).
    """

    subject: Subject
    max_examples: int
    seed: int | None = None
    reported: dict[Origin, str] = field(default_factory=dict, compare=False, repr=False)

    def check(self, name: str) -> None:
        """Check property ``name``; skip the test when it does not apply."""
        __tracebackhide__ = True
        reason = self.run(name)
        if reason is not None:
            pytest.skip(reason)

    def run(self, name: str) -> str | None:
        """Check property ``name``: why it does not apply, or ``None`` when it held.

        A failure already reported in full by another test of this class fails with a pointer to it.
        """
        __tracebackhide__ = True
        try:
            return check_property(
                self.subject, name, max_examples=self.max_examples, seed=self.seed
            )
        except KitFailure as failure:
            found = failure.failures[0]
            first = self.reported.setdefault(found.origin, name)
            if first != name:
                raise AssertionError(
                    f"property {name!r} fails for strategy {self.subject.name!r} with the failure "
                    f"test_{first} reports in full: {found.problem.splitlines()[0]}"
                ) from None
            raise


def _doc(name: str) -> str:
    docs = [p.doc for (n, _), p in _REGISTRY.items() if n == name and p.doc]
    return docs[0] if docs else name


def _property_test(name: str) -> Callable[[StrategyTests, KitCase], None]:
    def test(self: StrategyTests, prunus_case: KitCase) -> None:
        __tracebackhide__ = True
        prunus_case.check(name)

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = _doc(name)
    return test


class StrategyTests:
    """The kit's properties as pytest tests: subclass it and override the ``prunus_strategy`` fixture.

    Override ``prunus_registry`` (class or session scope) to test strategies of a private registry.
    """

    test_mask_shape_and_dtype = _property_test("mask_shape_and_dtype")
    test_scores_valid = _property_test("scores_valid")
    test_no_revival = _property_test("no_revival")
    test_input_unchanged = _property_test("input_unchanged")
    test_dtype_and_device_preserved = _property_test("dtype_and_device_preserved")
    test_global_rng_untouched = _property_test("global_rng_untouched")
    test_same_seed_same_mask = _property_test("same_seed_same_mask")
    test_declared_deterministic = _property_test("declared_deterministic")
    test_repeated_calls = _property_test("repeated_calls")
    test_seed_changes_mask = _property_test("seed_changes_mask")
    test_amount_zero_keeps_all = _property_test("amount_zero_keeps_all")
    test_monotonic_in_amount = _property_test("monotonic_in_amount")
    test_invalid_options_rejected = _property_test("invalid_options_rejected")
    test_config_json_roundtrip = _property_test("config_json_roundtrip")
    test_prunes_real_modules = _property_test("prunes_real_modules")
    test_calibration_leaves_model_alone = _property_test("calibration_leaves_model_alone")
    test_granularity_declared = _property_test("granularity_declared")
    test_exact_count = _property_test("exact_count")
    test_amount_one_prunes_all = _property_test("amount_one_prunes_all")
    test_whole_units = _property_test("whole_units")
    test_criterion_respected = _property_test("criterion_respected")
    test_signed_scores_ranked = _property_test("signed_scores_ranked")
    test_declared_as_documented = _property_test("declared_as_documented")

    def test_other_properties(self, prunus_case: KitCase) -> None:
        """Properties registered after this class was written (e.g. by a plugin for its granularity)."""
        __tracebackhide__ = True
        others = [n for n in property_names() if not hasattr(StrategyTests, f"test_{n}")]
        ran = 0
        for name in others:
            ran += prunus_case.run(name) is None
        if not ran:
            pytest.skip("no other registered property applies")
