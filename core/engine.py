"""``prune``, ``remove`` and ``restore``: walking a model, checking masks, applying them atomically.

A ``prune`` call computes and checks every mask before it changes anything, then applies them one by one,
undoing the ones already applied if a later one fails: a call that raises leaves the model as it was.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import masking
from .arguments import check_bool, check_callable, check_model
from .auto import run_auto
from .calibration import BlockLoader
from .config import jsonable
from .distributed import count_true
from .errors import (
    ConfigError,
    ConfigTypeError,
    NotPrunedError,
    PluginError,
    PrunusError,
    TargetError,
    brief,
)
from .registration import Registry, registry
from .report import ParameterReport, PruneReport
from .selection import AUTO
from .sequential import (
    allocate,
    needed_statistics,
    prune_calibrated,
    resolve_allocation,
    resolve_reconstruction,
)
from .strategy import PruneContext, Strategy, Target
from .targets import FilterFn, Patterns, listing, select_targets
from .transaction import transaction

__all__ = ["is_pruned", "masks", "prune", "remove", "restore"]


def prune(
    model: nn.Module,
    strategy: Strategy | str,
    /,
    *,
    include: Patterns = None,
    exclude: Patterns = None,
    filter_fn: FilterFn | None = None,
    amounts: Mapping[str, Any] | None = None,
    data: Any = None,
    allocation: Any = None,
    reconstruct: Any = None,
    restorable: bool = True,
    progress: bool = False,
    registry: Registry = registry,
    loader: BlockLoader | None = None,
    **options: Any,
) -> PruneReport:
    """Prune ``model`` in place with ``strategy`` and report what was pruned.

    Args:
        model: the model to prune; changed in place.
        strategy: a strategy from ``registry.get(...)``, or a registered name configured with ``options``, or
            ``"auto"``: the plan :func:`prunus.select` chooses for ``hardware=`` (default ``"auto"``, this
            machine) and ``objective=`` (default ``"latency"``) at ``sparsity=`` (required), carried out in
            place: masks, physical removal of coupled channel groups (``example_inputs=``, or the first batch of
            ``data``, traces the model), sparse formats, and recovery from ``data`` (``recover=``); the report
            records the plan, each step, and the predicted and measured speed-up (``measure=``). A plan that
            would ruin the model is refused with a :class:`~prunus.errors.QualityError` that says what to do.
        include: glob patterns over qualified parameter names (``"fc1.weight"``, ``"blocks.*.weight"``);
            each must match something. Default: the ``weight`` of every Linear and Conv layer.
        exclude: glob patterns of parameters to leave alone; each must match one of the chosen parameters.
        filter_fn: ``filter_fn(module, name) -> bool`` over each parameter's owning module and qualified name,
            to choose parameters by any rule (combined with ``include`` when both are given).
        amounts: per-layer amounts, glob pattern to amount (``{"fc1.weight": 0.5, "conv*.weight": 0.3}``),
            for a strategy given by name that has an ``amount`` option. Each chosen parameter takes the amount
            of the first pattern that matches it; one that no pattern matches takes ``amount=`` if given, and is
            left alone otherwise. Each pattern must match a chosen parameter. A global strategy ranks the
            parameters that share an amount together.
        data: what a data-aware strategy needs. For one that reads calibration statistics (``wanda_*``,
            ``sparsegpt_*``, a reconstruction, an allocation): calibration batches, one batch or an iterable of
            them, each a tensor of inputs (``input_ids``) or a dict of keyword arguments (a tokenizer's output);
            prunus runs them through the model block by block, gathers what the strategy reads, and prunes each
            block from the inputs of the blocks before it, already pruned (see :mod:`prunus.calibration`). A
            :class:`~prunus.statistics.Statistics` table (from :func:`prunus.calibrate`) is used as it is. For
            any other strategy: passed to it unchanged (a loss function, gradients...).
        allocation: split ``amount`` across layers (the blocks of a language model) instead of pruning each
            parameter by the same fraction: a registered allocation name (``"owl"``, ``"uniform"``) or one from
            ``prunus.registry.allocation("owl", ...)``. The entries pruned in total are exactly what ``amount``
            asks of all the chosen parameters together.
        reconstruct: adjust the weights each mask keeps so each layer's output on the calibration data changes
            least: ``None`` (default) does what the strategy does by default (``sparsegpt_*`` reconstructs, the
            others do not), ``True``/``False`` turn it on (``"sparsegpt"``) or off, a name or a
            ``prunus.registry.reconstruction(...)`` chooses one. Works with any strategy's masks.
        restorable: keep the original values of pruned entries so :func:`restore` can put them back (and, after
            a reconstruction, the whole original parameter). ``False`` saves that memory; :func:`remove` still
            works.
        progress: show a progress bar over the blocks while calibrating.
        registry: where to look ``strategy`` up (the global one by default).
        loader: for a strategy that reads calibration statistics, a model whose parameters are on the meta
            device and whose weights a :class:`~prunus.calibration.BlockLoader` brings into memory one block at
            a time, each pruned while it is there (what :func:`prunus.prune_checkpoint` does with ``data=``).
        **options: the strategy's options when ``strategy`` is a name (e.g. ``amount=0.5``).

    Returns:
        A :class:`~prunus.report.PruneReport`.

    Raises:
        UnknownStrategyError, ConfigError: a bad strategy name or option.
        QualityError: ``"auto"`` refused a request that would ruin the model.
        TargetError: a pattern matched nothing, or there is nothing to prune.
        AmountError, MaskError: the options do not fit the chosen parameters.
        CalibrationError: the strategy needs calibration data that is missing or does not run.
        PluginError: a plugin raised, or returned scores or masks that break the contract.

    After the call the parameters stay plain ``nn.Parameter`` objects whose pruned entries are zero: the
    ``state_dict`` keeps its keys, a forward pass costs what the dense one does, and pruned entries stay zero
    through ``optimizer.step()``. A second call prunes among the entries still kept.
    """
    check_model(model)
    check_bool("restorable", restorable)
    check_bool("progress", progress)
    if filter_fn is not None:
        check_callable("filter_fn", filter_fn)
    if amounts is not None and not isinstance(amounts, Mapping):
        raise ConfigTypeError(
            f"amounts must map glob patterns to amounts, e.g. {{'fc1.weight': 0.5}}, not "
            f"{type(amounts).__name__} ({brief(amounts)})"
        )
    if not isinstance(registry, Registry):
        raise ConfigTypeError(f"registry must be a prunus.Registry, not {type(registry).__name__}")
    # Held from reading the earlier masks to attaching the new ones, so another thread's prune of the same
    # model cannot slip in between (masks compose, restore stays exact).
    with masking.MASK_LOCK:
        return _prune(
            model,
            strategy,
            include=include,
            exclude=exclude,
            filter_fn=filter_fn,
            amounts=amounts,
            data=data,
            allocation=allocation,
            reconstruct=reconstruct,
            restorable=restorable,
            progress=progress,
            registry=registry,
            loader=loader,
            options=options,
        )


def _prune(
    model: nn.Module,
    strategy: Strategy | str,
    *,
    include: Patterns,
    exclude: Patterns,
    filter_fn: FilterFn | None,
    amounts: Mapping[str, Any] | None,
    data: Any,
    allocation: Any,
    reconstruct: Any,
    restorable: bool,
    progress: bool,
    registry: Registry,
    loader: BlockLoader | None,
    options: dict[str, Any],
) -> PruneReport:
    if isinstance(strategy, str) and strategy == AUTO:
        if loader is not None:
            raise ConfigError(
                "'auto' plans on a model in memory; it cannot prune blocks loaded one at a time"
            )
        if amounts is not None:
            raise ConfigError("amounts= cannot be combined with 'auto'; prune with a strategy name")
        return run_auto(
            model,
            options,
            include=include,
            exclude=exclude,
            filter_fn=filter_fn,
            data=data,
            restorable=restorable,
            registry=registry,
        )
    per_layer: dict[str, Strategy] | None = None
    if amounts is not None:
        if not isinstance(strategy, str):
            raise ConfigError(
                "amounts= needs the strategy's registered name (e.g. prune(model, 'l1_unstructured', "
                "amounts={...})), not an already configured strategy"
            )
        chosen = select_targets(model, include=include, exclude=exclude, filter_fn=filter_fn)
        per_layer = _per_layer(
            strategy, [name for name, _, _ in chosen], amounts, options, registry
        )
        default = options["amount"] if "amount" in options else next(iter(amounts.values()))
        strategy = registry.get(strategy, **{**options, "amount": default})
        options_report = {**jsonable(strategy.options), "amounts": jsonable(dict(amounts))}
        if "amount" not in options:
            del options_report["amount"]
    elif isinstance(strategy, str):
        strategy = registry.get(strategy, **options)
    elif not isinstance(strategy, Strategy):
        raise ConfigTypeError(
            f"strategy must be a registered name (see prunus.registry.names()) or a Strategy from "
            f"prunus.registry.get(), not {type(strategy).__name__} ({brief(strategy)})"
        )
    elif options:
        raise ConfigError(
            f"options {sorted(options)} were given with an already configured strategy {strategy.name!r}; "
            f"configure it in registry.get({strategy.name!r}, ...) or pass its name instead"
        )

    if per_layer is None:
        chosen = select_targets(model, include=include, exclude=exclude, filter_fn=filter_fn)
        options_report = jsonable(strategy.options)
    else:
        chosen = [c for c in chosen if c[0] in per_layer]
    targets = [
        Target(name, module, pname, masking.follow_sharding(module, pname))
        for name, module, pname in chosen
    ]
    strategies = [strategy] if per_layer is None else _distinct(per_layer.values())
    reconstruction = resolve_reconstruction(reconstruct, strategies, registry)
    allocator = resolve_allocation(allocation, registry)
    if allocator is not None:
        if per_layer is not None:
            raise ConfigError(
                "amounts= and allocation= both set the amount of each layer; give one of them"
            )
        per_layer = allocate(
            allocator,
            strategy,
            model,
            targets,
            data,
            registry,
            show_progress=progress,
            loader=loader,
        )
        strategies = _distinct(per_layer.values())
        options_report["allocation"] = {"name": allocator.name, **jsonable(allocator.options)}
    if reconstruction is not None:
        options_report["reconstruct"] = {
            "name": reconstruction.name,
            **jsonable(reconstruction.options),
        }

    # A reconstruction runs block by block on the data even when it reads no statistic of its own.
    if needed_statistics(strategies, reconstruction) or reconstruction is not None:
        plan = {t.name: strategy if per_layer is None else per_layer[t.name] for t in targets}
        try:
            done = prune_calibrated(
                model,
                targets,
                plan,
                data,
                restorable=restorable,
                reconstruction=reconstruction,
                registry=registry,
                compute=_compute,
                show_progress=progress,
                loader=loader,
            )
        except PrunusError:
            raise
        except Exception as error:
            raise PluginError(
                f"pruning with strategy {strategy.name!r} on calibration data failed: "
                f"{type(error).__name__}: {error}; the model was left as it was"
            ) from error
        pruned = {name: counts[0] for name, counts in done.items()}
        newly = {name: counts[1] for name, counts in done.items()}
    elif loader is not None:
        raise ConfigError(
            f"strategy {strategy.name!r} reads no calibration statistics, so there is nothing to calibrate in a "
            "model whose blocks are loaded one at a time (prune_checkpoint with data=): drop data=, or use a "
            "data-aware strategy (wanda_*, sparsegpt_*)"
        )
    else:
        pruned, newly = _prune_at_once(
            model, strategy, targets, per_layer, data, restorable, registry
        )

    return PruneReport(
        strategy=strategy.name,
        options=options_report,
        parameters=[
            ParameterReport(
                name=t.name,
                shape=tuple(t.tensor.shape),
                numel=t.tensor.numel(),
                pruned=pruned[t.name],
                newly_pruned=newly[t.name],
            )
            for t in targets
            if t.name in newly
        ],
        model_numel=sum(p.numel() for p in model.parameters()),
    )


def _distinct(strategies: Iterable[Strategy]) -> list[Strategy]:
    return list({id(s): s for s in strategies}.values())


def _prune_at_once(
    model: nn.Module,
    strategy: Strategy,
    targets: list[Target],
    per_layer: dict[str, Strategy] | None,
    data: Any,
    restorable: bool,
    registry: Registry,
) -> tuple[dict[str, int], dict[str, int]]:
    """Compute every mask, then apply them all (the path of strategies that need no calibration)."""
    context = PruneContext(model=model, targets=targets, data=data, restorable=restorable)
    if per_layer is None:
        computed = _compute(strategy, context, registry)
    else:
        computed = {}
        for layer_strategy in _distinct(per_layer.values()):
            group = [t for t in targets if per_layer[t.name] is layer_strategy]
            computed.update(
                _compute(
                    layer_strategy,
                    PruneContext(
                        model=model,
                        targets=group,
                        data=data,
                        restorable=restorable,
                        extras=context.extras,
                    ),
                    registry,
                )
            )
        computed = {t.name: computed[t.name] for t in targets if t.name in computed}
    newly: dict[str, int] = {}
    pruned: dict[str, int] = {}
    try:
        with transaction() as tx:
            for target in targets:
                mask = computed.get(target.name)
                if mask is None:
                    continue
                before = _count_pruned(target.prior) if target.prior is not None else 0
                tx.record(registry.hooks.apply_mask(target, mask, restorable, context))
                pruned[target.name] = _count_pruned(mask)
                newly[target.name] = pruned[target.name] - before
    except PluginError as error:
        raise PluginError(
            f"applying the masks of {registry.blame(strategy)} failed: {error}; the model was left as it was"
        ) from error
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"applying the masks of {registry.blame(strategy)} failed: {type(error).__name__}: {error}; "
            "the model was left as it was"
        ) from error
    return pruned, newly


def _count_pruned(mask: Tensor) -> int:
    # One counting pass (of the whole mask when it is sharded); (~mask).sum() allocates and sums through int64.
    return mask.numel() - count_true(mask)


def _per_layer(
    name: str,
    chosen: Sequence[str],
    amounts: Mapping[str, Any],
    options: dict[str, Any],
    registry: Registry,
) -> dict[str, Strategy]:
    """The strategy of each chosen parameter under per-layer ``amounts`` (one strategy per distinct amount)."""
    if not isinstance(amounts, Mapping) or not all(isinstance(k, str) for k in amounts):
        raise ConfigError(
            f"amounts must map glob patterns to amounts, e.g. {{'fc1.weight': 0.5}}, not {amounts!r:.80}"
        )
    if "amount" not in registry.info(name).config.model_fields:
        raise ConfigError(
            f"strategy {name!r} has no 'amount' option, so it cannot take per-layer amounts; "
            f"its options: {', '.join(registry.info(name).config.model_fields) or '(none)'}"
        )
    if not amounts and "amount" not in options:
        raise ConfigError("amounts is empty; give at least one pattern, or amount= for every layer")
    for pattern in amounts:
        if not fnmatch.filter(chosen, pattern):
            raise TargetError(
                f"amounts pattern {pattern!r} matches none of the parameters chosen for pruning: "
                f"{listing(chosen)}"
            )
    base = {k: v for k, v in options.items() if k != "amount"}
    built: dict[tuple[type, str], Strategy] = {}
    out: dict[str, Strategy] = {}
    for target in chosen:
        match = next((p for p in amounts if fnmatch.fnmatchcase(target, p)), None)
        if match is None and "amount" not in options:
            continue
        amount = options["amount"] if match is None else amounts[match]
        key = (type(amount), repr(amount))
        if key not in built:
            try:
                built[key] = registry.get(name, **base, amount=amount)
            except ConfigError as error:
                where = "amount=" if match is None else f"amounts[{match!r}]"
                raise type(error)(f"{where}: {error}") from None
        out[target] = built[key]
    return out


def _compute(strategy: Strategy, context: PruneContext, registry: Registry) -> dict[str, Tensor]:
    """Run the strategy and check every mask it returns, without touching the model."""
    try:
        # Not under no_grad: a data-aware criterion may run a forward and backward pass to score.
        computed = strategy.compute_masks(context)
    except PluginError as error:
        # Already names the plugin at fault (a criterion, a scoring hook): say which strategy it served.
        raise PluginError(
            f"strategy {strategy.name!r}: {error}; the model was not changed"
        ) from error
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"{registry.blame(strategy)} raised {type(error).__name__}: {error}; "
            "the model was not changed"
        ) from error
    owner = registry.blame(strategy)
    if not isinstance(computed, dict):
        raise PluginError(
            f"{owner} returned {type(computed).__name__}; "
            "compute_masks must return a dict of parameter name to bool mask"
        )
    by_name = {t.name: t for t in context.targets}
    for name, mask in computed.items():
        target = by_name.get(name)
        if target is None:
            raise PluginError(
                f"{owner} returned a mask for {brief(name)}, which is not being pruned; "
                f"targets: {listing(list(by_name))}"
            )
        _check_mask(owner, target, mask)
    return {name: computed[name] for name in by_name if name in computed}


def _check_mask(owner: str, target: Target, mask: object) -> None:
    tensor = target.tensor
    if not isinstance(mask, Tensor):
        raise PluginError(
            f"{owner}: the mask for {target.name!r} is a {type(mask).__name__}, not a Tensor"
        )
    if mask.dtype != torch.bool:
        raise PluginError(
            f"{owner}: the mask for {target.name!r} has dtype {mask.dtype}; masks must be torch.bool "
            "(True keeps an entry)"
        )
    if mask.shape != tensor.shape:
        raise PluginError(
            f"{owner}: the mask for {target.name!r} has shape {tuple(mask.shape)}, "
            f"the parameter {tuple(tensor.shape)}"
        )
    if mask.device != tensor.device:
        raise PluginError(
            f"{owner}: the mask for {target.name!r} is on {mask.device}, the parameter on {tensor.device}"
        )
    if target.prior is not None:
        revived = count_true(mask & ~target.prior)
        if revived:
            raise PluginError(
                f"{owner}: the mask for {target.name!r} revives {revived} entries an earlier prune removed; "
                "a strategy must prune among the entries still kept (target.prior)"
            )


def is_pruned(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` carries a prunus mask."""
    check_model(model)
    return next(masking.masked_parameters(model), None) is not None


def masks(model: nn.Module) -> dict[str, Tensor]:
    """The keep-mask of every pruned parameter, by qualified name (the tensors themselves: do not modify)."""
    check_model(model)
    out = {}
    for name, module, pname in masking.masked_parameters(model):
        mask = masking.get_mask(module, pname)
        assert mask is not None
        out[name] = mask
    return out


def remove(model: nn.Module) -> list[str]:
    """Make the pruning permanent: plain parameters with their zeros, no masks or saved values left.

    Returns the names of the parameters it made permanent.

    Raises:
        NotPrunedError: nothing in ``model`` is pruned.
    """
    with masking.MASK_LOCK:
        pruned = _pruned_or_raise(model, "remove")
        for _, module, pname in pruned:
            masking.remove_parameter(module, pname)
        return [name for name, _, _ in pruned]


def restore(model: nn.Module) -> list[str]:
    """Put the original value of every pruned entry back, bit for bit, and drop the masks.

    Entries that were kept keep their current values (the originals, unless they were trained since).
    Returns the names of the restored parameters.

    Raises:
        NotPrunedError: nothing in ``model`` is pruned, or it was pruned with ``restorable=False``
            (then nothing is changed).
    """
    with masking.MASK_LOCK:
        pruned = _pruned_or_raise(model, "restore")
        for name, module, pname in pruned:
            if not masking.is_restorable(module, pname):
                raise NotPrunedError(
                    f"{name!r} was pruned with restorable=False, so its original values were not kept; "
                    "nothing was restored. Use prunus.remove() to make the pruning permanent"
                )
        for _, module, pname in pruned:
            masking.restore_parameter(module, pname)
        return [name for name, _, _ in pruned]


def _pruned_or_raise(model: nn.Module, verb: str) -> list[tuple[str, nn.Module, str]]:
    check_model(model)
    pruned = list(masking.masked_parameters(model))
    if not pruned:
        raise NotPrunedError(
            f"{verb}: {type(model).__name__} has no pruned parameters (prune it with prunus.prune first)"
        )
    return pruned
