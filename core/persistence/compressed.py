"""Compressed state dicts that other tools read: the sparse-bitmask safetensors layout.

Each mostly-zero weight is stored the way compressed-tensors' ``sparse-bitmask`` format stores it (the format
vLLM and llm-compressor checkpoints use), under the module's prefix (``fc1.weight`` becomes ``fc1.*``):

* ``fc1.compressed``: the nonzero values, 1-D, in row-major order, in the weight's own dtype;
* ``fc1.bitmask``: uint8, one bit per entry (little bit order), each row packed on its own;
* ``fc1.shape``: the dense shape (int64);
* ``fc1.row_offsets``: where each row's values start in ``compressed`` (int64).

A 2-D weight (``Linear``, ``Embedding``) is a row per output; that is byte for byte the layout compressed-tensors
writes and reads. A weight of more dimensions (a conv kernel) is packed as ``shape[0]`` rows of all its other
entries, which costs a byte per 8 entries rather than per kernel row (compressed-tensors packs the last dim
alone, and does not compress conv kernels itself); :func:`decompress_state` reads both. Every other tensor is
stored dense under its own key, and a weight is compressed only when that makes it smaller.

"Nonzero" means any bit set, so ``-0.0`` is kept as a value and :func:`decompress_state` gives back every
tensor bit for bit. What safetensors cannot hold as a tensor is described in the file's metadata
(``prunus.layout``, JSON) with its tensors beside: the order of the keys, quantized tensors (their integer
values plus scale and zero point), tuples and dtypes (a dynamically quantized ``Linear``'s packed parameters),
and the per-module versions ``load_state_dict`` reads. Nothing is pickled.

:func:`save_compressed` and :func:`load_compressed` write and read such files;
:func:`load_compressed` also reads the files that earlier prunus versions wrote with ``torch.save``
(``prunus-compressed-v1``) and sparse-bitmask files written by other tools.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import files
from ..arguments import check_path
from ..errors import ConfigTypeError, FileError, FileFormatError, StateError, brief
from .bits import nonzero_bits, pack_rows, unpack_rows
from .files import read_safetensors_metadata

__all__ = [
    "FORMAT",
    "LEGACY_FORMAT",
    "compress_state",
    "decompress_state",
    "load_compressed",
    "save_compressed",
]

FORMAT = "prunus.compressed/2"
"""The ``prunus.format`` metadata of a file :func:`save_compressed` writes."""

LEGACY_FORMAT = "prunus-compressed-v1"
"""The ``torch.save`` format of earlier prunus versions, still read by :func:`load_compressed`."""

FORMAT_KEY = "prunus.format"
LAYOUT_KEY = "prunus.layout"
GROUP = ("shape", "compressed", "bitmask", "row_offsets")
"""The keys of one compressed weight, after its module prefix (compressed-tensors' names)."""

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

Layout = Any
"""One entry's description in ``prunus.layout`` (JSON)."""


# -- writing ----------------------------------------------------------------------------------------------


class _Writer:
    """Collects the tensors of one file, refusing clashing keys and copying tensors that share memory."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self._storages: set[int] = set()
        self._tied: dict[tuple[Any, ...], str] = {}

    def put(self, key: str, tensor: Tensor) -> None:
        if key in self.tensors:
            raise StateError(
                f"two entries of the state dict would both be stored as {key!r}; rename one of them "
                f"(the keys {', '.join(repr(key + '.' + g) for g in GROUP[:1])}... belong to compressed weights)"
            )
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in self._storages:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        self._storages.add(tensor.untyped_storage().data_ptr())
        self.tensors[key] = tensor

    def tie(self, key: str, tensor: Tensor) -> str | None:
        """The key already written for this very tensor (tied weights), else ``None`` after noting it."""
        identity = (
            tensor.data_ptr(),
            tensor.dtype,
            tuple(tensor.shape),
            tensor.stride(),
            tensor.device,
        )
        if tensor.numel() == 0:
            return None
        if identity in self._tied:
            return self._tied[identity]
        self._tied[identity] = key
        return None


def _pays(tensor: Tensor, keep: Tensor) -> bool:
    rows, cols = _rows(tuple(tensor.shape))
    nonzero = int(torch.count_nonzero(keep))
    size = nonzero * tensor.element_size() + rows * math.ceil(cols / 8) + 8 * (rows + tensor.dim())
    return size < tensor.numel() * tensor.element_size()


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """How a weight of ``shape`` is cut into rows for its bitmask: its first dim against all the others."""
    rows = shape[0]
    return rows, (math.prod(shape[1:]) if rows else 0)


def _compress_into(writer: _Writer, prefix: str, tensor: Tensor, keep: Tensor) -> None:
    rows, cols = _rows(tuple(tensor.shape))
    keep2d = keep.reshape(rows, cols)
    counts = keep2d.sum(dim=1, dtype=torch.int64)
    values = _bitview(tensor).reshape(-1)[keep.reshape(-1)]
    writer.put(f"{prefix}.shape", torch.tensor(list(tensor.shape), dtype=torch.int64))
    writer.put(
        f"{prefix}.compressed",
        values.view(tensor.dtype) if values.dtype != tensor.dtype else values,
    )
    writer.put(f"{prefix}.bitmask", pack_rows(keep2d))
    writer.put(f"{prefix}.row_offsets", torch.cumsum(counts, 0) - counts)


def _bitview(tensor: Tensor) -> Tensor:
    """``tensor`` as integers of its width (values copied as bits), where such a view exists."""
    if (
        tensor.is_complex()
        or tensor.dtype == torch.bool
        or tensor.element_size() not in _INT_OF_SIZE
    ):
        return tensor
    return tensor.contiguous().view(_INT_OF_SIZE[tensor.element_size()])


def _encode(writer: _Writer, path: str, value: Any, *, top: bool) -> Layout:
    if isinstance(value, Tensor):
        tensor = value.detach()
        if tensor.layout != torch.strided:
            raise StateError(
                f"{path!r} is a {tensor.layout} tensor; safetensors stores dense tensors only: convert sparse "
                "modules back first (prunus.to_dense(model))"
            )
        if top and (tied := writer.tie(path, tensor)) is not None:
            return {"same": tied}
        if tensor.is_quantized:
            return _encode_quantized(writer, path, tensor)
        if top and path.endswith(".weight") and tensor.dim() >= 2 and tensor.numel():
            keep = nonzero_bits(tensor.cpu())
            if _pays(tensor, keep):
                _compress_into(writer, path[: -len(".weight")], tensor.cpu(), keep)
                return "bitmask"
        writer.put(path, tensor)
        return "tensor"
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode(writer, f"{path}.{i}", v, top=False) for i, v in enumerate(value)]}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {
            "dict": [[k, _encode(writer, f"{path}.{k}", v, top=False)] for k, v in value.items()]
        }
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise StateError(
        f"state entry {path!r} is a {type(value).__name__}; a compressed file holds tensors, numbers, strings, "
        "dtypes and tuples, lists or dicts of them"
    )


def _encode_quantized(writer: _Writer, path: str, tensor: Tensor) -> Layout:
    dtype = str(tensor.dtype).removeprefix("torch.")
    ints = tensor.int_repr()
    keep = nonzero_bits(ints)
    # The integer values compress like a weight (a pruned entry is the zero point, 0 for qint8 weights).
    packed = ints.dim() >= 2 and _pays(ints, keep)
    if packed:
        _compress_into(writer, path, ints, keep)
    else:
        writer.put(path, ints)
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return {
            "quantized": {
                "dtype": dtype,
                "scale": tensor.q_scale(),
                "zero_point": tensor.q_zero_point(),
                "bitmask": packed,
            }
        }
    if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        writer.put(f"{path}.q_scales", tensor.q_per_channel_scales())
        writer.put(f"{path}.q_zero_points", tensor.q_per_channel_zero_points())
        return {
            "quantized": {"dtype": dtype, "axis": tensor.q_per_channel_axis(), "bitmask": packed}
        }
    raise StateError(f"{path!r} is quantized with {tensor.qscheme()}, which prunus cannot store")


def compress_state(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``state`` (a state dict) as the tensors and metadata of a sparse-bitmask safetensors file.

    Returns:
        ``(tensors, metadata)``, for ``safetensors.torch.save_file(tensors, path, metadata)``.

    Raises:
        StateError: an entry cannot be stored (a sparse-layout tensor, an arbitrary object), or two entries
            would be stored under the same key.
    """
    writer = _Writer()
    entries = [[key, _encode(writer, key, value, top=True)] for key, value in state.items()]
    versions = getattr(state, "_metadata", None)
    layout = {"entries": entries, "versions": dict(versions) if versions is not None else None}
    metadata = {"format": "pt", FORMAT_KEY: FORMAT, LAYOUT_KEY: json.dumps(layout)}
    return writer.tensors, metadata


def save_compressed(model_or_state: nn.Module | Mapping[str, Any], path: str | Path) -> int:
    """Save a state dict compactly, as a sparse-bitmask safetensors file; returns its size in bytes.

    Each weight whose zeros make it pay is stored as its nonzero values plus one bit per entry (the layout of
    compressed-tensors' ``sparse-bitmask``, see :mod:`prunus.persistence.compressed`); everything else as it
    is (quantized tensors as their integer values). The file is written whole or not at all.
    :func:`load_compressed` gives back a state dict equal to the original, bit for bit.

    Raises:
        StateError: the state holds something a safetensors file cannot (see :func:`compress_state`).
        ConfigTypeError: ``model_or_state`` is neither a module nor a mapping, or ``path`` is not a path.
        FileError: the file could not be written (read-only directory, full disk...); the previous file, if
            any, is unchanged.
    """
    from safetensors.torch import save_file

    check_path("path", path)
    if isinstance(model_or_state, nn.Module):
        state: Mapping[str, Any] = model_or_state.state_dict()
    elif isinstance(model_or_state, Mapping):
        state = model_or_state
    else:
        raise ConfigTypeError(
            f"save_compressed needs a torch.nn.Module or a state dict, not "
            f"{type(model_or_state).__name__} ({brief(model_or_state)})"
        )
    tensors, metadata = compress_state(state)
    return files.write_atomic_path(
        path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata)
    )


