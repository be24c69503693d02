"""Safetensors checkpoints on disk: a source read one tensor group at a time, a destination written atomically.

:class:`Checkpoint` reads a Hugging Face model directory (``model.safetensors``, or shards listed by
``model.safetensors.index.json``), any directory of safetensors files, or one file. Every shard's header is read
and checked when the checkpoint is opened, before anything is written: a shard that is missing raises
:class:`~prunus.errors.MissingShardError`, one that is truncated or whose header is not safetensors (or that
contradicts the index) raises :class:`~prunus.errors.CorruptShardError`, both naming the file. Tensors are
loaded a few at a time through ``safetensors.safe_open``, whose memory map of a shard lives only while that
shard is read, so the memory held stays that of the tensors loaded.

:class:`Destination` writes a directory the way :func:`os.replace` writes a file: every shard, the index and the
copied files go to a staging directory beside the destination, which is renamed into place once all of them are
written and synced. A run that fails, or a process that dies half way, leaves the destination absent (or, with
``overwrite=True``, as it was); the next run for the same destination removes the staging directory a dead
process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, CorruptShardError, MissingDependencyError, MissingShardError

__all__ = ["INDEX", "Checkpoint", "Destination", "TensorInfo"]

INDEX = "model.safetensors.index.json"
"""The index of a sharded Hugging Face checkpoint: tensor name to shard file."""

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def safetensors_module() -> Any:
    """The ``safetensors`` package, or a :class:`~prunus.errors.MissingDependencyError` naming the extra."""
    try:
        import safetensors
        import safetensors.torch
    except ImportError as error:
        raise MissingDependencyError(
            "streamed checkpoints need safetensors: pip install 'prunus[streaming]'"
        ) from error
    return safetensors


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, as its shard's header describes it.

    Attributes:
        name: its key in the checkpoint.
        file: the shard holding it.
        dtype: its dtype (``None`` for a dtype torch cannot hold; it is then copied as it is).
        shape: its shape.
    """

    name: str
    file: Path
    dtype: torch.dtype | None
    shape: tuple[int, ...]
    span: tuple[int, int] = (0, 0)
    """Where its bytes are in the file: ``(start, stop)`` offsets from the file's beginning."""

    @property
    def numel(self) -> int:
        """Its number of entries."""
        count = 1
        for size in self.shape:
            count *= size
        return count

    @property
    def nbytes(self) -> int:
        """Its size in bytes (0 for a dtype torch cannot hold)."""
        return 0 if self.dtype is None else self.numel * self.dtype.itemsize


class Checkpoint:
    """The tensors of a safetensors checkpoint (one file, or shards listed by an index), checked on opening.

    Args:
        path: a directory (with ``model.safetensors.index.json``, or safetensors files) or one ``.safetensors``
            file.

    Raises:
        MissingShardError: the path, or a shard the index lists, does not exist.
        CorruptShardError: a shard is not a readable safetensors file, or does not hold what the index says.
        CheckpointError: the directory holds no safetensors file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        safetensors_module()
        if not self.path.exists():
            raise MissingShardError(f"no checkpoint at {self.path}")
        self.directory = self.path if self.path.is_dir() else self.path.parent
        self.metadata: dict[str, Any] = {}
        listed, files = self._listing()
        self.tensors: dict[str, TensorInfo] = {}
        for file in files:
            for info in self._header(file):
                if info.name in self.tensors:
                    raise CorruptShardError(
                        f"tensor {info.name!r} is in both {self.tensors[info.name].file.name} and {file.name}"
                    )
                self.tensors[info.name] = info
        for name, file in listed.items():
            held = self.tensors.get(name)
            if held is None or held.file != file:
                raise CorruptShardError(
                    f"{self.directory / INDEX} puts tensor {name!r} in {file.name}, which does not hold it"
                )
        self.files = files

    def _listing(self) -> tuple[dict[str, Path], list[Path]]:
        """Tensor name to shard from the index (empty without one), and the shards to read, in order."""
        if self.path.is_file():
            return {}, [self.path]
        index = self.path / INDEX
        if not index.exists():
            files = sorted(self.path.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{self.path} holds no .safetensors file and no {INDEX}")
            return {}, files
        try:
            content = json.loads(index.read_text(encoding="utf-8"))
            weight_map = content["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptShardError(f"{index} is not a safetensors index: {error}") from None
        self.metadata = dict(content.get("metadata") or {})
        listed = {str(name): self.path / str(file) for name, file in weight_map.items()}
        files = list(dict.fromkeys(listed.values()))
        for file in files:
            if not file.is_file():
                raise MissingShardError(f"shard {file.name} listed in {index} is missing ({file})")
        return listed, files

    def _header(self, file: Path) -> list[TensorInfo]:
        with _opened(file) as handle:
            spans = _spans(file)
            out = []
            for name in handle.keys():  # noqa: SIM118 - a safe_open handle is not a mapping
                piece = handle.get_slice(name)
                dtype = _DTYPES.get(piece.get_dtype())
                out.append(TensorInfo(name, file, dtype, tuple(piece.get_shape()), spans[name]))
            return out

    def prefetch(self, names: Iterable[str]) -> None:
        """Ask the system to start reading ``names`` from disk now, so that loading them later waits less."""
        if not hasattr(os, "posix_fadvise"):
            return
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for name in names:
            info = self.tensors[name]
            by_file.setdefault(info.file, []).append(info.span)
        for file, spans in by_file.items():
            with contextlib.suppress(OSError):
                fd = os.open(file, os.O_RDONLY)
                try:
                    for start, stop in spans:
                        os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)

    def load(self, names: Iterable[str]) -> dict[str, Tensor]:
        """The tensors ``names``, read from their shards (each shard opened once, and closed after).

        Raises:
            MissingShardError, CorruptShardError: a shard cannot be read any more (changed since it was opened).
        """
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.tensors[name].file, []).append(name)
        out: dict[str, Tensor] = {}
        for file, wanted in by_file.items():
            with _opened(file) as handle:
                for name in wanted:
                    out[name] = handle.get_tensor(name)
        return out

    def other_files(self) -> list[Path]:
        """The files of the checkpoint's directory that are not weights: config, tokenizer, generation config."""
        if self.path.is_file():
            return []
        weights = {*self.files, self.path / INDEX}
        return sorted(
            p
            for p in self.path.iterdir()
            if p.is_file() and p not in weights and p.suffix != ".safetensors"
        )


