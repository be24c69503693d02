"""prunus-actnorm: |w| times the norm of its input channel over a calibration batch (Wanda)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from prunus.plugin_api import (
    DEFAULT_LAYERS,
    ConfigError,
    Criterion,
    PruneContext,
    Registrar,
    Target,
    call_model,
    evaluation_mode,
    hookimpl,
)

__all__ = ["ActivationNorm", "input_channel_norms"]


def input_channel_norms(context: PruneContext) -> dict[nn.Module, Tensor]:
    """The L2 norm of each input channel of every targeted layer, over one forward of the calibration batch.

    A Linear's channels are the last dim of its input, a convolution's dim 1. The forward runs under
    ``evaluation_mode`` (eval mode, and afterwards every module's mode, every buffer and torch's random state
    as they were) and ``torch.no_grad()``; the hooks are removed whatever happens.
    """
    if context.data is None:
        raise ConfigError(
            "the actnorm criterion needs a calibration batch: "
            "prunus.prune(model, 'actnorm_unstructured', amount=..., data=inputs)"
        )
    squares: dict[nn.Module, Tensor] = {}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach().double()
        channels = (
            x.reshape(-1, x.shape[-1])
            if isinstance(module, nn.Linear)
            else x.transpose(0, 1).flatten(1).T
        )
        squares[module] = squares.get(module, 0) + channels.square().sum(dim=0)

    # The layers whose weight multiplies input channels (Linear, convolutions): those prune targets by default.
    layers = {t.module for t in context.targets if isinstance(t.module, DEFAULT_LAYERS)}
    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        with torch.no_grad(), evaluation_mode(context.model):
            call_model(context.model, context.data)
    finally:
        for handle in handles:
            handle.remove()
    return {module: total.sqrt() for module, total in squares.items()}


def _per_weight(module: nn.Module, norms: Tensor, shape: torch.Size) -> Tensor:
    """The norm of the input channel each entry of ``module``'s weight multiplies, broadcastable to ``shape``."""
    if isinstance(module, nn.Linear):
        return norms
    trailing = [1] * (len(shape) - 2)
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        return norms.reshape(-1, 1, *trailing)  # weight (in, out / groups, *kernel)
    # weight (out, in / groups, *kernel): filter o of group g reads input channels g * in_per + c
    out, in_per = shape[0], shape[1]
    group = torch.arange(out) // (out // module.groups)
    channel = group[:, None] * in_per + torch.arange(in_per)[None, :]
    return norms[channel].reshape(out, in_per, *trailing)


class ActivationNorm(Criterion):
    """``|w|`` times the L2 norm of the input channel it multiplies, over the calibration batch ``data``.

    Weights of Linear layers and (grouped, transposed) convolutions; their biases, norm layers' parameters and
    layers the forward never calls score ``|w|``. The batch runs once per ``prune`` call, shared by all targets.
    """

    name = "actnorm"
    summary = "|w| x input-channel norm over a calibration batch (data=inputs)"

    def score(self, target: Target, context: PruneContext) -> Tensor:
        if "actnorm" not in context.extras:
            context.extras["actnorm"] = input_channel_norms(context)
        magnitude = target.tensor.detach().abs().double()
        norms = context.extras["actnorm"].get(target.module)
        if norms is None or target.param_name != "weight":
            return magnitude
        return magnitude * _per_weight(target.module, norms, target.tensor.shape)


@hookimpl
def prunus_register_criteria(register: Registrar) -> None:
    register(ActivationNorm)
