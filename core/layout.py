"""How layers lay out their weights and inputs, and where a model keeps its stack of blocks.

A data-aware criterion pairs every weight with the inputs it multiplies. This module holds that pairing, once,
for every layer prunus calibrates:

* :func:`input_dim`: the dim of a weight its layer reduces over (a Linear ``(out, in)``: 1; GPT-2's ``Conv1D``
  ``(in, out)`` and a transposed convolution: 0);
* :func:`matrix_view` / :func:`from_matrix`: any parameter as an ``(outputs, input features)`` matrix and back
  (a convolution's ``(out, in * kh * kw)`` GEMM view, a ``Conv1D`` transposed, a vector as one row);
* :func:`per_input`: a vector over the input features, shaped to broadcast against the parameter;
* :func:`input_columns`: what a layer's forward input looks like as rows of input features, the columns of
  its :func:`matrix_view` (a Linear's tokens, a convolution's unfolded patches);
* :func:`find_blocks`: the stack of identical blocks (decoder layers, encoder layers, GPT-2 blocks) that a
  calibration pass walks one at a time.

transformers is never imported: GPT-2's ``Conv1D`` is recognised by its qualified class name
(:data:`TRANSPOSED_LINEARS`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "TRANSPOSED_LINEARS",
    "find_blocks",
    "from_matrix",
    "gatherable",
    "input_columns",
    "input_dim",
    "input_features",
    "input_weighted",
    "is_transposed_linear",
    "matrix_view",
    "per_input",
]

TRANSPOSED_LINEARS: set[str] = {"transformers.pytorch_utils.Conv1D"}
"""Qualified class names of linear layers that store their weight as ``(in, out)`` and compute ``x @ weight``
(GPT-2's ``Conv1D``). Found by name so that transformers is never imported; add a name for another such
layer."""


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a linear layer with an ``(in, out)`` weight (see :data:`TRANSPOSED_LINEARS`)."""
    return any(
        f"{cls.__module__}.{cls.__qualname__}" in TRANSPOSED_LINEARS for cls in type(module).__mro__
    )


def input_dim(module: nn.Module, ndim: int) -> int:
    """The dim of ``module``'s ``ndim``-D weight that its matmul or convolution reduces over (its inputs).

    1 for a Linear ``(out, in)`` and a convolution ``(out, in / groups, *kernel)``; 0 for GPT-2's ``Conv1D``
    ``(in, out)``, a transposed convolution ``(in, out / groups, *kernel)`` and a parameter of at most one dim.
    """
    if (
        ndim <= 1
        or isinstance(module, nn.modules.conv._ConvTransposeNd)
        or is_transposed_linear(module)
    ):
        return 0
    return 1


def matrix_view(module: nn.Module, tensor: Tensor) -> Tensor:
    """``tensor`` (a parameter of ``module``, or scores of its shape) as an ``(outputs, features)`` matrix.

    Columns are the input features the layer multiplies the weight with, in the order of
    :func:`input_columns`: a Linear's weight as it is, a convolution's ``(out, in * kh * kw)``, a ``Conv1D``'s
    transpose; a parameter of at most one dim is one row. A view where the layout allows (a transpose for
    ``Conv1D``).
    """
    if tensor.dim() <= 1:
        return tensor.reshape(1, -1)
    if input_dim(module, tensor.dim()) == 0:
        return tensor.reshape(tensor.shape[0], -1).t()
    return tensor.reshape(tensor.shape[0], -1)


def from_matrix(module: nn.Module, matrix: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """The inverse of :func:`matrix_view`: a matrix of that layout back in the parameter's ``shape``."""
    if len(shape) <= 1:
        return matrix.reshape(shape)
    if input_dim(module, len(shape)) == 0:
        return matrix.t().reshape(shape)
    return matrix.reshape(shape)


def input_features(module: nn.Module, shape: torch.Size | tuple[int, ...]) -> int:
    """How many input features a parameter of ``shape`` in ``module`` has: the columns of its matrix view."""
    if len(shape) <= 1:
        return math.prod(shape)
    if input_dim(module, len(shape)) == 0:
        return shape[0]
    return math.prod(shape[1:])


def per_input(module: nn.Module, shape: torch.Size | tuple[int, ...], vector: Tensor) -> Tensor:
    """A vector over the input features, reshaped to broadcast against a parameter of ``shape``.

    ``weight.abs() * per_input(module, weight.shape, norms)`` scales every weight by the norm of its input.
    """
    if len(shape) <= 1:
        return vector.reshape(shape)
    if input_dim(module, len(shape)) == 0:
        return vector.reshape(shape[0], *([1] * (len(shape) - 1)))
    return vector.reshape(1, *shape[1:])


def input_weighted(module: nn.Module, tensor: Tensor, norms: Tensor) -> Tensor:
    """Wanda's ``|w_ij| * ||x_j||_2``: each entry of ``tensor`` (a parameter of ``module``) times the norm of its
    input feature ``norms[j]``, in float32 (float64 for a float64 ``tensor``).

    An input that is always zero makes its weights worthless: they score 0 (``inf * 0`` would be NaN).
    """
    dtype = torch.promote_types(tensor.dtype, torch.float32)
    scale = per_input(module, tensor.shape, norms).to(tensor.device, dtype)
    scores = tensor.abs().to(dtype) * scale
    silent = scale == 0
    return scores.masked_fill_(silent, 0.0) if bool(silent.any()) else scores


# -- inputs of a layer -------------------------------------------------------------------------------------------


def gatherable(module: nn.Module, param_name: str) -> str | None:
    """``None`` when calibration can gather the inputs of ``module.<param_name>``, else why it cannot.

    Calibration covers the weights of Linear layers (GPT-2's ``Conv1D`` included) and of ungrouped
    ``Conv1d`` / ``Conv2d`` layers.
    """
    what = type(module).__name__
    if param_name != "weight":
        return f"{param_name!r} of a {what} multiplies no input (only layer weights do)"
    if isinstance(module, nn.Linear) or is_transposed_linear(module):
        return None
    if isinstance(module, nn.Conv1d | nn.Conv2d) and not isinstance(
        module, nn.modules.conv._ConvTransposeNd
    ):
        if module.groups != 1:
            return f"a grouped {what} (groups={module.groups}) is not covered"
        return None
    return f"a {what} is not a Linear, Conv1D, Conv1d or Conv2d layer"


def input_columns(module: nn.Module, inputs: Tensor) -> Tensor:
    """The forward input of a gatherable layer as rows of input features, ``(rows, features)`` in float32.

    Each row is one vector the weight's matrix view multiplies: a token for a Linear, an image patch (unfolded
    as the convolution reads it, padding included) for a convolution.
    """
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        spatial = 1 if isinstance(module, nn.Conv1d) else 2
        x = inputs.float()
        if x.dim() == spatial + 1:  # an unbatched input
            x = x.unsqueeze(0)
        pad = module._reversed_padding_repeated_twice
        if any(pad):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            x = torch.nn.functional.pad(x, pad, mode=mode)
        kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
        if spatial == 1:  # a Conv1d is a Conv2d of height 1: unfold reads 4-D inputs only
            x = x.unsqueeze(-2)
            kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
        patches = torch.nn.functional.unfold(x, kernel, dilation=dilation, stride=stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return inputs.reshape(-1, inputs.shape[-1]).float()


# -- the stack of blocks -------------------------------------------------------------------------------------------


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The model's stack of identical blocks, as ``(qualified name, ModuleList)``, or ``None``.

    The stack is the ``nn.ModuleList`` of at least two modules of one class that holds the most parameters:
    a decoder's layers (``model.layers``), BERT's ``encoder.layer``, GPT-2's ``transformer.h``. Found by
    structure alone, so any model with such a list qualifies; whether the blocks really run one after the
    other is checked when a calibration pass runs them.
    """
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        kinds = {type(child) for child in module}
        if len(kinds) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size and (best is None or (size, len(module)) > best[:2]):
            best = (size, len(module), name, module)
    return None if best is None else (best[2], best[3])
