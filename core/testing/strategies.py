"""The kit's Hypothesis generators under their former name, ``prunus.testing.strategies``.

New code imports :mod:`prunus.testing.generators` (and :func:`prunus.testing.configs`); this module re-exports
both so code written against the former name keeps working.
"""

from __future__ import annotations

from .generators import *  # noqa: F403
from .generators import __all__ as _generators
from .subject import configs

__all__ = [*_generators, "configs"]
