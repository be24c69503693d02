"""Surgery: masks for the chosen channels, or their removal, with constants folded into the next layers.

Removal goes through Torch-Pruning's pruning functions (its group for groups it coupled; one call per layer for
groups prunus coupled, such as attention heads), which shrink each layer's parameters, buffers and size
attributes together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import ShrinkError
from ..forward import call_model
from ..transaction import ModuleSnapshot
from .groups import Group, Slice
from .tracing import Traced, is_conv1d

__all__ = ["fold_constants", "group_masks", "keep_requires_grad", "remove"]


def group_masks(
    groups: list[Group], removed: list[list[int]]
) -> dict[tuple[int, str], tuple[nn.Module, str, Tensor]]:
    """Keep-masks that zero every coupled parameter slice of the removed channels (combined with earlier masks)."""
    masks: dict[tuple[int, str], tuple[nn.Module, str, Tensor]] = {}
    for g, units in zip(groups, removed, strict=True):
        channels = {c for u in units for c in g.units[u]}
        if not channels:
            continue
        for s in g.slices:
            param = getattr(s.module, s.param)
            key = (id(s.module), s.param)
            if key not in masks:
                prior = masking.get_mask(s.module, s.param)
                keep = (
                    prior.clone() if prior is not None else torch.ones_like(param, dtype=torch.bool)
                )
                masks[key] = (s.module, s.param, keep)
            keep = masks[key][2]
            dim = s.dim % param.dim()
            hits = [j for j, root in enumerate(s.roots) if root in channels]
            if s.rows is None:
                index = torch.tensor(
                    [s.index[j] for j in hits], dtype=torch.long, device=keep.device
                )
                keep.index_fill_(dim, index, False)
            else:
                for j in hits:
                    start, stop = s.rows[j]
                    keep[start:stop].select(1, s.index[j]).fill_(False)
    return masks


def remove(traced: Traced, group: Group, channels: Sequence[int]) -> None:
    """Remove ``channels`` (root channel indices) of ``group`` from every layer they touch."""
    if not channels:
        return
    if group.handler is None:  # coupled by prunus: one pruning call per layer
        wanted = set(channels)
        for removal in group.removals:
            index = sorted(
                {i for i, r in zip(removal.index, removal.roots, strict=True) if r in wanted}
            )
            if index:
                removal.handler(removal.module, index)
        return
    tp_group = traced.graph.get_pruning_group(group.root, group.handler, list(channels))
    if not traced.graph.check_pruning_group(tp_group):
        raise ShrinkError(
            f"removing {len(channels)} channels of {group.name!r} would empty a layer"
        )
    tp_group.prune(record_history=False)


def _reads(module: nn.Module, s: Slice) -> int | None:
    """The dim of ``module``'s input that holds the channels ``s`` indexes, or ``None`` if not foldable."""
    if s.rows is not None or s.param != "weight":
        return None
    if isinstance(module, nn.Linear) or is_conv1d(module):
        return -1
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and module.groups == 1:
        return 1
    return None


def fold_constants(
    model: nn.Module, example_inputs: Any, groups: list[Group], fold: list[set[int]]
) -> list[str | None]:
    """Fold the channels in ``fold`` (per group, root channels about to be removed) into the next layers' biases.

    A channel whose producer weights are zero still carries ``f(bias)`` (its bias through the activations and
    norms that follow); removing it without folding shifts every output. The value each consumer receives is
    measured on ``example_inputs``; where it is the same at every position, ``weight[:, channel] * value`` is
    added to the consumer's bias (a new Parameter: the transaction's snapshot undoes it). Returns a note per
    group: what was folded, and what could not be.
    """
    wanted: dict[int, tuple[nn.Module, int, set[int]]] = {}
    for g, channels in zip(groups, fold, strict=True):
        for s in g.slices:
            if s.producer or not s.weight or not channels:
                continue
            dim = _reads(s.module, s)
            if dim is None:
                continue
            cols = {s.index[j] for j, r in enumerate(s.roots) if r in channels}
            entry = wanted.setdefault(id(s.module), (s.module, dim, set()))
            entry[2].update(cols)
    stats: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def record(module: nn.Module, args: Any) -> None:
        if not args or not isinstance(args[0], Tensor):
            return
        _, dim, _ = wanted[id(module)]
        x = args[0].detach().double()
        x = x.movedim(dim, -1).reshape(-1, x.shape[dim])
        low, high, total = x.min(0).values, x.max(0).values, x.mean(0)
        if id(module) in stats:
            old = stats[id(module)]
            low, high = torch.minimum(low, old[0]), torch.maximum(high, old[1])
            total = (total + old[2]) / 2
        stats[id(module)] = (low, high, total)

    handles = [m.register_forward_pre_hook(record) for m, _, _ in wanted.values()]
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    folded: dict[int, int] = {}
    varying: dict[int, int] = {}
    for key, (module, _, cols) in wanted.items():
        if key not in stats:
            continue
        low, high, mean = stats[key]
        index = torch.tensor(sorted(cols), dtype=torch.long)
        spread = (high[index] - low[index]).abs()
        scale = torch.maximum(high[index].abs(), low[index].abs()).clamp_min(1.0)
        constant = spread <= 1e-6 * scale
        value = torch.where(constant, mean[index], torch.zeros_like(mean[index]))
        folded[key] = int((constant & (value != 0)).sum())
        varying[key] = int((~constant).sum())
        if not bool((value != 0).any()):
            continue
        weight = module.get_parameter("weight").detach()
        if is_conv1d(module):
            shift = (weight[index].double() * value[:, None]).sum(0)
        else:
            w = weight.index_select(1, index).double()
            shift = (
                (w.sum(dim=tuple(range(2, w.dim()))) * value).sum(1) if w.dim() > 2 else w @ value
            )
        bias = getattr(module, "bias", None)
        base = bias.detach() if bias is not None else torch.zeros(shift.shape, dtype=weight.dtype)
        module.bias = nn.Parameter(
            (base.double() + shift).to(weight.dtype).to(weight.device),
            requires_grad=bias.requires_grad if bias is not None else weight.requires_grad,
        )
    notes: list[str | None] = []
    names = {id(m): n for n, m in model.named_modules()}
    for g, channels in zip(groups, fold, strict=True):
        parts = []
        modules = {id(s.module) for s in g.slices if not s.producer and s.weight}
        done = sum(folded.get(k, 0) for k in modules)
        vary = sum(varying.get(k, 0) for k in modules)
        if channels and done:
            parts.append(f"{done} constant inputs folded into the next layers' biases")
        if channels and vary:
            layers = ", ".join(sorted(names.get(k, "?") for k in modules if varying.get(k)))
            parts.append(
                f"{vary} silent channels reach {layers} as values that vary (their biases pass through a "
                "non-linear or mixing op): dropped, the outputs change"
            )
        notes.append("; ".join(parts) or None)
    return notes


def keep_requires_grad(snapshot: ModuleSnapshot) -> None:
    """Torch-Pruning makes new Parameters that always require grad: carry the old flag over."""
    for module, state in snapshot.states:
        for name, old in state["_parameters"].items():
            new = module._parameters.get(name)
            if old is not None and new is not None and new is not old:
                new.requires_grad_(old.requires_grad)
