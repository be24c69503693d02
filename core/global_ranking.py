"""Global ranking without concatenating the scores: one ranking across many parameters, in little memory.

:func:`global_keep_masks` is the ranking primitive behind the ``global`` granularity, public for any plugin that
ranks across parameters.

``torch.nn.utils.prune.global_unstructured`` (and a naive ranking) concatenates every score into one tensor and
sorts or selects on it: for 50 M weights that is 200 MB of scores, plus the sort's copies and index tensors.
Here each parameter is a *source* of :mod:`prunus.chunked_ranking`, whose passes read the scores chunk by chunk
and keep almost nothing:

1. **Sample.** Every ``stride``-th score of each parameter (a few hundred thousand in all) gives a narrow
   window of scores that holds the threshold.
2. **One sweep.** Each parameter's scores are read once more: entries above the window are kept (written
   straight into its mask), entries below pruned, and the few inside collected with their positions, then
   ranked by :func:`prunus.chunked_ranking.keep_lowest` in concatenation order. The mask is exactly the one
   :func:`prunus.ranking.keep_mask` gives on the concatenation of every score: exact count, ties pruned first
   by position, earlier masks respected. (If the window missed, histograms of the scores' bits narrow the range
   instead: see that module.)

How the scores are read depends on the criterion. An ``elementwise`` criterion (magnitude: the built-in
``l1`` and ``ln``) is scored chunk by chunk from the weights into a buffer that stays in cache: no score
tensor is ever allocated, and the ranking costs a sample and one read of the weights. Any other criterion is
called on the whole parameter, once for the sample and once for the sweep, except for the first parameters,
whose scores are held in between when ``keep_bytes`` allows (``prune`` allows as much as the restore data is
about to take anyway). Calling a criterion twice is exact for every deterministic or seeded criterion; if the
counts show that its scores changed between calls, the ranking falls back to concatenating them once.

Sharded parameters (DTensors, e.g. under FSDP2's ``fully_shard``) are ranked where they are: each rank reads its
own shards, and the ranks agree on the window, the counts and the candidates through collectives, so the
masks are bit for bit the single-process ones.

:func:`prunus.chunked_ranking.recording` collects what each ranking did (passes, scorings, candidates): the
benchmark in ``benchmarks/bench_global.py`` reports it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from . import chunked_ranking
from .chunked_ranking import (
    Chunks,
    Inconsistent,
    RankingStats,
    chunks_of,
    rank,
    recording,
    sample_of,
)
from .config import Amount, count_to_prune
from .distributed import Shard, collectives_of, count_true, is_sharded, like, local, shard_of
from .errors import PluginError, PrunusError, WeightError
from .ranking import keep_mask, rankable
from .strategy import Scorer, Target, broken_weights, local_top

__all__ = ["RankingStats", "classic_keep_masks", "global_keep_masks", "recording"]


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
    (see the module's documentation). A criterion that is not elementwise is called once or twice per target,
    which is exact for deterministic and seeded criteria; if its scores change between calls so that the
    counts stop adding up, the ranking falls back to concatenating them.

    Args:
        targets: the parameters ranked together (plain or sharded alike).
        score: a target's scores (a granularity passes on the ``score`` it was given); a
            :class:`~prunus.strategy.Scorer` of an elementwise criterion is scored chunk by chunk instead.
        amount: a fraction of the entries still kept across all targets, or an int count of them.
        keep_bytes: how much memory of scores the ranking may hold between its passes to avoid scoring those
            targets again (0: hold one target's scores at a time). Unused for an elementwise criterion.
        min_keep: a floor per target: each keeps at least ``min_keep`` of its entries still kept (all of them if
            it has fewer), its highest-scored ones, while the ranking still prunes exactly the count asked,
            from the other targets. The floor holds whenever the amount leaves room for it; an amount that asks
            for more (everything, say) is followed as the plain ranking follows it. With the floor binding, the
            ranking is global among the entries the floor does not hold.

    Returns:
        The bool keep-mask of each target, by target name (a DTensor laid out like a sharded parameter).

    Raises:
        AmountError: an int ``amount`` larger than the entries still kept.
    """
    masks = _ranked(targets, score, amount, keep_bytes)
    return _floored(targets, score, amount, keep_bytes, min_keep, masks) if min_keep > 0 else masks


