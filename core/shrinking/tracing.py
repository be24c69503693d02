"""Tracing: Torch-Pruning's dependency graph of a model, built from one forward pass on ``example_inputs``.

The graph couples layers through what autograd records: residual additions, concatenations, reshapes, norms.
Two things are added around it here, both without a tracer of our own:

* **Attention cut.** Inside an attention block, the graph would follow every path between the query, key and
  value projections and the output projection (rotary embeddings, masks, the attention kernel), which it
  cannot map to heads and which makes building its groups exponential in practice (a one-layer Hugging Face
  Llama did not finish in minutes). The projections listed in ``cut`` are traced as outputs of their own and
  the block sees their values detached, so the graph keeps every coupling *into* the projections (their input
  columns follow the hidden size) and none through the block; heads are coupled from the block's known layout
  (:mod:`prunus.shrinking.heads`).
* **Layers Torch-Pruning does not know**: ``Conv1D`` (GPT-2's transposed linear layer) is registered as a
  customized layer with a pruner that declares which parameter dims hold its channels.

The traced pass also counts multiply-accumulates and keeps the outputs, so the model runs once.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import MissingDependencyError, ShrinkError, TargetError
from ..forward import call_model, output_tensors

__all__ = ["EXTRA", "MacCounter", "Traced", "conv1d_size", "is_conv1d", "torch_pruning", "trace"]

EXTRA = "shrink"

Inputs = Any


def torch_pruning() -> Any:
    """The ``torch_pruning`` module, or a :class:`MissingDependencyError` naming the extra that brings it."""
    try:
        return importlib.import_module("torch_pruning")
    except ImportError as error:
        raise MissingDependencyError(
            f"prunus.shrink and prunus.prune_channels need Torch-Pruning for the layer coupling: "
            f"pip install 'prunus[{EXTRA}]' (or pip install torch-pruning==1.6.1); import failed: {error}"
        ) from error


def conv1d_size(module: nn.Module, which: str) -> int:
    """A ``Conv1D`` layer's input (``"nx"``) or output (``"nf"``) width."""
    return int(vars(module)[which])


