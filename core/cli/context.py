"""What every command shares: the registry it works with and how a failure is reported.

A command never ends in a traceback: :func:`user_errors` turns every exception a command raises (a prunus
error, a missing optional dependency, anything a user's factory or model raises) into a :class:`UserError`, one
line on stderr of at most :data:`MESSAGE_LIMIT` characters, and exit status 2.
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


MESSAGE_LIMIT = 1000
"""Characters an error line may have: a message quoting a huge value is cut there."""


class UserError(click.ClickException):
    """A one-line error for a user mistake; exit status 2, as ``prunus`` gives for prunus errors."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        line = " ".join(message.split())
        if len(line) > MESSAGE_LIMIT:
            line = f"{line[: MESSAGE_LIMIT - 40]}... (message cut at {MESSAGE_LIMIT} characters)"
        super().__init__(line)

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(error: BaseException) -> str:
    """An error's message on one line (every line of it, joined), cut to :data:`MESSAGE_LIMIT` characters."""
    text = str(error)[: MESSAGE_LIMIT * 2]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return ("; ".join(lines) or type(error).__name__)[:MESSAGE_LIMIT]


def user_errors(function: F) -> F:
    """Turn every exception a command raises into a one-line error (exit status 2)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except click.ClickException:
            raise
        except PrunusError as error:
            raise UserError(f"{type(error).__name__}: {one_line(error)}") from None
        except ImportError as error:  # an optional dependency, e.g. matplotlib for --plots
            raise UserError(one_line(error)) from None
        except (
            Exception
        ) as error:  # a user's model or function, or a bug: still one line, never a traceback
            raise UserError(f"{type(error).__name__}: {one_line(error)}") from None

    return wrapper  # type: ignore[return-value]


def registry_of(ctx: click.Context) -> Registry:
    """The registry a command uses: a private one tests pass as the context object, else the global one."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Registry) else registry
