"""Measuring a pruned model: accuracy, parameters and nonzeros, size on disk, latency, and a summary.

Sizes are measured, not estimated: :func:`model_size` writes two real files and reads their byte counts, the
dense ``torch.save(model.state_dict())`` and the compressed form of :func:`~prunus.persistence.compressed.save_compressed`
(each mostly-zero weight as its nonzero values plus one bit per entry, in the sparse-bitmask safetensors layout),
which :func:`~prunus.persistence.compressed.load_compressed` reads back exactly.

>>> before = prunus.evaluate(model, data=(x_test, y_test), example_input=x_test[:64])   # doctest: +SKIP
>>> print(prunus.compare({"dense": dense, "pruned": model}, data=(x_test, y_test)))    # doctest: +SKIP
"""

from __future__ import annotations

import functools
import io
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .. import files, masking
from ..arguments import check_callable, check_int, check_model, check_path
from ..errors import ConfigError, ConfigTypeError, brief
from ..forward import call_model, evaluation_mode, run_model, to_device
from ..hardware.timing import time_interleaved
from ..persistence.compressed import load_compressed, save_compressed
from ..report import kib

__all__ = [
    "Comparison",
    "Data",
    "Evaluation",
    "ModelSize",
    "accuracy",
    "batches",
    "compare",
    "count_parameters",
    "evaluate",
    "input_batches",
    "latency_ms",
    "load_compressed",
    "model_size",
    "save_compressed",
    "summary",
    "to_device",
]

Data = tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]]
"""Labelled data: a pair ``(inputs, labels)`` of tensors, or an iterable of such batches (a DataLoader)."""

Evaluator = Callable[[nn.Module], float]


# -- data -------------------------------------------------------------------------------------------------


def batches(
    data: Data, batch_size: int = 256, *, shuffle: bool = False, seed: int | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, labels)`` batches of ``data``.

    A pair of tensors is cut into batches of ``batch_size`` (shuffled with a local generator seeded by
    ``seed`` when ``shuffle``); an iterable of batches (a DataLoader) is passed through as it is.

    Raises:
        ConfigError: ``data`` is neither.
    """
    check_int("batch_size", batch_size, minimum=1)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data[0], data[1]
        assert isinstance(x, Tensor) and isinstance(y, Tensor)
        if x.dim() == 0 or y.dim() == 0:
            raise ConfigError(
                f"data must hold a batch of inputs and of labels; got shapes {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        if len(x) != len(y):
            raise ConfigError(f"data has {len(x)} inputs but {len(y)} labels")
        if shuffle:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
            order = torch.randperm(len(x), generator=generator)
        else:
            order = torch.arange(len(x))
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            yield x[index], y[index]
        return
    if isinstance(data, (Tensor, str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise ConfigTypeError(
            f"data must be a pair (inputs, labels) of tensors or an iterable of such batches (a DataLoader), "
            f"not {type(data).__name__} ({brief(data)})"
        )
    for batch in data:
        if not (
            isinstance(batch, (tuple, list))
            and len(batch) >= 2
            and isinstance(batch[0], Tensor | Mapping | tuple)
            and isinstance(batch[1], Tensor)
        ):
            raise ConfigTypeError(
                f"each batch must be (inputs, labels, ...) with tensor labels, got {type(batch).__name__} "
                f"({brief(batch)}); pass an evaluator for other kinds of data"
            )
        rows = _rows_of(batch[0])
        if rows is None or batch[1].dim() == 0 or rows != len(batch[1]):
            shape = (
                tuple(batch[0].shape) if isinstance(batch[0], Tensor) else type(batch[0]).__name__
            )
            raise ConfigError(
                f"a batch has inputs of shape {shape} and labels of shape {tuple(batch[1].shape)}; each "
                "input needs one label"
            )
        yield batch[0], batch[1]


def _rows_of(inputs: Any) -> int | None:
    """The batch size of model inputs: a tensor's first dim, or that of the first tensor of a dict or tuple."""
    if isinstance(inputs, Tensor):
        return len(inputs) if inputs.dim() else None
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    first = next((v for v in values if isinstance(v, Tensor) and v.dim()), None)
    return None if first is None else len(first)


def _is_pair(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)


def _rows(value: Any, index: Tensor) -> Any:
    """Rows ``index`` of a tensor, or of every tensor of a dict (other values kept as they are)."""
    if isinstance(value, Tensor):
        return value[index]
    return {k: v[index] if isinstance(v, Tensor) else v for k, v in value.items()}