def _spans(file: Path) -> dict[str, tuple[int, int]]:
    """Each tensor's byte range in a safetensors file, from its header (read after safetensors validated it)."""
    with open(file, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    base = 8 + size
    return {
        name: (base + entry["data_offsets"][0], base + entry["data_offsets"][1])
        for name, entry in header.items()
        if name != "__metadata__"
    }


@contextlib.contextmanager
def _opened(file: Path) -> Iterator[Any]:
    """``safe_open(file)``, its failures as typed errors naming the shard (its memory map closed after)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            yield handle
    except FileNotFoundError:
        raise MissingShardError(f"shard {file.name} is missing ({file})") from None
    except Exception as error:
        raise CorruptShardError(
            f"shard {file.name} is not a readable safetensors file ({file}): {error}"
        ) from None


_STAGING = ".partial-"


class Destination:
    """A checkpoint directory written in full or not at all (use as a context manager).

    Args:
        path: the directory to write.
        overwrite: replace an existing directory (it stays as it was until the new one is complete).

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise CheckpointError(
                f"{self.path} already exists; choose another destination or pass overwrite=True"
            )
        self.staging = self.path.with_name(
            f".{self.path.name}{_STAGING}{os.getpid()}-{secrets.token_hex(4)}"
        )
        self.weight_map: dict[str, str] = {}
        self.total = 0

    def __enter__(self) -> Destination:
        self._remove_stale()
        try:
            self.staging.mkdir(parents=True)
        except OSError as error:
            raise CheckpointError(f"cannot write {self.path}: {error.strerror or error}") from None
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if error is None:
            self._commit()
        else:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _remove_stale(self) -> None:
        """Remove staging directories of this destination that dead processes left behind."""
        for stale in self.path.parent.glob(f".{self.path.name}{_STAGING}*"):
            pid = stale.name.rsplit(_STAGING, 1)[-1].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    def write_shard(self, file: str, tensors: dict[str, Tensor]) -> None:
        """Write one shard of ``tensors`` (contiguous CPU tensors) as ``file`` and record it in the index."""
        from safetensors.torch import save_file

        path = self.staging / file
        try:
            save_file(tensors, str(path), metadata={"format": "pt"})
        except OSError as error:
            raise CheckpointError(
                f"cannot write shard {file} of {self.path}: {error.strerror or error}"
            ) from None
        if hasattr(os, "posix_fadvise"):
            # Start writing the shard back to disk now (without waiting), while the next group is pruned.
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        for name, tensor in tensors.items():
            self.weight_map[name] = file
            self.total += tensor.numel() * tensor.element_size()

    def copy(self, file: Path) -> None:
        """Copy ``file`` (a config, a tokenizer) into the destination as it is."""
        shutil.copy2(file, self.staging / file.name)

    def _commit(self) -> None:
        index = {"metadata": {"total_size": self.total}, "weight_map": self.weight_map}
        (self.staging / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for file in self.staging.iterdir():
            _sync(file)
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{secrets.token_hex(4)}")
            os.rename(self.path, old)
        try:
            os.rename(self.staging, self.path)
        except OSError as error:
            if old is not None:
                os.rename(old, self.path)
            shutil.rmtree(self.staging, ignore_errors=True)
            raise CheckpointError(f"cannot write {self.path}: {error.strerror or error}") from None
        _sync(self.path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _sync(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to disk, where the platform allows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
