"""Timing for benchmarks and measurements: medians of interleaved runs, synchronising CUDA.

Interleaving (a, b, a, b, ...) makes a machine whose load drifts affect every function alike, so the ratios of
the medians hold even where the absolute times do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["time_call", "time_interleaved"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # pragma: no cover - needs CUDA
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    *,
    repeats: int = 15,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones (synchronising CUDA)."""
    return time_interleaved([fn], repeats=repeats, warmup=warmup, device=device)[0]


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    repeats: int = 15,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Median seconds of each function, timed in turn (a, b, a, b, ...) so drifting load hits all alike."""
    device = torch.device(device)
    times: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns:
                fn()
        _sync(device)
        for _ in range(max(repeats, 1)):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                _sync(device)
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