def is_conv1d(module: nn.Module) -> bool:
    """A transposed linear layer as GPT-2 uses (``transformers.pytorch_utils.Conv1D``): ``weight`` is ``(nx, nf)``."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(getattr(module, "nf", None), int)
        and isinstance(getattr(module, "nx", None), int)
        and isinstance(weight, Tensor)
        and tuple(weight.shape) == (vars(module)["nx"], vars(module)["nf"])
    )


class MacCounter:
    """Multiply-accumulates of Linear, Conv and Conv1D layers, counted by forward hooks during one pass."""

    def __init__(self, model: nn.Module) -> None:
        self.total = 0
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) or is_conv1d(m)
        ]

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            return
        if isinstance(module, nn.Linear):
            self.total += output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            kernel = math.prod(module.kernel_size)
            if module.transposed:
                inputs = args[0] if args and isinstance(args[0], Tensor) else None
                if inputs is not None:
                    self.total += inputs.numel() * (module.out_channels // module.groups) * kernel
            else:
                self.total += output.numel() * (module.in_channels // module.groups) * kernel
        else:
            self.total += output.numel() * conv1d_size(module, "nx")

    def close(self) -> int:
        for handle in self._handles:
            handle.remove()
        return self.total


@dataclass
class Traced:
    """The dependency graph and what the traced pass produced.

    Attributes:
        graph: Torch-Pruning's ``DependencyGraph``.
        output: the model's output on ``example_inputs``.
        macs: multiply-accumulates of the traced pass.
        output_nodes: graph nodes that produce the model's output (their channels are the output's).
        conv1d: the pruner registered for ``Conv1D`` layers (``None`` when the model has none).
    """

    graph: Any
    output: Any
    macs: int
    output_nodes: set[Any]
    conv1d: Any = None
    cut: list[nn.Module] = field(default_factory=list)


def _conv1d_pruner(tp: Any) -> Any:
    """A Torch-Pruning pruner for ``Conv1D``: outputs along ``weight`` dim 1 and ``bias``, inputs along dim 0."""

    class Conv1DPruner(tp.pruner.function.BasePruningFunc):  # type: ignore[misc]
        # Which parameter dims hold the channels, read by the planner (prunus.shrinking.planning).
        prunus_dims: ClassVar[dict[str, tuple[tuple[str, int, bool], ...]]] = {
            "out": (("weight", 1, True), ("bias", 0, False)),
            "in": (("weight", 0, True),),
        }

        def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            keep = sorted(set(range(conv1d_size(layer, "nf"))) - set(idxs))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
            vars(layer)["nf"] = len(keep)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            keep = sorted(set(range(conv1d_size(layer, "nx"))) - set(idxs))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
            vars(layer)["nx"] = len(keep)
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return conv1d_size(layer, "nf")

        def get_in_channels(self, layer: nn.Module) -> int:
            return conv1d_size(layer, "nx")

    return Conv1DPruner()


def _hook_dicts(model: nn.Module) -> list[tuple[dict[Any, Any], dict[Any, Any]]]:
    """Every hook dict of every module, with a copy of its content."""
    return [
        (value, dict(value))
        for module in model.modules()
        for key, value in vars(module).items()
        if "hook" in key and isinstance(value, dict)
    ]


def _restore_hook_dicts(saved: list[tuple[dict[Any, Any], dict[Any, Any]]]) -> None:
    for live, content in saved:
        live.clear()
        live.update(content)


def trace(model: nn.Module, example_inputs: Inputs, cut: Sequence[nn.Module] = ()) -> Traced:
    """Build Torch-Pruning's dependency graph, capturing the output and the MACs of the traced pass.

    Args:
        model: the model (put in eval mode by Torch-Pruning; callers restore the training flags).
        example_inputs: what ``model(...)`` takes (see :func:`prunus.forward.call_model`).
        cut: projection layers whose outputs the rest of the pass sees detached (see the module docstring).

    Raises:
        TargetError: ``example_inputs`` does not run the model.
        ShrinkError: Torch-Pruning failed to trace it.
    """
    tp = torch_pruning()
    captured: dict[str, Any] = {}
    extra_outputs: list[Tensor] = []

    def detach(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, Tensor) and output.grad_fn is not None:
            extra_outputs.append(output)
            return output.detach()
        return None

    def forward(m: nn.Module, inputs: Inputs) -> Any:
        # Registered here, after Torch-Pruning's own hooks, so that its hooks record the projections' real
        # outputs before the rest of the pass gets the detached ones.
        handles = [module.register_forward_hook(detach) for module in cut]
        counter = MacCounter(m)
        try:
            captured["out"] = call_model(m, inputs)
        finally:
            captured["macs"] = counter.close()
            for handle in handles:
                handle.remove()
        return captured["out"]

    def outputs(out: Any) -> list[Tensor]:
        return [t for t in output_tensors(out) if t.grad_fn is not None] + extra_outputs

    hooks = _hook_dicts(model)
    graph = tp.DependencyGraph()
    conv1d_types = {type(m) for m in model.modules() if is_conv1d(m)}
    conv1d = _conv1d_pruner(tp) if conv1d_types else None
    for layer_type in conv1d_types:
        graph.register_customized_layer(layer_type, conv1d)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph.build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=forward,
                output_transform=outputs,
                verbose=False,
            )
        except Exception as error:
            _restore_hook_dicts(
                hooks
            )  # Torch-Pruning leaves its tracing hooks behind when forward fails
            if "out" not in captured:
                raise TargetError(
                    f"example_inputs could not run {type(model).__name__}: {type(error).__name__}: "
                    f"{error}. Pass what model(...) takes: a tensor, a tuple of positional arguments or "
                    "a dict of keyword arguments"
                ) from error
            raise ShrinkError(
                f"Torch-Pruning could not trace {type(model).__name__}: {type(error).__name__}: {error}"
            ) from error
    roots = {t.grad_fn for t in output_tensors(captured["out"]) if t.grad_fn is not None}
    extra = {t.grad_fn for t in extra_outputs}
    output_nodes = {
        node
        for node in graph.module2node.values()
        if (node.type == tp.ops.OPTYPE.OUTPUT and node.grad_fn not in extra)
        or node.grad_fn in roots
    }
    return Traced(graph, captured["out"], captured["macs"], output_nodes, conv1d, list(cut))
