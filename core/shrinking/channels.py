"""Physical structured removal: turn a channel-pruned model into a smaller dense one.

Masks only zero weights; a forward pass still costs what the dense model costs. :func:`shrink` removes the pruned
neurons, conv channels and attention heads for real, keeping every coupled layer consistent: the BatchNorm after a
conv, the next layer's inputs, both branches of a residual add, the slices of a concatenation, grouped and
depthwise convolutions, the query, key, value and output projections of an attention block (whole heads, whole
key/value groups under grouped-query attention). The coupling comes from Torch-Pruning's dependency graph (the
optional ``shrink`` extra: ``pip install 'prunus[shrink]'``) and, for attention, from the block's layout; the
choice of channels comes from prunus: its criteria (third-party ones included, through the registry and the
``prunus_score`` hook), its exact ranking and its masks.

Two ways in, one way out:

* ``shrink(model, example_inputs, "l1_structured", amount=0.5)`` ranks channel groups with a criterion and removes
  the lowest-scored ones in one call.
* ``prune_channels(model, example_inputs, "l1_structured", amount=0.5)`` masks the same channels instead,
  with every coupled parameter (producers' rows and biases, norms, consumers' input columns): the model stays
  dense, restorable and trainable with the masks enforced. A later ``shrink(model, example_inputs)`` removes
  exactly the channels whose coupled weights are all zero, and the smaller model computes what the masked one
  computed (checked on ``example_inputs``).

The work is split by stage: :mod:`~prunus.shrinking.tracing` (the dependency graph), :mod:`~prunus.shrinking.heads`
(attention layouts), :mod:`~prunus.shrinking.planning` (groups of parameter slices, dead channels),
:mod:`~prunus.shrinking.ranking` (criteria and amounts), :mod:`~prunus.shrinking.surgery` (masks, removal,
folding), :mod:`~prunus.shrinking.configs` (Hugging Face configs). A shrunken model is saved as a plain
``state_dict`` plus a small JSON record of its shapes (see :mod:`prunus.shrinking.record`), or, when its config
describes it, with ``save_pretrained``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import masking
from ..arguments import check_model
from ..config import jsonable
from ..errors import (
    ConfigError,
    MissingDependencyError,
    NotPrunedError,
    PluginError,
    PrunusError,
    ShrinkError,
    TargetError,
)
from ..forward import call_model, evaluation_mode, output_tensors
from ..registration import Registry, registry
from ..strategy import PruneContext, Target
from ..targets import glob_patterns
from ..transaction import ModuleSnapshot, transaction
from .configs import hidden_width, update_config
from .groups import Group
from .heads import Attention, find_attention, head_group
from .planning import DEAD_SILENT, check_structured, dead_units, plan
from .ranking import Ranking, choose, ranking_of, scores
from .report import ChannelGroupReport, ShrinkReport
from .surgery import fold_constants, group_masks, keep_requires_grad, remove
from .tracing import MacCounter, Traced, torch_pruning, trace

__all__ = [
    "ChannelGroupReport",
    "MissingDependencyError",
    "ShrinkError",
    "ShrinkReport",
    "prune_channels",
    "shrink",
]

Inputs = Any


@dataclass
class _Plan:
    """What :func:`_prepare` decided: the graph, the groups, and per group the units to remove and why."""

    traced: Traced
    attentions: list[Attention]
    groups: list[Group]
    removed: list[list[int]]
    dead: list[dict[str, list[int]]]
    why: list[str | None]
    amount: int | float | None

    def channels(self, i: int) -> list[int]:
        g = self.groups[i]
        return sorted({c for u in self.removed[i] for c in g.units[u]})

    def reports(self, notes: Sequence[str | None] | None = None) -> list[ChannelGroupReport]:
        out = []
        for i, g in enumerate(self.groups):
            beyond = {
                reason: [c for u in units for c in g.units[u]]
                for reason, units in self.dead[i].items()
            }
            note = notes[i] if notes is not None else None
            if g.normalized is not None and g.left is None and self.removed[i]:
                norms = len({s.module_name for s in g.slices if s.norm})
                others = f" and {norms - 1} more norms" if norms > 1 else ""
                stats = (
                    f"{g.normalized!r}{others} now normalize over {g.channels - len(self.channels(i))} of "
                    f"{g.channels} channels: their statistics (mean, variance or root mean square) change, and "
                    "so do the outputs"
                )
                note = f"{stats}; {note}" if note else stats
            out.append(g.report(self.channels(i), beyond, self.why[i], note))
        return out

    def reason(self) -> str | None:
        """Why nothing was removed, or ``None``."""
        if any(self.removed):
            return None
        if not self.groups:
            return "no Linear, Conv or attention layer was found in the traced pass"
        reasons: dict[str, int] = {}
        for g, why in zip(self.groups, self.why, strict=True):
            text = g.left or why or "nothing to remove"
            reasons[text] = reasons.get(text, 0) + 1
        parts = [f"{count} x {text}" if count > 1 else text for text, count in reasons.items()]
        return f"every group was left whole: {'; '.join(parts)}"


def _validate(
    model: nn.Module,
    example_inputs: Inputs,
    min_keep: int,
    max_layer_sparsity: float | None,
    tolerance: float,
) -> None:
    check_model(model)
    if example_inputs is None:
        raise TargetError(
            "example_inputs is required: a batch the model accepts, used to trace its layers"
        )
    if not isinstance(min_keep, int) or isinstance(min_keep, bool) or min_keep < 0:
        raise ConfigError(f"min_keep={min_keep!r} must be an int >= 0 (units kept in every group)")
    if max_layer_sparsity is not None and not (
        isinstance(max_layer_sparsity, (int, float)) and 0 <= max_layer_sparsity <= 1
    ):
        raise ConfigError(f"max_layer_sparsity={max_layer_sparsity!r} must be a fraction in [0, 1]")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ConfigError(f"tolerance={tolerance!r} must be a number >= 0")


def _prepare(
    model: nn.Module,
    example_inputs: Inputs,
    strategy: str | None,
    options: dict[str, Any],
    *,
    ignore: str | Sequence[str] | None,
    heads: Mapping[str, int] | None,
    exact: bool,
    normalized: bool | None,
    min_keep: int,
    max_layer_sparsity: float | None,
    data: Any,
    registry: Registry,
    need_masks: bool,
) -> _Plan:
    """Trace, plan and rank without changing the model (its training flags excepted, restored by callers)."""
    tp = torch_pruning()
    ranking: Ranking | None = None
    if strategy is not None:
        ranking = ranking_of(strategy, options, registry)
    elif options:
        raise ConfigError(
            f"options {sorted(options)} need a strategy: shrink(model, inputs, 'l1_structured', amount=0.5)"
        )
    elif need_masks:
        raise ConfigError(
            "prune_channels needs a strategy, e.g. prune_channels(model, inputs, 'l1_structured', amount=0.5)"
        )
    if normalized is not None and not isinstance(normalized, bool):
        raise ConfigError(
            f"normalized={normalized!r} must be True, False or None (then: not exact)"
        )
    patterns = glob_patterns("ignore", ignore)
    attentions = find_attention(model)
    cut = [m for a in attentions for m in a.cut]
    traced = trace(model, example_inputs, cut)
    groups = plan(
        model,
        traced,
        tp,
        ignore=patterns,
        heads=dict(heads or {}),
        normalized=(not exact) if normalized is None else normalized,
        skip_roots={id(m) for m in cut},
    )
    groups += [head_group(a, tp.pruner.function, traced.conv1d, patterns) for a in attentions]
    if strategy is None:
        check_structured(model, groups)
    dead = [dead_units(g, exact) for g in groups]
    if ranking is None:
        removed = [sorted(u for units in d.values() for u in units) for d in dead]
        why: list[str | None] = [None] * len(groups)
        return _Plan(traced, attentions, groups, removed, dead, why, None)
    context = PruneContext(model=model, targets=[], data=data)
    try:
        with torch.no_grad():
            unit_scores = scores(groups, ranking.criterion, context, registry, strategy or "shrink")
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"criterion {ranking.criterion.name!r} raised {type(error).__name__}: {error}; the model was not "
            "changed"
        ) from error
    removed, why = choose(groups, unit_scores, dead, ranking, min_keep, max_layer_sparsity)
    return _Plan(traced, attentions, groups, removed, dead, why, ranking.amount)


def prune_channels(
    model: nn.Module,
    example_inputs: Inputs,
    strategy: str,
    /,
    *,
    ignore: str | Sequence[str] | None = None,
    heads: Mapping[str, int] | None = None,
    min_keep: int = 1,
    max_layer_sparsity: float | None = None,
    exact: bool = True,
    normalized: bool | None = None,
    restorable: bool = True,
    data: Any = None,
    registry: Registry = registry,
    **options: Any,
) -> ShrinkReport:
    """Mask whole channel groups, every coupled parameter included, ready for :func:`shrink`.

    The channels are chosen exactly as ``shrink(model, example_inputs, strategy, ...)`` would choose them, but
    instead of removing them this zeroes them with prunus masks on every parameter they touch: the producers'
    rows and biases, the BatchNorm affine entries, the consumers' input columns. The model keeps its shapes, can
    be fine-tuned with the masks enforced and restored with :func:`prunus.restore`; :func:`shrink` later removes
    the masked channels and computes the same outputs.

    Args and Raises: as :func:`shrink` (``restorable`` as in :func:`prunus.prune`).
    """
    _validate(model, example_inputs, min_keep, max_layer_sparsity, 0.0)
    # Tracing and scoring are a measurement: the model keeps its flags, its buffers and the random stream.
    with evaluation_mode(model):
        planned = _prepare(
            model,
            example_inputs,
            strategy,
            options,
            ignore=ignore,
            heads=heads,
            exact=exact,
            normalized=normalized,
            min_keep=min_keep,
            max_layer_sparsity=max_layer_sparsity,
            data=data,
            registry=registry,
            need_masks=True,
        )
    masks = group_masks(planned.groups, planned.removed)
    names = {id(m): n for n, m in model.named_modules()}
    context = PruneContext(model=model, targets=[], data=data, restorable=restorable)
    try:
        with transaction() as tx:
            for module, pname, keep in masks.values():
                prefix = names.get(id(module), "")
                target = Target(
                    f"{prefix}.{pname}" if prefix else pname,
                    module,
                    pname,
                    masking.get_mask(module, pname),
                )
                tx.record(registry.hooks.apply_mask(target, keep, restorable, context))
    except PluginError as error:
        raise PluginError(
            f"applying the channel masks failed: {error}; the model was left as it was"
        ) from error
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"applying the channel masks failed: {type(error).__name__}: {error}; the model was left as it was"
        ) from error
    params = sum(p.numel() for p in model.parameters())
    return ShrinkReport(
        strategy=strategy,
        options=jsonable(options),
        shrunk=False,
        groups=planned.reports(),
        params_before=params,
        params_after=params,
        macs_before=planned.traced.macs,
        macs_after=planned.traced.macs,
        reason=planned.reason(),
    )


def shrink(
    model: nn.Module,
    example_inputs: Inputs,
    strategy: str | None = None,
    /,
    *,
    ignore: str | Sequence[str] | None = None,
    heads: Mapping[str, int] | None = None,
    min_keep: int = 1,
    max_layer_sparsity: float | None = None,
    exact: bool = True,
    normalized: bool | None = None,
    tolerance: float = 1e-4,
    data: Any = None,
    registry: Registry = registry,
    **options: Any,
) -> ShrinkReport:
    """Remove pruned channels for real: a smaller dense model that computes what the pruned one computes.

    Args:
        model: changed in place (its modules get new, smaller parameters: build optimizers after this call).
            Hugging Face models (Llama family, BERT, ViT, GPT-2 and relatives) lose whole attention heads (whole
            key/value groups under grouped-query attention) and FFN neurons, and their ``config`` is updated.
        example_inputs: what ``model(...)`` takes (a tensor, a tuple of positional arguments or a dict of keyword
            arguments), used to trace how the layers are coupled and to check the result. Any output the
            model returns works (``ModelOutput`` objects and key/value caches included).
        strategy: ``None`` to remove the channels that masks (or zeros) already silenced; or a
            ``"<criterion>_structured"`` name (one ranking per group of coupled channels), a
            ``"<criterion>_aligned"`` name (the same, keeping a multiple of ``round_to`` channels per group) or a
            ``"<criterion>_global"`` name (one ranking across all groups) with ``amount=``, any registered
            criterion, third-party and data-aware ones included, to choose and remove channels in one call.
        ignore: glob patterns of layer names to leave alone: no group touching them changes.
        heads: ``{layer pattern: head count}`` for attention blocks prunus does not recognise: a group whose
            channels come out of those layers loses whole heads only (the forward must infer the head count from
            shapes, e.g. ``x.view(B, N, -1, head_dim)``). Recognised blocks need nothing.
        min_keep: units every group keeps (default 1: no layer collapses to zero channels; 0 allows it).
        max_layer_sparsity: the largest fraction of a group's units that may be removed.
        exact: only remove channels whose removal provably leaves the outputs unchanged: silent producers
            (weights, biases and BatchNorm shifts all zero) or ignored inputs. The outputs are compared on
            ``example_inputs`` and a difference above ``tolerance`` (relative to the output's magnitude) undoes
            everything. ``False`` also removes channels whose weights are zero while a bias or a norm shift
            survives, folding the constant each one feeds the next layers into their biases (measured on
            ``example_inputs``), and allows normalized groups unless ``normalized=False``.
        normalized: whether groups normalized across channels (LayerNorm, RMSNorm, GroupNorm: a transformer's
            hidden size) may lose channels; their statistics then change, which the report states. Default: the
            opposite of ``exact``.
        tolerance: see ``exact``.
        data: passed to data-aware criteria (in the ``PruneContext`` the ``prunus_score`` hook receives).
        registry: where ``strategy`` and its criterion are looked up.
        **options: the strategy's options: ``amount`` (a fraction of each group's units, or of all units for a
            global ranking, or an int count), ``round_to`` for ``aligned``, and the criterion's own (``seed``,
            ``n``, ...).

    Returns:
        A :class:`ShrinkReport`: groups and removed channels (with the channels removed beyond ``amount`` and
        why), parameters and MACs before and after, the output difference, why nothing was removed if so, and
        the configuration entries changed. Every prunus mask in the model is dropped (removal is permanent, like
        :func:`prunus.remove`); masked entries that could not be removed stay zero.

    Raises:
        MissingDependencyError: Torch-Pruning is not installed (the ``shrink`` extra).
        TargetError: ``example_inputs`` does not run the model.
        ConfigError, AmountError, UnknownStrategyError: bad options.
        MaskError: the masks are not structured (they prune entries, not whole channels).
        NotPrunedError: with no strategy, nothing is pruned and no channel is silent.
        ShrinkError: the removal failed, or changed the outputs beyond ``tolerance``.

    On any error the model is left exactly as it was.
    """
    _validate(model, example_inputs, min_keep, max_layer_sparsity, tolerance)
    flags = _training_flags(model)
    params_before = sum(p.numel() for p in model.parameters())
    hidden_before = hidden_width(model)
    config: dict[str, Any] = {}
    reloads = None
    try:
        with transaction() as tx:
            snapshot = ModuleSnapshot(model)
            tx.record(snapshot)
            planned = _prepare(
                model,
                example_inputs,
                strategy,
                options,
                ignore=ignore,
                heads=heads,
                exact=exact,
                normalized=normalized,
                min_keep=min_keep,
                max_layer_sparsity=max_layer_sparsity,
                data=data,
                registry=registry,
                need_masks=False,
            )
            traced = planned.traced
            if strategy is None and not any(planned.removed):
                if next(masking.masked_parameters(model), None) is None:
                    raise NotPrunedError(
                        f"shrink: {type(model).__name__} has no pruned channels: prune it with "
                        "prunus.prune_channels first, or give a strategy: shrink(model, inputs, 'l1_structured', "
                        "amount=0.5)"
                    )
                raise ShrinkError(
                    "the masks silence no whole channel: removing the masked rows would change the outputs "
                    "because their biases, BatchNorm shifts or other coupled layers are still alive. Mask "
                    "coupled channels with prunus.prune_channels, or pass exact=False to remove channels whose "
                    "weights are pruned anyway; the model was left as it was"
                )
            notes: list[str | None] = [None] * len(planned.groups)
            if not exact:
                fold = [
                    {c for u in d.get(DEAD_SILENT, []) for c in g.units[u]}
                    for g, d in zip(planned.groups, planned.dead, strict=True)
                ]
                if any(fold):
                    notes = fold_constants(model, example_inputs, planned.groups, fold)
            reports = planned.reports(notes)
            for i, g in enumerate(planned.groups):
                remove(traced, g, planned.channels(i))
                if g.after is not None and planned.removed[i]:
                    g.after(planned.removed[i])
            keep_requires_grad(snapshot)
            counter = MacCounter(model)
            try:
                with torch.no_grad():
                    after = call_model(model, example_inputs)
            except Exception as error:
                raise ShrinkError(
                    f"the shrunken model no longer runs: {type(error).__name__}: {error}. A module whose forward "
                    "uses a stored size (e.g. self.num_heads) must infer it from its inputs' shapes instead"
                ) from error
            finally:
                macs_after = counter.close()
            diff, scale = _max_diff(traced.output, after)
            if strategy is None and exact and diff > tolerance * max(scale, 1.0):
                raise ShrinkError(
                    f"removing the pruned channels changed the outputs by up to {diff:.3g} (tolerance "
                    f"{tolerance:g} x {max(scale, 1.0):.3g}): the model uses channels in a way the dependency "
                    "graph does not show (e.g. a reduction over channels, or an op that maps 0 to non-zero); "
                    "the model was left as it was"
                )
            if any(planned.removed):
                config, reloads, undo = update_config(model, planned.attentions, hidden_before)
                tx.record(undo)
            for _, module, pname in list(masking.masked_parameters(model)):
                masking.remove_parameter(module, pname)
    finally:
        for module, training in flags:
            module.training = training
    return ShrinkReport(
        strategy=strategy,
        options=jsonable(options),
        shrunk=True,
        groups=reports,
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
        macs_before=traced.macs,
        macs_after=macs_after,
        max_abs_diff=diff if math.isfinite(diff) else None,
        reason=planned.reason(),
        config=config,
        reloads=reloads,
    )


def _training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _max_diff(before: Any, after: Any) -> tuple[float, float]:
    """Largest absolute difference between two outputs, and the largest magnitude of ``before``."""
    a, b = output_tensors(before), output_tensors(after)
    # Outputs whose shape follows the removed channels (a key/value cache) are not compared.
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if x.shape == y.shape]
    if len(a) != len(b) or (not pairs and a):
        return math.inf, 0.0
    diff = max(
        (float((x.detach() - y.detach()).abs().max()) for x, y in pairs if x.numel()),
        default=0.0,
    )
    scale = max((float(x.detach().abs().max()) for x in a if x.numel()), default=0.0)
    return diff, scale
