"""Saving a shrunken model without pickle: a JSON record of its shapes beside a plain ``state_dict``.

:func:`shrink_state` records every module's parameter and buffer shapes and plain attributes;
:func:`load_shrunk` rebuilds the architecture on a fresh instance of the original class from it and loads the
weights, without pickling modules and without Torch-Pruning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ShrinkError, TargetError
from ..transaction import ModuleSnapshot, transaction
from .mha import HeadPrunedMultiheadAttention

__all__ = ["SHRINK_RECORD_FORMAT", "load_shrunk", "shrink_state"]

SHRINK_RECORD_FORMAT = "prunus.shrink/1"

# Classes shrink may switch a module to (a subclass of its own class), by the name the record gives.
_SWITCHES: dict[str, type[nn.Module]] = {
    HeadPrunedMultiheadAttention.__name__: HeadPrunedMultiheadAttention
}
"""The ``format`` field of a shrink record."""

_Json = Any


def _attributes(module: nn.Module) -> dict[str, _Json]:
    out: dict[str, _Json] = {}
    for key, value in module.__dict__.items():
        if key.startswith("_") or key == "training":
            continue
        if _plain(value):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _plain(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, (bool, int, float, str, type(None))) for v in value)
    return False


def _with_tied(model: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with every tied parameter's other names filled in (safetensors keeps one name of each)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    out = dict(state_dict)
    for aliases in names.values():
        given = next((out[n] for n in aliases if n in out), None)
        if given is not None:
            for n in aliases:
                out.setdefault(n, given)
    return out


def shrink_state(model: nn.Module) -> dict[str, Any]:
    """A JSON-serializable record of the model's architecture: every module's parameter and buffer shapes and
    its plain attributes (``out_features``, ``in_channels``, ``num_features``, ...).

    Save it beside ``model.state_dict()``; :func:`load_shrunk` rebuilds the shrunken architecture on a fresh
    instance of the original class from it, without pickling modules.
    """
    if not isinstance(model, nn.Module):
        raise TargetError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    modules = {}
    for name, module in model.named_modules():
        modules[name] = {
            "type": type(module).__name__,
            "parameters": {
                k: list(v.shape) for k, v in module._parameters.items() if v is not None
            },
            "buffers": {k: list(v.shape) for k, v in module._buffers.items() if v is not None},
            "attributes": _attributes(module),
        }
    return {"format": SHRINK_RECORD_FORMAT, "modules": modules}


def load_shrunk(
    model: nn.Module, state_dict: Mapping[str, Any], record: Mapping[str, Any]
) -> nn.Module:
    """Rebuild a shrunken architecture on ``model`` (a fresh instance of the original class) and load weights.

    Args:
        model: a freshly built instance of the class that was shrunk (changed in place).
        state_dict: the shrunken model's ``state_dict()`` (tied parameters may appear under one of their names,
            as safetensors saves them).
        record: what :func:`shrink_state` returned (after a JSON round trip or not).

    Returns:
        ``model``, with the recorded shapes and attributes and the loaded weights.

    Raises:
        ShrinkError: the record is not a shrink record, or does not fit ``model`` (another class or version);
            the model is left as it was.
    """
    if not isinstance(record, Mapping) or record.get("format") != SHRINK_RECORD_FORMAT:
        raise ShrinkError(
            f"not a shrink record (format {SHRINK_RECORD_FORMAT!r} expected); make one with prunus.shrink_state"
        )
    modules = dict(model.named_modules())
    try:
        with transaction() as tx:
            tx.record(ModuleSnapshot(model))
            for name, entry in record["modules"].items():
                module = modules.get(name)
                switch = _SWITCHES.get(entry["type"])
                if (
                    module is not None
                    and switch is not None
                    and isinstance(module, switch.__mro__[1])
                ):
                    module.__class__ = (
                        switch  # the class shrink switched it to (the snapshot undoes it)
                    )
                if module is None or type(module).__name__ != entry["type"]:
                    found = "nothing" if module is None else type(module).__name__
                    raise ShrinkError(
                        f"the record has a {entry['type']} at {name!r}, the model {found}: load it into a fresh "
                        "instance of the class that was shrunk"
                    )
                for key, value in entry.get("attributes", {}).items():
                    current = module.__dict__.get(key)
                    if key in module.__dict__ and current != value:
                        setattr(module, key, tuple(value) if isinstance(current, tuple) else value)
                for key, shape in entry.get("parameters", {}).items():
                    old = module._parameters.get(key)
                    if old is not None and list(old.shape) != list(shape):
                        module._parameters[key] = nn.Parameter(
                            torch.empty(shape, dtype=old.dtype, device=old.device),
                            requires_grad=old.requires_grad,
                        )
                for key, shape in entry.get("buffers", {}).items():
                    old_buffer = module._buffers.get(key)
                    if old_buffer is not None and list(old_buffer.shape) != list(shape):
                        module._buffers[key] = torch.empty(
                            shape, dtype=old_buffer.dtype, device=old_buffer.device
                        )
            model.load_state_dict(_with_tied(model, state_dict))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, ShrinkError):
            raise
        raise ShrinkError(
            f"the record or state_dict does not fit {type(model).__name__}: {type(error).__name__}: {error}; "
            "the model was left as it was"
        ) from error
    return model
