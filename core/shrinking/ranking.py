"""Ranking: which units of each group to remove, scored by any registered criterion.

A unit scores the sum, over its channels and their weight slices (producers' rows and consumers' columns), of
the criterion's ``reduce`` of its scores. The scores come through the ``prunus_score`` hook with the call's
``data`` in the context, so a data-aware criterion (activations, gradients from calibration data) ranks heads
and neurons exactly as a magnitude one does: it scores the weights it is handed, and shrink adds them up.

``<criterion>_global`` ranks every group's units together; any granularity with a ``slices_to_prune(asked,
size)`` rule (``structured``, ``aligned`` and third-party subclasses) ranks each group on its own and rounds the
count its way: ``aligned`` keeps a multiple of ``round_to`` units per group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..config import count_to_prune
from ..errors import AmountError, ConfigError
from ..registration import Registry
from ..strategy import Criterion, PruneContext, Target, checked_scores
from .groups import Group
from .planning import per_root

__all__ = ["Ranking", "choose", "ranking_of", "scores"]


@dataclass
class Ranking:
    """A strategy read for shrinking: its criterion, whether it ranks globally, its amount and rounding rule."""

    criterion: Criterion
    global_ranking: bool
    amount: int | float
    rounding: Callable[[int, int], int] | None


def ranking_of(strategy: str, options: dict[str, Any], registry: Registry) -> Ranking:
    """The ranking of ``<criterion>_<granularity>``: its granularity must rank slices or rank globally."""
    if not isinstance(strategy, str):
        raise ConfigError(
            f"strategy must be a registered '<criterion>_structured', '<criterion>_aligned' or "
            f"'<criterion>_global' name, not {type(strategy).__name__}"
        )
    info = registry.info(strategy)
    if "dim" in options:
        raise ConfigError(
            "shrink prunes the output channels of each group of coupled layers; it takes no dim option"
        )
    criterion_name = info.criterion
    configured = registry.get(strategy, **options) if criterion_name is not None else None
    component = getattr(configured, "granularity_component", None)
    rounding = getattr(component, "slices_to_prune", None)
    if (
        configured is None
        or criterion_name is None
        or (info.granularity != "global" and rounding is None)
    ):
        raise ConfigError(
            f"shrink ranks channels with a criterion: give '<criterion>_structured' (a ranking per group of "
            f"coupled channels), '<criterion>_aligned' (the same, keeping a multiple of round_to) or "
            f"'<criterion>_global' (one ranking across groups), not {strategy!r} ({info.granularity}); "
            f"criteria: {', '.join(registry.criteria())}"
        )
    values = dict(configured.config)
    amount = values.pop("amount")
    # The granularity's own options (shrink has its own min_keep: channels of a group, not entries).
    for key in ("dim", "round_to", "min_keep"):
        values.pop(key, None)
    criterion = registry.criterion(criterion_name, **values)
    return Ranking(
        criterion,
        info.granularity == "global",
        amount,
        None if info.granularity == "global" else rounding,
    )


def scores(
    groups: list[Group],
    criterion: Criterion,
    context: PruneContext,
    registry: Registry,
    owner: str,
) -> list[Tensor]:
    """Per group, the score of each unit: the sum over its channels' weight slices of the criterion's reduce."""
    names = {id(m): n for n, m in context.model.named_modules()}
    cache: dict[tuple[int, str], Tensor] = {}

    def scores_of(module: nn.Module, param: str) -> Tensor:
        key = (id(module), param)
        if key not in cache:
            prefix = names.get(id(module), "")
            target = Target(
                f"{prefix}.{param}" if prefix else param,
                module,
                param,
                masking.get_mask(module, param),
            )
            raw = registry.hooks.score(criterion, target, context)
            cache[key] = checked_scores(raw, target, owner)
        return cache[key]

    out = []
    for g in groups:
        per_channel = torch.zeros(g.channels, dtype=torch.float64)
        if g.left is None:
            for s in g.slices:
                if not s.weight:
                    continue
                reduced = per_root(s, scores_of(s.module, s.param), criterion.reduce)
                per_channel.index_add_(
                    0, torch.tensor(s.roots, dtype=torch.long), reduced.detach().double().cpu()
                )
        out.append(per_channel[g.unit_index()].sum(dim=1) if g.units else per_channel[:0])
    return out


def _limits(min_keep: int, max_layer_sparsity: float | None) -> str:
    return f"min_keep={min_keep}" + (
        f" and max_layer_sparsity={max_layer_sparsity}" if max_layer_sparsity is not None else ""
    )


def choose(
    groups: list[Group],
    unit_scores: list[Tensor],
    dead: list[dict[str, list[int]]],
    ranking: Ranking,
    min_keep: int,
    max_layer_sparsity: float | None,
) -> tuple[list[list[int]], list[str | None]]:
    """Which units of each group to remove (the dead ones plus the ``amount`` lowest-scored live ones), and for
    each group left whole although it could be pruned, why (e.g. the amount rounds to no unit)."""
    dead_sets = [{u for units in d.values() for u in units} for d in dead]
    live = [
        [u for u in range(len(g.units)) if u not in dead_sets[i]] if g.left is None else []
        for i, g in enumerate(groups)
    ]
    caps = []
    for i, g in enumerate(groups):
        units = len(g.units)
        cap = max(len(live[i]) - max(min_keep, 0), 0)
        if max_layer_sparsity is not None:
            cap = min(cap, max(math.floor(max_layer_sparsity * units) - (units - len(live[i])), 0))
        caps.append(cap)
    chosen: list[list[int]] = [
        sorted(d) if g.left is None else [] for g, d in zip(groups, dead_sets, strict=True)
    ]
    why: list[str | None] = [None] * len(groups)
    amount = ranking.amount
    if ranking.global_ranking:
        pool = [(float(unit_scores[i][u]), i, u) for i in range(len(groups)) for u in live[i]]
        k = count_to_prune(amount, len(pool), what="live channel units across all groups")
        if k > sum(caps):
            raise AmountError(
                f"amount={amount!r} asks to remove {k} channel units, but {_limits(min_keep, max_layer_sparsity)}"
                f" allow at most {sum(caps)}; lower amount or relax the limits"
            )
        if k == 0:
            rounds = f"amount={amount!r} of {len(pool)} live units across all groups rounds to none"
            return chosen, [
                rounds if g.left is None and not c else None
                for g, c in zip(groups, chosen, strict=True)
            ]
        taken = [0] * len(groups)
        # Lowest score first; ties go to the earlier group and unit (positional, as prunus ranks everywhere).
        for _, i, u in sorted(pool):
            if k == 0:
                break
            if taken[i] < caps[i]:
                chosen[i].append(u)
                taken[i] += 1
                k -= 1
        return chosen, why
    for i, g in enumerate(groups):
        if g.left is not None or not live[i]:
            continue
        asked = count_to_prune(amount, len(live[i]), what=f"live channel units of group {g.name!r}")
        k = asked
        if ranking.rounding is not None:
            # The rule rounds widths: count in channels, then back to whole units.
            pruned = ranking.rounding(asked * g.unit, len(live[i]) * g.unit)
            k = min(round(pruned / g.unit), len(live[i]))
        if k > caps[i]:
            raise AmountError(
                f"amount={amount!r} asks to remove {k} of the {len(live[i])} live units of {g.name!r}, but "
                f"{_limits(min_keep, max_layer_sparsity)} allow at most {caps[i]}; lower amount or relax the limits"
            )
        if k == 0:
            if not chosen[i]:
                unit = f" (units of {g.unit} channels)" if g.unit > 1 else ""
                why[i] = f"amount={amount!r} of its {len(live[i])} live units{unit} rounds to none"
            continue
        values = unit_scores[i][live[i]]
        order = sorted(range(len(live[i])), key=lambda j: (float(values[j]), j))
        chosen[i].extend(live[i][j] for j in order[:k])
    return chosen, why
