"""Exact ranking of scores that arrive chunk by chunk: which ``k`` entries score lowest, never holding them all.

This is the engine behind every ranking that does not fit one tensor: the ``global`` granularity (many
parameters), a parameter sharded over several ranks (each rank sees its shard only), and a checkpoint pruned
while it streams from disk (each tensor is in memory for a moment). Its drivers hand it the scores of one
*source* (a parameter, a shard) at a time, as chunks, once per pass; it never needs them all at once and
answers exactly what :func:`keep_lowest` answers on the concatenation of every source's eligible scores:
the ``k`` lowest pruned, ties broken by position (the earlier source, then the lower flat index, is pruned
first).

Scores are ranked through integer *keys* whose order is the order of the floats (negative floats map to minus
their magnitude, so ``-0.0`` and ``+0.0`` share the key 0 and tie, as the floats compare). A ranking moves
through passes (:attr:`ChunkedRanking.pass_kind`), each a sweep over every source:

``sample``
    A systematic sample of the keys (every ``stride``-th entry, a few hundred thousand in all) gives a narrow
    *window* of keys that holds the k-th lowest one with overwhelming probability (six standard deviations of
    the sample quantile on each side).
``window``
    Keys above the window are kept and written straight into the mask, keys below are counted, and the few
    keys inside (the *candidates*) are collected with their positions. If the k-th lowest key is in the
    window (the counts prove it), :meth:`~ChunkedRanking.resolve` ranks the candidates with
    :func:`keep_lowest` in concatenation order and sets the kept ones: done in two sweeps, of which only this
    one reads every entry. Otherwise (a sample that missed, or far more candidates than expected: heavy ties)
    the ranking goes on with histograms.
``histogram``
    The keys inside the current range are counted into 65,536 bins; the bin of the k-th lowest key becomes
    the range, with exact counts below and inside it. Repeated until the range is small enough to collect, or
    holds a single key (an exact tie).
``ties`` and ``decide``
    With an exact threshold key, every mask is final when written: keys below are pruned, above kept, and the
    ties pruned in concatenation order until the count is reached. A checkpoint streamed from disk needs this
    *decisive* mode (a mask is written out before later tensors are read). Across ranks, a ``ties`` pass first
    counts each rank's ties so that every rank knows how many come before its own.

With ``collectives`` (:mod:`prunus.distributed`) the ranks sum their counts and histograms and gather their
samples and candidates, so every rank reaches the same decisions for the whole tensor while reading its own
shards only: the result is bit for bit the single-process one.

CPU chunks are processed through numpy views (its comparisons and counts are several times faster than
torch's on one thread); other devices use torch operations.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from .distributed import LOCAL, Collectives, Shard
from .errors import AmountError, PluginError, PrunusError, WeightError

__all__ = [
    "CANDIDATE_LIMIT",
    "CHUNK",
    "ChunkedRanking",
    "Inconsistent",
    "RankingStats",
    "Source",
    "chunks_of",
    "empty_mask",
    "keep_lowest",
    "key_bits",
    "rank",
    "recording",
    "sample_of",
    "sample_stride",
    "zero_low_bits",
]

CHUNK = 1 << 18
"""Entries per chunk: the scratch buffers stay in cache and are allocated once per ranking."""

CANDIDATE_LIMIT = 1 << 16
"""A range with at most ``max(CANDIDATE_LIMIT, eligible // 256)`` entries is resolved by collecting them."""

SAFETY = 6.0
"""Standard deviations of the sample quantile the window spans on each side of the estimate."""

MIN_SAMPLE = 4096
"""Keys sampled at least (every key of a smaller ranking)."""

NUMPY_ON_CPU = True
"""Process CPU chunks through numpy views (``False``: torch operations, the path of other devices)."""

_DIGIT = 16
_BINS = 1 << _DIGIT

PassKind = Literal["window", "histogram", "ties", "decide", "done"]


class Inconsistent(Exception):
    """The scores changed between passes (a criterion that answers differently each time)."""


# -- the dense kernel -----------------------------------------------------------------------------------------


def keep_lowest(flat: Tensor, k: int) -> Tensor:
    """A bool keep-mask of the 1-D ``flat`` that prunes its ``k`` lowest entries, ties pruned by position.

    One ``kthvalue`` (linear time) instead of a sort; only the entries tied with the threshold are indexed.
    """
    size = flat.numel()
    if not 0 <= k <= size:
        raise AmountError(f"cannot prune k={k} of {size} eligible entries; give 0 <= k <= {size}")
    if k == 0:
        return torch.ones(size, dtype=torch.bool, device=flat.device)
    if k == size:
        return torch.zeros(size, dtype=torch.bool, device=flat.device)
    if _numpy(flat) and flat.dtype not in (torch.float16, torch.bfloat16):
        # numpy's introselect is several times faster than torch's kthvalue on one CPU thread.
        array = flat.numpy()
        threshold_np = np.partition(array, k - 1)[k - 1]
        keep_np = array > threshold_np
        below_np = int(np.count_nonzero(array < threshold_np))
        keep_np[np.flatnonzero(array == threshold_np)[k - below_np :]] = True
        return torch.from_numpy(keep_np)
    threshold = flat.kthvalue(k).values
    keep = flat > threshold
    # Entries below the threshold are all pruned; among those equal to it, prune the first ones by position
    # until exactly k are pruned. Without ties this is a single entry.
    below = int((flat < threshold).sum())
    tied = (flat == threshold).nonzero().squeeze(1)
    keep[tied[k - below :]] = True
    return keep


# -- keys -----------------------------------------------------------------------------------------------------


def key_bits(dtype: torch.dtype) -> int:
    """Bits of the keys that rank scores of ``dtype`` exactly: 64 for float64, 32 for the others."""
    return 64 if dtype == torch.float64 else 32


def zero_low_bits(dtype: torch.dtype, bits: int) -> int:
    """How many low bits of every key of a ``dtype`` score are zero once widened to a ``bits``-bit float.

    A bfloat16 score widened to float32 leaves the low 16 bits zero, so a range of 2**16 keys aligned on them
    holds a single score: the histogram of the top 16 bits is already exact.
    """
    mantissa = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}.get(
        dtype
    )
    if mantissa is None:
        return 0
    return (23 if bits == 32 else 52) - mantissa


