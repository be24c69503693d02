"""``prunus prune-checkpoint``: prune a safetensors checkpoint too large for memory, streamed from disk.

The command line of :func:`prunus.prune_checkpoint`: a Hugging Face model directory (or any safetensors
checkpoint with ``--factory``) in, a pruned directory that ``from_pretrained`` reads out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..streaming.pruning import prune_checkpoint
from .context import UserError, registry_of, user_errors
from .workflow import PROGRESS, STRATEGY_OPTION, _import_object, _parse_pairs

__all__ = ["prune_checkpoint_command"]


@click.command("prune-checkpoint")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option(
    "--strategy",
    required=True,
    help="A registered strategy (see `prunus list`): l1_unstructured, l1_nm, l1_global, ...",
)
@click.option(
    "--amount", type=float, help="Fraction of the entries to prune (strategies with an amount)."
)
@STRATEGY_OPTION
@click.option(
    "--factory",
    metavar="MODULE:FUNCTION",
    help="Builds the model (called on the meta device; a class works too). Default: the Hugging Face "
    "model of SOURCE/config.json (needs prunus[transformers]).",
)
@click.option("--include", multiple=True, metavar="PATTERN", help="Only prune parameters matching.")
@click.option(
    "--exclude", multiple=True, metavar="PATTERN", help="Leave parameters matching alone."
)
@click.option("--overwrite", is_flag=True, help="Replace DESTINATION if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the prune report as JSON.")
@PROGRESS
@click.pass_context
@user_errors
def prune_checkpoint_command(
    ctx: click.Context,
    source: Path,
    destination: Path,
    strategy: str,
    amount: float | None,
    options: tuple[str, ...],
    factory: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    overwrite: bool,
    as_json: bool,
    progress: bool,
) -> None:
    """Prune the safetensors checkpoint SOURCE into the directory DESTINATION, one block at a time.

    SOURCE is a Hugging Face model directory (config.json and safetensors shards) or any safetensors
    checkpoint with --factory. Memory holds one block of the model at a time; DESTINATION is written in full
    or not at all, and from_pretrained reads it. A global strategy (l1_global) reads SOURCE twice.

    \b
    Examples:
      prunus prune-checkpoint Llama-3-8B/ Llama-3-8B-2of4/ --strategy l1_nm
      prunus prune-checkpoint Llama-3-8B/ Llama-3-8B-50/ --strategy l1_global --amount 0.5
      prunus prune-checkpoint net.safetensors net-pruned/ --factory models:Net --strategy l1_unstructured --amount 0.3
    """
    chosen: dict[str, Any] = _parse_pairs(options, "--option")
    if amount is not None:
        if "amount" in chosen:
            raise UserError("give the amount once: --amount or --option amount=..., not both")
        chosen["amount"] = amount
    model = _import_object(factory, "--factory") if factory is not None else None
    report = prune_checkpoint(
        source,
        destination,
        strategy,
        model=model,
        include=list(include) or None,
        exclude=list(exclude) or None,
        overwrite=overwrite,
        show_progress=progress,
        registry=registry_of(ctx),
        **chosen,
    )
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        click.echo(str(report))
        click.echo(f"wrote {destination}")
