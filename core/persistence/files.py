"""Telling prunus's file kinds apart: the header of a safetensors file.

Every file prunus writes goes through :mod:`prunus.files` (whole or not at all, with typed errors).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import FileError, StateError

__all__ = ["read_safetensors_metadata"]


def read_safetensors_metadata(path: str | Path) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file, or ``None`` when ``path`` is not a safetensors file.

    Reads the header only (its 8-byte length, then that much JSON), not the tensors.
    """
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, once opening's errors are typed
    except OSError as error:
        raise FileError(f"cannot read {path}: {error.strerror or error}") from error
    with file:
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