class _Keys:
    """Chunk-sized scratch buffers, allocated once per ranking and device, and the mapping to keys."""

    def __init__(self, bits: int, device: torch.device) -> None:
        self.bits = bits
        self.dtype = torch.int64 if bits == 64 else torch.int32
        self.float = torch.float64 if bits == 64 else torch.float32
        self.widened = torch.empty(CHUNK, dtype=self.float, device=device)
        self.mapped = torch.empty(CHUNK, dtype=self.dtype, device=device)
        self.offset = torch.empty(CHUNK, dtype=self.dtype, device=device)
        self.inside = torch.empty(CHUNK, dtype=torch.bool, device=device)
        self.other = torch.empty(CHUNK, dtype=torch.bool, device=device)
        self.cpu = device.type == "cpu" and NUMPY_ON_CPU

    def __call__(self, scores: Tensor, ordered: bool = True) -> Tensor:
        """The keys of a flat chunk of at most :data:`CHUNK` float scores (valid until the next call).

        With ``ordered=False`` negative scores keep their raw bits: every one of them is then a negative integer,
        below every key of a non-negative score but not in order among themselves. A pass whose range starts
        above zero needs no more (they all fall below it), and skips a reduction per chunk.
        """
        n = scores.numel()
        if scores.dtype == torch.float64 and self.bits == 32:
            raise Inconsistent  # the dtypes were agreed on before the ranking: the scores changed
        if scores.dtype != self.float:
            # Exact: half precision widens to float32, and float32 to float64 as torch.cat promotes it.
            scores = self.widened[:n].copy_(scores)
        raw = scores.view(self.dtype)
        if not ordered or n == 0 or not _any_negative(raw):
            return raw
        # A negative float (sign bit set) orders by decreasing magnitude: its key is minus its magnitude, so
        # -0.0 and +0.0 share the key 0. Branch-free: sign = raw >> (bits - 1) is -1 or 0, and
        # (raw ^ (sign & magnitude)) - sign is -magnitude for a negative raw, raw otherwise.
        magnitude = (1 << (self.bits - 1)) - 1
        sign, mapped = self.offset[:n], self.mapped[:n]
        if self.cpu:
            raw_np, sign_np, mapped_np = raw.numpy(), sign.numpy(), mapped.numpy()
            np.right_shift(raw_np, self.bits - 1, out=sign_np)
            np.bitwise_and(sign_np, magnitude, out=mapped_np)
            np.bitwise_xor(raw_np, mapped_np, out=mapped_np)
            np.subtract(mapped_np, sign_np, out=mapped_np)
        else:
            torch.bitwise_right_shift(raw, self.bits - 1, out=sign)
            torch.bitwise_and(sign, magnitude, out=mapped)
            torch.bitwise_xor(raw, mapped, out=mapped)
            mapped.sub_(sign)
        return mapped


