"""The opt-in pytest plugin of the conformance kit: fixtures prefixed ``prunus_`` and a command-line option.

Enable it in a test module or the root ``conftest.py``::

    pytest_plugins = ["prunus.testing.pytest_plugin"]

or on the command line with ``-p prunus.testing.pytest_plugin``. It is not loaded automatically.

Fixtures:

* ``prunus_strategy`` (class scope): the strategy to test; override it in a :class:`~prunus.testing.StrategyTests`
  subclass with ``@pytest.fixture(scope="class", params=[...])``, returning a name or a
  :class:`~prunus.testing.StrategyCase`.
* ``prunus_registry`` (session scope): where names are looked up; ``prunus.registry`` unless overridden.
* ``prunus_max_examples`` (session scope): Hypothesis examples per property, from ``--prunus-max-examples``,
  the ``PRUNUS_TESTING_MAX_EXAMPLES`` environment variable, the ``prunus_max_examples`` ini option or the kit's
  default. The command-line and ini options exist only when the plugin is loaded at start-up (``-p`` or the
  root ``conftest.py``); with ``pytest_plugins`` in a test module, use the environment variable.
* ``prunus_case`` (class scope): the resolved strategy the ``StrategyTests`` methods check.
* ``prunus_check``: :func:`~prunus.testing.check_strategy` with the session's settings.

This module imports only pytest; the kit (Hypothesis, torch) loads when a fixture is first used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .base import KitCase
    from .check import KitReport

__all__ = [
    "prunus_case",
    "prunus_check",
    "prunus_max_examples",
    "prunus_registry",
    "prunus_strategy",
    "pytest_addoption",
]

OPTION = "--prunus-max-examples"
ENVIRONMENT = "PRUNUS_TESTING_MAX_EXAMPLES"
_HELP = "Hypothesis examples per property of the prunus conformance kit (default: the kit's, 25)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("prunus", "prunus conformance kit")
    group.addoption(OPTION, type=int, default=None, dest="prunus_max_examples", help=_HELP)
    parser.addini("prunus_max_examples", help=_HELP, default="")


@pytest.fixture(scope="session")
def prunus_registry() -> Any:
    """The registry strategy names are looked up in: ``prunus.registry``."""
    from ..registration import registry

    return registry


@pytest.fixture(scope="session")
def prunus_max_examples(request: pytest.FixtureRequest) -> int:
    """Hypothesis examples per property: the command line, the environment, the ini option, the default."""
    from .check import DEFAULT_MAX_EXAMPLES

    config = request.config
    value = config.getoption("prunus_max_examples", default=None)
    if value is None:
        value = os.environ.get(ENVIRONMENT) or None
    if value is None:
        try:
            value = config.getini("prunus_max_examples") or None
        except ValueError:  # the plugin was loaded after the ini options were read
            value = None
    try:
        return int(value) if value is not None else DEFAULT_MAX_EXAMPLES
    except ValueError:
        raise pytest.UsageError(
            f"prunus_max_examples must be an int, not {value!r} ({OPTION}, {ENVIRONMENT} or the ini option)"
        ) from None


@pytest.fixture(scope="class")
def prunus_strategy() -> Any:
    """The strategy to test: override this fixture (class scope, parametrized) in your test class."""
    pytest.fail(
        "name the strategies to test: in your StrategyTests subclass add\n"
        '    @pytest.fixture(scope="class", params=["my_strategy", ...])\n'
        "    @classmethod\n"
        "    def prunus_strategy(cls, request):\n"
        "        return request.param",
        pytrace=False,
    )


@pytest.fixture(scope="class")
def prunus_case(prunus_strategy: Any, prunus_registry: Any, prunus_max_examples: int) -> KitCase:
    """The strategy under test, resolved against ``prunus_registry``."""
    from .base import KitCase
    from .subject import Subject

    subject = Subject.resolve(prunus_strategy, registry=prunus_registry)
    return KitCase(subject, prunus_max_examples)


@pytest.fixture
def prunus_check(prunus_registry: Any, prunus_max_examples: int) -> Callable[..., KitReport]:
    """``prunus_check(strategy, **options)``: :func:`~prunus.testing.check_strategy` with the session's settings."""
    from .check import check_strategy

    def check(strategy: Any, **options: Any) -> KitReport:
        __tracebackhide__ = True
        options.setdefault("registry", prunus_registry)
        options.setdefault("max_examples", prunus_max_examples)
        return check_strategy(strategy, **options)

    return check
