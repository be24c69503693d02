"""Timing for benchmarks and measurements: medians of interleaved runs, synchronising CUDA.

Interleaving (a, b, a, b, ...) makes a machine whose load drifts affect every function alike, so the ratios of
the medians hold even where the absolute times do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Speedup", "measure_speedup", "time_call", "time_interleaved", "time_rounds"]


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


def time_rounds(
    fns: Sequence[Callable[[], object]],
    *,
    repeats: int = 15,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> list[list[float]]:
    """Seconds of every run of each function, timed in turn (a, b, a, b, ...) so drifting load hits all alike."""
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
    return times


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    repeats: int = 15,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Median seconds of each function, timed in turn (a, b, a, b, ...) so drifting load hits all alike."""
    rounds = time_rounds(fns, repeats=repeats, warmup=warmup, device=device)
    return [statistics.median(t) for t in rounds]


@dataclass(frozen=True)
class Speedup:
    """How much faster one function ran than a reference, measured side by side.

    Attributes:
        ratio: the reference's median seconds over the candidate's.
        spread: half the interquartile range of the per-round ratios, relative to their median (the noise of
            the measure: half the rounds fall within ``ratio`` ± ``spread``).
        reference_s, candidate_s: the two medians.
    """

    ratio: float
    spread: float
    reference_s: float
    candidate_s: float


def measure_speedup(
    reference: Callable[[], object],
    candidate: Callable[[], object],
    *,
    repeats: int = 15,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> Speedup:
    """``reference`` and ``candidate`` timed in turn; the ratio of their medians and its spread over rounds."""
    ref, cand = time_rounds([reference, candidate], repeats=repeats, warmup=warmup, device=device)
    ratios = sorted(r / c for r, c in zip(ref, cand, strict=True) if c > 0)
    middle = statistics.median(ratios) if ratios else float("nan")
    spread = 0.0
    if len(ratios) >= 2 and middle:
        low, _, high = statistics.quantiles(ratios, n=4)
        spread = (high - low) / 2 / middle
    ref_s, cand_s = statistics.median(ref), statistics.median(cand)
    return Speedup(ref_s / cand_s if cand_s else float("inf"), spread, ref_s, cand_s)
