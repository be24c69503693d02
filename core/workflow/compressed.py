"""The compressed checkpoint: each mostly-zero tensor as its nonzero values plus one bit per entry.

:func:`save_compressed` writes it (atomically: a failed write keeps the previous file), :func:`load_compressed`
reads it back entry for entry, after checking every part of it: a file of another format, a truncated or
corrupt one, or one whose parts disagree (a bit mask of the wrong length, a count of values that is not the
number of set bits) raises :class:`~prunus.errors.FileFormatError` naming the file and the entry. Files are read
with ``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import files
from ..arguments import check_path
from ..errors import ConfigTypeError, FileError, FileFormatError, brief

__all__ = ["FORMAT", "compressed_content", "is_compressed", "load_compressed", "save_compressed"]

FORMAT = "prunus-compressed-v1"
"""The ``format`` field of a compressed checkpoint."""

_MARK = "__prunus__"

_QUANTIZED_INTS = (torch.int8, torch.uint8, torch.int32)


def _pack_bits(mask: Tensor) -> Tensor:
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (flat.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def _unpack_bits(bits: Tensor, numel: int) -> Tensor:
    shifts = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
    return ((bits.unsqueeze(1) >> shifts) & 1).reshape(-1)[:numel].bool()


def _sparse(tensor: Tensor, fill: int | float = 0) -> Any:
    """``tensor`` as its entries other than ``fill`` plus a bit per entry, when that is smaller."""
    numel = tensor.numel()
    kept = tensor != fill
    count = int(kept.sum())
    if numel >= 8 and math.ceil(numel / 8) + count * tensor.element_size() < (
        numel * tensor.element_size()
    ):
        return {
            _MARK: "sparse",
            "shape": list(tensor.shape),
            "bits": _pack_bits(kept),
            "values": tensor[kept].clone(),
            "fill": fill,
        }
    return tensor.clone()


def _encode(value: Any) -> Any:
    if isinstance(value, Tensor):
        tensor = value.detach().cpu()
        if tensor.is_quantized:
            if tensor.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                return tensor  # per-channel: saved as it is
            # A pruned entry quantizes to exactly the zero point.
            return {
                _MARK: "qtensor",
                "ints": _sparse(tensor.int_repr(), tensor.q_zero_point()),
                "scale": tensor.q_scale(),
                "zero_point": tensor.q_zero_point(),
            }
        return _sparse(tensor)
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_encode(item) for item in value)
    return value


class _Reader:
    """Decodes one file's content, checking each part; errors name the file and where in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> FileFormatError:
        return FileFormatError(
            f"{self.path} is not a valid prunus compressed checkpoint: {where}: {what}"
        )

    def keys(self, value: dict[Any, Any], where: str, expected: set[str]) -> None:
        if set(value) != expected:
            raise self.fail(
                where,
                f"has the keys {sorted(map(str, value))}, expected {sorted(expected)}",
            )

    def decode(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            kind = value.get(_MARK)
            if kind == "sparse":
                return self.sparse(value, where)
            if kind == "qtensor":
                return self.qtensor(value, where)
            if kind is not None:
                raise self.fail(where, f"unknown entry kind {brief(kind)}")
            return {key: self.decode(item, f"{where}[{key!r}]") for key, item in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(self.decode(item, f"{where}[{i}]") for i, item in enumerate(value))
        return value

    def sparse(self, value: dict[str, Any], where: str) -> Tensor:
        self.keys(value, where, {_MARK, "shape", "bits", "values", "fill"})
        shape, bits, values, fill = value["shape"], value["bits"], value["values"], value["fill"]
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise self.fail(where, f"shape {brief(shape)} is not a list of ints >= 0")
        numel = math.prod(shape)
        if not (isinstance(bits, Tensor) and bits.dtype == torch.uint8 and bits.dim() == 1):
            raise self.fail(where, "bits must be a 1-D uint8 tensor")
        if bits.numel() != math.ceil(numel / 8):
            raise self.fail(
                where,
                f"bits has {bits.numel()} bytes, but shape {shape} needs {math.ceil(numel / 8)}",
            )
        if not (isinstance(values, Tensor) and values.dim() == 1 and not values.is_quantized):
            raise self.fail(where, "values must be a 1-D tensor")
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
            raise self.fail(where, f"fill {brief(fill)} is not a finite number")
        mask = _unpack_bits(bits, 8 * bits.numel())
        if bool(mask[numel:].any()):
            raise self.fail(where, "bits past the end of the tensor are set")
        mask = mask[:numel]
        count = int(mask.sum())
        if values.numel() != count:
            raise self.fail(
                where,
                f"{values.numel()} values for {count} set bits; each set bit needs exactly one value",
            )
        try:
            tensor = torch.full(shape, fill, dtype=values.dtype)
        except (RuntimeError, TypeError, OverflowError) as error:
            raise self.fail(
                where, f"fill {fill!r} does not fit dtype {values.dtype}: {error}"
            ) from None
        tensor[mask.reshape(shape)] = values
        return tensor

    def qtensor(self, value: dict[str, Any], where: str) -> Tensor:
        self.keys(value, where, {_MARK, "ints", "scale", "zero_point"})
        ints = self.decode(value["ints"], f"{where}.ints")
        scale, zero_point = value["scale"], value["zero_point"]
        if not (isinstance(ints, Tensor) and ints.dtype in _QUANTIZED_INTS):
            raise self.fail(where, "ints must be an int8, uint8 or int32 tensor")
        if (
            isinstance(scale, bool)
            or not isinstance(scale, numbers.Real)
            or not math.isfinite(scale)
            or scale <= 0
        ):
            raise self.fail(where, f"scale {brief(scale)} is not a finite number > 0")
        info = torch.iinfo(ints.dtype)
        if (
            isinstance(zero_point, bool)
            or not isinstance(zero_point, int)
            or not info.min <= zero_point <= info.max
        ):
            raise self.fail(where, f"zero_point {brief(zero_point)} is not an int of {ints.dtype}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notice that quantized tensors are deprecated
            return torch._make_per_tensor_quantized_tensor(ints, float(scale), zero_point)


def save_compressed(model_or_state: nn.Module | Mapping[str, Any], path: str | Path) -> int:
    """Save a state dict compactly: each tensor whose zeros make it pay as its nonzero values + a bit mask.

    Other tensors (and quantized ones, as their int8 values) are saved as they are. Returns the file's size in
    bytes. :func:`load_compressed` gives back a state dict equal to the original, entry for entry. The file is
    written atomically: if writing fails, the previous file is unchanged.

    Raises:
        ConfigTypeError: ``model_or_state`` is neither a module nor a mapping, or ``path`` is not a path.
        FileError: the file could not be written (read-only directory, full disk...).
    """
    check_path("path", path)
    content = compressed_content(model_or_state)
    return files.write_atomic(path, lambda file: torch.save(content, file))


def compressed_content(model_or_state: nn.Module | Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`save_compressed` writes with ``torch.save``: for writers that stage several files at once.

    Raises:
        ConfigTypeError: ``model_or_state`` is neither a module nor a mapping.
    """
    if isinstance(model_or_state, nn.Module):
        state: Mapping[str, Any] = model_or_state.state_dict()
    elif isinstance(model_or_state, Mapping):
        state = model_or_state
    else:
        raise ConfigTypeError(
            f"save_compressed needs a torch.nn.Module or a state dict, not "
            f"{type(model_or_state).__name__} ({brief(model_or_state)})"
        )
    # The per-module versions that load_state_dict reads (quantized modules depend on them).
    metadata = getattr(state, "_metadata", None)
    return {
        "format": FORMAT,
        "state": _encode(dict(state)),
        "metadata": dict(metadata) if metadata is not None else None,
    }


def load_compressed(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_compressed` back into a state dict.

    Raises:
        FileError: the file cannot be read.
        FileFormatError: the file is not a prunus compressed checkpoint, or is truncated, corrupt or
            inconsistent (the message names the file and the entry). A ``ConfigError`` too.
    """
    target = Path(check_path("path", path))
    try:
        loaded = torch.load(target, weights_only=True, map_location="cpu")
    except OSError as error:
        raise FileError(f"cannot read {target}: {error.strerror or error}") from error
    except Exception as error:  # a truncated zip, a refused pickle, an unknown tensor type...
        text = " ".join(str(error).split())[:200]
        raise FileFormatError(
            f"{target} is not a prunus compressed checkpoint: torch.load failed: {type(error).__name__}: {text}"
        ) from None
    reader = _Reader(target)
    if not (isinstance(loaded, dict) and loaded.get("format") == FORMAT):
        raise FileFormatError(f"{target} is not a prunus compressed checkpoint (format {FORMAT!r})")
    reader.keys(loaded, "the file", {"format", "state", "metadata"})
    raw_state, metadata = loaded["state"], loaded["metadata"]
    if not (isinstance(raw_state, dict) and all(isinstance(k, str) for k in raw_state)):
        raise reader.fail("state", "must map parameter names (str) to values")
    if metadata is not None and not isinstance(metadata, dict):
        raise reader.fail("metadata", f"must be a dict or None, not {type(metadata).__name__}")
    state: OrderedDict[str, Any] = OrderedDict(
        (key, reader.decode(item, f"state[{key!r}]")) for key, item in raw_state.items()
    )
    if metadata is not None:
        state._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    return state


def is_compressed(loaded: object) -> bool:
    """Whether what ``torch.load`` gave is a compressed checkpoint (to tell it from a plain state dict)."""
    return isinstance(loaded, dict) and loaded.get("format") == FORMAT
