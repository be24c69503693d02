"""Saving a shrunken model without pickle: a JSON record of its shapes beside a plain ``state_dict``.

:func:`shrink_state` records every module's parameter and buffer shapes and plain attributes;
:func:`load_shrunk` rebuilds the architecture on a fresh instance of the original class from it and loads the
weights, without pickling modules and without Torch-Pruning.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from ..arguments import check_model
from ..errors import ShrinkError, brief
from ..targets import listing
from ..transaction import ModuleSnapshot, transaction
from .mha import HeadPrunedMultiheadAttention

__all__ = ["SHRINK_RECORD_FORMAT", "load_shrunk", "shrink_state"]

SHRINK_RECORD_FORMAT = "prunus.shrink/1"
"""The ``format`` field of a shrink record."""

# Classes shrink may switch a module to (a subclass of its own class), by the name the record gives.
_SWITCHES: dict[str, type[nn.Module]] = {
    HeadPrunedMultiheadAttention.__name__: HeadPrunedMultiheadAttention
}

_Json = Any
Plain = bool | int | float | str | None
"""An attribute value a shrink record holds."""


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
    check_model(model)
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


class _ModuleRecord(BaseModel):
    """One module of a shrink record, as :func:`shrink_state` writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: str
    parameters: dict[str, list[Annotated[int, Field(ge=0)]]] = {}
    buffers: dict[str, list[Annotated[int, Field(ge=0)]]] = {}
    attributes: dict[str, Plain | list[Plain]] = {}


class _Record(BaseModel):
    """A whole shrink record."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal["prunus.shrink/1"]
    modules: dict[str, _ModuleRecord]


def _record(record: object) -> _Record:
    if not isinstance(record, Mapping) or record.get("format") != SHRINK_RECORD_FORMAT:
        raise ShrinkError(
            f"not a shrink record (format {SHRINK_RECORD_FORMAT!r} expected); make one with prunus.shrink_state"
        )
    try:
        return _Record.model_validate(dict(record))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ShrinkError(
            f"the shrink record is malformed at {where}: {first['msg']}{more}; the model was not changed"
        ) from None


def _settable(module: nn.Module, key: str, value: Any) -> bool:
    """Whether ``key`` is an attribute :func:`shrink_state` records (public, plain) and ``value`` fits it."""
    if key.startswith("_") or key == "training" or key not in module.__dict__:
        return False
    current = module.__dict__[key]
    if not _plain(current):
        return False
    if isinstance(current, (tuple, list)):
        return isinstance(value, list)
    if current is None or value is None:
        return True
    # Each kind stays itself: a bool a bool, an int an int, a str a str; a float may be written as an int.
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, int):
        return isinstance(value, int)
    if isinstance(current, float):
        return isinstance(value, (int, float))
    return isinstance(current, str) and isinstance(value, str)


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

    Only what :func:`shrink_state` records is set: the shapes of existing parameters and buffers, and public
    plain attributes (ints, floats, strs, bools, lists of them) that the module already has, each to a value of
    the same kind. A record that names a private attribute (``_parameters``), a new attribute or a value of
    another kind is refused.

    Raises:
        ShrinkError: the record is not a shrink record, is malformed, or does not fit ``model`` (another class or
            version), or ``state_dict`` does not fit the rebuilt model; the model is left exactly as it was.
    """
    check_model(model)
    parsed = _record(record)
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise ShrinkError("state_dict must map names (str) to tensors, as model.state_dict() gives")
    modules = dict(model.named_modules())
    try:
        with transaction() as tx:
            tx.record(ModuleSnapshot(model))
            for name, entry in parsed.modules.items():
                _rebuild(modules.get(name), name, entry)
            # Tied parameters may be saved under one of their names (safetensors keeps one of each).
            state = _with_tied(model, state_dict)
            _check_state(model, state)
            # load_state_dict copies into the tensors kept from the fresh model: keep their values to undo it.
            kept = [(t, t.detach().clone()) for t in _kept_tensors(model, state)]
            tx.record(functools.partial(_put_back, kept))
            model.load_state_dict(state)
    except ShrinkError:
        raise
    except Exception as error:
        raise ShrinkError(
            f"the record or state_dict does not fit {type(model).__name__}: {type(error).__name__}: "
            f"{brief(str(error), 300)}; the model was left as it was"
        ) from error
    return model


def _rebuild(module: nn.Module | None, name: str, entry: _ModuleRecord) -> None:
    """Give ``module`` the recorded class switch, attributes and shapes (new, uninitialised tensors where a
    shape changed)."""
    switch = _SWITCHES.get(entry.type)
    if module is not None and switch is not None and isinstance(module, switch.__mro__[1]):
        module.__class__ = switch  # the class shrink switched it to (the snapshot undoes it)
    if module is None or type(module).__name__ != entry.type:
        found = "nothing" if module is None else type(module).__name__
        raise ShrinkError(
            f"the record has a {entry.type} at {name!r}, the model {found}: load it into a fresh "
            "instance of the class that was shrunk"
        )
    for key, value in entry.attributes.items():
        if not _settable(module, key, value):
            raise ShrinkError(
                f"the record sets {name or 'the model'}.{key} = {brief(value)}, which is not a public plain "
                f"attribute of the {entry.type} of that kind; shrink records set only what "
                "prunus.shrink_state writes"
            )
        current = module.__dict__[key]
        if current != value:
            setattr(
                module,
                key,
                tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value,
            )
    for key, shape in entry.parameters.items():
        old = module._parameters.get(key)
        if old is None:
            raise ShrinkError(
                f"the record has a parameter {name}.{key} that the {entry.type} lacks"
            )
        if list(old.shape) != shape:
            module._parameters[key] = nn.Parameter(
                torch.empty(shape, dtype=old.dtype, device=old.device),
                requires_grad=old.requires_grad,
            )
    for key, shape in entry.buffers.items():
        old_buffer = module._buffers.get(key)
        if old_buffer is None:
            raise ShrinkError(f"the record has a buffer {name}.{key} that the {entry.type} lacks")
        if list(old_buffer.shape) != shape:
            module._buffers[key] = torch.empty(
                shape, dtype=old_buffer.dtype, device=old_buffer.device
            )


def _check_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """``state_dict`` has exactly the rebuilt model's keys and shapes (checked before anything is copied)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ShrinkError(
            f"the state_dict does not fit the rebuilt {type(model).__name__}: missing {listing(missing)}; "
            f"unexpected {listing(unexpected)}; the model was left as it was"
        )
    for key, value in state_dict.items():
        if value.shape != expected[key].shape:
            raise ShrinkError(
                f"the state_dict's {key!r} has shape {tuple(value.shape)}, the rebuilt model's "
                f"{tuple(expected[key].shape)}; the model was left as it was"
            )


def _kept_tensors(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The model's tensors that ``load_state_dict`` will copy into, each once."""
    current = model.state_dict(keep_vars=True)
    return list({id(current[k]): current[k] for k in state_dict if k in current}.values())


def _put_back(kept: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for tensor, value in kept:
            tensor.copy_(value)
