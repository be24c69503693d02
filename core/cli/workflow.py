"""The workflow commands of the ``prunus`` command line: ``prune``, ``report`` and ``sensitivity``.

A model is a checkpoint plus a factory: ``--factory mypkg.models:make_net`` (or ``path/to/file.py:make_net``)
names a function that builds the architecture with no arguments, and the checkpoint (a state dict saved with
``torch.save``, or a file of :func:`prunus.save_compressed`) fills in its weights. Data comes the same way:
``--data mypkg.data:load`` names a function returning ``(train, test)``, each an ``(inputs, labels)`` pair of
tensors (or a dict with keys ``train`` and ``test``; a single pair is taken as the test data).

Every command checks all it is given before any work: the options and the config, the model and the data, and
a dry forward pass of the input shape or of a test batch through the model. Its outputs are written last, all
together and atomically (:func:`prunus.files.staged`): a failure anywhere leaves no output, or the previous
one, never a checkpoint without its report. A user mistake (a bad path, a factory that fails, an unknown
strategy, a config with an unknown key, an input that does not fit the model) and any other failure end with
one line on stderr and exit status 2, never a traceback. The current directory is on ``sys.path`` only while a
``--factory`` or ``--data`` function is imported and called.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import json
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import torch
from torch import Tensor, nn

from .. import files
from ..engine import is_pruned, masks, prune, remove
from ..errors import StateError, brief
from ..forward import evaluation_mode, run_model
from ..persistence.compressed import LEGACY_FORMAT, compress_state, load_compressed
from ..persistence.files import read_safetensors_metadata
from ..registration import Registry
from ..workflow.config import (
    PruneConfig,
    SensitivityConfig,
    parse_config,
    read_mapping,
    section,
)
from ..workflow.evaluation import Comparison, Data, compare, summary
from ..workflow.gradual import GradualPruner, fine_tune
from ..workflow.quantization import quantize as quantize_model
from ..workflow.sensitivity_analysis import sensitivity
from .context import UserError, one_line, registry_of, user_errors

__all__ = ["prune_command", "report_command", "sensitivity_command"]

F = TypeVar("F", bound=Callable[..., Any])


# -- loading the user's things ----------------------------------------------------------------------------


@contextlib.contextmanager
def _current_directory_importable() -> Iterator[None]:
    """The current directory first on ``sys.path`` for the block, and ``sys.path`` exactly as it was after.

    A user's ``models.py`` is found while their factory is imported and called; afterwards nothing in the
    current directory can shadow a package prunus imports later (a planted ``matplotlib.py``, say).
    """
    saved = list(sys.path)
    sys.path.insert(0, str(Path.cwd()))
    try:
        yield
    finally:
        sys.path[:] = saved


def _import_object(spec: str, what: str) -> Any:
    """``module:name`` or ``path/to/file.py:name``, imported from the current directory."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(
            f"{what} {brief(spec)} must look like 'module:function' or 'file.py:function'"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"{what} {brief(spec)}: no file {brief(str(path))}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"{what} {brief(spec)}: importing {module_name[:100]} failed: {type(error).__name__}: "
            f"{one_line(error)}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(
            f"{what} {brief(spec)}: {module_name[:100]} has no attribute {attr!r}"
        ) from None


def _call_user(spec: str, what: str) -> Any:
    """Import ``spec`` and call it with no arguments, the current directory importable meanwhile."""
    with _current_directory_importable():
        function = _import_object(spec, what)
        if not callable(function):
            raise UserError(f"{what} {brief(spec)} is not callable")
        try:
            return function()
        except Exception as error:
            raise UserError(
                f"{what} {brief(spec)} raised {type(error).__name__}: {one_line(error)}"
            ) from None


