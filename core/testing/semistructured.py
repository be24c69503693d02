"""The kit's support of ``nm``, ``block`` and ``aligned`` under its former name, ``prunus.testing.semistructured``.

Every granularity is now checked through its own declaration (:mod:`prunus.testing.partitions`), and the
documented rules of the built-in ones live in :mod:`prunus.testing.builtin_rules`; this module re-exports what
code written against the former name imports.
"""

from __future__ import annotations

from .builtin_rules import aligned_keep, nm_options

__all__ = ["aligned_keep", "nm_options"]
