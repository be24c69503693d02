"""Running a model on example inputs: one rule for what a tuple, a dict and anything else mean.

Every prunus call that runs a model on inputs a user gave (``shrink``, ``analyze``, ``latency_ms``,
``evaluate``, calibration...) goes through :func:`call_model`, so ``example_inputs`` means the same everywhere,
as in ``torch.export``:

* a ``tuple`` holds the positional arguments: ``(x, mask)`` calls ``model(x, mask)``;
* a mapping (a ``dict``, a Hugging Face ``BatchEncoding``) holds keyword arguments: ``model(**inputs)``;
* anything else, a tensor or a list included, is the one positional argument: ``model(inputs)``.

To pass a single tuple as the one argument, wrap it: ``((a, b),)``.

Measuring helpers run the model under :func:`evaluation_mode`, which leaves it exactly as it was: every
submodule's own ``training`` flag, every buffer (BatchNorm statistics) and torch's global random generators.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PrunusError, TargetError

__all__ = ["call_model", "evaluation_mode", "output_tensors", "run_model", "to_device"]


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model`` called on ``example_inputs`` by the rule above."""
    if isinstance(example_inputs, tuple):
        return model(*example_inputs)
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    return model(example_inputs)


def to_device(value: Any, device: torch.device | None) -> Any:
    """``value`` (a tensor, or a tuple, list or dict of them) on ``device``; anything else, or any value when
    ``device`` is ``None``, as it is."""
    if device is None:
        return value
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    return value


def run_model(model: nn.Module, example_inputs: Any, what: str = "example_inputs") -> Any:
    """:func:`call_model`, with a failure reported as the inputs not fitting the model.

    Raises:
        TargetError: the model raised on these inputs (the message names ``what``, the model and the error).
    """
    try:
        return call_model(model, example_inputs)
    except PrunusError:
        raise
    except Exception as error:
        text = " ".join(str(error).split())[:300]
        raise TargetError(
            f"{what} could not run {type(model).__name__}: {type(error).__name__}: {text}. Pass what model(...) "
            "takes: a tensor, a tuple of positional arguments or a dict of keyword arguments"
        ) from error


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
def evaluation_mode(*models: nn.Module) -> Iterator[None]:
    """Run ``models`` for a measurement and leave them exactly as they were: the one measurement path.

    Every measuring helper (``accuracy``, ``evaluate``, ``compare``, ``latency_ms``, ``sensitivity``,
    ``compare_quantized``, ``analyze``, the forwards ``shrink`` traces and checks with, a user's evaluator...) runs
    the model inside this block. For the block the models are in eval mode, so BatchNorm reads its running
    statistics instead of updating them and Dropout draws nothing. Afterwards:

    * each submodule gets its own ``training`` flag back (``model.train(was_training)`` would set them all to
      one value, unfreezing a BatchNorm frozen in eval mode inside a training model);
    * every buffer is as it was, value and object (a module that updates a buffer even in eval mode, or adds
      one, is undone), prunus's own mask buffers aside (no forward touches them);
    * torch's global random generators (CPU, and CUDA once initialised) are in the state they were in, so a
      measurement does not shift the random stream of the training run around it.

    The block does not change autograd's mode: callers that need no gradients say so (``torch.no_grad()``).
    """
    modules = list({id(m): m for model in models for m in model.modules()}.values())
    flags = [(module, module.training) for module in modules]
    buffers = [_BufferState(module) for module in modules]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
        for state in buffers:
            state.restore()
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


class _BufferState:
    """One module's buffers: the dict's entries, and a copy of each value to write back if it changed."""

    __slots__ = ("entries", "module", "non_persistent", "values")

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.entries = dict(module._buffers)
        self.non_persistent = set(module._non_persistent_buffers_set)
        # (tensor, version counter, copy): the copy is written back only if the counter moved.
        self.values = [
            (buffer, buffer._version, buffer.detach().clone())
            for name, buffer in self.entries.items()
            if buffer is not None and not name.startswith(_PRUNUS_BUFFERS)
        ]

    def restore(self) -> None:
        # prunus's own buffers stay as they are now: a call that prunes while it runs the model (calibration,
        # block by block) adds masks inside the block, and those are its result, not a side effect.
        module = self.module
        current = module._buffers
        own = {k: v for k, v in current.items() if k.startswith(_PRUNUS_BUFFERS)}
        entries = {k: v for k, v in self.entries.items() if not k.startswith(_PRUNUS_BUFFERS)}
        others = {k: v for k, v in current.items() if k not in own}
        if others.keys() != entries.keys() or any(others[k] is not v for k, v in entries.items()):
            current.clear()
            current.update(entries)
            current.update(own)
        non_persistent = {k for k in self.non_persistent if not k.startswith(_PRUNUS_BUFFERS)} | {
            k for k in module._non_persistent_buffers_set if k.startswith(_PRUNUS_BUFFERS)
        }
        if module._non_persistent_buffers_set != non_persistent:
            module._non_persistent_buffers_set.clear()
            module._non_persistent_buffers_set.update(non_persistent)
        for buffer, version, saved in self.values:
            if buffer._version != version:
                with torch.no_grad():
                    buffer.copy_(saved)


_PRUNUS_BUFFERS = ("_prunus_mask_", "_prunus_pruned_", "_prunus_original_")
"""Prefixes of prunus's own buffers (see :mod:`prunus.masking`): no forward changes them, so none is copied, and
those a call adds or drops while the model runs are kept as they are."""
