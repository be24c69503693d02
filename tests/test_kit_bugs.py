"""The conformance kit catches every bug of the catalogue (tests/kit_bugs.py), at its default settings.

Each bug is checked twice: as a built-in component (a broken granularity replacing the built-in of its name, a
broken criterion at a built-in granularity) and as a third-party one registered from outside through a plugin's
hooks (the broken granularity under a new name, the broken criterion at a correct third-party granularity). The
kit runs as a plugin's CI runs it: default examples, its fixed seeds, no database. The failure must name a
property that catches the bug, show the smallest example and say what is wrong.
"""

from __future__ import annotations

import re

import pytest
from kit_bugs import BUGS, Bug

from prunus.testing import KitFailure, check_strategy

VARIANTS = ("built-in", "third-party")


def test_the_catalogue_holds_at_least_thirty_broken_components() -> None:
    assert len(BUGS) * len(VARIANTS) >= 30
    kinds = {bug.component.kind for bug in BUGS}
    assert kinds == {"granularity", "criterion"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bug", BUGS, ids=[bug.id for bug in BUGS])
def test_caught_at_default_settings(
    bug: Bug, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRUNUS_TESTING_MAX_EXAMPLES", raising=False)
    name, registry = bug.builtin() if variant == "built-in" else bug.third_party()
    with pytest.raises(KitFailure) as info:
        check_strategy(bug.case(name), registry=registry, properties=bug.props)
    failure = info.value
    found = [f for f in failure.failures if {f.name, *f.also} & set(bug.props)]
    assert found, str(failure)
    assert re.search(bug.message, found[0].problem, re.DOTALL), found[0].problem
    message = str(failure)
    assert f"property {found[0].name!r} fails for strategy {name!r}" in message
    assert "smallest failing example found:" in message
