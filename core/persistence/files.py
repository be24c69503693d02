"""Writing a file whole or not at all, and telling prunus's file kinds apart."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StateError

__all__ = ["read_safetensors_metadata", "write_atomically"]


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary)`` on a file beside ``path``, then move it over ``path`` in one step.

    A reader never sees half a file, and a failed write leaves what was at ``path`` before.
    """
    target = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return target


def read_safetensors_metadata(path: str | Path) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file, or ``None`` when ``path`` is not a safetensors file.

    Reads the header only (its 8-byte length, then that much JSON), not the tensors.
    """
    with open(path, "rb") as file:
        start = file.read(8)
        if len(start) < 8:
            return None
        (length,) = struct.unpack("<Q", start)
        if length > 100_000_000 or length < 2:
            return None
        header = file.read(length)
    try:
        parsed: Any = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(parsed, dict):
        return None
    metadata = parsed.get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise StateError(f"{path}: the safetensors metadata is not a string map")
    return {str(k): str(v) for k, v in metadata.items()}
