"""The ``prunus`` command line.

``prunus list`` shows every strategy with its granularity, a one-line summary and the plugin (distribution) that
provides it; ``prunus info NAME`` shows one strategy's options. ``prunus prune``, ``prunus report`` and
``prunus sensitivity`` run the pruning workflow on a checkpoint (see :mod:`prunus.cli.workflow`);
``prunus prune-checkpoint`` prunes a safetensors checkpoint streamed from disk (see :mod:`prunus.cli.checkpoints`);
``prunus prune-llm`` prunes a language model on calibration text (:mod:`prunus.cli.llm`). A user mistake ends
with a one-line error and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..errors import PrunusError
from ..registration import Provider, Registry
from .checkpoints import prune_checkpoint_command
from .context import MESSAGE_LIMIT, one_line, registry_of
from .llm import prune_llm_command
from .workflow import prune_command, report_command, sensitivity_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prunus")
def main() -> None:
    """prunus: a plugin-based pruning strategy registry for PyTorch."""


@main.command("list")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--criteria", "kind", flag_value="criterion", help="List the importance criteria instead."
)
@click.option(
    "--granularities", "kind", flag_value="granularity", help="List the granularities instead."
)
@click.option(
    "--schedules", "kind", flag_value="schedule", help="List the pruning schedules instead."
)
@click.option(
    "--allocations",
    "kind",
    flag_value="allocation",
    help="List the allocations across layers (owl...) instead.",
)
@click.option(
    "--reconstructions",
    "kind",
    flag_value="reconstruction",
    help="List the weight reconstructions (sparsegpt...) instead.",
)
@click.pass_context
def list_command(ctx: click.Context, pattern: str | None, as_json: bool, kind: str | None) -> None:
    """List the registered strategies, optionally only those matching a glob PATTERN (e.g. '*_structured').

    Each row shows the strategy's granularity, a one-line summary and the plugin and distribution that
    provide it. Strategies come from prunus's built-in plugins and from installed distributions that declare
    an entry point in the 'prunus' group. Every criterion at every granularity is a strategy named
    <criterion>_<granularity>.
    """
    reg = registry_of(ctx)
    rows: list[dict[str, Any]] = []
    if kind is not None:
        for component in reg.components(kind, pattern):  # type: ignore[arg-type]
            rows.append(
                {
                    "name": component.name,
                    "summary": component.summary,
                    **_provider(component.provider),
                }
            )
    else:
        for name in reg.names(pattern):
            info = reg.info(name)
            rows.append(
                {
                    "name": name,
                    "granularity": info.granularity,
                    "summary": info.summary,
                    **_provider(info.provider),
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows, title=kind or "strategy")
    for failure in reg.plugin_failures:
        click.echo(f"warning: plugin {failure.plugin!r} {failure.error}", err=True)
    if pattern is not None and not rows:
        raise click.ClickException(
            f"nothing matches {pattern!r}; run `prunus list` to see every name"
        )


def _provider(provider: Provider) -> dict[str, Any]:
    return {
        "plugin": provider.plugin,
        "distribution": provider.distribution,
        "version": provider.version,
    }


def _table(rows: list[dict[str, Any]], *, title: str) -> None:
    for row in rows:
        dist = row["distribution"]
        version = f" {row['version']}" if row["version"] else ""
        row["provided by"] = f"{row['plugin']} ({dist}{version})" if dist else row["plugin"]
    columns = [(title, "name")]
    if title == "strategy":
        columns.append(("granularity", "granularity"))
    columns += [("provided by", "provided by"), ("summary", "summary")]
    widths = [max([len(head)] + [len(str(r[key])) for r in rows]) for head, key in columns]
    click.echo(
        "  ".join(head.ljust(w) for (head, _), w in zip(columns, widths, strict=True)).rstrip()
    )
    for row in rows:
        cells = (str(row[key]).ljust(w) for (_, key), w in zip(columns, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@main.command("info")
@click.argument("name")
@click.pass_context
def info_command(ctx: click.Context, name: str) -> None:
    """Show a strategy's summary, granularity, provider and options (with types and defaults)."""
    reg = registry_of(ctx)
    info = reg.info(name)
    click.echo(f"{info.name}: {info.summary}")
    click.echo(f"granularity: {info.granularity}")
    click.echo(f"provided by: {info.provider}")
    click.echo(f"deterministic: {'yes' if info.deterministic else 'no (seeded)'}")
    if info.statistics:
        read = ", ".join(kind.name or kind.__name__ for kind in info.statistics)
        click.echo(f"calibration data: needed (data= / --calibration); reads {read}")
    click.echo("options:")
    for option, about in info.options().items():
        click.echo(f"  {option}: {about}")


# The workflow commands (prune, report, sensitivity) live in their own module.
main.add_command(prune_command)
main.add_command(report_command)
main.add_command(sensitivity_command)
main.add_command(prune_checkpoint_command)
main.add_command(prune_llm_command)


def run(args: list[str] | None = None, registry: Registry | None = None) -> int:
    """Run the CLI and return its exit code, turning every error into a one-line message (exit status 2)."""
    try:
        main.main(args=args, obj=registry, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.UsageError as error:  # one line too, not click's usage block
        hint = f" (see prunus {error.ctx.info_name} --help)" if error.ctx is not None else ""
        message = " ".join(error.format_message().split())[:MESSAGE_LIMIT]
        click.echo(f"error: {message}{hint}", err=True)
        return error.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except PrunusError as error:
        click.echo(f"error: {type(error).__name__}: {one_line(error)}", err=True)
        return 2
    except Exception as error:  # never a traceback: one line, exit status 2
        click.echo(f"error: {type(error).__name__}: {one_line(error)}", err=True)
        return 2
    return 0


def entry_point() -> None:
    """The ``prunus`` console script."""
    sys.exit(run())
