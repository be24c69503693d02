"""The workflow commands of the ``prunus`` command line: ``prune``, ``report`` and ``sensitivity``.

A model is a checkpoint plus a factory: ``--factory mypkg.models:make_net`` (or ``path/to/file.py:make_net``)
names a function that builds the architecture with no arguments, and the checkpoint (a state dict saved with
``torch.save``, or a file of :func:`prunus.save_compressed`) fills in its weights. Data comes the same way:
``--data mypkg.data:load`` names a function returning ``(train, test)``, each an ``(inputs, labels)`` pair of
tensors (or a dict with keys ``train`` and ``test``; a single pair is taken as the test data).

A user mistake (a bad path, a factory that fails, an unknown strategy, a config with an unknown key) ends with
one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import pickle
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import torch
from torch import Tensor, nn

from ..engine import is_pruned, masks, prune, remove
from ..errors import StateError
from ..persistence.compressed import LEGACY_FORMAT, load_compressed
from ..persistence.files import read_safetensors_metadata
from ..workflow.config import (
    PruneConfig,
    SensitivityConfig,
    parse_config,
    read_mapping,
)
from ..workflow.evaluation import Comparison, Data, compare, summary
from ..workflow.gradual import GradualPruner, fine_tune
from ..workflow.quantization import quantize as quantize_model
from ..workflow.sensitivity_analysis import sensitivity
from .context import UserError, one_line, registry_of, user_errors

__all__ = ["prune_command", "report_command", "sensitivity_command"]

F = TypeVar("F", bound=Callable[..., Any])


# -- loading the user's things ----------------------------------------------------------------------------


def _import_object(spec: str, what: str) -> Any:
    """``module:name`` or ``path/to/file.py:name``, imported from the current directory."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{what} {spec!r} must look like 'module:function' or 'file.py:function'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"{what} {spec!r}: no file {path}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"{what} {spec!r}: importing {module_name} failed: {type(error).__name__}: {one_line(error)}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"{what} {spec!r}: {module_name} has no attribute {attr!r}") from None


def _call_user(function: Any, spec: str, what: str) -> Any:
    if not callable(function):
        raise UserError(f"{what} {spec!r} is not callable")
    try:
        return function()
    except Exception as error:
        raise UserError(
            f"{what} {spec!r} raised {type(error).__name__}: {one_line(error)}"
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
        raise UserError(f"no checkpoint at {checkpoint}") from None
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
        loaded = load_compressed(checkpoint)
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
    model = _call_user(_import_object(factory, "--factory"), factory, "--factory")
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
    value = _call_user(_import_object(spec, "--data"), spec, "--data")
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
            raise UserError(f"{flag} {item!r} must look like KEY=VALUE")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise UserError(f"--input-shape {text!r} must be integers such as 1,1,28,28") from None
    if not shape or any(d < 1 for d in shape):
        raise UserError(f"--input-shape {text!r} must be positive integers such as 1,1,28,28")
    return shape


def _example_input(shape: tuple[int, ...] | None, test: Data | None) -> Tensor | None:
    if shape is not None:
        return torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if isinstance(test, tuple) and _is_pair(test):
        inputs = test[0]
        assert isinstance(inputs, Tensor)
        return inputs[:64]
    return None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def _save(obj: Any, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


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
    type=click.IntRange(min=1),
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
    "--amount", type=float, help="Fraction of the entries to prune in every targeted layer."
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
    amount: float | None,
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
    if strategy is not None:
        raw["strategy"] = strategy
    if amount is not None:
        raw["amount"] = amount
    if options:
        raw["options"] = {**raw.get("options", {}), **_parse_pairs(options, "--option")}
    if layer_amounts:
        raw["amounts"] = {
            **(raw.get("amounts") or {}),
            **_parse_pairs(layer_amounts, "--layer-amount"),
        }
    if include:
        raw["include"] = list(include)
    if exclude:
        raw["exclude"] = list(exclude)
    if schedule is not None or schedule_options:
        section = dict(raw.get("schedule") or {})
        if schedule is not None:
            section["name"] = schedule
        section["options"] = {
            **section.get("options", {}),
            **_parse_pairs(schedule_options, "--schedule-option"),
        }
        raw["schedule"] = section
    tuning = {
        key: value
        for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size))
        if value is not None
    }
    if tuning:
        raw["fine_tune"] = {**(raw.get("fine_tune") or {}), **tuning}
    if quantize:
        raw["quantize"] = True
    if "strategy" not in raw:
        raise UserError("no strategy: give --strategy NAME or a --config with 'strategy'")
    config = parse_config(PruneConfig, raw, source=str(config_path or "options"))
    if threads is not None:
        torch.set_num_threads(threads)

    model = load_model(checkpoint, factory, trust=trust_checkpoint)
    if is_pruned(model):
        remove(model)
    train, test = load_data(data_spec)
    if config.fine_tune is not None and config.fine_tune.epochs > 0 and train is None:
        raise UserError("fine-tuning needs training data: give --data returning (train, test)")
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
        points = pruner.schedule.checked_points()
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

    _save(model.state_dict(), output)
    if compressed_path is not None:
        from ..persistence.compressed import save_compressed

        try:
            save_compressed(model, compressed_path)
        except OSError as error:
            raise UserError(f"cannot write {compressed_path}: {error.strerror or error}") from None
    models = {"dense": dense, "pruned": model}
    if config.quantize:
        models["pruned + int8"] = quantize_model(model)
    comparison = compare(models, data=test, example_input=_example_input(_shape(input_shape), test))
    result["evaluation"] = _comparison_json(comparison)
    result["summary"] = summary(model)
    result["output"] = str(output)

    click.echo("")
    click.echo(summary(model))
    click.echo("")
    click.echo(str(comparison))
    if plots_dir is not None:
        written = _plots(plots_dir, dense, model, pruned_masks, points, reached)
        result["plots"] = [str(p) for p in written]
        click.echo(f"\nplots: {', '.join(str(p) for p in written)}")
    report_file = report_path or output.with_suffix(".report.json")
    _write_json(report_file, result)
    click.echo(f"\nwrote {output} and {report_file}")