def _numpy(tensor: Tensor) -> bool:
    """Whether to process ``tensor`` through a numpy view."""
    return NUMPY_ON_CPU and tensor.device.type == "cpu" and tensor.is_contiguous()


def _any_negative(raw: Tensor) -> bool:
    if _numpy(raw):
        return bool(raw.numpy().min() < 0)
    return bool(raw.min() < 0)


# -- instrumentation ------------------------------------------------------------------------------------------


@dataclass
class RankingStats:
    """What one ranking did: how often it read the scores, and how.

    Attributes:
        passes: the kind of each sweep over the sources, in order (``sample`` reads a few entries only).
        size: eligible entries ranked.
        sampled: keys in the sample.
        candidates: entries collected inside the final window.
        scorings: full-tensor calls of the criterion (0 when it scored chunk by chunk).
        scored_entries: entries scored, in all (chunk-by-chunk scoring included).
        path: ``"window"`` (sample and one sweep), ``"histogram"`` (bins narrowed the range), ``"classic"``
            (the scores changed between passes: one concatenation ranked them), or ``"trivial"``.
    """

    passes: list[str] = field(default_factory=list)
    size: int = 0
    sampled: int = 0
    candidates: int = 0
    scorings: int = 0
    scored_entries: int = 0
    path: str = "window"

    @property
    def sweeps(self) -> int:
        """Passes that read every eligible entry (every pass but the sample)."""
        return sum(kind != "sample" for kind in self.passes)


_RECORDS: contextvars.ContextVar[list[RankingStats] | None] = contextvars.ContextVar(
    "prunus_ranking_records", default=None
)


@contextmanager
def recording() -> Iterator[list[RankingStats]]:
    """Collect the :class:`RankingStats` of every chunked ranking run inside the block (in this context)."""
    records: list[RankingStats] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


# -- the ranking ----------------------------------------------------------------------------------------------


Chunks = Iterable[tuple[int, Tensor, Tensor | None]]
"""``(start, scores, eligible)`` per chunk of a source: flat float scores (at most :data:`CHUNK`) of the
source's entries ``start, start + 1, ...``, and their eligibility (``None``: all eligible)."""

_Candidates = tuple[int, Tensor, Tensor, Tensor, bool]
"""One chunk's candidates: source index, local flat positions, positions in the whole source, keys, and
whether this rank owns them (replicated parts are ranked once, by their owner)."""


