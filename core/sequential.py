"""Pruning with calibration data: block by block, with a weight reconstruction and a budget split across layers.

``prune`` comes here when its strategy, its reconstruction or its allocation reads calibration statistics
(``statistics`` on the criterion, the :class:`~prunus.Reconstruction` or the :class:`~prunus.Allocation`).

* :func:`allocate` turns one amount into one per parameter: the allocation measures each layer (a block of the
  model's stack) on the unpruned model, in a first calibration pass if it reads statistics, and proposes a
  fraction per layer; :func:`prunus.allocation.exact_counts` makes the total exactly the asked budget.
* :func:`prune_calibrated` walks the model with :func:`prunus.calibration.calibration_pass`: for each block it
  computes the masks of the block's parameters from their statistics, runs the reconstruction on each, and puts
  masks and new values on the model at once, so the next block is calibrated on this one's pruned output. A
  strategy whose masks depend on several parameters at once (a global ranking) is not separable: its
  statistics are gathered on the unpruned model in the same block-by-block pass, and the masks computed once at
  the end.

Everything happens inside one :func:`~prunus.transaction.transaction`: if any block fails, every block already
pruned is put back as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from . import masking
from .allocation import Allocation, Layer, exact_counts
from .calibration import BlockLoader, Unit, batches_of, calibration_pass, group_by_block
from .config import count_to_prune
from .errors import ConfigError, ConfigTypeError, PluginError, PrunusError, brief
from .reconstruction import Reconstruction
from .registration import Registry
from .statistics import Statistic, Statistics
from .strategy import ComposedStrategy, PruneContext, Strategy, Target
from .transaction import Transaction, transaction

__all__ = [
    "Compute",
    "allocate",
    "needed_statistics",
    "prune_calibrated",
    "resolve_allocation",
    "resolve_reconstruction",
]

Compute = Callable[[Strategy, PruneContext, Registry], dict[str, Tensor]]
"""Runs a strategy on a context and checks its masks (the engine's own)."""


def needed_statistics(
    strategies: Sequence[Strategy], *extra: Reconstruction | Allocation | None
) -> list[type[Statistic]]:
    """The statistics the strategies and the reconstruction or allocation read, each once, in order."""
    kinds: dict[type[Statistic], None] = {}
    for strategy in strategies:
        kinds.update(dict.fromkeys(strategy.statistics))
    for component in extra:
        if component is not None:
            kinds.update(dict.fromkeys(component.statistics))
    return list(kinds)


def resolve_reconstruction(
    reconstruct: Any, strategies: Sequence[Strategy], registry: Registry
) -> Reconstruction | None:
    """What ``prune(..., reconstruct=...)`` asks for.

    ``None``: the strategy's own default (SparseGPT's criterion reconstructs; the others do not); ``False``:
    none; ``True``: the strategy's default, else ``sparsegpt``; a name: that registered reconstruction; a
    :class:`~prunus.Reconstruction`: itself.
    """
    if isinstance(reconstruct, Reconstruction):
        return reconstruct
    defaults = {s.reconstruction[0]: s.reconstruction for s in strategies if s.reconstruction}
    if reconstruct is None or reconstruct is True:
        if len(defaults) > 1:
            raise ConfigError(
                f"the strategies reconstruct differently ({', '.join(defaults)}); choose one with reconstruct="
            )
        if defaults:
            name, options = next(iter(defaults.values()))
            return registry.reconstruction(name, **options)
        return registry.reconstruction("sparsegpt") if reconstruct is True else None
    if reconstruct is False:
        return None
    if isinstance(reconstruct, str):
        default = defaults.get(reconstruct)
        return registry.reconstruction(reconstruct, **(default[1] if default else {}))
    raise ConfigTypeError(
        f"reconstruct={brief(reconstruct)} must be True, False, None (the strategy's default), a registered "
        f"reconstruction name ({', '.join(registry.reconstructions()) or 'none'}) or a prunus.Reconstruction"
    )


def resolve_allocation(allocation: Any, registry: Registry) -> Allocation | None:
    """What ``prune(..., allocation=...)`` asks for: ``None``, a registered name, or an :class:`Allocation`."""
    if allocation is None or isinstance(allocation, Allocation):
        return allocation
    if isinstance(allocation, str):
        return registry.allocation(allocation)
    raise ConfigTypeError(
        f"allocation={brief(allocation)} must be a registered allocation name "
        f"({', '.join(registry.allocations()) or 'none'}) or a prunus.Allocation "
        "(prunus.registry.allocation('owl', ...))"
    )


def allocate(
    allocation: Allocation,
    strategy: Strategy,
    model: nn.Module,
    targets: Sequence[Target],
    data: Any,
    registry: Registry,
    *,
    show_progress: bool = False,
    loader: BlockLoader | None = None,
) -> dict[str, Strategy]:
    """The strategy of each target once ``allocation`` has split the strategy's ``amount`` across layers.

    Layers are the blocks of the model's stack (and each parameter outside it on its own). The counts add up to
    exactly the budget ``amount`` asks of all the targets together; each target gets its count as an amount.

    Raises:
        ConfigError: the strategy has no ``amount`` (N:M sparsity is fixed per group).
    """
    if "amount" not in type(strategy.config).model_fields:
        raise ConfigError(
            f"allocation={allocation.name!r} splits an amount across layers, and strategy "
            f"{strategy.name!r} has none (its options: {', '.join(strategy.options) or 'none'})"
        )
    options = dict(strategy.options)
    sizes = {t.name: _eligible(t) for t in targets}
    groups = _layers(allocation, model, targets, data, show_progress=show_progress, loader=loader)
    layers = [
        Layer(name, sum(sizes[t.name] for t in group), measure) for name, group, measure in groups
    ]
    try:
        fractions = [float(f) for f in allocation.allocate(layers, float(options["amount"]))]
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"allocation {allocation.name!r} raised {type(error).__name__}: {error}"
        ) from error
    if len(fractions) != len(layers):
        raise PluginError(
            f"allocation {allocation.name!r} returned {len(fractions)} fractions for {len(layers)} layers"
        )
    order = [t for _, group, _ in groups for t in group]
    per_target = [f for f, (_, group, _) in zip(fractions, groups, strict=True) for _ in group]
    budget = count_to_prune(options["amount"], sum(sizes.values()), what="entries still kept")
    counts = exact_counts(per_target, [sizes[t.name] for t in order], budget)
    built: dict[float, Strategy] = {}
    plan = {}
    for target, count in zip(order, counts, strict=True):
        amount = count / sizes[target.name] if sizes[target.name] else 0.0
        if amount not in built:
            built[amount] = registry.get(strategy.name, **{**options, "amount": amount})
        plan[target.name] = built[amount]
    return plan


