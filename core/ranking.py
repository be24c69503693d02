"""Exact, deterministic ranking: which ``k`` entries (or slices) of a score tensor to prune.

Granularities call :func:`keep_mask` rather than ``topk``: it prunes exactly ``k`` eligible entries, the ones
with the lowest scores, and breaks ties by position (the lower flat index is pruned first), so the same scores
always give the same mask on every machine. On tie-free scores its choice equals ``torch.topk``'s.

It selects through one ``kthvalue`` (linear time) instead of a full sort, and touches the entries tied with the
threshold only, so ranking 50 M scores costs a few passes over them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import AmountError, ConfigTypeError, MaskError, brief

__all__ = ["eligible_slices", "keep_mask", "keep_slices", "rankable"]


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
    flat = rankable(scores).reshape(-1)
    if eligible is None:
        return _keep_lowest_pruned(flat, k).reshape(scores.shape)
    flat_eligible = eligible.reshape(-1)
    if bool(flat_eligible.all()):
        return _keep_lowest_pruned(flat, k).reshape(scores.shape)
    index = flat_eligible.nonzero().squeeze(1)
    keep = torch.zeros_like(flat_eligible)
    keep[index] = _keep_lowest_pruned(flat[index], k)
    return keep.reshape(scores.shape)


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


def _keep_lowest_pruned(flat: Tensor, k: int) -> Tensor:
    size = flat.numel()
    if not 0 <= k <= size:
        raise AmountError(f"cannot prune k={k} of {size} eligible entries; give 0 <= k <= {size}")
    if k == 0:
        return torch.ones(size, dtype=torch.bool, device=flat.device)
    if k == size:
        return torch.zeros(size, dtype=torch.bool, device=flat.device)
    threshold = flat.kthvalue(k).values
    keep = flat > threshold
    # Entries below the threshold are all pruned; among those equal to it, prune the first ones by position
    # until exactly k are pruned. Without ties this is a single entry.
    below = int((flat < threshold).sum())
    tied = (flat == threshold).nonzero().squeeze(1)
    keep[tied[k - below :]] = True
    return keep