class ChunkedRanking:
    """One exact ranking of the ``k`` lowest of ``size`` eligible scores spread over many sources.

    Drive it pass by pass: while :attr:`pass_kind` is not ``"done"``, :meth:`feed` it every source in order
    (their order is the concatenation order ties are broken in), then call :meth:`settle`; finally
    :meth:`resolve` sets the kept candidates in the masks the last pass wrote. :func:`rank` does exactly that
    for sources held in memory.

    Args:
        k: how many eligible entries to prune, ``0 < k < size``.
        size: eligible entries over all sources (and all ranks).
        sample: this rank's eligible scores at every :func:`sample_stride`-th position of each source it owns
            (tensors of any float dtype, in any order), or ``None`` to start from histograms (as a decisive
            ranking does).
        bits: 32, or 64 when any score (on any rank) is float64.
        collectives: the ranks sharing the ranking (:data:`prunus.distributed.LOCAL`: one process).
        decisive: every mask final when written (a streamed checkpoint): no candidates to resolve later.
        zero_bits: low bits known to be zero in every key (see :func:`zero_low_bits`).
    """

    def __init__(
        self,
        k: int,
        size: int,
        sample: Sequence[Tensor] | None = None,
        *,
        bits: int = 32,
        collectives: Collectives = LOCAL,
        decisive: bool = False,
        zero_bits: int = 0,
    ) -> None:
        if not 0 < k < size:
            raise ValueError(f"a ranking prunes 0 < k < size entries, not k={k} of {size}")
        self.k, self.size, self.bits = k, size, bits
        self.collectives = collectives
        self.decisive = decisive
        self.zero_bits = zero_bits
        self.key_min, self.key_max = -((1 << (bits - 1)) - 1), (1 << (bits - 1)) - 1
        self.limit = max(CANDIDATE_LIMIT, size >> 8)
        self.stats = RankingStats(size=size)
        records = _RECORDS.get()
        if records is not None:
            records.append(self.stats)
        # [lo, hi] holds the k-th lowest key; `below` and `inside` count the eligible keys under and in it.
        # They are exact when `counted`; a window from the sample is a guess until a pass counts it.
        self.lo, self.hi = self.key_min, self.key_max
        self.below, self.inside, self.counted = 0, size, True
        self._keys: dict[torch.device, _Keys] = {}
        self._ties_before: dict[int, int] = {}
        self._result: list[_Candidates] = []
        self.pass_kind: PassKind = "done"
        """The pass to feed next: ``window``, ``histogram``, ``ties``, ``decide``, or ``done``."""
        kind = self._next()
        if sample is not None and not decisive and size > self.limit:
            kind = self._window_from(sample)
        self._begin(kind)

    def _window_from(self, sample: Sequence[Tensor]) -> PassKind:
        """Guess the range from the sample: the k-th lowest key's rank in it, six deviations either side."""
        self.stats.passes.append("sample")
        local = self.keys(torch.device("cpu"))
        pieces = [piece.reshape(-1) for piece in sample]
        keys = torch.empty(sum(piece.numel() for piece in pieces), dtype=torch.int64)
        filled = 0
        for piece in pieces:
            for start in range(0, piece.numel(), CHUNK):
                part = piece[start : start + CHUNK].to("cpu")
                keys[filled : filled + part.numel()] = local(part)
                filled += part.numel()
        keys = self.collectives.gather_cat(keys)
        self.stats.sampled = n = keys.numel()
        if n == 0:
            return self._next()
        fraction = self.k / self.size
        margin = SAFETY * math.sqrt(n * fraction * (1 - fraction)) + 2
        low, high = math.floor(fraction * n - margin), math.ceil(fraction * n + margin)
        ranks = [r - 1 for r in (low, high) if 1 <= r <= n]
        chosen = []
        if ranks:
            array = keys.numpy()
            array.partition(ranks)  # in place: the keys are this method's own
            chosen = array[ranks].tolist()
        self.lo = chosen.pop(0) if low >= 1 else self.key_min
        self.hi = chosen.pop(0) if high <= n else self.key_max
        self.counted, self.inside = False, max(high - low, 1) * self.size // n
        if self.lo == self.hi and self.inside > self.limit:
            # One score holds the threshold and many entries: count it (and what is below), then decide the
            # ties in order, rather than collect them.
            return "histogram"
        return "window"

    # -- state --------------------------------------------------------------------------------------------

    def _next(self) -> PassKind:
        """The pass the state calls for."""
        if not self.counted or (self.inside <= self.limit and not self.decisive):
            return "window"
        if self._exact():
            return "ties" if self.collectives.world > 1 else "decide"
        return "histogram"

    def _begin(self, kind: PassKind) -> None:
        """Start a pass of ``kind``: clear its accumulators."""
        self.pass_kind = kind
        self._below = self._inside = 0
        self._hist = torch.zeros(_BINS if kind == "histogram" else 0, dtype=torch.int64)
        self._candidates: list[_Candidates] = []
        self._collected = 0
        self._aborted = False
        self._tie_counts: dict[int, int] = {}
        self._tie_seen = 0

    def _exact(self) -> bool:
        """Whether every key in the range is the same (one key, or a range of known-zero low bits)."""
        span = self.hi - self.lo + 1
        return span == 1 or (
            span & (span - 1) == 0
            and span.bit_length() - 1 <= self.zero_bits
            and self.lo % span == 0
        )

    def keys(self, device: torch.device) -> _Keys:
        """The scratch buffers and key mapping for chunks on ``device``."""
        if device not in self._keys:
            self._keys[device] = _Keys(self.bits, device)
        return self._keys[device]

    # -- passes ---------------------------------------------------------------------------------------------

    def feed(
        self,
        index: int,
        chunks: Chunks,
        out: Tensor | None = None,
        shard: Shard | None = None,
    ) -> None:
        """One source's scores in this pass (``histogram``, ``window``, ``ties`` or ``decide``).

        Args:
            index: the source's position in the concatenation order (sources are fed in this order).
            chunks: its scores, chunk by chunk (see :data:`Chunks`).
            out: its flat bool keep-mask, written in ``window`` and ``decide`` passes.
            shard: where this rank's part of the source sits in the whole (``None``: all of it, owned).
        """
        kind = self.pass_kind
        if kind in ("window", "decide") and out is None:
            raise ValueError(f"a {kind} pass writes masks: give feed() the source's out mask")
        if (
            kind in ("ties", "decide")
            and shard is not None
            and not (shard.contiguous and shard.owner)
        ):
            raise ValueError(
                "exact ties across a parameter sharded other than in blocks of rows (dim 0) of one copy "
                "are not supported; shard it along dim 0 without replicas"
            )
        owner = shard is None or shard.owner
        for start, scores, eligible in chunks:
            # A range above zero (and not the full one) leaves every negative score below it: their keys need
            # not be ordered. Its upper end, at most the largest key, lies below every raw negative read
            # unsigned, so the wrap-around test of _inside_mask stays exact too.
            keys = self.keys(scores.device)(scores.reshape(-1), ordered=self.lo <= 0)
            flat_eligible = None if eligible is None else eligible.reshape(-1)
            if kind == "histogram":
                if owner:
                    self._histogram(keys, flat_eligible)
            elif kind == "ties":
                if owner:
                    inside = self._inside_mask(keys, flat_eligible)
                    self._tie_counts[index] = self._tie_counts.get(index, 0) + _count(inside)
            elif kind in ("window", "decide"):
                assert out is not None
                self._mask(kind, index, start, keys, flat_eligible, out, shard, owner)
            else:
                raise AssertionError(f"feed() in a {kind} pass")

    def _inside_mask(self, keys: Tensor, eligible: Tensor | None) -> Tensor:
        """The eligible keys in [lo, hi], as a bool mask in scratch memory."""
        scratch = self.keys(keys.device)
        n = keys.numel()
        inside = scratch.inside[:n]
        if scratch.cpu:
            offset, inside_np = scratch.offset[:n].numpy(), inside.numpy()
            unsigned = np.uint64 if self.bits == 64 else np.uint32
            # (key - lo) modulo 2**bits, read unsigned, is at most hi - lo exactly for the keys in the range.
            np.subtract(keys.numpy(), np.array(self.lo, dtype=offset.dtype), out=offset)
            np.less_equal(offset.view(unsigned), unsigned(self.hi - self.lo), out=inside_np)
            if eligible is not None:
                np.logical_and(inside_np, eligible.numpy(), out=inside_np)
        else:
            torch.ge(keys, self.lo, out=inside)
            inside &= keys <= self.hi
            if eligible is not None:
                inside &= eligible
        return inside

    def _histogram(self, keys: Tensor, eligible: Tensor | None) -> None:
        scratch = self.keys(keys.device)
        n = keys.numel()
        if self.lo == self.key_min and self.hi == self.key_max:
            digit = torch.bitwise_right_shift(keys, self.bits - _DIGIT, out=scratch.offset[:n])
            digit.add_(_BINS >> 1)  # an arithmetic shift: the sign goes with the top digit
            if eligible is not None:
                digit.masked_fill_(torch.logical_not(eligible, out=scratch.other[:n]), _BINS)
            self._hist += torch.bincount(digit, minlength=_BINS + 1)[:_BINS].cpu()
            return
        below = torch.lt(keys, self.lo, out=scratch.other[:n])
        if eligible is not None:
            below &= eligible
        self._below += _count(below)
        chosen = keys[_nonzero(self._inside_mask(keys, eligible)).to(keys.device)].to(torch.int64)
        # (key - lo) >> shift without overflowing 64 bits: shift each, then borrow when the low bits of the
        # key are below those of lo (floor arithmetic throughout).
        shift = self._shift()
        low = (1 << shift) - 1
        digit = (chosen >> shift) - (self.lo >> shift)
        if shift:
            digit -= (torch.bitwise_and(chosen, low) < (self.lo & low)).to(torch.int64)
        self._hist += torch.bincount(digit, minlength=_BINS)[:_BINS].cpu()

    def _shift(self) -> int:
        """Bits of a bin of the range's histogram (65,536 bins across it)."""
        return max(0, (self.hi - self.lo).bit_length() - _DIGIT)

    def _mask(
        self,
        kind: PassKind,
        index: int,
        start: int,
        keys: Tensor,
        eligible: Tensor | None,
        out: Tensor,
        shard: Shard | None,
        owner: bool,
    ) -> None:
        """A ``window`` or ``decide`` pass over one chunk: keys above the range kept, the range's handled."""
        n = keys.numel()
        keep = out[start : start + n]
        if _numpy(keys):
            keep_np = keep.numpy()
            np.greater(keys.numpy(), np.array(self.hi, dtype=keys.numpy().dtype), out=keep_np)
            if eligible is not None:
                np.logical_and(keep_np, eligible.numpy(), out=keep_np)
        else:
            torch.gt(keys, self.hi, out=keep)
            if eligible is not None:
                keep &= eligible
        inside = self._inside_mask(keys, eligible)
        count = _count(inside)
        if owner:
            self._below += (n if eligible is None else _count(eligible)) - _count(keep) - count
            self._inside += count
        if not count:
            return
        if kind == "decide":
            # Every key in the range is the threshold: prune the ties in concatenation order until k are
            # pruned. Ties before this chunk's: this rank's so far, and (across ranks) those of the ranks
            # whose parts come first, from the ties pass.
            before = self._ties_before.get(index, 0) + self._tie_seen
            self._tie_seen += count
            budget = self.k - self.below - before
            if budget < count:
                keep[_nonzero(inside)[max(budget, 0) :].to(keep.device)] = True
            return
        if self._aborted:
            return
        self._collected += count
        if self._collected > max(self.limit, (1 if self.counted else 4) * self.inside):
            # Far more than the range should hold: heavy ties, or a sample that missed. Histograms take over.
            self._aborted = True
            self._candidates = []
            return
        where = _nonzero(inside)
        local = where.to(torch.int64) + start
        position = local if shard is None else shard.positions(local)
        self._candidates.append((index, local, position, keys[where.to(keys.device)].cpu(), owner))

    # -- end of a pass -------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Close the pass: agree across ranks, then move on to the next pass (or ``"done"``)."""
        kind = self.pass_kind
        self.stats.passes.append(kind)
        settle = {
            "histogram": self._settle_histogram,
            "window": self._settle_window,
            "ties": self._settle_ties,
            "decide": self._settle_decide,
        }[kind]
        self._begin(settle())

    def _sum(self, *values: int) -> list[int]:
        return [int(v) for v in self.collectives.sum(torch.tensor(values, dtype=torch.int64))]

    def _settle_histogram(self) -> PassKind:
        hist = self.collectives.sum(self._hist)
        (below,) = self._sum(self._below)
        inside = int(hist.sum())
        if not self.counted:
            if not self._locate(below, inside):
                return self._next()
        elif below != self.below or inside != self.inside:
            raise Inconsistent
        cumulative = hist.cumsum(0)
        wanted = torch.tensor([self.k - self.below], dtype=cumulative.dtype)
        b = int(torch.searchsorted(cumulative, wanted)[0])
        if self.lo == self.key_min and self.hi == self.key_max:
            width = 1 << (self.bits - _DIGIT)
            lo = (b - (_BINS >> 1)) * width
        else:
            width = 1 << self._shift()
            lo = self.lo + b * width
        self.lo, self.hi = max(lo, self.lo), min(lo + width - 1, self.hi)
        self.below += int(cumulative[b - 1]) if b > 0 else 0
        self.inside = int(hist[b])
        return self._next()

    def _locate(self, below: int, inside: int) -> bool:
        """Count a guessed range; if it misses the k-th lowest key, move to the side that holds it.

        Returns whether the range holds it. Either way the counts are exact afterwards.
        """
        self.counted = True
        if below <= self.k <= below + inside:
            self.below, self.inside = below, inside
            return True
        if self.k < below:
            self.lo, self.hi = self.key_min, self.lo - 1
            self.below, self.inside = 0, below
        else:
            self.lo, self.hi = self.hi + 1, self.key_max
            self.below, self.inside = below + inside, self.size - below - inside
        self.stats.path = "histogram"
        return False

    def _settle_window(self) -> PassKind:
        below, inside, aborted = self._sum(self._below, self._inside, int(self._aborted))
        candidates, self._candidates = self._candidates, []
        if aborted:
            if self.counted:
                raise Inconsistent  # more candidates than the histogram counted
            self.lo, self.hi = self.key_min, self.key_max
            self.below, self.inside, self.counted = 0, self.size, True
            self.stats.path = "histogram"
            return self._next()
        if self.counted:
            if below != self.below or inside != self.inside:
                raise Inconsistent
        elif not self._locate(below, inside):
            return self._next()
        self._result = candidates
        self.stats.candidates = inside
        return "done"

    def _settle_ties(self) -> PassKind:
        # Each rank's tie count per source, gathered. The ties before a rank's part of a source are those of
        # every earlier source and those of the same source's parts that come first (parts are blocks of rows,
        # checked in feed(); FSDP's dim-0 sharding lays them out in rank order).
        (sources,) = self._sum(1 + max(self._tie_counts, default=-1))
        mine = [self._tie_counts.get(i, 0) for i in range(sources)]
        every = torch.stack(self.collectives.gather(torch.tensor(mine, dtype=torch.int64)))
        if int(every.sum()) != self.inside:
            raise Inconsistent
        per_source = every.sum(0)
        earlier = per_source.cumsum(0) - per_source
        ranks_before = (every.cumsum(0) - every)[self.collectives.rank]
        # The decide pass adds this rank's own ties seen so far (of earlier sources too): take those back out.
        seen = torch.tensor(mine).cumsum(0) - torch.tensor(mine)
        self._ties_before = {i: int(earlier[i] + ranks_before[i] - seen[i]) for i in range(sources)}
        return "decide"

    def _settle_decide(self) -> PassKind:
        below, inside = self._sum(self._below, self._inside)
        if below != self.below or inside != self.inside:
            raise Inconsistent
        self._result = []
        return "done"

    # -- result ---------------------------------------------------------------------------------------------

    def resolve(self, outs: Sequence[Tensor]) -> None:
        """Set the kept candidates of the last ``window`` pass in ``outs`` (the masks it wrote, by index)."""
        assert self.pass_kind == "done"
        candidates, self._result = self._result, []
        if self.stats.passes[-1] != "window":
            return  # a decide pass leaves every mask final
        keys = _cat([c[3] for c in candidates], self.keys(torch.device("cpu")).dtype)
        if self.collectives.world == 1:
            keep = keep_lowest(keys, self.k - self.below)
        else:
            # Rank the owned candidates of every rank in concatenation order (source, then position in it),
            # then read this rank's decisions back from that order.
            ident = _cat([c[2] + (c[0] << 40) for c in candidates])
            owned = _cat([torch.full((c[3].numel(),), c[4], dtype=torch.bool) for c in candidates])
            every_ident = self.collectives.gather_cat(ident[owned] if owned.numel() else ident)
            every_key = self.collectives.gather_cat(keys[owned] if owned.numel() else keys)
            order = torch.argsort(every_ident, stable=True)
            decided = keep_lowest(every_key[order], self.k - self.below)
            keep = decided[torch.searchsorted(every_ident[order], ident)]
        offset = 0
        for index, local, _, found, _ in candidates:
            chosen = local[keep[offset : offset + found.numel()]]
            offset += found.numel()
            if _numpy(outs[index]):
                outs[index].numpy()[chosen.numpy()] = True
            else:
                outs[index][chosen.to(outs[index].device)] = True