def _eligible(target: Target) -> int:
    if target.prior is None:
        return target.tensor.numel()
    return int(torch.count_nonzero(target.prior))


def _layers(
    allocation: Allocation,
    model: nn.Module,
    targets: Sequence[Target],
    data: Any,
    *,
    show_progress: bool,
    loader: BlockLoader | None,
) -> list[tuple[str, list[Target], float]]:
    """``(name, targets, measure)`` of each layer, measured on the unpruned model."""

    def measured(units: Iterable[Unit]) -> list[tuple[str, list[Target], float]]:
        # Measured as the units come: each unit's statistics live for its own step only.
        out = []
        for unit in units:
            groups = (
                [(unit.name, unit.targets)] if unit.name else [(t.name, [t]) for t in unit.targets]
            )
            for name, group in groups:
                context = PruneContext(
                    model=model, targets=group, data=data, statistics=unit.statistics
                )
                try:
                    value = float(allocation.measure(group, context))
                except PrunusError:
                    raise
                except Exception as error:
                    raise PluginError(
                        f"allocation {allocation.name!r} failed to measure {name!r}: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                out.append((name, group, value))
        return out

    if not allocation.statistics:
        stack, inside, outside = group_by_block(model, targets)
        prefix = f"{stack[0]}." if stack is not None and stack[0] else ""
        units = [Unit(f"{prefix}{i}", inside[i], Statistics()) for i in sorted(inside)]
        return measured([*units, Unit("", outside, Statistics())])
    if isinstance(data, Statistics):
        return measured([Unit("", list(targets), data)])
    passes = calibration_pass(
        model,
        batches_of(data),
        targets,
        allocation.statistics,
        show_progress=show_progress,
        desc=f"measuring ({allocation.name})",
        loader=loader,
        final_visits=False,  # the blocks are pruned in the pass after this one
    )
    with contextlib.closing(passes):
        return measured(passes)


def prune_calibrated(
    model: nn.Module,
    targets: Sequence[Target],
    plan: Mapping[str, Strategy],
    data: Any,
    *,
    restorable: bool,
    reconstruction: Reconstruction | None,
    registry: Registry,
    compute: Compute,
    show_progress: bool = False,
    loader: BlockLoader | None = None,
) -> dict[str, tuple[int, int]]:
    """Prune ``targets`` with calibration data, block by block; returns ``(pruned, newly pruned)`` per target.

    Args:
        model: the model, changed in place (all or nothing).
        targets: the parameters to prune.
        plan: the strategy of each target, by name (one strategy for all, or one per amount).
        data: calibration batches, or a :class:`~prunus.statistics.Statistics` table (then no pass runs).
        restorable: keep what ``restore`` needs.
        reconstruction: run after each mask, or ``None``.
        registry: whose hooks apply the masks.
        compute: runs a strategy on a context and checks its masks.
        show_progress: a progress bar over the blocks.
        loader: loads the model's weights block by block when they are not in memory (see
            :func:`prunus.calibration.calibration_pass`); each block is pruned while it is loaded. Nothing is
            undone on failure then: the blocks already done are gone from memory, and their owner (a streamed
            checkpoint's destination) discards them.

    Raises:
        ConfigError: with ``loader``, a strategy that is not separable (its masks need every block at once).
    """
    strategies = list({id(s): s for s in plan.values()}.values())
    kinds = needed_statistics(strategies, reconstruction)
    separable = all(s.separable for s in strategies)
    if loader is not None and not separable:
        together = next(s.name for s in strategies if not s.separable)
        raise ConfigError(
            f"strategy {together!r} ranks every block together, so it cannot prune a model whose blocks are "
            "loaded one at a time; use a strategy that prunes each block on its own (wanda_unstructured, "
            "wanda_row, sparsegpt_nm..., with allocation='owl' to split the amount across layers), or prune the "
            "model in memory with prunus.prune"
        )
    extras: dict[str, Any] = {}
    done: dict[str, tuple[int, int]] = {}

    def prune_unit(unit: Unit, tx: Any) -> None:
        context = PruneContext(
            model=model,
            targets=unit.targets,
            data=data,
            restorable=restorable,
            extras=extras,
            statistics=unit.statistics,
        )
        masks: dict[str, Tensor] = {}
        for strategy in strategies:
            group = [t for t in unit.targets if plan[t.name] is strategy]
            if group:
                masks.update(compute(strategy, replace(context, targets=group), registry))
        for target in unit.targets:
            mask = masks.get(target.name)
            if mask is None:
                continue
            values = None
            if reconstruction is not None:
                values, mask = _reconstructed(
                    reconstruction, target, mask, _cells(plan[target.name], target, mask), context
                )
            before = 0 if target.prior is None else _pruned(target.prior)
            tx.record(registry.hooks.apply_mask(target, mask, restorable, context))
            if values is not None:
                tx.record(
                    masking.replace_values(
                        target.module, target.param_name, values, restorable=restorable
                    )
                )
            pruned = _pruned(mask)
            done[target.name] = (pruned, pruned - before)

    undone = transaction() if loader is None else contextlib.nullcontext(_Unrecorded())
    with undone as tx, masking.immediate_zeroing():
        if isinstance(data, Statistics):
            prune_unit(Unit("", list(targets), data), tx)
            return done
        passes = calibration_pass(
            model,
            batches_of(data),
            targets,
            kinds,
            show_progress=show_progress,
            desc="pruning",
            loader=loader,
        )
        with contextlib.closing(passes):
            if separable:
                for unit in passes:
                    prune_unit(unit, tx)
                    del unit  # its statistics go before the next block gathers its own
            else:
                gathered = Statistics()
                for unit in passes:
                    gathered = gathered.merged(unit.statistics)
                prune_unit(Unit("", list(targets), gathered), tx)
    return done


class _Unrecorded(Transaction):
    """A transaction that keeps no undo: the blocks a loader releases take their changes with them.

    (Recorded undos would hold every block's masks, and a reconstruction's original weights, until the end.)
    """

    def record(self, undo: Callable[[], None]) -> None:
        del undo


def _pruned(mask: Tensor) -> int:
    return mask.numel() - int(torch.count_nonzero(mask))


def _cells(strategy: Strategy, target: Target, mask: Tensor) -> Tensor | None:
    """The cells within which a reconstruction may move ``mask``: the groups of the strategy's granularity when
    it ranks single entries (``None`` when it prunes slices or tiles whole, declares nothing, or is sharded)."""
    if type(mask) is not Tensor or not isinstance(strategy, ComposedStrategy):
        return None
    partition = strategy.granularity_component.partition(target)
    if partition is None:
        return None
    units = partition.units.reshape(-1)
    if not torch.equal(units, torch.arange(units.numel(), device=units.device)):
        return None
    return partition.groups.to(mask.device)


def _reconstructed(
    reconstruction: Reconstruction,
    target: Target,
    mask: Tensor,
    cells: Tensor | None,
    context: PruneContext,
) -> tuple[Tensor, Tensor]:
    """The reconstruction's new values of ``target`` and its keep-mask, checked."""
    owner = f"reconstruction {reconstruction.name!r}"
    try:
        values, chosen = reconstruction.reconstruct_within(target, mask, cells, context)
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"{owner} raised {type(error).__name__} on {target.name!r}: {error}; the model was left as it was"
        ) from error
    if chosen is not mask:
        _check_moved(owner, target, mask, chosen, cells)
    tensor = target.tensor
    if not isinstance(values, Tensor):
        raise PluginError(
            f"{owner} returned {type(values).__name__} for {target.name!r}, not a Tensor"
        )
    if (
        values.shape != tensor.shape
        or values.dtype != tensor.dtype
        or values.device != tensor.device
    ):
        raise PluginError(
            f"{owner} returned values of shape {tuple(values.shape)}, {values.dtype} on {values.device} for "
            f"{target.name!r}; the parameter is {tuple(tensor.shape)}, {tensor.dtype} on {tensor.device}"
        )
    return values, chosen