def load_model(checkpoint: Path, factory: str | None, *, trust: bool = False) -> nn.Module:
    """Build the model from ``factory`` and load ``checkpoint`` into it (or unpickle a whole model)."""
    if checkpoint.is_file() and read_safetensors_metadata(checkpoint) is not None:
        try:
            loaded: Any = load_compressed(checkpoint)
        except StateError as error:
            raise UserError(f"cannot load {checkpoint}: {one_line(error)}") from None
        return _into_factory(checkpoint, loaded, factory)
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {brief(str(checkpoint))}") from None
    except IsADirectoryError:
        raise UserError(f"{brief(str(checkpoint))} is a directory, not a checkpoint") from None
    except pickle.UnpicklingError:
        if not trust:
            raise UserError(
                f"{checkpoint} is not a plain state dict (torch.load with weights_only=True refused it); "
                "save model.state_dict() instead, or pass --trust-checkpoint to unpickle a whole model "
                "from a file you trust"
            ) from None
        try:
            loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception as inner:
            raise UserError(
                f"cannot load {checkpoint}: {type(inner).__name__}: {one_line(inner)}"
            ) from None
    except Exception as error:
        raise UserError(
            f"cannot load {checkpoint}: {type(error).__name__}: {one_line(error)}"
        ) from None
    if isinstance(loaded, nn.Module):
        return loaded
    if isinstance(loaded, dict) and loaded.get("format") == LEGACY_FORMAT:
        loaded = load_compressed(checkpoint)  # checked entry by entry
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise UserError(
            f"{checkpoint} holds a {type(loaded).__name__}, not a state dict or a model"
        )
    return _into_factory(checkpoint, loaded, factory)


def _into_factory(checkpoint: Path, loaded: dict[str, Any], factory: str | None) -> nn.Module:
    """The model ``factory`` builds, with the state dict ``loaded`` (read from ``checkpoint``) in it."""
    if factory is None:
        raise UserError(
            f"{checkpoint} is a state dict: give --factory module:function that builds the model"
        )
    model = _call_user(factory, "--factory")
    if not isinstance(model, nn.Module):
        raise UserError(
            f"--factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    try:
        model.load_state_dict(loaded)
    except Exception as error:
        raise UserError(
            f"{checkpoint} does not fit the model from --factory {factory!r}: {one_line(error)[:300]}"
        ) from None
    return model


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(t, Tensor) for t in value)
    )


def load_data(spec: str | None) -> tuple[Data | None, Data | None]:
    """``(train, test)`` from the ``--data`` function (either may be ``None``)."""
    if spec is None:
        return None, None
    value = _call_user(spec, "--data")
    if _is_pair(value):
        return None, (value[0], value[1])
    if isinstance(value, dict) and set(value) <= {"train", "test"}:
        train, test = value.get("train"), value.get("test")
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        train, test = value
    else:
        raise UserError(
            f"--data {spec!r} returned {type(value).__name__}; it must return (train, test), "
            "each an (inputs, labels) pair of tensors, or a dict with keys 'train' and 'test'"
        )
    return _as_data(train), _as_data(test)


def _as_data(value: Any) -> Data | None:
    if value is None:
        return None
    if _is_pair(value):
        return (value[0], value[1])
    if not isinstance(value, Iterable):
        raise UserError(
            f"--data gave a {type(value).__name__} split; each split must be an (inputs, labels) pair "
            "of tensors or an iterable of batches"
        )
    return value


