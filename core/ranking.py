"""Exact, deterministic ranking: which ``k`` entries (or slices) of a score tensor to prune.

Granularities call :func:`keep_mask` rather than ``topk``: it prunes exactly ``k`` eligible entries, the ones
with the lowest scores, and breaks ties by position (the lower flat index is pruned first), so the same scores
always give the same mask on every machine. On tie-free scores its choice equals ``torch.topk``'s.

It selects through one ``kthvalue`` (linear time) instead of a full sort, and touches the entries tied with the
threshold only, so ranking 50 M scores costs a few passes over them. Scores sharded over several ranks (a
DTensor, see :mod:`prunus.distributed`) are ranked as one tensor by :mod:`prunus.chunked_ranking`: each rank
reads its own shard and the ranks agree through collectives, so the mask is the one a single process would
compute.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .chunked_ranking import Chunks, chunks_of, keep_lowest, rank, sample_of
from .distributed import (
    Shard,
    collectives_of,
    count_true,
    is_sharded,
    like,
    local,
    replicated_if_partial,
    shard_of,
)
from .errors import AmountError, ConfigTypeError, MaskError, brief

__all__ = [
    "CHUNKED_FROM",
    "TensorSource",
    "eligible_slices",
    "keep_lowest_eligible",
    "keep_mask",
    "keep_slices",
    "rankable",
]


def rankable(scores: Tensor) -> Tensor:
    """Scores in a dtype ``kthvalue`` handles on every device: half precision is widened (exactly)."""
    if scores.dtype in (torch.float16, torch.bfloat16):
        return scores.float()
    return scores


def keep_mask(scores: Tensor, k: int, eligible: Tensor | None = None) -> Tensor:
    """A bool keep-mask of ``scores``'s shape that prunes the ``k`` lowest-scored eligible entries.

    Args:
        scores: real scores (floating, or integers), any shape, no NaN (``prune`` checks a criterion's scores
            before they get here).
        k: how many eligible entries to prune, ``0 <= k <= number eligible``.
        eligible: bool mask of the entries that may be pruned (others are kept as they are); ``None`` for all.

    Returns:
        ``True`` where an entry is kept. Entries outside ``eligible`` are returned as ``False`` (they were
        pruned before), so the result is a full mask that never revives anything.

    Raises:
        ConfigTypeError: ``scores`` is not a real-valued tensor, or ``k`` not an int.
        MaskError: ``eligible`` is not a bool tensor of ``scores``'s shape.
        AmountError: ``k`` is negative or more than the eligible entries.
    """
    if (
        not isinstance(scores, Tensor)
        or scores.dtype == torch.bool
        or scores.is_complex()
        or scores.is_quantized
    ):
        raise ConfigTypeError(f"scores must be a real-valued tensor, not {_what(scores)}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigTypeError(f"k={brief(k)} is a {type(k).__name__}; give an int count")
    if eligible is not None and (
        not isinstance(eligible, Tensor)
        or eligible.dtype != torch.bool
        or eligible.shape != scores.shape
    ):
        raise MaskError(
            f"eligible must be a torch.bool tensor of the scores' shape {tuple(scores.shape)}, not "
            f"{_what(eligible)}"
        )
    if is_sharded(scores):
        return _sharded_keep_mask(scores, k, eligible)
    if scores.device.type == "cpu" and scores.numel() >= CHUNKED_FROM:
        return _chunked_keep_mask(scores, k, eligible)
    return keep_lowest_eligible(rankable(scores).reshape(-1), k, eligible).reshape(scores.shape)


def keep_lowest_eligible(flat: Tensor, k: int, eligible: Tensor | None) -> Tensor:
    """:func:`~prunus.chunked_ranking.keep_lowest` among the entries ``eligible`` allows (the others ``False``)."""
    if eligible is None:
        return keep_lowest(flat, k)
    flat_eligible = eligible.reshape(-1)
    if bool(flat_eligible.all()):
        return keep_lowest(flat, k)
    index = flat_eligible.nonzero().squeeze(1)
    keep = torch.zeros_like(flat_eligible)
    keep[index] = keep_lowest(flat[index], k)
    return keep


class TensorSource:
    """Scores held in a tensor (this rank's part of them), as a source of :func:`prunus.chunked_ranking.rank`.

    Args:
        scores: the scores, or this rank's part of them.
        eligible: the bool mask of the entries that may be pruned (same shape), or ``None``.
        shard: where the part sits in the whole (``None``: it is the whole).
    """

    scorings = scored = 0
    problem = None

    def __init__(self, scores: Tensor, eligible: Tensor | None = None, shard: Shard | None = None):
        self.flat = scores.reshape(-1)
        self.eligible = None if eligible is None else eligible.reshape(-1)
        self.numel = self.flat.numel()
        self.shard = shard
        self.device = scores.device

    def sample(self, stride: int) -> Tensor:
        return sample_of(self.flat, stride, self.eligible)

    def chunks(self) -> Chunks:
        return chunks_of(self.flat, self.eligible)


CHUNKED_FROM = 1 << 20
"""CPU scores of at least this many entries are ranked by :mod:`prunus.chunked_ranking` (a sample and one
sweep: several times faster than one ``kthvalue`` on one thread, and no widened copy of half precision)."""


def _chunked_keep_mask(scores: Tensor, k: int, eligible: Tensor | None) -> Tensor:
    size = scores.numel() if eligible is None else count_true(eligible)
    if not 0 < k < size:
        return keep_lowest_eligible(rankable(scores).reshape(-1), k, eligible).reshape(scores.shape)
    (flat,) = rank([TensorSource(scores, eligible)], k, size)
    return flat.reshape(scores.shape)


def _sharded_keep_mask(scores: Tensor, k: int, eligible: Tensor | None) -> Tensor:
    """:func:`keep_mask` of a DTensor: this rank ranks its shard, the ranks agree through collectives."""
    if eligible is not None and not is_sharded(eligible):
        raise MaskError(
            f"the eligible mask of sharded scores must be sharded alike (a DTensor), not {_what(eligible)}"
        )
    scores = replicated_if_partial(scores)
    eligible = None if eligible is None else replicated_if_partial(eligible)
    size = scores.numel() if eligible is None else count_true(eligible)
    if not 0 <= k <= size:
        raise AmountError(f"cannot prune k={k} of {size} eligible entries; give 0 <= k <= {size}")
    part = local(scores)
    part_eligible = None if eligible is None else local(eligible)
    if k in (0, size):
        keep = (
            torch.full_like(part, k == 0, dtype=torch.bool)
            if part_eligible is None
            else part_eligible.clone() & (k == 0)
        )
        return like(keep, scores)
    source = TensorSource(part, part_eligible, shard_of(scores))
    (flat,) = rank([source], k, size, collectives=collectives_of([scores]))
    return like(flat.reshape(part.shape), scores)


def eligible_slices(prior: Tensor | None, dim: int) -> Tensor | None:
    """Which slices along ``dim`` can still be pruned: those with an entry ``prior`` keeps (``None``: all).

    Args:
        prior: the keep-mask of earlier prunes (``target.prior``), or ``None``.
        dim: a non-negative dim of the parameter.
    """
    if prior is None:
        return None
    others = tuple(d for d in range(prior.dim()) if d != dim)
    return prior.any(dim=others) if others else prior


def keep_slices(
    slice_scores: Tensor, k: int, shape: torch.Size, dim: int, prior: Tensor | None
) -> Tensor:
    """The full keep-mask of a parameter of ``shape`` that prunes its ``k`` lowest-scored slices along ``dim``.

    Args:
        slice_scores: one score per slice along ``dim`` (e.g. ``criterion.reduce(scores, other_dims)``).
        k: how many eligible slices to prune (see :func:`eligible_slices`).
        shape: the parameter's shape.
        dim: a non-negative dim of ``shape``.
        prior: the keep-mask of earlier prunes, or ``None``; entries it pruned stay pruned.

    Ties are broken by position, as :func:`keep_mask` breaks them.
    """
    keep = keep_mask(slice_scores, k, eligible_slices(prior, dim))
    view = [1] * len(shape)
    view[dim] = shape[dim]
    mask = keep.reshape(view).expand(shape).clone()
    return mask if prior is None else mask & prior


def _what(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} ({brief(value)})"