def _plots(
    directory: Path,
    dense: nn.Module,
    pruned: nn.Module,
    pruned_masks: dict[str, Tensor],
    points: list[tuple[int, float]],
    reached: list[tuple[int, float]],
) -> list[Path]:
    from ..workflow import plots

    written = [directory / "layer_sparsity.png"]
    plots.plot_layer_sparsity(pruned, written[0])
    if pruned_masks:
        name = max(pruned_masks, key=lambda n: pruned_masks[n].numel())
        path = directory / "weights.png"
        plots.plot_weights(
            dense.get_parameter(name),
            pruned.get_parameter(name),
            path,
            mask=pruned_masks[name],
            title=name,
        )
        written.append(path)
    if points:
        path = directory / "schedule.png"
        plots.plot_schedule(points, path, reached=reached)
        written.append(path)
    return written


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
    if threads is not None:
        torch.set_num_threads(threads)
    model = load_model(checkpoint, factory, trust=trust_checkpoint)
    _, test = load_data(data_spec)
    models: dict[str, nn.Module] = {}
    if baseline is not None:
        models["baseline"] = load_model(baseline, factory, trust=trust_checkpoint)
    models[checkpoint.name] = model
    if quantize:
        models[f"{checkpoint.name} + int8"] = quantize_model(model)
    comparison = compare(models, data=test, example_input=_example_input(_shape(input_shape), test))
    written: list[Path] = []
    if plots_dir is not None:
        from ..workflow import plots

        written.append(plots_dir / "layer_sparsity.png")
        plots.plot_layer_sparsity(model, written[0])
        if baseline is not None:
            weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
            if weights:
                name = max(weights, key=lambda n: weights[n].numel())
                written.append(plots_dir / "weights.png")
                plots.plot_weights(
                    models["baseline"].get_parameter(name), weights[name], written[-1], title=name
                )
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
    if strategy is not None:
        raw["strategy"] = strategy
    if options:
        raw["options"] = {**raw.get("options", {}), **_parse_pairs(options, "--option")}
    if amounts is not None:
        try:
            raw["amounts"] = [float(a) for a in amounts.split(",") if a.strip()]
        except ValueError:
            raise UserError(
                f"--amounts {amounts!r} must be numbers such as 0.25,0.5,0.75"
            ) from None
    if include:
        raw["include"] = list(include)
    if exclude:
        raw["exclude"] = list(exclude)
    if target_sparsity is not None:
        raw["target_sparsity"] = target_sparsity
    if max_loss is not None:
        raw["max_loss"] = max_loss
    config = parse_config(SensitivityConfig, raw, source=str(config_path or "options"))

    model = load_model(checkpoint, factory, trust=trust_checkpoint)
    if is_pruned(model):
        remove(model)
    _, test = load_data(data_spec)
    if test is None:
        raise UserError(f"--data {data_spec!r} gave no test data to measure accuracy on")
    result = sensitivity(
        model,
        data=test,
        strategy=config.strategy,
        amounts=config.amounts,
        include=config.include,
        exclude=config.exclude,
        strategy_options=config.options,
        progress_bar=progress,
        registry=registry_of(ctx),
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
    if plot_path is not None:
        from ..workflow import plots

        plots.plot_sensitivity(result, plot_path, suggested=suggested, metric="accuracy")
        click.echo(f"\nplot: {plot_path}")
    if output is not None:
        _write_json(
            output,
            {
                **result.model_dump(),
                "config": config.model_dump(mode="json"),
                "suggested": suggested,
            },
        )
        click.echo(f"wrote {output}")
