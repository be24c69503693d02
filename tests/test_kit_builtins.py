"""Every built-in strategy passes the conformance kit (prunus.testing), through its pytest base class.

One test per property and strategy, e.g. ``test_exact_count[l1_structured]``; properties that do not apply to a
strategy (a seed test for a deterministic one, an amount test for ``custom_mask``) are skipped with the reason.
Run it faster or harder with ``--prunus-max-examples=N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import strategies as st

import prunus
from prunus.testing import StrategyCase, StrategyTests
from prunus.testing import generators as pst

pytest_plugins = ["prunus.testing.pytest_plugin"]

# Strategies installed plugins add are theirs to test (they may need data or gradients): only prunus's own.
BUILTINS = [
    name
    for name in prunus.registry.names()
    if prunus.registry.info(name).provider.distribution == "prunus"
]


def case(name: str) -> str | StrategyCase:
    """The kit's case for a built-in: data-aware ones (``wanda_*``, ``sparsegpt_*``) get drawn statistics."""
    kinds = prunus.registry.info(name).statistics
    if not kinds:
        return name

    def data(targets: Sequence[prunus.Target]) -> st.SearchStrategy[prunus.Statistics]:
        return pst.statistics(targets, kinds)

    return StrategyCase(name, data=data)


def test_every_granularity_is_covered() -> None:
    assert {prunus.registry.info(name).granularity for name in BUILTINS} >= {
        "unstructured",
        "structured",
        "global",
    }


def test_every_builtin_granularity_declares_its_documented_rule() -> None:
    """The kit checks each built-in granularity's declaration against its documentation (builtin_rules)."""
    from prunus.testing.builtin_rules import RULES

    builtin = {
        c.name
        for c in prunus.registry.components("granularity")
        if c.provider.distribution == "prunus"
    }
    assert builtin == set(RULES)


class TestBuiltinStrategies(StrategyTests):
    @pytest.fixture(scope="class", params=BUILTINS)
    @classmethod
    def prunus_strategy(cls, request: pytest.FixtureRequest) -> str | StrategyCase:
        return case(str(request.param))
