"""Every file prunus writes or reads goes through here: atomic writes, checked reads, typed errors.

**Writing.** :func:`write_atomic` writes a temporary file in the target's own directory, flushes and syncs it to
disk, then renames it over the target with ``os.replace`` (atomic on POSIX and Windows). A reader sees the old file or
the new one, never a mix; a failure at any point (a read-only directory, a full disk, an error while producing
the content) removes the temporary file, leaves the previous file exactly as it was and raises
:class:`~prunus.errors.FileError` naming the file. :func:`staged` does the same for several files that belong
together (a checkpoint and its report): nothing is renamed into place until every one of them is written.

**Reading.** :func:`read_bytes` and :func:`read_text` turn ``OSError`` into :class:`~prunus.errors.FileError` and
undecodable text into :class:`~prunus.errors.FileFormatError`, both naming the file, and refuse files larger than
a caller's limit before reading them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from .errors import FileError, FileFormatError, PrunusError

__all__ = [
    "Staging",
    "read_bytes",
    "read_text",
    "staged",
    "write_atomic",
    "write_atomic_path",
    "write_bytes",
    "write_text",
]

Writer = Callable[[IO[bytes]], Any]
"""Writes a file's content to the binary file object it is given."""


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _temporary(target: Path) -> tuple[int, Path]:
    """Create an empty temporary file beside ``target``, with the permissions a plain ``open`` would give."""
    for _ in range(100):
        path = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            # 0o666 before the umask, as open(path, "w") creates files (mkstemp would give 0o600).
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"no free temporary name beside {target}")


class _Recorder:
    """A binary file that remembers the first ``OSError`` its ``write`` raised (the disk's real reason)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.failure: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.failure = self.failure or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable too (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temporary(target: Path, write: Writer) -> Path:
    """Write ``target``'s new content to a synced temporary file beside it; return that file's path."""
    if target.is_dir():
        raise FileError(f"cannot write {target}: it is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = _temporary(target)
    except OSError as error:
        raise FileError(f"cannot write {target}: {_reason(error)}") from error
    try:
        with os.fdopen(fd, "wb") as file:
            recorder = _Recorder(file)
            try:
                write(recorder)  # type: ignore[arg-type]
            except Exception as error:
                # A writer in C++ (torch.save) replaces the OSError it got with its own message: report the cause.
                raise recorder.failure or error from error
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):
            # Replacing a file keeps its permissions.
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
    except BaseException as error:
        _discard(temporary, target, error)
    return temporary


def _discard(temporary: Path, target: Path, error: BaseException) -> NoReturn:
    """Remove the temporary file of a write that failed with ``error`` and raise what says so."""
    with contextlib.suppress(OSError):
        os.unlink(temporary)
    if isinstance(error, PrunusError) or not isinstance(error, Exception):
        raise error
    raise FileError(
        f"cannot write {target}: {_reason(error)}; the previous file, if any, is unchanged"
    ) from error


def _replace(temporary: Path, target: Path) -> None:
    try:
        os.replace(temporary, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise FileError(
            f"cannot write {target}: {_reason(error)}; the previous file, if any, is unchanged"
        ) from error
    _sync_directory(target.parent)


def write_atomic(path: str | os.PathLike[str], write: Writer) -> int:
    """Write ``path`` all at once: ``write(file)`` fills a temporary file that then replaces ``path``.

    Returns the size of the written file in bytes.

    Raises:
        FileError: the file could not be written (the message names it and why); the previous file, if any, is
            unchanged and no temporary file is left.
    """
    target = Path(path)
    temporary = _write_temporary(target, write)
    size = temporary.stat().st_size
    _replace(temporary, target)
    return size


def write_atomic_path(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> int:
    """:func:`write_atomic` for writers that only take a path (safetensors' ``save_file``, ONNX's ``save``).

    ``write(temporary)`` writes the new content to ``temporary``, a path beside ``path``; it is then synced
    and renamed over ``path``. Returns the size of the written file in bytes.

    Raises:
        FileError: as :func:`write_atomic`; the previous file, if any, is unchanged.
    """
    target = Path(path)
    if target.is_dir():
        raise FileError(f"cannot write {target}: it is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = _temporary(target)
        os.close(fd)
    except OSError as error:
        raise FileError(f"cannot write {target}: {_reason(error)}") from error
    try:
        write(temporary)
        fd = os.open(temporary, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        size = temporary.stat().st_size
    except BaseException as error:
        _discard(temporary, target, error)
    _replace(temporary, target)
    return size


def write_bytes(path: str | os.PathLike[str], data: bytes) -> int:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda file: file.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> int:
    """Write ``text`` to ``path`` atomically, as UTF-8 (see :func:`write_atomic`)."""
    return write_bytes(path, text.encode("utf-8"))


class Staging:
    """Files written by :func:`staged`: each is complete and synced before any of them replaces its target."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def write(self, path: str | os.PathLike[str], write: Writer) -> None:
        """Write ``path``'s new content now; it replaces ``path`` when the block ends without an error."""
        target = Path(path)
        self._pending.append((_write_temporary(target, write), target))

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> None:
        """Stage ``data`` for ``path``."""
        self.write(path, lambda file: file.write(data))

    def write_text(self, path: str | os.PathLike[str], text: str) -> None:
        """Stage ``text`` (UTF-8) for ``path``."""
        self.write_bytes(path, text.encode("utf-8"))

    def discard(self) -> None:
        """Remove every staged temporary file; no target is touched."""
        while self._pending:
            temporary, _ = self._pending.pop()
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def commit(self) -> None:
        """Rename every staged file over its target, in the order they were staged."""
        try:
            while self._pending:
                temporary, target = self._pending[0]
                _replace(temporary, target)
                self._pending.pop(0)
        finally:
            self.discard()


@contextlib.contextmanager
def staged() -> Iterator[Staging]:
    """Write several files together: none replaces its target until the block has written them all.

    >>> with staged() as files:                                # doctest: +SKIP
    ...     files.write("pruned.pt", lambda f: torch.save(state, f))
    ...     files.write_text("pruned.report.json", report)

    If the block raises, every staged file is removed and no target changes. The renames at the end are atomic
    one by one; a rename failing there (very rare: the temporary files are already complete) leaves the targets
    renamed before it in their new state.

    Raises:
        FileError: a file could not be written; no target was changed.
    """
    staging = Staging()
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
    staging.commit()


def read_bytes(
    path: str | os.PathLike[str], *, what: str = "file", limit: int | None = None
) -> bytes:
    """The content of ``path``.

    Raises:
        FileError: it cannot be read (missing, a directory, no permission...).
        FileFormatError: it is larger than ``limit`` bytes.
    """
    target = Path(path)
    try:
        if limit is not None:
            size = target.stat().st_size
            if size > limit:
                raise FileFormatError(
                    f"{what} {target} is {size:,} bytes, more than the {limit:,} a {what} may have"
                )
        with open(target, "rb") as file:
            return file.read()
    except OSError as error:
        raise FileError(f"cannot read {what} {target}: {_reason(error)}") from error


def read_text(path: str | os.PathLike[str], *, what: str = "file", limit: int | None = None) -> str:
    """The content of ``path`` decoded as UTF-8.

    Raises:
        FileError: it cannot be read.
        FileFormatError: it is not UTF-8 text (the message gives the offset of the first bad byte), or larger
            than ``limit`` bytes.
    """
    data = read_bytes(path, what=what, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileFormatError(
            f"{what} {Path(path)} is not UTF-8 text: byte {error.start} is {data[error.start : error.start + 1]!r}"
        ) from None
