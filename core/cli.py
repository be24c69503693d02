"""The ``prunus`` command line.

``prunus list`` shows every strategy with its granularity, a one-line summary and the plugin (distribution) that
provides it; ``prunus info NAME`` shows one strategy's options. ``prunus prune``, ``prunus report`` and
``prunus sensitivity`` run the pruning workflow on a checkpoint (see :mod:`prunus.cli_workflow`). A user mistake
ends with a one-line error and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .cli_workflow import prune_command, report_command, sensitivity_command
from .errors import PrunusError
from .registry import Registry, registry

__all__ = ["main"]


def _registry(ctx: click.Context) -> Registry:
    # Tests pass a private registry through click's context object; users get the global one.
    return ctx.obj if isinstance(ctx.obj, Registry) else registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prunus")
def main() -> None:
    """prunus: a plugin-based pruning strategy registry for PyTorch."""


@main.command("list")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--criteria", is_flag=True, help="List the importance criteria instead of the strategies."
)
@click.pass_context
def list_command(ctx: click.Context, pattern: str | None, as_json: bool, criteria: bool) -> None:
    """List the registered strategies, optionally only those matching a glob PATTERN (e.g. '*_structured').

    Each row shows the strategy's granularity, a one-line summary and the plugin and distribution that
    provide it. Strategies come from prunus's built-in plugins and from installed distributions that declare
    an entry point in the 'prunus' group.
    """
    reg = _registry(ctx)
    rows: list[dict[str, Any]]
    if criteria:
        rows = [
            {"name": name, "provider": str(reg.provider("criterion", name))}
            for name in reg.criteria(pattern)
        ]
    else:
        rows = []
        for name in reg.names(pattern):
            info = reg.info(name)
            rows.append(
                {
                    "name": name,
                    "granularity": info.granularity,
                    "summary": info.summary,
                    "plugin": info.provider.plugin,
                    "distribution": info.provider.distribution,
                    "version": info.provider.version,
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows, criteria=criteria)
    for failure in reg.plugin_failures:
        click.echo(f"warning: plugin {failure.plugin!r} {failure.error}", err=True)
    if pattern is not None and not rows:
        raise click.ClickException(
            f"nothing matches {pattern!r}; run `prunus list` to see every name"
        )


def _table(rows: list[dict[str, Any]], *, criteria: bool) -> None:
    if criteria:
        columns = [("criterion", "name"), ("provided by", "provider")]
    else:
        for row in rows:
            dist = row["distribution"]
            row["provided by"] = (
                f"{row['plugin']} ({dist} {row['version'] or ''})".replace(" )", ")")
                if dist
                else row["plugin"]
            )
        columns = [
            ("strategy", "name"),
            ("granularity", "granularity"),
            ("provided by", "provided by"),
            ("summary", "summary"),
        ]
    widths = [max([len(title)] + [len(str(r[key])) for r in rows]) for title, key in columns]
    click.echo(
        "  ".join(title.ljust(w) for (title, _), w in zip(columns, widths, strict=True)).rstrip()
    )
    for row in rows:
        cells = (str(row[key]).ljust(w) for (_, key), w in zip(columns, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@main.command("info")
@click.argument("name")
@click.pass_context
def info_command(ctx: click.Context, name: str) -> None:
    """Show a strategy's summary, granularity, provider and options (with types and defaults)."""
    reg = _registry(ctx)
    info = reg.info(name)
    click.echo(f"{info.name}: {info.summary}")
    click.echo(f"granularity: {info.granularity}")
    click.echo(f"provided by: {info.provider}")
    click.echo(f"deterministic: {'yes' if info.deterministic else 'no (seeded)'}")
    click.echo("options:")
    for option, field in info.config.model_fields.items():
        default = "required" if field.is_required() else f"default {field.default!r}"
        description = f"  {field.description}" if field.description else ""
        click.echo(f"  {option} ({default}){description}")


# The workflow commands (prune, report, sensitivity) live in their own module.
main.add_command(prune_command)
main.add_command(report_command)
main.add_command(sensitivity_command)


def run(args: list[str] | None = None, registry: Registry | None = None) -> int:
    """Run the CLI and return its exit code, turning prunus errors into one-line messages."""
    try:
        main.main(args=args, obj=registry, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except PrunusError as error:
        click.echo(f"error: {type(error).__name__}: {error}", err=True)
        return 2
    return 0


def entry_point() -> None:
    """The ``prunus`` console script."""
    sys.exit(run())