def _ranked(
    targets: Sequence[Target], score: Callable[[Target], Tensor], amount: Amount, keep_bytes: int
) -> dict[str, Tensor]:
    """The plain ranking (no floor): the chunked ranking's passes, or the classic one if the scores moved."""
    collectives = collectives_of([t.tensor for t in targets])
    sources = [_source(t, score) for t in targets]
    owned = [s.eligible_count() if s.shard.owner else 0 for s in sources]
    size = int(collectives.sum(torch.tensor([sum(owned)]))[0])
    k = count_to_prune(amount, size, what="entries still kept across all targets")
    if k in (0, size):
        return {t.name: _trivial(t, k == 0) for t in targets}
    _keep(sources, keep_bytes)
    try:
        flats = rank(sources, k, size, collectives=collectives)
    except Inconsistent:
        if collectives.world > 1:
            raise PluginError(
                "the criterion's scores changed between two calls on the same sharded parameters; a "
                "global ranking across ranks needs a deterministic (or seeded) criterion"
            ) from None
        return classic_keep_masks(targets, score, amount)
    return {
        t.name: like(flat.reshape(s.part.shape), t.tensor)
        for t, s, flat in zip(targets, sources, flats, strict=True)
    }


def _floored(
    targets: Sequence[Target],
    score: Callable[[Target], Tensor],
    amount: Amount,
    keep_bytes: int,
    min_keep: int,
    masks: dict[str, Tensor],
) -> dict[str, Tensor]:
    """``masks`` with every target keeping its ``min_keep`` best entries: the targets that fell short keep them,
    and the ranking runs again on the rest for the same count, until no target falls short.

    Every count is of the whole parameter (summed over the ranks for a sharded one), so all ranks take the same
    branches and run the same collectives.
    """
    eligible = {
        t.name: t.tensor.numel() if t.prior is None else count_true(t.prior) for t in targets
    }
    size = sum(eligible.values())
    k = count_to_prune(amount, size, what="entries still kept across all targets")
    floors = {name: min(min_keep, count) for name, count in eligible.items()}
    if k == size or k > size - sum(floors.values()):
        return masks  # the amount asks for more than the floor leaves: follow it
    held: dict[str, Tensor] = {}
    while True:
        short = [
            t for t in targets if t.name not in held and count_true(masks[t.name]) < floors[t.name]
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


def _trivial(target: Target, keep: bool) -> Tensor:
    """The mask that prunes nothing more (``keep``) or every eligible entry."""
    if target.prior is None:
        return torch.full_like(target.tensor, keep, dtype=torch.bool)
    return target.prior.clone() if keep else torch.zeros_like(target.prior)


class _TargetSource:
    """One target as a source of the chunked ranking: its scores, this rank's part of them."""

    def __init__(self, target: Target) -> None:
        self.target = target
        tensor = target.tensor
        self.shard: Shard = shard_of(tensor)
        self.part = local(tensor)
        self.numel = self.part.numel()
        self.device = self.part.device
        prior = target.prior
        self.eligible = None if prior is None else local(prior).reshape(-1)

    problem: PrunusError | None = None
    """What was wrong with its scores (raised on every rank by the ranking)."""
    scorings = 0
    """Calls of the criterion on the whole target."""
    scored = 0
    """Entries scored, in all passes."""

    def eligible_count(self) -> int:
        return self.numel if self.eligible is None else int(torch.count_nonzero(self.eligible))


class _ValueSource(_TargetSource):
    """A target of an elementwise criterion: scored chunk by chunk from its values, into a reused buffer."""

    def __init__(self, target: Target, scorer: Scorer) -> None:
        super().__init__(target)
        self.scorer = scorer
        self.values = self.part.reshape(-1)
        self.buffer: Tensor | None = None

    def sample(self, stride: int) -> Tensor:
        sampled = self._scored(sample_of(self.values, stride, self.eligible))
        size = min(chunked_ranking.CHUNK, self.numel)
        self.buffer = torch.empty(size, dtype=sampled.dtype, device=self.device)
        return sampled

    def chunks(self) -> Chunks:
        assert self.buffer is not None, "sample() first: it sizes the score buffer"
        for start, values, eligible in chunks_of(self.values, self.eligible):
            scores = self._scored(values, self.buffer[: values.numel()])
            self.scored += values.numel()
            yield start, scores, eligible

    def _scored(self, values: Tensor, out: Tensor | None = None) -> Tensor:
        scores = self.scorer.values(self.target, values, out, check_nan=False)
        if self.problem is None:  # recorded, and raised by rank() on every rank together
            top = local_top(scores)
            if top is not None and not math.isfinite(top):
                self.problem = self._problem(math.isnan(top))
        return scores

    def _problem(self, nan: bool) -> PrunusError | None:
        """Why a chunk's scores are not finite: the weights themselves (this rank's part), or the criterion."""
        values = self.values
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            nans, infs = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
            return WeightError(broken_weights(self.target.name, nans, infs))
        return PluginError(self.scorer.nan_message(self.target)) if nan else None


class _ScoreSource(_TargetSource):
    """A target of any other criterion: scored whole, once per pass unless its scores are held."""

    def __init__(self, target: Target, score: Callable[[Target], Tensor]) -> None:
        super().__init__(target)
        self.score = score
        self.hold = False
        self.held: Tensor | None = None

    def scores(self) -> Tensor:
        if self.held is not None:
            return self.held
        scores = _local_scores(self.score(self.target), self.target, self.shard)
        self.scorings += 1
        self.scored += scores.numel()
        if self.hold:
            self.held = scores
        return scores

    def sample(self, stride: int) -> Tensor:
        return sample_of(self.scores(), stride, self.eligible)

    def chunks(self) -> Chunks:
        return chunks_of(self.scores(), self.eligible)


def _local_scores(scores: Tensor, target: Target, shard: Shard) -> Tensor:
    """This rank's part of a target's scores, flat (a criterion may score a sharded parameter whole)."""
    if is_sharded(scores):
        return local(scores).reshape(-1)
    if is_sharded(target.tensor) and tuple(scores.shape) == shard.shape:
        index = tuple(
            slice(offset, offset + size)
            for offset, size in zip(shard.offset, shard.local_shape, strict=True)
        )
        return scores[index].reshape(-1)
    return scores.reshape(-1)


def _source(target: Target, score: Callable[[Target], Tensor]) -> _ValueSource | _ScoreSource:
    if isinstance(score, Scorer) and score.elementwise:
        return _ValueSource(target, score)
    return _ScoreSource(target, score)


def _keep(sources: list[_ValueSource | _ScoreSource], keep_bytes: int) -> None:
    """Hold the scores of the first whole-scored sources between passes, up to ``keep_bytes``."""
    held = 0
    for source in sources:
        if isinstance(source, _ScoreSource):
            size = source.numel * source.part.element_size()
            if held + size > keep_bytes:
                break
            source.hold = True
            held += size


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
    size = flat.numel() if eligible is None else count_true(eligible)
    k = count_to_prune(amount, size, what="entries still kept across all targets")
    keep = keep_mask(flat, k, eligible)
    out = {}
    offset = 0
    for target in targets:
        numel = target.tensor.numel()
        out[target.name] = keep[offset : offset + numel].reshape(target.tensor.shape).clone()
        offset += numel
    return out
