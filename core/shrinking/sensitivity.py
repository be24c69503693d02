"""Channel-group sensitivity: what removing part of each group of coupled channels costs, one group at a time.

:func:`channel_sensitivity` traces and ranks the model once, as :func:`prunus.shrink` does, then for each group
and each amount zeroes the channels shrink would remove (every coupled slice: producers' rows and biases, norms,
consumers' columns, exactly what :func:`prunus.prune_channels` masks), calls ``loss(model)``, and puts the
weights back. The model ends bit for bit as it started. The curves say which groups can lose more channels than
others for the same cost; :func:`prunus.prune` with ``"auto"`` turns them into per-group amounts
(``shrink(..., amounts=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..errors import AmountError, ConfigError
from ..registration import Registry, registry
from .channels import Inputs, _prepare, _training_flags, _validate
from .ranking import Ranking, choose
from .surgery import group_masks

__all__ = ["GroupSensitivity", "channel_sensitivity"]


class GroupSensitivity(BaseModel):
    """The cost of removing part of one group of coupled channels.

    Attributes:
        name: the group's name (its root layer, or its attention module): the key of ``shrink(amounts=...)``.
        layers: the layers whose shapes the group changes.
        units: its removable units (channels, heads, key/value groups).
        macs: multiply-accumulates of those layers on the example inputs (what removing the group's channels
            saves a share of).
        amounts: the amounts tried (those ``min_keep`` allows).
        losses: ``loss(model)`` with that amount of the group's units removed, the rest of the model intact.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    layers: list[str]
    units: int
    macs: int
    amounts: list[float]
    losses: list[float]


def channel_sensitivity(
    model: nn.Module,
    example_inputs: Inputs,
    strategy: str,
    loss: Callable[[nn.Module], float],
    amounts: Sequence[float],
    *,
    ignore: str | Sequence[str] | None = None,
    heads: Mapping[str, int] | None = None,
    min_keep: int = 1,
    exact: bool = True,
    normalized: bool | None = None,
    data: Any = None,
    registry: Registry = registry,
    **options: Any,
) -> list[GroupSensitivity]:
    """Remove each group's lowest-ranked units alone at each amount, measure ``loss(model)``, put them back.

    Args:
        model: the model; left exactly as it was.
        example_inputs: what ``model(...)`` takes, to trace the coupling (see :func:`prunus.shrink`).
        strategy: a ``"<criterion>_structured"`` or ``"<criterion>_aligned"`` strategy: its criterion ranks the
            units as ``shrink`` would (with ``options`` such as ``round_to``).
        loss: ``loss(model) -> float``, higher is worse (e.g. the output error against the dense model).
        amounts: fractions of each group's live units to try.

    The other keywords (``ignore``, ``heads``, ``min_keep``, ``exact``, ``normalized``, ``data``, ``registry``)
    are those of :func:`prunus.shrink`.

    Returns:
        One :class:`GroupSensitivity` per group that can lose channels.

    Raises:
        ConfigError: a bad amount, a global strategy, or options ``shrink`` refuses.
    """
    _validate(model, example_inputs, min_keep, None, 0.0)
    if not amounts or any(
        isinstance(a, bool) or not isinstance(a, float) or not 0 < a < 1 for a in amounts
    ):
        raise ConfigError(f"amounts={list(amounts)!r} must be fractions in (0, 1)")
    flags = _training_flags(model)
    try:
        planned = _prepare(
            model,
            example_inputs,
            strategy,
            {**options, "amount": 0},
            ignore=ignore,
            heads=heads,
            exact=exact,
            normalized=normalized,
            min_keep=min_keep,
            max_layer_sparsity=None,
            data=data,
            registry=registry,
            need_masks=False,
        )
    finally:
        for module, training in flags:
            module.training = training
    ranking, unit_scores = planned.ranking, planned.unit_scores
    assert ranking is not None and unit_scores is not None
    if ranking.global_ranking:
        raise ConfigError(
            "channel_sensitivity ranks each group on its own: give a '<criterion>_structured' or "
            f"'<criterion>_aligned' strategy, not {strategy!r}"
        )
    modules = dict(model.named_modules())
    out = []
    for i, group in enumerate(planned.groups):
        if group.left is not None or not group.units:
            continue
        tried: list[float] = []
        losses: list[float] = []
        for amount in sorted(amounts):
            probe = Ranking(ranking.criterion, False, amount, ranking.rounding)
            try:
                removed, _ = choose(
                    [group], [unit_scores[i]], [planned.dead[i]], probe, min_keep, None
                )
            except AmountError:
                break  # min_keep allows no more; larger amounts cannot either
            if not removed[0]:
                continue
            tried.append(amount)
            losses.append(_loss_without(model, group_masks([group], removed), loss))
        if tried:
            out.append(
                GroupSensitivity(
                    name=group.name,
                    layers=list(group.layers),
                    units=len(group.units),
                    macs=sum(
                        planned.traced.module_macs.get(id(modules[name]), 0)
                        for name in group.layers
                        if name in modules
                    ),
                    amounts=tried,
                    losses=losses,
                )
            )
    return out


def _loss_without(
    model: nn.Module,
    masks: dict[tuple[int, str], tuple[nn.Module, str, torch.Tensor]],
    loss: Callable[[nn.Module], float],
) -> float:
    """``loss(model)`` with the masked entries zeroed, then every touched parameter put back bit for bit."""
    saved = []
    try:
        with torch.no_grad():
            for module, pname, keep in masks.values():
                param = getattr(module, pname)
                saved.append((param, param.detach().clone()))
                param.mul_(keep.to(param.dtype))
        return float(loss(model))
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)
