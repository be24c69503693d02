"""The ``prunus`` command line (click): ``list``, ``info``, ``prune``, ``report``, ``sensitivity``.

:func:`main` is the click group (defined in :mod:`prunus.cli.commands`: no module here is named like a function
it holds), :func:`run` calls it in-process and returns the exit code, and :func:`entry_point` is the console
script.
"""

from __future__ import annotations

from .commands import entry_point, main, run

__all__ = ["entry_point", "main", "run"]