def _parse_pairs(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items, each value read as YAML (``0.5`` a float, ``3`` an int, ``true`` a bool)."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {brief(item)} must look like KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        # A value is one scalar or a small list; YAML aliases could make it anything.
        out[key] = value if isinstance(value, (str, int, float, bool, list, type(None))) else raw
    return out


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise UserError(f"--input-shape {brief(text)} must be integers such as 1,1,28,28") from None
    if not shape or any(d < 1 for d in shape) or len(shape) > 8:
        raise UserError(
            f"--input-shape {brief(text)} must be 1 to 8 positive integers such as 1,1,28,28"
        )
    numel = 1
    for d in shape:
        numel *= d
    if numel > INPUT_LIMIT:
        raise UserError(
            f"--input-shape {brief(text)} has {numel:,} entries; at most {INPUT_LIMIT:,} are timed"
        )
    return shape


INPUT_LIMIT = 1 << 28
"""Entries a random ``--input-shape`` input may have (1 GiB of float32)."""


def _dry_run(
    model: nn.Module, example: Tensor | None, test: Data | None, shape: str | None
) -> None:
    """Run the model once on the example input and on a test batch before any work, as a measurement.

    Raises:
        UserError: naming the input (``--input-shape`` or ``--data``) that does not fit the model.
    """
    with torch.no_grad(), evaluation_mode(model):
        if example is not None:
            what = f"--input-shape {shape}" if shape is not None else "a --data test batch"
            _fits(model, example, what)
        if isinstance(test, tuple) and _is_pair(test):
            _fits(model, test[0][:2], "a --data test batch")


def _fits(model: nn.Module, inputs: Tensor, what: str) -> None:
    try:
        run_model(model, inputs, what)
    except Exception as error:
        raise UserError(one_line(error)) from None


def _example_input(shape: tuple[int, ...] | None, test: Data | None) -> Tensor | None:
    if shape is not None:
        return torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if isinstance(test, tuple) and _is_pair(test):
        inputs = test[0]
        assert isinstance(inputs, Tensor)
        return inputs[:64]
    return None


def _json(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=str) + "\n"


def _compressed_bytes(state: dict[str, Any]) -> bytes:
    """The file :func:`prunus.save_compressed` writes, in memory (to be written with the other outputs)."""
    from safetensors.torch import save

    tensors, metadata = compress_state(state)
    return bytes(save(tensors, metadata=metadata))


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _outputs(*paths: Path | None) -> None:
    """Each output is a file (not a directory) and none is given twice: checked before any work."""
    seen: dict[Path, Path] = {}
    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            raise UserError(f"{brief(str(path))} is a directory; give a file name")
        key = path.resolve()
        if key in seen:
            raise UserError(f"{brief(str(path))} is given as two different outputs")
        seen[key] = path


def _plots_available(plots: Path | None) -> None:
    """``--plots`` needs matplotlib: say so before any work rather than at the end."""
    if plots is None:
        return
    if plots.exists() and not plots.is_dir():
        raise UserError(f"--plots {brief(str(plots))} is a file; give a directory")
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("plots need matplotlib: pip install 'prunus[plots]'")


def _checked_config(config: PruneConfig, registry: Registry) -> None:
    """Build the strategy and schedule once, so a bad option fails before the model is loaded."""
    if config.schedule is not None:
        registry.schedule(config.schedule.name, **config.schedule.options)
        registry.get(config.strategy, amount=0, **config.options)
    elif config.amounts is None:
        registry.get(config.strategy, **config.strategy_options())
    else:
        for amount in config.amounts.values():
            registry.get(config.strategy, **config.options, amount=amount)


class Amount(click.ParamType):  # type: ignore[type-arg]
    """``--amount``: read like Python's ``amount=``: ``0.5`` or ``1.0`` is a fraction, ``1`` or ``10`` a count."""

    name = "AMOUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            self.fail(
                f"{brief(value)} is not a number: give a fraction such as 0.5 or an integer count such as 10",
                param,
                ctx,
            )


def _comparison_json(comparison: Comparison) -> list[dict[str, Any]]:
    return [
        {
            **row.model_dump(),
            "sparsity": row.sparsity,
            "compression_ratio": row.compression_ratio,
        }
        for row in comparison.rows
    ]


_FACTORY = click.option(
    "--factory",
    metavar="MODULE:FUNCTION",
    help="Function that builds the model with no arguments (module path or file.py); the checkpoint's "
    "state dict is loaded into it.",
)
_TRUST = click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow a checkpoint that is a whole pickled model (torch.load with weights_only=False). Only for "
    "files you trust: unpickling runs code.",
)
_DATA = click.option(
    "--data",
    "data_spec",
    metavar="MODULE:FUNCTION",
    help="Function returning (train, test), each an (inputs, labels) pair of tensors: fine-tuning uses "
    "train, accuracy uses test.",
)
_INPUT_SHAPE = click.option(
    "--input-shape",
    metavar="SHAPE",
    help="Shape of a random input to time the forward pass with, e.g. 1,1,28,28 (default: 64 test "
    "inputs when --data is given, else no latency).",
)
_THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1, max=4096),
    help="Run torch on this many CPU threads (torch.set_num_threads), for steadier latencies.",
)
_PROGRESS = click.option(
    "--progress/--no-progress", default=True, help="Show progress bars on stderr (default: on)."
)


# -- prunus prune -----------------------------------------------------------------------------------------


