"""Progress bars for long work (fine-tuning, sensitivity sweeps), through tqdm when it is installed.

tqdm is imported only when a bar is asked for, so ``import prunus`` stays light; without tqdm the work runs
without a bar.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    items: Iterable[T], *, enabled: bool, total: int | None = None, desc: str = ""
) -> Iterator[T]:
    """Iterate ``items``, with a tqdm bar on stderr when ``enabled`` and tqdm is installed."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency; a bar is a nicety
            pass
        else:
            yield from tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True)
            return
    yield from items
