"""``prunus prune-llm``: prune a language model (a Hugging Face directory or a GGUF file) with calibration text.

::

    prunus prune-llm SmolLM2.gguf --calibration text.txt --strategy sparsegpt_unstructured --amount 0.5 \\
        --allocation owl -o pruned/

loads the model (a GGUF file's weights dequantized), cuts the text into calibration batches, prunes the Linear
(or GPT-2 ``Conv1D``) weights of its blocks with the strategy on that data, block by block with a progress bar,
and writes a directory ``AutoModelForCausalLM.from_pretrained`` loads: the weights with their zeros, the
tokenizer, ``prunus_pruning.safetensors`` (masks and restore data) and ``prunus-report.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import torch
from torch import Tensor

from .. import files
from ..engine import prune
from ..registration import Registry
from .context import UserError, registry_of, user_errors
from .workflow import _json, _parse_pairs

__all__ = [
    "allocation_of",
    "calibration_batches",
    "calibration_options",
    "prune_llm_command",
    "read_calibration",
]

F = TypeVar("F", bound=Callable[..., Any])


def calibration_options(*, required: bool) -> Callable[[F], F]:
    """The options of a command that prunes on calibration data: the data, how it is cut, what is done with it.

    They arrive as the arguments ``calibration``, ``samples``, ``length``, ``per_line``, ``allocation``,
    ``allocation_options`` and ``reconstruct``.
    """
    options = [
        click.option(
            "--calibration",
            "--data",
            "calibration",
            type=click.Path(path_type=Path, dir_okay=False),
            required=required,
            help="A UTF-8 text file to calibrate on (cut into sequences by the model's tokenizer), or a "
            ".safetensors file of token ids, each tensor one batch.",
        ),
        click.option(
            "--samples",
            type=int,
            default=128,
            show_default=True,
            help="Calibration sequences at most.",
        ),
        click.option(
            "--length",
            type=int,
            default=256,
            show_default=True,
            help="Tokens per calibration sequence.",
        ),
        click.option(
            "--per-line",
            is_flag=True,
            help="Each non-empty line of the text is one sequence (else the text is cut into windows).",
        ),
        click.option("--allocation", help="Split the amount across layers: owl or uniform."),
        click.option(
            "--allocation-option",
            "allocation_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="An allocation option, e.g. --allocation-option max_deviation=0.1 (repeatable).",
        ),
        click.option(
            "--reconstruct/--no-reconstruct",
            default=None,
            help="Re-solve the kept weights (SparseGPT's reconstruction); default: what the strategy does.",
        ),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def allocation_of(
    registry: Registry, allocation: str | None, allocation_options: Sequence[str]
) -> Any:
    """The allocation ``--allocation`` and ``--allocation-option`` ask for (``None`` for none)."""
    if allocation_options:
        if allocation is None:
            raise UserError("--allocation-option needs --allocation")
        return registry.allocation(
            allocation, **_parse_pairs(allocation_options, "--allocation-option")
        )
    return None if allocation is None else registry.allocation(allocation)


def read_calibration(path: Path, *, samples: int) -> str | list[Tensor]:
    """What ``--calibration`` holds, read before any model is loaded (a mistake costs nothing).

    Returns:
        The text of a text file, or the batches of a ``.safetensors`` file: its tensors of token ids in the
        order of their names, ``samples`` at most.
    """
    if path.suffix != ".safetensors":
        return files.read_text(path, what="calibration text")
    from ..streaming.checkpoint import Checkpoint

    ids = Checkpoint(path)
    batches = list(ids.load(sorted(ids.tensors)[:samples]).values())
    if not batches or any(b.is_floating_point() or b.dim() not in (1, 2) for b in batches):
        raise UserError(
            f"{path} must hold token ids: integer tensors of shape (tokens,) or (sequences, tokens)"
        )
    return [b.reshape(1, -1) if b.dim() == 1 else b for b in batches]


def calibration_batches(
    content: str | list[Tensor],
    tokenizer: Callable[[], Any],
    *,
    samples: int,
    length: int,
    per_line: bool,
) -> list[Tensor]:
    """The calibration batches of :func:`read_calibration`'s ``content``, announced on stderr.

    Text is tokenized by ``tokenizer()`` and cut by :func:`prunus.workflow.llm.text_batches` (``samples``,
    ``length`` and ``per_line`` as there); token ids are the batches as they are.
    """
    from ..workflow.llm import text_batches

    batches = (
        content
        if isinstance(content, list)
        else text_batches(tokenizer(), content, length=length, samples=samples, per_line=per_line)
    )
    tokens = sum(b.numel() for b in batches)
    click.echo(f"calibrating on {len(batches)} batches ({tokens} tokens)", err=True)
    return batches


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@click.command("prune-llm")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="The directory to write."
)
@click.option(
    "--strategy",
    default="wanda_row",
    show_default=True,
    help="A registered strategy: wanda_row, sparsegpt_unstructured, sparsegpt_nm, l1_row...",
)
@click.option("--amount", type=float, help="Fraction of the weights to prune (not for *_nm).")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another strategy option, e.g. --option n_keep=2 --option m_group=4 (repeatable).",
)
@calibration_options(required=True)
@click.option("--include", multiple=True, metavar="PATTERN", help="Prune only these parameters.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave these parameters alone.")
@click.option(
    "--dtype",
    type=click.Choice(sorted(_DTYPES)),
    default="float32",
    show_default=True,
    help="The dtype the model is loaded (and a GGUF file dequantized) in.",
)
@click.pass_context
@user_errors
def prune_llm_command(
    ctx: click.Context,
    model: Path,
    calibration: Path,
    output: Path,
    strategy: str,
    amount: float | None,
    options: Sequence[str],
    allocation: str | None,
    allocation_options: Sequence[str],
    reconstruct: bool | None,
    samples: int,
    length: int,
    per_line: bool,
    include: Sequence[str],
    exclude: Sequence[str],
    dtype: str,
) -> None:
    """Prune a language model MODEL (a Hugging Face model directory or a .gguf file) on calibration text.

    Writes a directory that transformers' from_pretrained loads (the pruned weights, the tokenizer), with
    prunus's pruning state beside them (prunus.load_pretrained brings the masks back) and the report.
    """
    from ..workflow.llm import load_causal_lm, save_causal_lm

    registry = registry_of(ctx)
    # Every option is checked before the model is loaded: a mistake costs nothing.
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} is a file; give a directory to write the model to")
    chosen: dict[str, Any] = _parse_pairs(options, "--option")
    if amount is not None:
        chosen["amount"] = amount
    registry.get(strategy, **chosen)
    allocator = allocation_of(registry, allocation, allocation_options)
    content = read_calibration(calibration, samples=samples)
    click.echo(f"loading {model}", err=True)
    lm, tokenizer = load_causal_lm(model, dtype=_DTYPES[dtype])
    batches = calibration_batches(
        content, lambda: tokenizer, samples=samples, length=length, per_line=per_line
    )
    report = prune(
        lm,
        strategy,
        data=batches,
        allocation=allocator,
        reconstruct=reconstruct,
        include=list(include) or None,
        exclude=list(exclude) or None,
        progress=True,
        registry=registry,
        **chosen,
    )
    save_causal_lm(lm, tokenizer, output, [report])
    files.write_text(output / "prunus-report.json", _json(report.model_dump(mode="json")))
    click.echo(
        f"pruned {report.pruned:,} of {report.numel:,} weights ({report.sparsity:.1%}) in "
        f"{len(report.parameters)} layers with {strategy}; wrote {output}"
    )