@click.command("prune")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@_FACTORY
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the pruned state dict (torch.save; the pruning made permanent, same keys).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="A YAML or JSON prune config (see docs/cli.md); the options below override its keys.",
)
@click.option("--strategy", help="A registered strategy (see `prunus list`), e.g. l1_unstructured.")
@click.option(
    "--amount",
    type=Amount(),
    help="How much to prune in every targeted layer, read as in Python: a fraction with a decimal point "
    "(0.5 prunes half, 1.0 all) or an integer count of entries (1 prunes one entry, 10 ten).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy option other than the amount, e.g. --option dim=0 (repeatable).",
)
@click.option(
    "--layer-amount",
    "layer_amounts",
    multiple=True,
    metavar="PATTERN=AMOUNT",
    help="A per-layer amount for the parameters matching a glob pattern, e.g. 'fc1.weight=0.5' "
    "(repeatable; the first matching pattern wins).",
)
@click.option(
    "--include",
    multiple=True,
    metavar="PATTERN",
    help="Only prune parameters matching (repeatable).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave parameters matching alone (repeatable).",
)
@click.option(
    "--schedule",
    help="Prune gradually on a registered schedule (cubic, linear, iterative, one_shot) while "
    "fine-tuning, instead of at once; needs --data and --epochs.",
)
@click.option(
    "--schedule-option",
    "schedule_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A schedule option, e.g. final_sparsity=0.9, end=600, every=50 (steps are optimizer steps).",
)
@click.option("--epochs", type=int, help="Fine-tune this many epochs after (or while) pruning.")
@click.option("--lr", type=float, help="Fine-tuning learning rate (Adam; default 0.001).")
@click.option("--batch-size", type=int, help="Fine-tuning batch size (default 64).")
@_DATA
@click.option(
    "--quantize",
    is_flag=True,
    help="Also report the pruned model quantized to int8 (dynamic, Linear layers).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Where to write the JSON report (default: OUTPUT with .report.json).",
)
@click.option(
    "--compressed",
    "compressed_path",
    type=click.Path(path_type=Path),
    help="Also write the compressed checkpoint (nonzero values + bit masks) there.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path),
    help="Write PNG plots there (per-layer sparsity, weights before/after, schedule); needs "
    "prunus[plots].",
)
@_INPUT_SHAPE
@_THREADS
@_TRUST
@_PROGRESS
@click.pass_context
@user_errors
def prune_command(
    ctx: click.Context,
    checkpoint: Path,
    factory: str | None,
    output: Path,
    config_path: Path | None,
    strategy: str | None,
    amount: int | float | None,
    options: tuple[str, ...],
    layer_amounts: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    schedule: str | None,
    schedule_options: tuple[str, ...],
    epochs: int | None,
    lr: float | None,
    batch_size: int | None,
    data_spec: str | None,
    quantize: bool,
    report_path: Path | None,
    compressed_path: Path | None,
    plots_dir: Path | None,
    input_shape: str | None,
    threads: int | None,
    trust_checkpoint: bool,
    progress: bool,
) -> None:
    """Prune a model checkpoint and write the pruned checkpoint and a report.

    CHECKPOINT is a state dict saved with torch.save (or a whole model, with --trust-checkpoint). Give the
    strategy and its options on the command line or in --config; with --schedule the model is pruned
    gradually while it is fine-tuned on the --data train split. The report (JSON) holds the prune
    report and, before and after, the parameters and nonzeros, file sizes dense and compressed, latency,
    and accuracy on the test split when --data is given.

    \b
    Examples:
      prunus prune net.pt --factory models:make_net --strategy l1_unstructured --amount 0.5 -o pruned.pt
      prunus prune net.pt --factory models:make_net --config prune.yaml --data models:load -o pruned.pt
    """
    reg = registry_of(ctx)
    raw: dict[str, Any] = read_mapping(config_path) if config_path is not None else {}
    source = str(config_path or "options")
    if strategy is not None:
        raw["strategy"] = strategy
    if amount is not None:
        raw["amount"] = amount
    if options:
        raw["options"] = {**section(raw, "options", source), **_parse_pairs(options, "--option")}
    if layer_amounts:
        raw["amounts"] = {
            **section(raw, "amounts", source),
            **_parse_pairs(layer_amounts, "--layer-amount"),
        }
    if include:
        raw["include"] = list(include)
    if exclude:
        raw["exclude"] = list(exclude)
    if schedule is not None or schedule_options:
        schedule_section = section(raw, "schedule", source)
        if schedule is not None:
            schedule_section["name"] = schedule
        schedule_section["options"] = {
            **section(schedule_section, "options", f"{source}: schedule"),
            **_parse_pairs(schedule_options, "--schedule-option"),
        }
        raw["schedule"] = schedule_section
    tuning = {
        key: value
        for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size))
        if value is not None
    }
    if tuning:
        raw["fine_tune"] = {**section(raw, "fine_tune", source), **tuning}
    if quantize:
        raw["quantize"] = True
    if "strategy" not in raw:
        raise UserError("no strategy: give --strategy NAME or a --config with 'strategy'")
    config = parse_config(PruneConfig, raw, source=source)
    _checked_config(config, reg)
    report_file = report_path or output.with_suffix(".report.json")
    _outputs(output, report_file, compressed_path)
    _plots_available(plots_dir)
    shape = _shape(input_shape)
    if threads is not None:
        torch.set_num_threads(threads)

    model = load_model(checkpoint, factory, trust=trust_checkpoint)
    if is_pruned(model):
        remove(model)
    train, test = load_data(data_spec)
    if config.fine_tune is not None and config.fine_tune.epochs > 0 and train is None:
        raise UserError("fine-tuning needs training data: give --data returning (train, test)")
    example = _example_input(shape, test)
    _dry_run(model, example, test, input_shape)
    dense = copy.deepcopy(model)

    result: dict[str, Any] = {"config": config.model_dump(mode="json")}
    points: list[tuple[int, float]] = []
    reached: list[tuple[int, float]] = []
    if config.schedule is not None:
        assert config.fine_tune is not None and train is not None
        pruner = GradualPruner(
            model,
            config.strategy,
            schedule=config.schedule.name,
            include=config.include,
            exclude=config.exclude,
            strategy_options=config.options,
            registry=reg,
            **config.schedule.options,
        )
        tuned = fine_tune(
            model,
            train,
            epochs=config.fine_tune.epochs,
            lr=float(config.fine_tune.lr),
            batch_size=config.fine_tune.batch_size,
            seed=config.fine_tune.seed,
            pruner=pruner,
            progress_bar=progress,
        )
        points = list(pruner.schedule.checked_points())
        reached = [(h.step, h.sparsity) for h in pruner.history]
        result["schedule"] = {
            "name": pruner.schedule.name,
            "points": points,
            "history": [h.model_dump() for h in pruner.history],
        }
        result["fine_tune"] = tuned.model_dump()
        click.echo(
            f"pruned {config.strategy} on schedule {pruner.schedule.name}: sparsity "
            f"{pruner.sparsity:.2%} of {pruner.numel:,} entries in {len(pruner.targets)} parameters "
            f"after {tuned.steps} steps"
        )
    else:
        report = prune(
            model,
            config.strategy,
            include=config.include,
            exclude=config.exclude,
            amounts=config.amounts,
            registry=reg,
            **config.strategy_options(),
        )
        result["prune"] = report.model_dump()
        click.echo(str(report))
        if config.fine_tune is not None and config.fine_tune.epochs > 0:
            assert train is not None
            tuned = fine_tune(
                model,
                train,
                epochs=config.fine_tune.epochs,
                lr=float(config.fine_tune.lr),
                batch_size=config.fine_tune.batch_size,
                seed=config.fine_tune.seed,
                progress_bar=progress,
            )
            result["fine_tune"] = tuned.model_dump()
    pruned_masks = {name: mask.clone() for name, mask in masks(model).items()}
    remove(model)

    models = {"dense": dense, "pruned": model}
    if config.quantize:
        models["pruned + int8"] = quantize_model(model)
    comparison = compare(models, data=test, example_input=example)
    result["evaluation"] = _comparison_json(comparison)
    result["summary"] = summary(model)
    result["output"] = str(output)
    figures = _plots(plots_dir, dense, model, pruned_masks, points, reached)
    if figures:
        result["plots"] = [str(p) for p in figures]

    # Everything is computed: now the files, all together (none is replaced unless all are written).
    state = model.state_dict()
    with files.staged() as out:
        out.write(output, lambda file: torch.save(state, file))
        if compressed_path is not None:
            out.write_bytes(compressed_path, _compressed_bytes(state))
        for path, figure in figures.items():
            out.write_bytes(path, _png(figure))
        out.write_text(report_file, _json(result))

    click.echo("")
    click.echo(summary(model))
    click.echo("")
    click.echo(str(comparison))
    if figures:
        click.echo(f"\nplots: {', '.join(str(p) for p in figures)}")
    click.echo(f"\nwrote {output} and {report_file}")


