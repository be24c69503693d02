"""Changing a model all or nothing: the one transaction every call that changes a model goes through.

``prune`` attaches one mask per parameter, ``shrink`` replaces layers, ``to_sparse`` swaps modules; each records
how to undo every step in a :func:`transaction`. If anything in the block raises, the recorded undos run in
reverse order and the model is left exactly as it was. An undo that raises does not stop the others: every
undo runs, and the failure is reported as a :class:`~prunus.errors.RollbackError` that names both errors.

Masks attached with :func:`prunus.masking.attach_mask` inside a transaction zero their weights only at the
commit, once the block has succeeded, so undoing an attachment drops buffers and never needs a copy of the
weights. Transactions hold :data:`prunus.masking.MASK_LOCK`: two threads changing masks (on one model or on
models that share modules) take turns, so masks compose and ``restore`` stays bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from . import masking
from .errors import RollbackError

__all__ = ["ModuleSnapshot", "Transaction", "transaction"]

Undo = Callable[[], None]


class ModuleSnapshot:
    """Enough of every module's state to undo a structural change to a model (no tensor is copied).

    Taken before a surgery that replaces parameters, buffers, submodules, hooks, attributes or classes (``shrink``,
    ``load_shrunk``); calling it puts every module's ``__dict__`` back, so it is an undo for
    :meth:`Transaction.record`. Values changed *in place* inside a kept tensor are not covered: record their own
    undo for those.
    """

    def __init__(self, model: nn.Module) -> None:
        self.states: list[tuple[nn.Module, dict[str, Any]]] = []
        self.classes = [(module, type(module)) for module in model.modules()]
        for module in model.modules():
            state = dict(module.__dict__)
            for key, value in module.__dict__.items():
                if key in ("_parameters", "_buffers", "_modules") or (
                    "hook" in key and isinstance(value, dict)
                ):
                    state[key] = type(value)(value)
            state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
            self.states.append((module, state))

    def __call__(self) -> None:
        for module, cls in self.classes:  # a surgery may switch a module to a subclass
            module.__class__ = cls
        for module, state in self.states:
            module.__dict__.clear()
            module.__dict__.update(state)


class Transaction:
    """The undo log of one all-or-nothing change (made by :func:`transaction`)."""

    def __init__(self) -> None:
        self._undo: list[Undo] = []

    def record(self, undo: Undo) -> None:
        """Remember how to undo the step just made; run in reverse order if the transaction fails."""
        self._undo.append(undo)

    def rollback(self) -> list[BaseException]:
        """Run every recorded undo, newest first, even past one that raises; return what they raised."""
        failures: list[BaseException] = []
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except BaseException as error:
                failures.append(error)
        return failures


@contextmanager
def transaction() -> Iterator[Transaction]:
    """A block whose recorded changes to a model are kept all, or undone all if the block raises.

    >>> with transaction() as tx:                                      # doctest: +SKIP
    ...     tx.record(attach_mask(module, "weight", mask))

    Raises:
        RollbackError: the block failed and an undo failed too (the model may be partly changed; the
            message names both errors, the block's error is the ``__cause__``).
    """
    with masking.MASK_LOCK, masking.deferred_zeroing() as commit:
        tx = Transaction()
        try:
            yield tx
        except BaseException as error:
            failures = tx.rollback()
            if failures:
                described = "; ".join(f"{type(f).__name__}: {f}" for f in failures)
                raise RollbackError(
                    f"{type(error).__name__}: {error}; undoing the changes already made then failed too "
                    f"({described}), so the model may be left partly changed"
                ) from error
            raise
        commit()
