"""Pruning plus quantization: dynamic int8 quantization of a pruned model, and a side-by-side comparison.

On CPU, torch offers dynamic quantization of ``nn.Linear`` (``torch.ao.quantization.quantize_dynamic``, still
present and working in torch 2.13 although deprecated in favour of torchao): weights are stored as int8, the
activations are quantized on the fly. A pruned weight is exactly zero, and zero quantizes to the zero point,
so every pruned entry is still zero after dequantization: the zeros survive, and the compressed checkpoint of
the quantized model (int8 values plus a bit mask) is smaller still.

>>> quantized = prunus.quantize(pruned)                                            # doctest: +SKIP
>>> print(prunus.compare_quantized(dense, pruned, data=(x, y), example_input=x[:64]))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..arguments import check_bool, check_model
from ..errors import ConfigError, ConfigTypeError, brief
from .evaluation import Comparison, Data, Evaluator, compare

__all__ = ["compare_quantized", "quantize", "quantized_weights"]


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """Silence torch's deprecation notices about its eager-mode quantization API."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*quantiz")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*quantiz.*deprecated")
        yield


def quantize(
    model: nn.Module,
    *,
    layers: tuple[type[nn.Module], ...] = (nn.Linear,),
    dtype: torch.dtype = torch.qint8,
    inplace: bool = False,
) -> nn.Module:
    """Dynamic int8 quantization of ``model``'s ``layers`` (``nn.Linear`` by default), for CPU inference.

    Works on a pruned model, with or without its masks (the quantized copy carries none: its zeros are in the
    int8 weights). Returns a new model unless ``inplace``.

    Raises:
        ConfigError: this torch has no ``torch.ao.quantization.quantize_dynamic``, or a bad ``dtype``.
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # pragma: no cover - present in every torch prunus supports so far
        raise ConfigError(
            f"this torch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic: {error}"
        ) from None
    check_model(model)
    check_bool("inplace", inplace)
    if not (
        isinstance(layers, (tuple, list, set, frozenset))
        and layers
        and all(isinstance(t, type) and issubclass(t, nn.Module) for t in layers)
    ):
        raise ConfigTypeError(
            f"layers must be a tuple of module classes such as (nn.Linear,), not {brief(layers)}"
        )
    if dtype not in (torch.qint8, torch.float16):
        raise ConfigError(
            f"dtype={brief(dtype)} is not supported; use torch.qint8 or torch.float16"
        )
    if not inplace:
        model = copy.deepcopy(model)
    with quiet_quantization():
        quantized = quantize_dynamic(model, set(layers), dtype=dtype, inplace=True)  # type: ignore[no-untyped-call]
    assert isinstance(quantized, nn.Module)
    return quantized


def quantized_weights(model: nn.Module) -> dict[str, Tensor]:
    """The dequantized weight of every quantized module in ``model``, by the module's qualified name."""
    check_model(model)
    out = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "_packed_params") and callable(weight):
            value = weight()
            if isinstance(value, Tensor):
                out[name] = value.dequantize() if value.is_quantized else value.detach()
    return out


def compare_quantized(
    dense: nn.Module,
    pruned: nn.Module,
    *,
    data: Data | None = None,
    evaluator: Evaluator | None = None,
    example_input: Any = None,
    latency_runs: int = 30,
    quantize_dense: bool = False,
) -> Comparison:
    """Size, latency and accuracy of the dense, the pruned and the pruned + int8 model, side by side.

    ``quantize_dense`` adds a dense + int8 column, to tell what pruning adds to quantization alone. The models
    are left exactly as they were (see :func:`prunus.forward.evaluation_mode`).
    """
    check_model(dense, "dense")
    check_model(pruned, "pruned")
    check_bool("quantize_dense", quantize_dense)
    models = {"dense": dense, "pruned": pruned, "pruned + int8": quantize(pruned)}
    if quantize_dense:
        models = {
            "dense": dense,
            "dense + int8": quantize(dense),
            "pruned": pruned,
            "pruned + int8": models["pruned + int8"],
        }
    with quiet_quantization():
        return compare(
            models,
            data=data,
            evaluator=evaluator,
            example_input=example_input,
            latency_runs=latency_runs,
        )