# -- reading ----------------------------------------------------------------------------------------------


def _decompress_group(tensors: Mapping[str, Tensor], prefix: str) -> Tensor:
    try:
        shape = tuple(int(v) for v in tensors[f"{prefix}.shape"].tolist())
        values = tensors[f"{prefix}.compressed"]
        bitmask = tensors[f"{prefix}.bitmask"]
    except KeyError as error:
        raise StateError(
            f"compressed weight {prefix!r} lacks its {error.args[0]!r} tensor"
        ) from None
    numel = math.prod(shape)
    # Rows of the first dim (prunus, any rank) or of the last dim (compressed-tensors); the same for 2-D.
    layouts = [_rows(shape)] + (
        [(numel // shape[-1], shape[-1])] if len(shape) > 2 and shape[-1] else []
    )
    for rows, cols in layouts:
        if tuple(bitmask.shape) == (rows, math.ceil(cols / 8)):
            keep = unpack_rows(bitmask, rows, cols).reshape(-1)
            break
    else:
        raise StateError(
            f"compressed weight {prefix!r}: a bitmask of shape {tuple(bitmask.shape)} does not fit the shape {shape}"
        )
    if int(keep.sum()) != values.numel():
        raise StateError(
            f"compressed weight {prefix!r}: the bitmask marks {int(keep.sum())} values, the file holds {values.numel()}"
        )
    dense = torch.zeros(numel, dtype=values.dtype)
    _bitview(dense)[keep] = _bitview(values).reshape(-1)
    return dense.reshape(shape)


def _decode(
    tensors: Mapping[str, Tensor], path: str, layout: Layout, done: Mapping[str, Any]
) -> Any:
    if layout == "tensor":
        return _tensor(tensors, path)
    if layout == "bitmask":
        return _decompress_group(tensors, path[: -len(".weight")])
    if not isinstance(layout, dict) or len(layout) != 1:
        raise StateError(f"entry {path!r} has an unknown layout {layout!r:.80}")
    ((kind, spec),) = layout.items()
    if kind == "same":
        if spec not in done:
            raise StateError(f"entry {path!r} is tied to {spec!r}, which comes later or not at all")
        return done[spec]
    if kind == "value":
        return spec
    if kind == "dtype":
        dtype = getattr(torch, str(spec), None)
        if not isinstance(dtype, torch.dtype):
            raise StateError(f"entry {path!r}: {spec!r} is not a torch dtype")
        return dtype
    if kind in ("tuple", "list"):
        items = [_decode(tensors, f"{path}.{i}", item, done) for i, item in enumerate(spec)]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: _decode(tensors, f"{path}.{k}", item, done) for k, item in spec}
    if kind == "quantized":
        return _quantized(tensors, path, spec)
    raise StateError(f"entry {path!r} has an unknown layout {kind!r}")


def _tensor(tensors: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in tensors:
        raise StateError(f"the file has no tensor {key!r}")
    return tensors[key]


def _quantized(tensors: Mapping[str, Tensor], path: str, spec: Mapping[str, Any]) -> Tensor:
    ints = _decompress_group(tensors, path) if spec.get("bitmask") else _tensor(tensors, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that quantized tensors are deprecated
        if "axis" in spec:
            return torch._make_per_channel_quantized_tensor(
                ints,
                _tensor(tensors, f"{path}.q_scales"),
                _tensor(tensors, f"{path}.q_zero_points"),
                spec["axis"],
            )
        return torch._make_per_tensor_quantized_tensor(ints, spec["scale"], spec["zero_point"])


def decompress_state(
    tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None
) -> dict[str, Any]:
    """The state dict that :func:`compress_state` turned into ``(tensors, metadata)``.

    Without prunus metadata (a file another tool wrote in the sparse-bitmask layout), every group of
    ``<prefix>.compressed/bitmask/shape/row_offsets`` becomes ``<prefix>.weight`` and the other tensors stay.
    """
    state: OrderedDict[str, Any] = OrderedDict()
    if metadata is None or FORMAT_KEY not in metadata:
        prefixes = {key[: -len(".compressed")] for key in tensors if key.endswith(".compressed")}
        grouped = {f"{p}.{g}" for p in prefixes for g in GROUP}
        for key in sorted(tensors):
            if key.endswith(".compressed") and key[: -len(".compressed")] in prefixes:
                state[key[: -len(".compressed")] + ".weight"] = _decompress_group(
                    tensors, key[: -len(".compressed")]
                )
            elif key not in grouped:
                state[key] = tensors[key]
        return state
    if metadata[FORMAT_KEY] != FORMAT:
        raise StateError(
            f"compressed format {metadata[FORMAT_KEY]!r} is not one this prunus reads ({FORMAT!r}); "
            "a newer prunus wrote it: upgrade prunus"
        )
    try:
        layout = json.loads(metadata[LAYOUT_KEY])
        entries, versions = layout["entries"], layout.get("versions")
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise StateError(f"the file's {LAYOUT_KEY!r} metadata is damaged: {error}") from None
    for key, entry in entries:
        state[key] = _decode(tensors, key, entry, state)
    if versions is not None:
        state._metadata = OrderedDict(versions)  # type: ignore[attr-defined]
    return state


def load_compressed(path: str | Path) -> dict[str, Any]:
    """Read a compressed state dict back, bit for bit equal to the one saved.

    Reads files of :func:`save_compressed` (safetensors), sparse-bitmask safetensors files written by other
    tools (compressed-tensors), and the ``torch.save`` files of earlier prunus versions (read with
    ``weights_only=True``; save them again to move them to the new format). Every part is checked before it is
    used: a bit mask of the wrong size, a count of values that is not the number of set bits, an unknown entry
    kind, a non-finite fill or scale.

    Raises:
        FileError: the file cannot be read (missing, a directory, no permission).
        FileFormatError: the file is none of these, or is truncated, corrupt or inconsistent; the message names
            the file and the entry. A :class:`~prunus.StateError` and a ``ValueError`` too.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    target = Path(check_path("path", path))
    if target.is_dir() or not target.exists():
        reason = "it is a directory" if target.is_dir() else "No such file or directory"
        raise FileError(f"cannot read {target}: {reason}")
    if zipfile.is_zipfile(target):
        return _load_legacy(target)
    metadata = read_safetensors_metadata(target)
    if metadata is None:
        raise FileFormatError(
            f"{target} is not a prunus compressed checkpoint (a safetensors file of {FORMAT!r})"
        )
    try:
        tensors = load_file(str(target))
        return decompress_state(tensors, metadata)
    except (SafetensorError, StateError) as error:
        raise FileFormatError(f"{target} is damaged: {error}") from None
    except OSError as error:
        raise FileError(f"cannot read {target}: {error.strerror or error}") from error
    except (
        Exception
    ) as error:  # a layout that lies about its tensors: still a typed error naming the file
        text = " ".join(str(error).split())[:200]
        raise FileFormatError(f"{target} is damaged: {type(error).__name__}: {text}") from None


def _load_legacy(path: Path) -> dict[str, Any]:
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except OSError as error:
        raise FileError(f"cannot read {path}: {error.strerror or error}") from error
    except Exception as error:  # a truncated zip, a refused pickle, an unknown tensor type...
        text = " ".join(str(error).split())[:200]
        raise FileFormatError(
            f"{path} is not a prunus compressed checkpoint: torch.load failed: {type(error).__name__}: {text}"
        ) from None
    if not (isinstance(loaded, dict) and loaded.get("format") == LEGACY_FORMAT):
        raise FileFormatError(
            f"{path} is not a prunus compressed checkpoint (format {FORMAT!r} or {LEGACY_FORMAT!r})"
        )
    reader = _LegacyReader(path)
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


class _LegacyReader:
    """Decodes a ``prunus-compressed-v1`` file's content, checking each part; errors name the file and where."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> FileFormatError:
        return FileFormatError(
            f"{self.path} is not a valid prunus compressed checkpoint: {where}: {what}"
        )

    def keys(self, value: dict[Any, Any], where: str, expected: set[str]) -> None:
        if set(value) != expected:
            raise self.fail(
                where, f"has the keys {sorted(map(str, value))}, expected {sorted(expected)}"
            )

    def decode(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            kind = value.get(_LEGACY_MARK)
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
        self.keys(value, where, {_LEGACY_MARK, "shape", "bits", "values", "fill"})
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
        shifts = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
        mask = ((bits.unsqueeze(1) >> shifts) & 1).reshape(-1).bool()
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
        self.keys(value, where, {_LEGACY_MARK, "ints", "scale", "zero_point"})
        ints = self.decode(value["ints"], f"{where}.ints")
        scale, zero_point = value["scale"], value["zero_point"]
        if not (isinstance(ints, Tensor) and ints.dtype in (torch.int8, torch.uint8, torch.int32)):
            raise self.fail(where, "ints must be an int8, uint8 or int32 tensor")
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
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


_LEGACY_MARK = "__prunus__"