def _plots(
    directory: Path | None,
    dense: nn.Module,
    pruned: nn.Module,
    pruned_masks: dict[str, Tensor],
    points: list[tuple[int, float]],
    reached: list[tuple[int, float]],
) -> dict[Path, Any]:
    """The figures ``prunus prune --plots`` writes, by path (drawn in memory; written with the other outputs)."""
    if directory is None:
        return {}
    from ..workflow import plots

    figures: dict[Path, Any] = {directory / "layer_sparsity.png": plots.plot_layer_sparsity(pruned)}
    if pruned_masks:
        name = max(pruned_masks, key=lambda n: pruned_masks[n].numel())
        figures[directory / "weights.png"] = plots.plot_weights(
            dense.get_parameter(name),
            pruned.get_parameter(name),
            mask=pruned_masks[name],
            title=name,
        )
    if points:
        figures[directory / "schedule.png"] = plots.plot_schedule(points, reached=reached)
    return figures


# -- prunus report ----------------------------------------------------------------------------------------


@click.command("report")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@_FACTORY
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    help="The dense checkpoint to compare with (same factory).",
)
@_DATA
@click.option(
    "--quantize", is_flag=True, help="Add a column for the model quantized to int8 (dynamic)."
)
@_INPUT_SHAPE
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path),
    help="Write layer_sparsity.png (and weights.png with --baseline) there; needs prunus[plots].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@_THREADS
