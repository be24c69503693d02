"""Global ranking without concatenating the scores: one ranking across many parameters, in little memory.

:func:`global_keep_masks` is the ranking primitive behind the ``global`` granularity, public for any plugin that
ranks across parameters.

``torch.nn.utils.prune.global_unstructured`` (and a naive ranking) concatenates every score into one tensor and
sorts or selects on it: for 50 M weights that is 200 MB of scores, plus the sort's copies and index tensors. This
module finds the same mask from per-parameter passes that keep almost nothing:

1. **Histogram pass.** Each target's scores are computed (one target at a time), mapped to integer keys whose
   order is the order of the floats (``-0.0`` and ``+0.0`` share a key), and the top 16 bits of every eligible
   key are counted into one global 65,536-bin histogram. The bin that holds the k-th lowest score follows, with
   the number of scores below it.
2. **Refinement passes** (only when that bin is crowded, e.g. many equal scores): the next 16 bits of the keys in
   the bin are counted, narrowing it, until it is small or the keys in it are all equal (an exact tie).
3. **Mask pass.** Each target's scores are computed again: entries in bins above are kept, below are pruned, and
   the few entries in the bin (the *candidates*) are collected with their positions. On CPU each mask is packed
   to 1 bit per entry until the end, so the peak holds one target's scores and ~1/8 of the masks, not all the
   masks beside a score tensor. The candidates are ranked by :func:`prunus.ranking.keep_mask` in concatenation
   order (or, for an exact tie, pruned first by position), which reproduces exactly the mask that ``keep_mask``
   gives on the concatenation of all scores, ties and eligibility included.

Scores are computed two or three times per target instead of once. That is cheap for magnitude criteria and
exact for every deterministic or seeded criterion; if a criterion's second answer disagrees with the first
enough to move the threshold's bin, the ranking falls back to concatenating the scores (the classic path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import Amount, count_to_prune
from .ranking import keep_mask, rankable
from .strategy import Target

__all__ = ["classic_keep_masks", "global_keep_masks"]

_DIGIT = 16
_BINS = 1 << _DIGIT
_CHUNK = 1 << 18  # entries per step: the scratch buffers stay in cache and are allocated once

PACK_ON_CPU = True
"""Pack CPU masks to bits during the passes (other devices write bool masks directly)."""

CANDIDATE_LIMIT = 1 << 16
"""A bin with at most ``max(CANDIDATE_LIMIT, eligible // 256)`` entries is resolved by collecting them."""


class _Inconsistent(Exception):
    """The criterion's scores changed between passes: use the classic path."""


class _Scratch:
    """Chunk-sized buffers reused across targets and passes, so the passes allocate (almost) nothing."""

    def __init__(self, bits: int, device: torch.device) -> None:
        dtype = torch.int64 if bits == 64 else torch.int32
        self.mapped = torch.empty(_CHUNK, dtype=dtype, device=device)
        self.work = torch.empty(_CHUNK, dtype=dtype, device=device)
        self.first = torch.empty(_CHUNK, dtype=torch.bool, device=device)
        self.second = torch.empty(_CHUNK, dtype=torch.bool, device=device)


class _Ranker:
    """The passes of one global ranking (see the module docstring)."""

    def __init__(
        self, targets: Sequence[Target], score: Callable[[Target], Tensor], keep_bytes: int
    ) -> None:
        self.targets = targets
        self.score = score
        self.bits = 32
        self._scratch: dict[tuple[int, torch.device], _Scratch] = {}
        # Scores of the first targets kept from the histogram pass (up to `keep_bytes`), so the mask pass
        # need not compute them again; each is dropped once its mask is written.
        self.keep_bytes = keep_bytes
        self.kept: dict[int, Tensor] = {}

    def scores(self, index: int, final: bool = False) -> Tensor:
        kept = self.kept.pop(index, None) if final else self.kept.get(index)
        return kept if kept is not None else self.score(self.targets[index])

    def scratch(self, device: torch.device) -> _Scratch:
        key = (self.bits, device)
        if key not in self._scratch:
            self._scratch[key] = _Scratch(self.bits, device)
        return self._scratch[key]

    def chunks(
        self, target: Target, scores: Tensor
    ) -> Iterator[tuple[int, Tensor, Tensor | None, _Scratch]]:
        """``(start, keys, eligible, scratch)`` per chunk of ``target``'s flat keys (valid until the next)."""
        flat = rankable(scores).reshape(-1)
        del scores
        if self.bits == 64 and flat.dtype != torch.float64:
            flat = flat.double()  # exact, as torch.cat promotes float32 next to float64
        raw = flat.view(torch.int64 if self.bits == 64 else torch.int32)
        eligible = None if target.prior is None else target.prior.reshape(-1)
        scratch = self.scratch(raw.device)
        magnitude_bits = (1 << (self.bits - 1)) - 1
        for start in range(0, raw.numel(), _CHUNK):
            keys = raw[start : start + _CHUNK]
            n = keys.numel()
            if int(keys.min()) < 0:  # per chunk, while it is in cache
                # A negative float (sign bit set) orders by decreasing magnitude: its key is -magnitude, so
                # -0.0 and +0.0 share the key 0 and compare equal, as the floats do.
                mapped = scratch.mapped[:n]
                torch.bitwise_and(keys, magnitude_bits, out=mapped)
                mapped.neg_()
                negative = torch.lt(keys, 0, out=scratch.first[:n])
                keys = torch.where(negative, mapped, keys, out=mapped)
            yield start, keys, None if eligible is None else eligible[start : start + n], scratch

    def histogram(self, level: int, prefix: int) -> Tensor | None:
        """Counts of the ``level``-th digit of the eligible keys whose top ``level`` digits are ``prefix``.

        Returns ``None`` when a float64 score turns up while keys are 32-bit (the caller starts over in 64).
        """
        hist = torch.zeros(_BINS, dtype=torch.int64)
        held = sum(t.numel() * t.element_size() for t in self.kept.values())
        for index, target in enumerate(self.targets):
            scores = self.scores(index)
            if self.bits == 32 and scores.dtype == torch.float64:
                self.bits = 64
                self.kept.clear()
                return None
            size = scores.numel() * scores.element_size()
            if level == 0 and held + size <= self.keep_bytes:
                self.kept[index] = scores
                held += size
            keys = eligible = digit = where = None
            for _, keys, eligible, scratch in self.chunks(target, scores):
                n = keys.numel()
                digit = scratch.work[:n]
                if level == 0:
                    torch.bitwise_right_shift(keys, self.bits - _DIGIT, out=digit)
                    digit.add_(_BINS >> 1)  # arithmetic shift: the sign goes with the top digit
                    where = eligible
                else:
                    torch.bitwise_right_shift(keys, self.bits - _DIGIT * level, out=digit)
                    where = torch.eq(digit, prefix, out=scratch.second[:n])
                    if eligible is not None:
                        where &= eligible
                    torch.bitwise_right_shift(keys, self.bits - _DIGIT * (level + 1), out=digit)
                    digit.bitwise_and_(_BINS - 1)
                if where is not None:
                    # Entries outside `where` go to an extra bin, dropped below.
                    digit.masked_fill_(torch.logical_not(where, out=scratch.second[:n]), _BINS)
                hist += torch.bincount(digit, minlength=_BINS + 1)[:_BINS].cpu()
            # The loop's last chunk views the scores: drop every reference before the next target's.
            del scores, keys, eligible, digit, where
        return hist


def _choose(hist: Tensor, k: int, level: int, prefix: int) -> tuple[int, int, int, int]:
    """The bin of the k-th lowest (1-based) key: ``(level + 1, its prefix, count below it, count in it)``."""
    cumulative = hist.cumsum(0)
    b = int(torch.searchsorted(cumulative, torch.tensor([k], dtype=cumulative.dtype))[0])
    below = int(cumulative[b - 1]) if b > 0 else 0
    new_prefix = b - (_BINS >> 1) if level == 0 else (prefix << _DIGIT) | b
    return level + 1, new_prefix, below, int(hist[b])


class _MaskSink:
    """One target's keep-mask, written chunk by chunk: packed to 1 bit per entry on CPU until the end.

    While the masks are packed, a pass holds one target's scores beside ~1/8 of the masks instead of all of
    them; the bool masks are unpacked once every score is gone.
    """

    def __init__(self, target: Target) -> None:
        self.shape = target.tensor.shape
        self.numel = target.tensor.numel()
        device = target.tensor.device
        self.bits: np.ndarray[Any, Any] | None = None
        self.full: Tensor | None = None
        if device.type == "cpu" and PACK_ON_CPU:
            self.bits = np.empty((self.numel + 7) // 8, dtype=np.uint8)
        else:
            self.full = torch.empty(self.numel, dtype=torch.bool, device=device)

    def write(self, start: int, keep: Tensor) -> None:
        if self.bits is not None:
            # _CHUNK is a multiple of 8, so every chunk but the last fills whole bytes.
            packed = np.packbits(keep.numpy())
            self.bits[start // 8 : start // 8 + packed.size] = packed
        else:
            assert self.full is not None
            self.full[start : start + keep.numel()] = keep

    def finish(self, also_keep: Tensor | None) -> Tensor:
        if self.bits is not None:
            flat = torch.from_numpy(np.unpackbits(self.bits, count=self.numel).view(np.bool_))
            self.bits = None
        else:
            assert self.full is not None
            flat, self.full = self.full, None
        if also_keep is not None and also_keep.numel():
            flat[also_keep.to(flat.device)] = True
        return flat.reshape(self.shape)


def _nonzero(flat: Tensor) -> Tensor:
    """Positions of the True entries of a flat bool tensor (numpy's is ~10x faster than torch's on CPU)."""
    if flat.device.type == "cpu" and flat.is_contiguous():
        return torch.from_numpy(np.flatnonzero(flat.numpy()))
    return flat.nonzero().squeeze(1)


def global_keep_masks(
    targets: Sequence[Target],
    score: Callable[[Target], Tensor],
    amount: Amount,
    keep_bytes: int = 0,
    min_keep: int = 0,
) -> dict[str, Tensor]:
    """Keep-masks of one ranking across ``targets``, equal to ``keep_mask`` on their concatenated scores.

    Exact count, ties pruned first by position in concatenation order, entries an earlier prune removed
    (``target.prior``) kept pruned and not counted, in a few percent of the memory of concatenating the scores
    (see the module's documentation). ``score`` is called two or three times per target, which is exact for
    deterministic and seeded criteria; if the scores change between calls so that the counts stop adding up,
    the ranking falls back to concatenating them.

    Args:
        targets: the parameters ranked together.
        score: a target's scores (a granularity passes on the ``score`` function it was given).
        amount: a fraction of the entries still kept across all targets, or an int count of them.
        keep_bytes: how much memory of scores the ranking may hold between its passes to avoid scoring those
            targets again (0: score every target twice and hold one at a time).
        min_keep: a floor per target: each keeps at least ``min_keep`` of its entries still kept (all of them if
            it has fewer), its highest-scored ones, while the ranking still prunes exactly the count asked,
            from the other targets. The floor holds whenever the amount leaves room for it; an amount that asks
            for more (everything, say) is followed as the plain ranking follows it. With the floor binding, the
            ranking is global among the entries the floor does not hold.

    Returns:
        The bool keep-mask of each target, by target name.

    Raises:
        AmountError: an int ``amount`` larger than the entries still kept.
    """
    masks = _ranked(targets, score, amount, keep_bytes)
    return _floored(targets, score, amount, keep_bytes, min_keep, masks) if min_keep > 0 else masks


def _ranked(
    targets: Sequence[Target], score: Callable[[Target], Tensor], amount: Amount, keep_bytes: int
) -> dict[str, Tensor]:
    try:
        return _lean(targets, score, amount, keep_bytes)
    except _Inconsistent:
        return classic_keep_masks(targets, score, amount)


def _floored(
    targets: Sequence[Target],
    score: Callable[[Target], Tensor],
    amount: Amount,
    keep_bytes: int,
    min_keep: int,
    masks: dict[str, Tensor],
) -> dict[str, Tensor]:
    """``masks`` with every target keeping its ``min_keep`` best entries: the targets that fell short keep them,
    and the ranking runs again on the rest for the same count, until no target falls short."""
    eligible = {
        t.name: t.tensor.numel() if t.prior is None else int(torch.count_nonzero(t.prior))
        for t in targets
    }
    size = sum(eligible.values())
    k = count_to_prune(amount, size, what="entries still kept across all targets")
    floors = {name: min(min_keep, count) for name, count in eligible.items()}
    if k == size or k > size - sum(floors.values()):
        return masks  # the amount asks for more than the floor leaves: follow it
    held: dict[str, Tensor] = {}
    while True:
        short = [
            t
            for t in targets
            if t.name not in held and int(torch.count_nonzero(masks[t.name])) < floors[t.name]
        ]
        if not short:
            return masks
        for t in short:
            held[t.name] = keep_mask(score(t), eligible[t.name] - floors[t.name], t.prior)
        ranked = [
            dataclasses.replace(t, prior=_still_kept(t) & ~held[t.name]) if t.name in held else t
            for t in targets
        ]
        masks = _ranked(ranked, score, k, keep_bytes)
        masks = {name: mask | held[name] if name in held else mask for name, mask in masks.items()}


def _still_kept(target: Target) -> Tensor:
    if target.prior is not None:
        return target.prior
    return torch.ones_like(target.tensor, dtype=torch.bool)


def _lean(
    targets: Sequence[Target],
    score: Callable[[Target], Tensor],
    amount: Amount,
    keep_bytes: int = 0,
) -> dict[str, Tensor]:
    size = sum(
        t.tensor.numel() if t.prior is None else int(torch.count_nonzero(t.prior)) for t in targets
    )
    ranker = _Ranker(targets, score, keep_bytes)
    # Pass 1: the top digit of every eligible key. Keys are 32-bit unless a score is float64 (64 for all).
    hist = ranker.histogram(0, 0)
    if hist is None:
        hist = ranker.histogram(0, 0)
    assert hist is not None
    k = count_to_prune(amount, size, what="entries still kept across all targets")
    if k in (0, size):
        return {
            t.name: (
                torch.full_like(t.tensor, k == 0, dtype=torch.bool)
                if t.prior is None
                else t.prior.clone()
                if k == 0
                else torch.zeros_like(t.prior)
            )
            for t in targets
        }

    # Narrow down to the bin holding the k-th lowest key: its top `level` digits are `prefix`.
    limit = max(CANDIDATE_LIMIT, size >> 8)
    level, prefix, below, in_bin = _choose(hist, k, 0, 0)
    while in_bin > limit and level * _DIGIT < ranker.bits:
        hist = ranker.histogram(level, prefix)
        assert hist is not None
        level, prefix, extra_below, in_bin = _choose(hist, k - below, level, prefix)
        below += extra_below
    # Past the limit every key left in the bin is equal (all bits fixed): prune the first ones by position.
    exact_tie = in_bin > limit

    # Mask pass: above the bin kept, below pruned; the bin's entries are collected (or, for an exact tie,
    # pruned in order until the count is reached).
    shift = ranker.bits - _DIGIT * level
    sinks = [_MaskSink(t) for t in targets]
    found: list[Tensor] = []  # per target: positions of its entries in the bin
    found_keys = torch.empty(0 if exact_tie else in_bin, dtype=torch.int64)
    seen_below = seen_in_bin = 0
    tie_budget = k - below
    for index, (target, sink) in enumerate(zip(targets, sinks, strict=True)):
        positions: list[Tensor] = []
        keys = eligible = top = keep = inside = None
        for start, keys, eligible, scratch in ranker.chunks(
            target, ranker.scores(index, final=True)
        ):
            n = keys.numel()
            top = torch.bitwise_right_shift(keys, shift, out=scratch.work[:n])
            keep = torch.gt(top, prefix, out=scratch.first[:n])
            inside = torch.eq(top, prefix, out=scratch.second[:n])
            if eligible is not None:
                keep &= eligible
                inside &= eligible
            count = int(torch.count_nonzero(inside))
            seen_below += (n if eligible is None else int(torch.count_nonzero(eligible))) - (
                int(torch.count_nonzero(keep)) + count
            )
            if count and exact_tie:
                if tie_budget < count:
                    keep[_nonzero(inside)[max(tie_budget, 0) :]] = True
                tie_budget -= count
            elif count:
                if seen_in_bin + count > in_bin:
                    raise _Inconsistent
                where = _nonzero(inside).to(keys.device)
                found_keys[seen_in_bin : seen_in_bin + count] = keys[where].cpu()
                positions.append(where + start)
            seen_in_bin += count
            sink.write(start, keep)
            del keys, eligible, top, keep, inside
        found.append(torch.cat(positions) if positions else torch.empty(0, dtype=torch.int64))

    if seen_below != below or seen_in_bin != in_bin:
        raise _Inconsistent  # the scores moved between passes; the classic path scores once

    kept: list[Tensor | None] = [None] * len(targets)
    if not exact_tie:
        chosen = keep_mask(found_keys, k - below)
        offset = 0
        for i, where in enumerate(found):
            kept[i] = where[chosen[offset : offset + where.numel()].to(where.device)]
            offset += where.numel()
    return {
        target.name: sink.finish(kept[i])
        for i, (target, sink) in enumerate(zip(targets, sinks, strict=True))
    }


def classic_keep_masks(
    targets: Sequence[Target], score: Callable[[Target], Tensor], amount: Amount
) -> dict[str, Tensor]:
    """One ``keep_mask`` over the concatenation of every score (1x the weights in scores): the fallback."""
    # torch.cat promotes mixed dtypes (half precision to float32, float32 to float64 next to float64).
    flat = torch.cat([rankable(score(t)).reshape(-1) for t in targets])
    eligible = None
    if any(t.prior is not None for t in targets):
        eligible = torch.cat(
            [
                (
                    t.prior if t.prior is not None else torch.ones_like(t.tensor, dtype=torch.bool)
                ).reshape(-1)
                for t in targets
            ]
        )
    size = flat.numel() if eligible is None else int(torch.count_nonzero(eligible))
    k = count_to_prune(amount, size, what="entries still kept across all targets")
    keep = keep_mask(flat, k, eligible)
    out = {}
    offset = 0
    for target in targets:
        numel = target.tensor.numel()
        out[target.name] = keep[offset : offset + numel].reshape(target.tensor.shape).clone()
        offset += numel
    return out