def _check_moved(
    owner: str, target: Target, mask: Tensor, chosen: Tensor, cells: Tensor | None
) -> None:
    """A mask a reconstruction chose again keeps the strategy's counts: as many pruned entries in every cell,
    and every entry an earlier call pruned still pruned."""
    if not isinstance(chosen, Tensor) or chosen.dtype != torch.bool or chosen.shape != mask.shape:
        raise PluginError(
            f"{owner} returned a mask that is not a bool tensor of shape {tuple(mask.shape)} for {target.name!r}"
        )
    if cells is None:
        if not torch.equal(chosen, mask):
            raise PluginError(
                f"{owner} moved the mask of {target.name!r}, whose granularity prunes whole slices or tiles "
                "(no cells were given): it must return the mask it was given"
            )
        return
    labels = torch.unique(cells, return_inverse=True)[1].reshape(-1)
    size = int(labels.max()) + 1 if labels.numel() else 0
    before = torch.bincount(labels, weights=(~mask).reshape(-1).double(), minlength=size)
    after = torch.bincount(labels, weights=(~chosen).reshape(-1).double(), minlength=size)
    if not torch.equal(before, after):
        raise PluginError(
            f"{owner} changed how many entries of a cell of {target.name!r} are pruned: a reconstruction may "
            "move the pruned entries within a cell, never change their number"
        )
    if target.prior is not None and bool((chosen & ~target.prior).any()):
        raise PluginError(
            f"{owner} kept entries of {target.name!r} that an earlier prune removed: they must stay pruned"
        )