def input_batches(
    data: Any, batch_size: int = 64, *, shuffle: bool = False, seed: int | None = None
) -> Iterator[Any]:
    """Batches of model inputs from ``data``, labels dropped: what a model is called on (see ``call_model``).

    ``data`` may be labelled, ``(inputs, labels)`` tensors as :func:`batches` takes them; inputs alone, a tensor
    or a dict of tensors (a tokenizer's output), cut along dim 0 (shuffled with ``seed`` when ``shuffle``); or an
    iterable of batches, each a tensor, a dict, or ``(inputs, labels, ...)`` (a DataLoader), passed through.

    Raises:
        ConfigError: ``data`` is none of these, or ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    whole: Any = data[0] if _is_pair(data) else data
    if isinstance(whole, Tensor) or (
        isinstance(whole, Mapping) and any(isinstance(v, Tensor) for v in whole.values())
    ):
        sizes = {
            len(v)
            for v in ([whole] if isinstance(whole, Tensor) else whole.values())
            if isinstance(v, Tensor)
        }
        if len(sizes) != 1:
            raise ConfigError(
                f"the tensors of data have different lengths along dim 0: {sorted(sizes)}"
            )
        count = sizes.pop()
        if shuffle:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(seed or 0))
        else:
            order = torch.arange(count)
        for start in range(0, count, batch_size):
            yield _rows(whole, order[start : start + batch_size])
        return
    if not isinstance(data, Iterable) or isinstance(data, str | bytes):
        raise ConfigError(
            "data must be (inputs, labels) tensors, inputs alone (a tensor or a dict of tensors), or an "
            f"iterable of batches, not {type(data).__name__}"
        )
    for batch in data:
        if isinstance(batch, tuple | list) and batch and isinstance(batch[0], Tensor | Mapping):
            yield batch[0]
        else:
            yield batch


def num_batches(data: Data, batch_size: int) -> int | None:
    """How many batches :func:`batches` yields, when that is known in advance."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return math.ceil(len(data[0]) / batch_size)
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def accuracy(model: nn.Module, data: Data, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on labelled ``data``.

    The model runs in eval mode without gradients and is left exactly as it was (every submodule's training
    flag, its buffers, torch's random generator: see :func:`prunus.forward.evaluation_mode`).

    Raises:
        ConfigError: ``data`` is empty or not labelled data, or the model's outputs are not one row of class
            scores per input.
    """
    check_model(model)
    check_int("batch_size", batch_size, minimum=1)
    device = _device(model)
    correct = total = 0
    with torch.no_grad(), evaluation_mode(model):
        for x, y in batches(data, batch_size):
            out = run_model(model, x.to(device), "data")
            if not (isinstance(out, Tensor) and out.dim() == 2 and len(out) == len(y)):
                raise ConfigError(
                    f"accuracy needs one row of class scores per input: {type(model).__name__} gave "
                    f"{_shape_of(out)} for {len(y)} labels; pass an evaluator for other models"
                )
            correct += int((out.argmax(dim=1) == y.to(out.device)).sum())
            total += len(y)
    if total == 0:
        raise ConfigError("data is empty: no batch to measure accuracy on")
    return correct / total


def _shape_of(value: Any) -> str:
    return (
        f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else f"a {type(value).__name__}"
    )


# -- counting ---------------------------------------------------------------------------------------------


def _weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """Every weight tensor of ``model`` (dequantized for quantized modules), by qualified name."""
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for pname, param in module._parameters.items():
            if param is not None and id(param) not in seen:
                seen.add(id(param))
                yield (f"{prefix}.{pname}" if prefix else pname), param.detach()
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            # A quantized module (torch.ao dynamic Linear): weight() and bias() rebuild its tensors.
            # Each call builds new tensors, so they are not deduplicated by id (ids of freed tensors recur).
            for pname in ("weight", "bias"):
                value = getattr(module, pname)()
                if isinstance(value, Tensor):
                    value = value.dequantize() if value.is_quantized else value.detach()
                    yield (f"{prefix}.{pname}" if prefix else pname), value


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(parameters, nonzero parameters)`` of ``model``, counted in the tensors themselves.

    The weights of quantized modules count too (a weight quantized to zero is a zero).
    """
    check_model(model)
    total = nonzero = 0
    for _, tensor in _weights(model):
        total += tensor.numel()
        nonzero += int(tensor.count_nonzero())
    return total, nonzero


# -- size on disk -----------------------------------------------------------------------------------------


class ModelSize(BaseModel):
    """Bytes of two real files: the dense ``torch.save(state_dict)`` and :func:`save_compressed`'s form."""

    model_config = ConfigDict(frozen=True)

    dense_bytes: int
    compressed_bytes: int

    @property
    def compression_ratio(self) -> float:
        """``dense_bytes / compressed_bytes``."""
        return self.dense_bytes / self.compressed_bytes


def model_size(model: nn.Module, directory: str | Path | None = None) -> ModelSize:
    """Write ``model``'s state dict densely and compressed (in ``directory``, a temporary one by default).

    Raises:
        FileError: a file could not be written (each is written atomically: see :mod:`prunus.files`).
    """
    check_model(model)
    if directory is not None:
        check_path("directory", directory)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(directory) if directory is not None else Path(tmp)
        state = model.state_dict()
        dense = files.write_atomic(where / "dense.pt", lambda file: torch.save(state, file))
        compressed = save_compressed(state, where / "compressed.safetensors")
        return ModelSize(dense_bytes=dense, compressed_bytes=compressed)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (written to memory)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# -- latency ----------------------------------------------------------------------------------------------


def _latencies(
    models: Mapping[str, nn.Module], example_input: Any, runs: int, warmup: int
) -> dict[str, float]:
    """Median milliseconds per forward of each model; the models take turns, so noise hits them alike."""
    check_int("runs", runs, minimum=1)
    check_int("warmup", warmup, minimum=0)
    with torch.inference_mode(), evaluation_mode(*models.values()):
        for model in models.values():
            run_model(model, example_input, "example_input")  # a clear error before the timing
        seconds = time_interleaved(
            [functools.partial(call_model, model, example_input) for model in models.values()],
            repeats=runs,
            warmup=warmup,
        )
    return {name: value * 1e3 for name, value in zip(models, seconds, strict=True)}


def latency_ms(model: nn.Module, example_input: Any, *, runs: int = 30, warmup: int = 3) -> float:
    """Median milliseconds of ``model(example_input)`` over ``runs`` (eval mode, no autograd).

    ``example_input`` may be a tensor, a tuple of positional inputs or a dict of keyword inputs. The model is
    left exactly as it was (see :func:`prunus.forward.evaluation_mode`).

    Raises:
        TargetError: ``example_input`` does not run the model.
    """
    check_model(model)
    return _latencies({"model": model}, example_input, runs, warmup)["model"]


# -- one call ---------------------------------------------------------------------------------------------


class Evaluation(BaseModel):
    """What :func:`evaluate` measured of one model."""

    model_config = ConfigDict(frozen=True)

    label: str
    accuracy: float | None
    """With the user's evaluator or data; ``None`` when neither was given."""
    parameters: int
    nonzero_parameters: int
    dense_bytes: int
    """Bytes of the file ``torch.save(model.state_dict())`` writes."""
    compressed_bytes: int
    """Bytes of the file :func:`save_compressed` writes."""
    latency_ms: float | None
    """Median milliseconds per forward of ``example_input``; ``None`` when none was given."""

    @property
    def sparsity(self) -> float:
        """Fraction of all parameters that are zero."""
        return 1 - self.nonzero_parameters / self.parameters if self.parameters else 0.0

    @property
    def compression_ratio(self) -> float:
        """``dense_bytes / compressed_bytes`` of this model."""
        return self.dense_bytes / self.compressed_bytes


def measure_with(evaluator: Evaluator, model: nn.Module) -> float:
    """``evaluator(model)`` as a number, run as a measurement (the model is left exactly as it was).

    Raises:
        ConfigError: the evaluator returned something other than a number.
    """
    with evaluation_mode(model):
        value = evaluator(model)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"the evaluator returned {type(value).__name__} ({brief(value, 40)}); it must return a number"
        )
    return float(value)


def _accuracy_of(model: nn.Module, data: Data | None, evaluator: Evaluator | None) -> float | None:
    if evaluator is not None:
        return measure_with(evaluator, model)
    if data is not None:
        return accuracy(model, data)
    return None


def evaluate(
    model: nn.Module,
    *,
    data: Data | None = None,
    evaluator: Evaluator | None = None,
    example_input: Any = None,
    latency_runs: int = 30,
    label: str = "model",
) -> Evaluation:
    """Measure ``model``: accuracy, parameters and nonzeros, size on disk dense and compressed, latency.

    Args:
        data: labelled data for top-1 accuracy (a pair of tensors or an iterable of batches).
        evaluator: ``evaluator(model) -> float``, used instead of ``data`` for any other metric.
        example_input: an input to time the forward pass with; no latency without it.
        latency_runs: forwards timed (the median is reported).
        label: the name shown in tables.

    The model is left exactly as it was (see :func:`prunus.forward.evaluation_mode`).
    """
    check_model(model)
    if not isinstance(label, str):
        raise ConfigTypeError(f"label must be a str, not {type(label).__name__} ({brief(label)})")
    return compare(
        {label: model},
        data=data,
        evaluator=evaluator,
        example_input=example_input,
        latency_runs=latency_runs,
    ).rows[0]


class Comparison(BaseModel):
    """Evaluations side by side (dense, pruned, pruned + quantized, ...); ``str()`` is a table."""

    model_config = ConfigDict(frozen=True)

    rows: list[Evaluation]

    def __getitem__(self, label: str) -> Evaluation:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(f"no evaluation labelled {label!r}; labels: {[r.label for r in self.rows]}")

    def table(self) -> list[list[str]]:
        """Header row then one row per measure, one column per model."""
        first = self.rows[0]
        lines = [["", *(r.label for r in self.rows)]]

        def add(title: str, cell: Callable[[Evaluation], str]) -> None:
            lines.append([title, *(cell(r) for r in self.rows)])

        if any(r.accuracy is not None for r in self.rows):
            add("accuracy", lambda r: "-" if r.accuracy is None else f"{r.accuracy:.4f}")
        add("parameters", lambda r: f"{r.parameters:,}")
        add("nonzero parameters", lambda r: f"{r.nonzero_parameters:,}")
        add("sparsity", lambda r: f"{r.sparsity:.2%}")
        add("size, torch.save", lambda r: kib(r.dense_bytes))
        add("size, compressed", lambda r: kib(r.compressed_bytes))
        add(
            f"compression vs {first.label}",
            lambda r: f"{first.dense_bytes / r.compressed_bytes:.2f}x",
        )
        if any(r.latency_ms is not None for r in self.rows):
            add("latency", lambda r: "-" if r.latency_ms is None else f"{r.latency_ms:.3f} ms")
        return lines

    def to_markdown(self) -> str:
        """The table in Markdown."""
        head, *body = self.table()
        out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(out)

    def __str__(self) -> str:
        lines = self.table()
        widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
        return "\n".join(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in lines
        )


def compare(
    models: Mapping[str, nn.Module],
    *,
    data: Data | None = None,
    evaluator: Evaluator | None = None,
    example_input: Any = None,
    latency_runs: int = 30,
) -> Comparison:
    """:func:`evaluate` each model (e.g. ``{"dense": d, "pruned": p, "pruned + int8": q}``), side by side.

    Latencies are measured with the models taking turns, so that machine noise hits them alike. Every model is
    left exactly as it was (see :func:`prunus.forward.evaluation_mode`).
    """
    if not isinstance(models, Mapping):
        raise ConfigTypeError(
            f"models must map labels to models, e.g. {{'dense': d, 'pruned': p}}, not "
            f"{type(models).__name__} ({brief(models)})"
        )
    if not models:
        raise ConfigError("compare needs at least one model")
    for label, model in models.items():
        if not isinstance(label, str):
            raise ConfigTypeError(
                f"model labels must be str, not {type(label).__name__} ({brief(label)})"
            )
        if not isinstance(model, nn.Module):
            raise ConfigTypeError(f"{label!r} is a {type(model).__name__}, not a torch.nn.Module")
    if evaluator is not None:
        check_callable("evaluator", evaluator)
    check_int("latency_runs", latency_runs, minimum=1)
    timings = (
        _latencies(models, example_input, latency_runs, warmup=3)
        if example_input is not None
        else {}
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, model) in enumerate(models.items()):
            total, nonzero = count_parameters(model)
            size = model_size(model, Path(tmp) / str(index))
            rows.append(
                Evaluation(
                    label=label,
                    accuracy=_accuracy_of(model, data, evaluator),
                    parameters=total,
                    nonzero_parameters=nonzero,
                    dense_bytes=size.dense_bytes,
                    compressed_bytes=size.compressed_bytes,
                    latency_ms=timings.get(label),
                )
            )
    return Comparison(rows=rows)


# -- summary ----------------------------------------------------------------------------------------------


def summary(model: nn.Module) -> str:
    """The model's modules with each weight's shape, nonzeros and sparsity; ``*`` marks a prunus mask.

    Works on pruned models (with or without masks) and on quantized ones (their weights dequantized).
    """
    check_model(model)
    masked = {name for name, _, _ in masking.masked_parameters(model)}
    rows: list[tuple[str, str, str, str, str, str]] = []
    total = nonzero_total = 0
    types = {name: type(module).__name__ for name, module in model.named_modules()}
    for name, tensor in _weights(model):
        owner = name.rpartition(".")[0]
        numel = tensor.numel()
        nonzero = int(tensor.count_nonzero())
        total += numel
        nonzero_total += nonzero
        rows.append(
            (
                name + (" *" if name in masked else ""),
                types.get(owner, type(model).__name__),
                "x".join(map(str, tensor.shape)) or "scalar",
                f"{numel:,}",
                f"{nonzero:,}",
                f"{1 - nonzero / numel:.1%}" if numel else "-",
            )
        )
    header = ("parameter", "module", "shape", "entries", "nonzero", "sparsity")
    footer = (
        "total",
        "",
        "",
        f"{total:,}",
        f"{nonzero_total:,}",
        f"{1 - nonzero_total / total:.1%}" if total else "-",
    )
    table: Sequence[tuple[str, ...]] = [header, *rows, footer]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"{type(model).__name__} ({len(masked)} parameters carry a prunus mask: *)"]
    for row in table:
        lines.append(
            "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)
