"""Deployment exports of pruned models: ``torch.export`` programs and ONNX files checked in onnxruntime.

What exports, and what it keeps:

* a **shrunken** model (:func:`prunus.shrink`) is a plain smaller model: it exports as it is, smaller and
  faster everywhere;
* a **masked** model exports with its zeros (the weights are plain parameters); the masks and restore data are
  left out (:func:`export_program` and :func:`export_onnx` export a copy on which the pruning was made
  permanent), so the exported file is the dense-size model with zeros in it;
* **sparse execution modules** (:class:`prunus.SparseLinear`, sparse-layout weights) do not export: neither
  ``torch.export`` nor ONNX carries ``torch.sparse`` layouts. Both functions refuse them with an
  :class:`~prunus.ExportError` that says what to do instead (``prunus.to_dense(model)`` first: the zeros stay).

:func:`export_onnx` uses torch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, the optional
``onnx`` extra: ``pip install 'prunus[onnx]'``) and, by default, runs the file in onnxruntime on the example
inputs and compares the outputs with PyTorch's.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .. import files, masking
from ..errors import ExportError, MissingDependencyError
from ..forward import evaluation_mode, output_tensors
from ..hardware.sparse import SparseLinear

__all__ = ["ExportReport", "export_onnx", "export_program"]

EXTRA = "onnx"


class ExportReport(BaseModel):
    """What :func:`export_onnx` wrote and how its outputs compare with PyTorch's."""

    model_config = ConfigDict(frozen=True)

    path: str
    bytes: int
    max_abs_diff: float | None
    """Largest difference between onnxruntime's and PyTorch's outputs on the example inputs (``None``
    when not checked)."""


def _refuse_sparse(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear):
            raise ExportError(
                f"{name or type(model).__name__} is a prunus.SparseLinear ({module.layout} weight): torch.export "
                "and ONNX cannot carry torch.sparse layouts. Export the dense model instead: "
                "prunus.to_dense(model) gives plain nn.Linear layers with the same zeros, or export before "
                "prunus.to_sparse(...); for a smaller and faster exported model, prunus.shrink it"
            )
        for key, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is not None and tensor.layout != torch.strided:
                raise ExportError(
                    f"{name}.{key} is a {tensor.layout} tensor, which torch.export and ONNX cannot carry; "
                    "convert it to a dense tensor (tensor.to_dense()) before exporting"
                )


def _deployable(model: nn.Module) -> nn.Module:
    """``model`` itself, or a copy with the pruning made permanent (no mask or restore buffers in the graph)."""
    _refuse_sparse(model)
    if next(masking.masked_parameters(model), None) is None:
        return model
    plain = copy.deepcopy(model)
    for _, module, pname in list(masking.masked_parameters(plain)):
        masking.remove_parameter(module, pname)
    return plain


def _as_args(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    # As prunus.forward.call_model: a tuple is positional arguments, a mapping keyword arguments.
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    return (example_inputs,), {}


def export_program(
    model: nn.Module, example_inputs: Any, *, dynamic_shapes: Any = None, strict: bool = False
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (masked models with their zeros, masks left out).

    Args:
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        dynamic_shapes: passed to ``torch.export.export``.
        strict: passed to ``torch.export.export``.

    Raises:
        ExportError: the model holds sparse execution modules (see the module docs), or tracing failed.
    """
    args, kwargs = _as_args(example_inputs)
    plain = _deployable(model)
    # Traced in eval mode; the model keeps each submodule's flag, its buffers and the random stream.
    with evaluation_mode(plain):
        try:
            return torch.export.export(
                plain, args, kwargs or None, dynamic_shapes=dynamic_shapes, strict=strict
            )
        except Exception as error:
            raise ExportError(
                f"torch.export could not trace {type(model).__name__}: {type(error).__name__}: {error}"
            ) from error


def export_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | Path,
    *,
    dynamic_shapes: Any = None,
    check: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` to an ONNX file with torch's dynamo exporter, and check it in onnxruntime.

    Args:
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        path: the ``.onnx`` file to write (weights embedded).
        dynamic_shapes: as in ``torch.export`` (e.g. ``({0: "batch"},)`` for a dynamic batch).
        check: run the file in onnxruntime on ``example_inputs`` and compare with PyTorch's outputs.
        atol: the absolute tolerance of that comparison (kernels differ in the last bits of float sums).
        rtol: its relative tolerance.

    Raises:
        MissingDependencyError: onnx, onnxscript or onnxruntime is not installed (``pip install 'prunus[onnx]'``).
        ExportError: sparse execution modules, a failed export, or outputs that differ beyond the tolerance.
    """
    for module_name in ("onnx", "onnxscript", *(["onnxruntime"] if check else [])):
        try:
            importlib.import_module(module_name)
        except ImportError as error:
            raise MissingDependencyError(
                f"ONNX export needs {module_name}: pip install 'prunus[{EXTRA}]'; import failed: {error}"
            ) from error
    args, kwargs = _as_args(example_inputs)
    plain = _deployable(model)
    target = Path(path)
    # Exported and checked in eval mode; the model keeps each submodule's flag, its buffers, the random stream.
    with evaluation_mode(plain):
        try:
            program = torch.onnx.export(
                plain,
                args,
                kwargs=kwargs or None,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
            if program is None:
                raise ExportError("torch.onnx.export returned nothing")
        except ExportError:
            raise
        except Exception as error:
            raise ExportError(
                f"ONNX export of {type(model).__name__} failed: {type(error).__name__}: {error}"
            ) from error
        # Written whole or not at all: a failed write keeps the previous file (a FileError says why).
        files.write_atomic_path(
            target, lambda temporary: program.save(str(temporary), external_data=False)
        )
        difference = _compare(plain, args, kwargs, target, atol, rtol) if check else None
    return ExportReport(path=str(target), bytes=target.stat().st_size, max_abs_diff=difference)


def _compare(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    path: Path,
    atol: float,
    rtol: float,
) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]
    feeds = {
        node.name: tensor.detach().cpu().numpy()
        for node, tensor in zip(session.get_inputs(), inputs, strict=False)
    }
    got = session.run(None, feeds)
    with torch.no_grad():
        expected = output_tensors(model(*args, **kwargs))
    if len(got) != len(expected):
        raise ExportError(f"onnxruntime returned {len(got)} outputs, PyTorch {len(expected)}")
    worst = 0.0
    for ours, theirs in zip(expected, got, strict=True):
        theirs_t = torch.from_numpy(theirs).to(ours.dtype)
        if theirs_t.shape != ours.shape:
            raise ExportError(
                f"onnxruntime's output is {tuple(theirs_t.shape)}, PyTorch's {tuple(ours.shape)}"
            )
        if ours.numel():
            worst = max(worst, float((theirs_t.float() - ours.float()).abs().max()))
        if not torch.allclose(theirs_t.float(), ours.float(), atol=atol, rtol=rtol):
            raise ExportError(
                f"onnxruntime's outputs differ from PyTorch's by up to {worst:.3g} (atol={atol}, rtol={rtol})"
            )
    return worst
