"""prunus.testing: the property-based conformance kit for plugin authors (needs ``prunus[testing]``).

Check a strategy from a test, a script or a notebook::

    from prunus.testing import check_strategy
    check_strategy("taylor_structured")      # raises AssertionError naming the property and the example

or subclass :class:`StrategyTests` in a pytest module (with ``pytest_plugins = ["prunus.testing.pytest_plugin"]``)
and name the strategies through a class-scoped ``prunus_strategy`` fixture. The Hypothesis strategies the kit
draws from are in :mod:`prunus.testing.generators` (Hypothesis calls them strategies; prunus keeps that word
for pruning strategies).

Names load on first use, so importing this package (or its pytest plugin) imports neither Hypothesis nor
pytest until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import StrategyTests
    from .check import (
        DEFAULT_MAX_EXAMPLES,
        KitFailure,
        KitReport,
        PropertyFailure,
        check_property,
        check_strategy,
        default_max_examples,
    )
    from .properties import (
        Property,
        Requirement,
        property_names,
        register_property,
        resolve_properties,
    )
    from .subject import (
        Example,
        Param,
        StrategyCase,
        Subject,
        configs,
        register_granularity_options,
        register_options,
        register_units,
    )

_EXPORTS = {
    "DEFAULT_MAX_EXAMPLES": "check",
    "Example": "subject",
    "KitFailure": "check",
    "KitReport": "check",
    "Param": "subject",
    "Property": "properties",
    "PropertyFailure": "check",
    "Requirement": "properties",
    "StrategyCase": "subject",
    "StrategyTests": "base",
    "Subject": "subject",
    "check_property": "check",
    "check_strategy": "check",
    "default_max_examples": "check",
    "configs": "subject",
    "property_names": "properties",
    "register_granularity_options": "subject",
    "register_options": "subject",
    "register_property": "properties",
    "register_units": "subject",
    "resolve_properties": "properties",
}

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "Example",
    "KitFailure",
    "KitReport",
    "Param",
    "Property",
    "PropertyFailure",
    "Requirement",
    "StrategyCase",
    "StrategyTests",
    "Subject",
    "check_property",
    "check_strategy",
    "configs",
    "default_max_examples",
    "property_names",
    "register_granularity_options",
    "register_options",
    "register_property",
    "register_units",
    "resolve_properties",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
