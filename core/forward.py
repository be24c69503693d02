"""Running a model on example inputs: one rule for what a tuple, a dict and anything else mean.

Every prunus call that runs a model on inputs a user gave (``shrink``, ``analyze``, ``latency_ms``,
``evaluate``, calibration...) goes through :func:`call_model`, so ``example_inputs`` means the same everywhere,
as in ``torch.export``:

* a ``tuple`` holds the positional arguments: ``(x, mask)`` calls ``model(x, mask)``;
* a mapping (a ``dict``, a Hugging Face ``BatchEncoding``) holds keyword arguments: ``model(**inputs)``;
* anything else, a tensor or a list included, is the one positional argument: ``model(inputs)``.

To pass a single tuple as the one argument, wrap it: ``((a, b),)``.

Measuring helpers run the model under :func:`evaluation_mode`, which restores every submodule's own
``training`` flag afterwards (``model.train(was_training)`` would reset them all to one value).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

__all__ = ["call_model", "evaluation_mode", "output_tensors"]


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model`` called on ``example_inputs`` by the rule above."""
    if isinstance(example_inputs, tuple):
        return model(*example_inputs)
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    return model(example_inputs)


def output_tensors(value: Any) -> list[Tensor]:
    """Every tensor in a model's output, in order: through tuples, lists, dicts and ``ModelOutput`` objects."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in output_tensors(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in output_tensors(v)]
    return []


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; afterwards each submodule gets its own ``training`` flag back.

    Eval mode is what keeps a measurement from changing the model: BatchNorm reads its running statistics
    instead of updating them, and Dropout draws nothing from the global random generator.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