@_TRUST
@click.pass_context
@user_errors
def report_command(
    ctx: click.Context,
    checkpoint: Path,
    factory: str | None,
    baseline: Path | None,
    data_spec: str | None,
    quantize: bool,
    input_shape: str | None,
    plots_dir: Path | None,
    as_json: bool,
    threads: int | None,
    trust_checkpoint: bool,
) -> None:
    """Report on a (pruned) checkpoint: per-layer sparsity, size on disk, latency, accuracy.

    Prints the model's layers with each weight's shape, nonzeros and sparsity, then the parameters and
    nonzeros, the size of the dense torch.save file and of the compressed one (nonzero values + bit masks,
    both written and measured), the compression ratio, the latency and, with --data, the test accuracy;
    beside the --baseline model when one is given.
    """
    _plots_available(plots_dir)
    shape = _shape(input_shape)
    if threads is not None:
        torch.set_num_threads(threads)
    model = load_model(checkpoint, factory, trust=trust_checkpoint)
    _, test = load_data(data_spec)
    example = _example_input(shape, test)
    _dry_run(model, example, test, input_shape)
    models: dict[str, nn.Module] = {}
    if baseline is not None:
        models["baseline"] = load_model(baseline, factory, trust=trust_checkpoint)
    models[checkpoint.name] = model
    if quantize:
        models[f"{checkpoint.name} + int8"] = quantize_model(model)
    comparison = compare(models, data=test, example_input=example)
    figures: dict[Path, Any] = {}
    if plots_dir is not None:
        from ..workflow import plots

        figures[plots_dir / "layer_sparsity.png"] = plots.plot_layer_sparsity(model)
        if baseline is not None:
            weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
            if weights:
                name = max(weights, key=lambda n: weights[n].numel())
                figures[plots_dir / "weights.png"] = plots.plot_weights(
                    models["baseline"].get_parameter(name), weights[name], title=name
                )
    with files.staged() as out:
        for path, figure in figures.items():
            out.write_bytes(path, _png(figure))
    written = list(figures)
    if as_json:
        payload = {
            "checkpoint": str(checkpoint),
            "summary": summary(model),
            "evaluation": _comparison_json(comparison),
            "plots": [str(p) for p in written],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(summary(model))
    click.echo("")
    click.echo(str(comparison))
    if written:
        click.echo(f"\nplots: {', '.join(str(p) for p in written)}")


# -- prunus sensitivity -----------------------------------------------------------------------------------


@click.command("sensitivity")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@_FACTORY
@click.option(
    "--data",
    "data_spec",
    metavar="MODULE:FUNCTION",
    required=True,
    help="Function returning (train, test) or a test (inputs, labels) pair; accuracy is measured on test.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="A YAML or JSON sensitivity config; the options below override its keys.",
)
@click.option("--strategy", help="The strategy to prune each layer with (default l1_unstructured).")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy option other than the amount (repeatable).",
)
@click.option(
    "--amounts",
    metavar="A,B,...",
    help="Fractions to try on each layer, comma-separated (default 0.1,0.2,...,0.9).",
)
@click.option("--include", multiple=True, metavar="PATTERN", help="Only analyse these parameters.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Skip these parameters.")
@click.option(
    "--target-sparsity",
    type=float,
    help="Suggest per-layer amounts that reach this overall sparsity, least sensitive layers first.",
)
@click.option(
    "--max-loss",
    type=float,
    help="Suggest for each layer the largest amount that costs at most this much accuracy.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the curves and the suggestion as JSON there.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Write the sensitivity curves as a PNG there; needs prunus[plots].",
)
@_TRUST
@_PROGRESS
@click.pass_context
@user_errors
def sensitivity_command(
    ctx: click.Context,
    checkpoint: Path,
    factory: str | None,
    data_spec: str,
    config_path: Path | None,
    strategy: str | None,
    options: tuple[str, ...],
    amounts: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    target_sparsity: float | None,
    max_loss: float | None,
    output: Path | None,
    plot_path: Path | None,
    trust_checkpoint: bool,
    progress: bool,
) -> None:
    """Prune each layer alone at several amounts and show how accuracy falls.

    Each layer is pruned on its own, evaluated on the test split of --data, and restored. With
    --target-sparsity or --max-loss it also suggests per-layer amounts, printed as the --layer-amount
    options of `prunus prune`.
    """
    raw: dict[str, Any] = read_mapping(config_path) if config_path is not None else {}
    source = str(config_path or "options")
    if strategy is not None:
        raw["strategy"] = strategy
    if options:
        raw["options"] = {**section(raw, "options", source), **_parse_pairs(options, "--option")}
    if amounts is not None:
        try:
            raw["amounts"] = [float(a) for a in amounts.split(",") if a.strip()]
        except ValueError:
            raise UserError(
                f"--amounts {brief(amounts)} must be numbers such as 0.25,0.5,0.75"
            ) from None
    if include:
        raw["include"] = list(include)
    if exclude:
        raw["exclude"] = list(exclude)
    if target_sparsity is not None:
        raw["target_sparsity"] = target_sparsity
    if max_loss is not None:
        raw["max_loss"] = max_loss
    config = parse_config(SensitivityConfig, raw, source=source)
    reg = registry_of(ctx)
    for value in config.amounts:
        reg.get(config.strategy, **config.options, amount=value)  # bad options fail before any work
    _outputs(output, plot_path)
    if plot_path is not None:
        _plots_available(plot_path.parent if plot_path.parent != Path() else None)

    model = load_model(checkpoint, factory, trust=trust_checkpoint)
    if is_pruned(model):
        remove(model)
    _, test = load_data(data_spec)
    if test is None:
        raise UserError(f"--data {brief(data_spec)} gave no test data to measure accuracy on")
    _dry_run(model, None, test, None)
    result = sensitivity(
        model,
        data=test,
        strategy=config.strategy,
        amounts=config.amounts,
        include=config.include,
        exclude=config.exclude,
        strategy_options=config.options,
        progress_bar=progress,
        registry=reg,
    )
    click.echo(str(result))
    suggested = None
    if config.target_sparsity is not None or config.max_loss is not None:
        suggested = result.suggest(target_sparsity=config.target_sparsity, max_loss=config.max_loss)
        click.echo("\nsuggested per-layer amounts:")
        for name, value in suggested.items():
            click.echo(f"  {name:<30} {value:.4f}")
        click.echo(
            "as prunus prune options: "
            + " ".join(f"--layer-amount {name}={value:.4f}" for name, value in suggested.items())
        )
    figure = None
    if plot_path is not None:
        from ..workflow import plots

        figure = plots.plot_sensitivity(result, suggested=suggested, metric="accuracy")
    with files.staged() as out:
        if figure is not None and plot_path is not None:
            out.write_bytes(plot_path, _png(figure))
        if output is not None:
            out.write_text(
                output,
                _json(
                    {
                        **result.model_dump(),
                        "config": config.model_dump(mode="json"),
                        "suggested": suggested,
                    }
                ),
            )
    if plot_path is not None:
        click.echo(f"\nplot: {plot_path}")
    if output is not None:
        click.echo(f"wrote {output}")