class Source(Protocol):
    """What :func:`rank` reads of one source: its scores, sampled and chunk by chunk."""

    @property
    def numel(self) -> int:
        """Entries of this rank's part."""

    @property
    def shard(self) -> Shard | None:
        """Where the part sits in the whole source (``None``: it is the whole, owned)."""

    @property
    def device(self) -> torch.device:
        """Where its masks go."""

    @property
    def scorings(self) -> int:
        """Whole-tensor calls of the criterion so far (for :class:`RankingStats`)."""

    @property
    def scored(self) -> int:
        """Entries scored so far."""

    @property
    def problem(self) -> PrunusError | None:
        """What was wrong with its scores in the last pass (a NaN score, NaN weights), as the error to raise,
        or ``None``.

        A source records a problem rather than raising it, so that every rank raises together (:func:`rank`
        agrees on problems after every pass; one rank raising alone would leave the others waiting).
        """

    def sample(self, stride: int) -> Tensor:
        """Its eligible scores at the multiples of ``stride`` (flat positions of this rank's part), in the
        dtype of all its scores."""
        ...

    def chunks(self) -> Chunks:
        """Its scores and eligibility, chunk by chunk."""
        ...


def sample_stride(size: int) -> int:
    """The sampling stride of a ranking of ``size`` eligible entries.

    About ``(9 size)^(2/3)`` keys are sampled: the sample and the candidates its window leaves then take the
    least memory together (a few MB for 50 M entries). The stride is a prime, so it shares no factor with a
    row length and the sample sweeps every column.
    """
    wanted = min(max(int((9 * size) ** (2 / 3)), MIN_SAMPLE), 1 << 24)
    return _next_prime(max(1, size // wanted))


def rank(
    sources: Sequence[Source],
    k: int,
    size: int,
    *,
    collectives: Collectives = LOCAL,
    sample: bool = True,
) -> list[Tensor]:
    """The flat keep-masks of this rank's parts of ``sources`` under one ranking of ``k`` of ``size``.

    Raises:
        Inconsistent: the scores changed between passes (the caller may fall back to one concatenation).
    """
    samples = [source.sample(sample_stride(size)) for source in sources]
    wide = any(sample.dtype == torch.float64 for sample in samples)
    (wide_anywhere,) = collectives.sum(torch.tensor([int(wide)])).tolist()
    _agree(sources, collectives)
    bits = 64 if wide_anywhere else 32
    sampled = None
    if sample:
        sampled = [
            piece
            for source, piece in zip(sources, samples, strict=True)
            if source.shard is None or source.shard.owner
        ]
    del samples
    ranking = ChunkedRanking(k, size, sampled, bits=bits, collectives=collectives)
    outs = [empty_mask(source.numel, source.device) for source in sources]
    while ranking.pass_kind != "done":
        for index, source in enumerate(sources):
            ranking.feed(index, source.chunks(), outs[index], source.shard)
        _agree(sources, collectives)
        ranking.settle()
    ranking.resolve(outs)
    ranking.stats.scorings = sum(source.scorings for source in sources)
    ranking.stats.scored_entries = sum(source.scored for source in sources)
    return outs


def _agree(sources: Sequence[Source], collectives: Collectives) -> None:
    """Raise on every rank if any source of any rank recorded a problem."""
    mine = next((source.problem for source in sources if source.problem), None)
    flags = [int(mine is not None), int(isinstance(mine, WeightError))]
    anywhere, weights = collectives.sum(torch.tensor(flags)).tolist()
    if mine is not None:
        raise mine
    if weights:
        raise WeightError(
            "the weights of another rank's shard hold NaN or infinite values (see its error); the model "
            "was not changed"
        )
    if anywhere:
        raise PluginError("the scores of another rank's shard are invalid (see its error)")


# -- helpers --------------------------------------------------------------------------------------------------


def empty_mask(numel: int, device: torch.device) -> Tensor:
    """An uninitialized flat bool tensor for a mask.

    On CPU through numpy, which asks the kernel for transparent huge pages for large blocks: first touching a
    mask then costs one page fault per 2 MiB instead of one per 4 KiB (and on a virtual machine each fault is
    expensive).
    """
    if device.type == "cpu":
        return torch.from_numpy(np.empty(numel, dtype=np.bool_))
    return torch.empty(numel, dtype=torch.bool, device=device)


def chunks_of(flat: Tensor, eligible: Tensor | None) -> Chunks:
    """The chunks of the 1-D ``flat`` (scores, or values to score) with their flat eligibility."""
    for start in range(0, flat.numel(), CHUNK):
        part = None if eligible is None else eligible[start : start + CHUNK]
        yield start, flat[start : start + CHUNK], part


def sample_of(flat: Tensor, stride: int, eligible: Tensor | None) -> Tensor:
    """The entries of the 1-D ``flat`` at the multiples of ``stride`` that ``eligible`` (flat) allows."""
    taken = flat[::stride]
    if eligible is not None:
        taken = taken[eligible[::stride]]
    return taken


def _cat(parts: list[Tensor], dtype: torch.dtype = torch.int64) -> Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=dtype)


def _count(mask: Tensor) -> int:
    if _numpy(mask):
        return int(np.count_nonzero(mask.numpy()))
    return int(torch.count_nonzero(mask))


def _nonzero(flat: Tensor) -> Tensor:
    """Positions of the True entries of a flat bool tensor (numpy's is ~10x faster than torch's on CPU)."""
    if _numpy(flat):
        return torch.from_numpy(np.flatnonzero(flat.numpy()))
    return flat.nonzero().squeeze(1)


def _next_prime(n: int) -> int:
    """The smallest prime >= n (a sampling stride that shares no factor with a row length)."""
    if n <= 2:
        return max(n, 1)
    candidate = n | 1
    while any(candidate % d == 0 for d in range(3, math.isqrt(candidate) + 1, 2)):
        candidate += 2
    return candidate
