"""Timing for benchmarks and measurements: medians of interleaved runs, synchronising CUDA.

Interleaving (a, b, a, b, ...) makes a machine whose load drifts affect every function alike, so the ratios of
the medians hold even where the absolute times do not. :func:`sample_interleaved` can also rotate the order from
round to round (a, b, c, then b, c, a, ...), so no function always runs right after the same neighbour (one that
leaves the caches cold, say), and keeps every sample so that the spread of a ratio can be read.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["sample_interleaved", "time_call", "time_interleaved"]


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
    samples = sample_interleaved(fns, repeats=repeats, warmup=warmup, device=device)
    return [statistics.median(s) for s in samples]


def sample_interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    repeats: int = 15,
    warmup: int = 2,
    number: int = 1,
    device: torch.device | str = "cpu",
    inference: bool = True,
    rotate: bool = False,
) -> list[list[float]]:
    """Seconds per call of each function in every round, the functions taking turns within a round.

    ``samples[i][r]`` is function ``i``'s time in round ``r``: the rounds pair the functions' samples, so the
    ratio of two functions can be taken round by round and its spread read as well as its median.

    Args:
        fns: the functions, called without arguments.
        repeats: timed rounds (at least one).
        warmup: untimed rounds first.
        number: calls per timed sample (the sample is their mean), for functions too short to time one by one.
        device: synchronised after each sample when it is a CUDA device.
        inference: run under ``torch.inference_mode()``; ``False`` keeps the caller's autograd mode (to time
            training steps).
        rotate: start each round one function later than the previous one (a, b, c; b, c, a; ...) instead of
            always in the given order.
    """
    device = torch.device(device)
    number = max(number, 1)
    times: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    with torch.inference_mode() if inference else contextlib.nullcontext():
        for _ in range(warmup):
            for fn in fns:
                fn()
        _sync(device)
        for round_ in range(max(repeats, 1)):
            shift = round_ % len(order) if rotate and order else 0
            for i in order[shift:] + order[:shift]:
                fn = fns[i]
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                _sync(device)
                times[i].append((time.perf_counter() - start) / number)
    return times
