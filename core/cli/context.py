"""What every command shares: the registry it works with and how a user mistake is reported.

A command never ends in a traceback for a user's mistake: :func:`user_errors` turns prunus errors into a
:class:`UserError`, one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import PrunusError
from ..registration import Registry, registry

__all__ = ["UserError", "one_line", "registry_of", "user_errors"]

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A one-line error for a user mistake; exit status 2, as ``prunus`` gives for prunus errors."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(error: BaseException) -> str:
    """An error's message on one line (every line of it, joined)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def user_errors(function: F) -> F:
    """Turn prunus errors raised by a command into one-line errors."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PrunusError as error:
            raise UserError(f"{type(error).__name__}: {one_line(error)}") from None
        except ImportError as error:  # an optional dependency, e.g. matplotlib for --plots
            raise UserError(one_line(error)) from None

    return wrapper  # type: ignore[return-value]


def registry_of(ctx: click.Context) -> Registry:
    """The registry a command uses: a private one tests pass as the context object, else the global one."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Registry) else registry
