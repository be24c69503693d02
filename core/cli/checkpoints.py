"""``prunus prune-checkpoint``: prune a safetensors checkpoint too large for memory, streamed from disk.

The command line of :func:`prunus.prune_checkpoint`: a Hugging Face model directory (or any safetensors
checkpoint with ``--factory``) in, a pruned directory that ``from_pretrained`` reads out. With ``--calibration``
(text the checkpoint's tokenizer cuts into sequences, or a ``.safetensors`` file of token ids) a data-aware
strategy (``wanda_*``, ``sparsegpt_*``) calibrates and prunes the blocks one at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..streaming.pruning import prune_checkpoint
from .context import UserError, registry_of, user_errors
from .llm import allocation_of, calibration_batches, calibration_options, read_calibration
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
@calibration_options(required=False)
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
    calibration: Path | None,
    samples: int,
    length: int,
    per_line: bool,
    allocation: str | None,
    allocation_options: tuple[str, ...],
    reconstruct: bool | None,
    overwrite: bool,
    as_json: bool,
    progress: bool,
) -> None:
    """Prune the safetensors checkpoint SOURCE into the directory DESTINATION, one block at a time.

    SOURCE is a Hugging Face model directory (config.json and safetensors shards) or any safetensors
    checkpoint with --factory. Memory holds one block of the model at a time; DESTINATION is written in full
    or not at all, and from_pretrained reads it. A global strategy (l1_global) reads SOURCE twice.

    With --calibration (a text file, cut into sequences by SOURCE's tokenizer, or a .safetensors file of
    token ids) a data-aware strategy (wanda_row, sparsegpt_nm, ...) runs the calibration batches through the
    blocks one at a time, each pruned on the outputs of the blocks before it; memory holds one block and its
    activations.

    \b
    Examples:
      prunus prune-checkpoint Llama-3-8B/ Llama-3-8B-2of4/ --strategy l1_nm
      prunus prune-checkpoint Llama-3-8B/ Llama-3-8B-50/ --strategy l1_global --amount 0.5
      prunus prune-checkpoint net.safetensors net-pruned/ --factory models:Net --strategy l1_unstructured --amount 0.3
      prunus prune-checkpoint Llama-3-8B/ Llama-3-8B-wanda/ --strategy wanda_row --amount 0.5 --calibration c4.txt
    """
    chosen: dict[str, Any] = _parse_pairs(options, "--option")
    if amount is not None:
        if "amount" in chosen:
            raise UserError("give the amount once: --amount or --option amount=..., not both")
        chosen["amount"] = amount
    model = _import_object(factory, "--factory") if factory is not None else None
    registry = registry_of(ctx)
    data = None
    calibrated: dict[str, Any] = {}
    if calibration is not None:
        calibrated = {
            "allocation": allocation_of(registry, allocation, allocation_options),
            "reconstruct": reconstruct,
        }
        content = read_calibration(calibration, samples=samples)
        data = calibration_batches(
            content,
            lambda: _tokenizer(source),
            samples=samples,
            length=length,
            per_line=per_line,
        )
    elif allocation is not None or allocation_options or reconstruct is not None:
        raise UserError(
            "--allocation and --reconstruct work from calibration data: give --calibration"
        )
    report = prune_checkpoint(
        source,
        destination,
        strategy,
        model=model,
        include=list(include) or None,
        exclude=list(exclude) or None,
        data=data,
        overwrite=overwrite,
        show_progress=progress,
        registry=registry,
        **calibrated,
        **chosen,
    )
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        click.echo(str(report))
        click.echo(f"wrote {destination}")


def _tokenizer(source: Path) -> Any:
    """The tokenizer of the Hugging Face directory ``source`` (for calibration text)."""
    from ..workflow.llm import load_tokenizer

    return load_tokenizer(source)
