"""Physical structured removal: turn a channel-pruned model into a smaller dense one.

Masks only zero weights; a forward pass still costs what the dense model costs. :func:`shrink` removes the pruned
neurons, conv channels and attention heads for real, keeping every coupled layer consistent: the BatchNorm after a
conv, the next layer's inputs, both branches of a residual add, the slices of a concatenation, grouped and
depthwise convolutions. The coupling comes from Torch-Pruning's dependency graph (the optional ``shrink`` extra:
``pip install 'prunus[shrink]'``); the choice of channels comes from prunus: its criteria (third-party ones
included, through the registry and the ``prunus_score`` hook), its exact ranking and its masks.

Two ways in, one way out:

* ``shrink(model, example_inputs, "l1_structured", amount=0.5)`` ranks channel groups with a criterion and removes
  the lowest-scored ones in one call.
* ``prune_channels(model, example_inputs, "l1_structured", amount=0.5)`` masks the same channels instead,
  with every coupled parameter (producers' rows and biases, norms, consumers' input columns): the model stays
  dense, restorable and trainable with the masks enforced. A later ``shrink(model, example_inputs)`` removes
  exactly the channels whose coupled weights are all zero, and the smaller model computes what the masked one
  computed (checked on ``example_inputs``).

A shrunken model is saved as a plain ``state_dict`` plus a small JSON record of its shapes (see
:mod:`prunus.shrinking.record`).
"""

from __future__ import annotations

import fnmatch
import importlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .. import masking
from ..config import count_to_prune, jsonable
from ..errors import (
    AmountError,
    ConfigError,
    MaskError,
    MissingDependencyError,
    NotPrunedError,
    PluginError,
    PrunusError,
    ShrinkError,
    TargetError,
)
from ..forward import call_model, output_tensors
from ..registration import Registry, registry
from ..strategy import Criterion, PruneContext, Target, checked_scores
from ..targets import glob_patterns, matches
from ..transaction import ModuleSnapshot, transaction

__all__ = [
    "ChannelGroupReport",
    "MissingDependencyError",
    "ShrinkError",
    "ShrinkReport",
    "prune_channels",
    "shrink",
]

EXTRA = "shrink"


def _torch_pruning() -> Any:
    try:
        return importlib.import_module("torch_pruning")
    except ImportError as error:
        raise MissingDependencyError(
            f"prunus.shrink and prunus.prune_channels need Torch-Pruning for the layer coupling: "
            f"pip install 'prunus[{EXTRA}]' (or pip install torch-pruning==1.6.1); import failed: {error}"
        ) from error


# -- reports --------------------------------------------------------------------------------------------------


class ChannelGroupReport(BaseModel):
    """One group of coupled channels (a root layer's outputs and everything that must follow them).

    Attributes:
        name: the root layer's qualified name.
        layers: qualified names of the layers whose shape the group changes.
        channels: channels of the root layer before.
        unit: channels per removable unit (1; a head's width; with grouped convolutions, one channel per group).
        removed: root-layer channel indices removed (or masked by :func:`prune_channels`).
        left: why the group was left alone (``None`` when it could be pruned).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    layers: list[str]
    channels: int
    unit: int
    removed: list[int]
    left: str | None = None

    @property
    def kept(self) -> int:
        return self.channels - len(self.removed)


class ShrinkReport(BaseModel):
    """What :func:`shrink` or :func:`prune_channels` did.

    Attributes:
        strategy: the strategy that ranked the channels (``None`` when :func:`shrink` removed what masks had
            pruned).
        options: that strategy's options (``None`` likewise).
        shrunk: whether channels were physically removed (``False`` for :func:`prune_channels`).
        groups: every group of coupled channels, pruned or left alone, and why.
        params_before: parameter count of the whole model before.
        params_after: parameter count after (equal to ``params_before`` when nothing was removed physically).
        macs_before: multiply-accumulates of the Linear and Conv layers on ``example_inputs``, before.
        macs_after: the same, after.
        max_abs_diff: largest output difference on ``example_inputs`` between the model before and after
            (for :func:`shrink` from masks: the masked model against the shrunken one).
    """

    model_config = ConfigDict(frozen=True)

    strategy: str | None
    options: dict[str, Any]
    shrunk: bool
    groups: list[ChannelGroupReport]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float | None = None

    @property
    def removed_channels(self) -> int:
        return sum(len(g.removed) for g in self.groups)

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def __str__(self) -> str:
        verb = "removed" if self.shrunk else "masked"
        lines = [
            f"{'shrink' if self.shrunk else 'prune_channels'} "
            + (f"{self.strategy} " if self.strategy else "(from masks) ")
            + " ".join(f"{k}={v}" for k, v in self.options.items()),
        ]
        width = max([len(g.name) for g in self.groups] + [5])
        for g in self.groups:
            state = f"{verb} {len(g.removed):>5} of {g.channels:<5}" if g.left is None else g.left
            lines.append(f"  {g.name:<{width}}  {state}")
        lines.append(
            f"parameters {self.params_before:,} -> {self.params_after:,} ({self.param_ratio:.1%}), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.mac_ratio:.1%})"
        )
        return "\n".join(lines)


# -- the plan: groups of coupled channels ---------------------------------------------------------------------


@dataclass
class _Slice:
    """Entries of one parameter that belong to root channels: ``index[i]`` along ``dim`` for root ``roots[i]``.

    A grouped convolution's input channel is a column within one group of output rows: ``rows`` then maps each
    root channel to its ``(start, stop)`` output rows.
    """

    module: nn.Module
    module_name: str
    param: str
    dim: int
    index: list[int]
    roots: list[int]
    producer: (
        bool  # carries the channel's signal forward (out rows, biases, norms); else a consumer
    )
    weight: bool  # a Linear/Conv weight: scored by the criterion
    rows: list[tuple[int, int]] | None = None


@dataclass
class _Group:
    name: str
    root: nn.Module
    handler: Any
    channels: int
    slices: list[_Slice] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    units: list[list[int]] = field(default_factory=list)
    unit: int = 1
    left: str | None = None

    def unit_index(self) -> Tensor:
        """The channels of each unit, one row per unit."""
        return torch.tensor(self.units, dtype=torch.long).reshape(len(self.units), self.unit)

    def report(self, removed: Sequence[int], left: str | None = None) -> ChannelGroupReport:
        return ChannelGroupReport(
            name=self.name,
            layers=self.layers,
            channels=self.channels,
            unit=self.unit,
            removed=sorted(removed),
            left=left if left is not None else self.left,
        )


Inputs = Any


class _MacCounter:
    """Multiply-accumulates of Linear and Conv layers, counted by forward hooks during one pass."""

    def __init__(self, model: nn.Module) -> None:
        self.total = 0
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
        ]

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            return
        if isinstance(module, nn.Linear):
            self.total += output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            kernel = math.prod(module.kernel_size)
            if module.transposed:
                inputs = args[0] if args and isinstance(args[0], Tensor) else None
                if inputs is not None:
                    self.total += inputs.numel() * (module.out_channels // module.groups) * kernel
            else:
                self.total += output.numel() * (module.in_channels // module.groups) * kernel

    def close(self) -> int:
        for handle in self._handles:
            handle.remove()
        return self.total


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


@dataclass
class _Traced:
    graph: Any
    output: Any
    macs: int
    output_nodes: set[Any]


def _trace(model: nn.Module, example_inputs: Inputs, tp: Any) -> _Traced:
    """Build Torch-Pruning's dependency graph, capturing the output and the MACs of the traced pass."""
    captured: dict[str, Any] = {}

    def forward(m: nn.Module, inputs: Inputs) -> Any:
        counter = _MacCounter(m)
        try:
            captured["out"] = call_model(m, inputs)
        finally:
            captured["macs"] = counter.close()
        return captured["out"]

    hooks = _hook_dicts(model)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, forward_fn=forward, verbose=False
            )
        except Exception as error:
            _restore_hook_dicts(
                hooks
            )  # Torch-Pruning leaves its tracing hooks behind when forward fails
            if "out" not in captured:
                raise TargetError(
                    f"example_inputs could not run {type(model).__name__}: {type(error).__name__}: "
                    f"{error}. Pass what model(...) takes: a tensor, a tuple of positional arguments or "
                    "a dict of keyword arguments"
                ) from error
            raise ShrinkError(
                f"Torch-Pruning could not trace {type(model).__name__}: {type(error).__name__}: {error}"
            ) from error
    roots = {t.grad_fn for t in output_tensors(captured["out"]) if t.grad_fn is not None}
    output_nodes = {
        node
        for node in graph.module2node.values()
        if node.type == tp.ops.OPTYPE.OUTPUT or node.grad_fn in roots
    }
    return _Traced(graph, captured["out"], captured["macs"], output_nodes)


def _plan(
    model: nn.Module,
    traced: _Traced,
    tp: Any,
    *,
    ignore: Sequence[str],
    heads: Mapping[str, int],
    exact: bool,
) -> list[_Group]:
    """Every group of coupled channels rooted at a Linear or Conv output, with its parameter slices."""
    graph = traced.graph
    fn = tp.pruner.function
    names = _names(model)
    heads_of = {}
    for pattern, count in heads.items():
        matched = [m for n, m in model.named_modules() if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(
                f"heads pattern {pattern!r} matches no module of {type(model).__name__}"
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"heads[{pattern!r}]={count!r} must be a positive int")
        for m in matched:
            heads_of[id(m)] = count

    out_fns = {
        fn.prune_conv_out_channels,
        fn.prune_linear_out_channels,
        fn.prune_depthwise_conv_out_channels,
    }
    groups = []
    for tp_group in graph.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)):
        root_dep = tp_group[0].dep
        root = root_dep.target.module
        group = _Group(
            name=names.get(id(root), type(root).__name__),
            root=root,
            handler=root_dep.handler,
            channels=len(tp_group[0].idxs),
        )
        channel_groups = 1
        head_count = 0
        consumers = 0
        for item in tp_group:
            dep, idxs, roots = item.dep, list(item.idxs), list(item.root_idxs)
            node, module, handler = dep.target, dep.target.module, dep.handler
            if node in traced.output_nodes and graph.is_out_channel_pruning_fn(handler):
                group.left = "feeds the model's output"
            if not isinstance(module, nn.Module) or node.type in (
                tp.ops.OPTYPE.ELEMENTWISE,
                tp.ops.OPTYPE.CONCAT,
                tp.ops.OPTYPE.SPLIT,
                tp.ops.OPTYPE.RESHAPE,
                tp.ops.OPTYPE.UNBIND,
                tp.ops.OPTYPE.EXPAND,
                tp.ops.OPTYPE.SLICE,
                tp.ops.OPTYPE.OUTPUT,
            ):
                if isinstance(module, nn.Parameter):
                    group.left = group.left or "couples a bare nn.Parameter"
                continue
            name = names.get(id(module), type(module).__name__)
            if name not in group.layers:
                group.layers.append(name)
            if matches(name, ignore):
                group.left = group.left or f"touches ignored layer {name!r}"
            if any(r is None for r in roots):
                group.left = group.left or f"cannot map {name!r}'s channels to the root's"
                continue
            if id(module) in heads_of and handler in out_fns:
                head_count = max(head_count, heads_of[id(module)])
            kind = "out" if graph.is_out_channel_pruning_fn(handler) else "in"
            pruner = graph.get_pruner_of_module(module)
            groups_here = (
                pruner.get_out_channel_groups(module)
                if kind == "out"
                else pruner.get_in_channel_groups(module)
            )
            depthwise = isinstance(module, nn.modules.conv._ConvNd) and (
                module.groups == module.out_channels
            )
            if groups_here > 1 and not depthwise:
                channel_groups = max(channel_groups, groups_here)
            problem = _slices(group, module, name, handler, idxs, roots, fn, exact)
            if problem:
                group.left = group.left or problem
            if (
                handler in (fn.prune_conv_in_channels, fn.prune_linear_in_channels)
                and not depthwise
            ):
                consumers += 1
        if group.left is None and consumers == 0:
            group.left = "no layer consumes its channels"
        _units(group, channel_groups, head_count)
        groups.append(group)
    return groups


def _slices(
    group: _Group,
    module: nn.Module,
    name: str,
    handler: Any,
    idxs: list[int],
    roots: list[int],
    fn: Any,
    exact: bool,
) -> str | None:
    """Add the parameter slices ``handler`` touches on ``module``; a reason string if it cannot be handled."""

    def add(param: str, dim: int, producer: bool, weight: bool, **kw: Any) -> None:
        if getattr(module, param, None) is not None:
            group.slices.append(
                _Slice(module, name, param, dim, idxs, roots, producer, weight, **kw)
            )

    if handler in (fn.prune_linear_out_channels,):
        add("weight", 0, True, True)
        add("bias", 0, True, False)
    elif handler == fn.prune_linear_in_channels:
        add("weight", 1, False, True)
    elif handler in (fn.prune_conv_out_channels, fn.prune_depthwise_conv_out_channels):
        assert isinstance(module, nn.modules.conv._ConvNd)
        if module.transposed and module.groups > 1:
            return f"grouped transposed convolution {name!r}"
        add("weight", 1 if module.transposed else 0, True, True)
        add("bias", 0, True, False)
    elif handler == fn.prune_conv_in_channels:
        assert isinstance(module, nn.modules.conv._ConvNd)
        if module.transposed:
            if module.groups > 1:
                return f"grouped transposed convolution {name!r}"
            add("weight", 0, False, True)
        elif module.groups > 1:
            per_group_in = module.in_channels // module.groups
            per_group_out = module.out_channels // module.groups
            rows = [
                ((i // per_group_in) * per_group_out, (i // per_group_in + 1) * per_group_out)
                for i in idxs
            ]
            group.slices.append(
                _Slice(
                    module,
                    name,
                    "weight",
                    1,
                    [i % per_group_in for i in idxs],
                    roots,
                    False,
                    True,
                    rows,
                )
            )
        else:
            add("weight", 1, False, True)
    elif handler == fn.prune_batchnorm_out_channels:
        add("weight", 0, True, False)
        add("bias", 0, True, False)
    elif handler in (fn.prune_layernorm_out_channels, fn.prune_groupnorm_out_channels):
        if exact:
            return (
                f"normalized across channels by {name!r}: removing channels changes its statistics "
                "(pass exact=False to allow)"
            )
        add("weight", -1 if handler == fn.prune_layernorm_out_channels else 0, True, False)
        add("bias", -1 if handler == fn.prune_layernorm_out_channels else 0, True, False)
    elif handler == fn.prune_instancenorm_out_channels:
        add("weight", 0, True, False)
        add("bias", 0, True, False)
    elif handler == fn.prune_prelu_out_channels:
        assert isinstance(module, nn.PReLU)
        if module.num_parameters > 1:
            add("weight", 0, False, False)
    elif handler == fn.prune_embedding_out_channels:
        add("weight", 1, True, True)
    else:
        return f"{type(module).__name__} {name!r} is not supported"
    return None


def _units(group: _Group, channel_groups: int, heads: int) -> None:
    """Split the root's channels into removable units: single channels, heads, or one per channel group."""
    n = group.channels
    if heads and channel_groups > 1:
        group.left = group.left or "attention heads inside grouped channels are not supported"
    if heads:
        if n % heads:
            group.left = group.left or f"{n} channels do not split into {heads} heads"
            heads = 1
        width = n // heads
        group.unit = width
        group.units = [list(range(h * width, (h + 1) * width)) for h in range(heads)]
    elif channel_groups > 1:
        if n % channel_groups:
            group.left = group.left or f"{n} channels do not split into {channel_groups} groups"
            channel_groups = 1
        size = n // channel_groups
        group.unit = channel_groups
        group.units = [[u + g * size for g in range(channel_groups)] for u in range(size)]
    else:
        group.units = [[c] for c in range(n)]


# -- reading masks and scores off slices ----------------------------------------------------------------------


def _per_root(
    slice_: _Slice, tensor: Tensor, reduce: Callable[[Tensor, tuple[int, ...]], Tensor]
) -> Tensor:
    """``reduce`` of ``tensor`` (the parameter's shape) over each root channel's entries, in ``roots`` order."""
    dim = slice_.dim % tensor.dim()
    others = tuple(d for d in range(tensor.dim()) if d != dim)
    if slice_.rows is None:
        per_index = reduce(tensor, others) if others else tensor
        return per_index[torch.tensor(slice_.index, dtype=torch.long, device=tensor.device)]
    out = []
    for index, (start, stop) in zip(slice_.index, slice_.rows, strict=True):
        part = tensor[start:stop].select(1, index)
        out.append(reduce(part.unsqueeze(1), tuple(d for d in range(part.dim() + 1) if d != 1)))
    return torch.cat([o.reshape(1) for o in out])


def _all(tensor: Tensor, dims: tuple[int, ...]) -> Tensor:
    return tensor.all(dim=dims) if dims else tensor


def _zero_per_root(slice_: _Slice) -> Tensor:
    """Whether each root channel's entries of the slice are all zero."""
    value = getattr(slice_.module, slice_.param).detach()
    if int(torch.count_nonzero(value)) == value.numel():  # one fast pass: the common dense case
        return torch.zeros(len(slice_.roots), dtype=torch.bool)
    return _per_root(slice_, value == 0, _all)


def _dead_units(group: _Group, exact: bool) -> list[bool]:
    """Per unit: are its channels dead (silent producers, or every consumer ignores them)?"""
    n = group.channels
    producers_dead = torch.ones(n, dtype=torch.bool)
    consumers_dead = torch.ones(n, dtype=torch.bool)
    has_consumer = False
    for s in group.slices:
        if not (s.weight or (s.producer and exact)):
            continue
        # A root channel may own several entries along the slice (a flatten before a Linear): it is dead
        # only if all of them are zero. Channels the slice does not touch stay neutral (True).
        alive = torch.zeros(n, dtype=torch.long).index_add_(
            0, torch.tensor(s.roots, dtype=torch.long), (~_zero_per_root(s)).long().cpu()
        )
        if s.producer:
            producers_dead &= alive == 0
        else:
            has_consumer = True
            consumers_dead &= alive == 0
    if exact:
        producers_dead &= _norms_silent(group)
    dead = producers_dead | (consumers_dead if has_consumer else torch.zeros(n, dtype=torch.bool))
    flags: list[bool] = dead[group.unit_index()].all(dim=1).tolist()
    return flags


def _norms_silent(group: _Group) -> Tensor:
    """Per root channel: do the group's BatchNorms map a zero input to zero (``beta - gamma * mean/std == 0``)?"""
    n = group.channels
    silent = torch.ones(n, dtype=torch.bool)
    seen: set[int] = set()
    for s in group.slices:
        module = s.module
        if id(module) in seen or not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        seen.add(id(module))
        if module.running_mean is not None and module.running_var is not None:
            std = (module.running_var + module.eps).sqrt()
            shift = module.running_mean / std
        else:
            shift = torch.zeros(module.num_features)
        weight = module.weight if module.weight is not None else torch.ones(module.num_features)
        bias = module.bias if module.bias is not None else torch.zeros(module.num_features)
        out = (bias - weight * shift).detach()
        loud = (out[torch.tensor(s.index, dtype=torch.long, device=out.device)] != 0).long().cpu()
        silent &= (
            torch.zeros(n, dtype=torch.long).index_add_(
                0, torch.tensor(s.roots, dtype=torch.long), loud
            )
            == 0
        )
    return silent


def _check_structured(model: nn.Module, groups: list[_Group]) -> None:
    """Refuse masks whose pruned entries do not form whole channel slices: shrinking cannot use them."""
    slices: dict[tuple[int, str], list[_Slice]] = {}
    for g in groups:
        for s in g.slices:
            slices.setdefault((id(s.module), s.param), []).append(s)
    names = _names(model)
    for parts in slices.values():
        module, pname = parts[0].module, parts[0].param
        mask = masking.get_mask(module, pname)
        if mask is None or bool(mask.all()):
            continue
        pruned = ~mask
        covered = torch.zeros_like(mask)
        for s in parts:
            if s.rows is None:
                dim = s.dim % mask.dim()
                others = tuple(d for d in range(mask.dim()) if d != dim)
                whole = pruned.all(dim=others) if others else pruned
                view = [1] * mask.dim()
                view[dim] = -1
                covered |= whole.reshape(view).expand_as(mask)
            else:
                for index, (start, stop) in zip(s.index, s.rows, strict=True):
                    column = pruned[start:stop].select(1, index)
                    if bool(column.all()):
                        covered[start:stop].select(1, index).fill_(True)
        stray = int(torch.count_nonzero(pruned & ~covered))
        if stray:
            raise MaskError(
                f"the mask of {names.get(id(module), type(module).__name__)}.{pname} prunes {stray} entries "
                "that do not form whole channels: shrink removes channels, so it needs structured masks "
                "(prune with prunus.prune_channels, or an '*_structured' strategy), not unstructured ones"
            )


# -- ranking --------------------------------------------------------------------------------------------------


def _criterion_of(
    strategy: str, options: dict[str, Any], registry: Registry
) -> tuple[Criterion, bool, int | float]:
    """The criterion, whether the ranking is global, and the amount of ``<criterion>_<granularity>``."""
    if not isinstance(strategy, str):
        raise ConfigError(
            f"strategy must be a registered '<criterion>_structured' or '<criterion>_global' name, "
            f"not {type(strategy).__name__}"
        )
    info = registry.info(strategy)
    if info.criterion is None or info.granularity not in ("structured", "global"):
        raise ConfigError(
            f"shrink ranks channels with a criterion: give '<criterion>_structured' (a ranking per group of "
            f"coupled channels) or '<criterion>_global' (one ranking across groups), not {strategy!r} "
            f"({info.granularity}); criteria: {', '.join(registry.criteria())}"
        )
    if "dim" in options:
        raise ConfigError(
            "shrink prunes the output channels of each group of coupled layers; it takes no dim option"
        )
    configured = registry.get(strategy, **options)  # validates every option, criterion's included
    values = dict(configured.config)
    amount = values.pop("amount")
    values.pop("dim", None)
    criterion = registry.criterion(info.criterion, **values)
    return criterion, info.granularity == "global", amount


def _scores(
    groups: list[_Group],
    criterion: Criterion,
    context: PruneContext,
    registry: Registry,
    owner: str,
) -> list[Tensor]:
    """Per group, the score of each unit: the sum over its channels' weight slices of the criterion's reduce."""
    names = _names(context.model)
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
                reduced = _per_root(s, scores_of(s.module, s.param), criterion.reduce)
                per_channel.index_add_(
                    0, torch.tensor(s.roots, dtype=torch.long), reduced.detach().double().cpu()
                )
        out.append(per_channel[g.unit_index()].sum(dim=1))
    return out


def _choose(
    groups: list[_Group],
    scores: list[Tensor],
    dead: list[list[bool]],
    amount: int | float,
    global_ranking: bool,
    min_keep: int,
    max_layer_sparsity: float | None,
) -> list[list[int]]:
    """Which units of each group to remove: the dead ones plus the ``amount`` lowest-scored live ones."""
    live = [
        [u for u in range(len(g.units)) if not dead[i][u]] if g.left is None else []
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
        [u for u in range(len(g.units)) if g.left is None and dead[i][u]]
        for i, g in enumerate(groups)
    ]
    if global_ranking:
        pool = [(float(scores[i][u]), i, u) for i in range(len(groups)) for u in live[i]]
        k = count_to_prune(amount, len(pool), what="live channel units across all groups")
        if k > sum(caps):
            raise AmountError(
                f"amount={amount!r} asks to remove {k} channel units, but min_keep={min_keep}"
                + (
                    f" and max_layer_sparsity={max_layer_sparsity}"
                    if max_layer_sparsity is not None
                    else ""
                )
                + f" allow at most {sum(caps)}; lower amount or relax the limits"
            )
        taken = [0] * len(groups)
        # Lowest score first; ties go to the earlier group and unit (positional, as prunus ranks everywhere).
        for _, i, u in sorted(pool):
            if k == 0:
                break
            if taken[i] < caps[i]:
                chosen[i].append(u)
                taken[i] += 1
                k -= 1
        return chosen
    for i, g in enumerate(groups):
        if g.left is not None or not live[i]:
            continue
        k = count_to_prune(amount, len(live[i]), what=f"live channel units of group {g.name!r}")
        if k > caps[i]:
            raise AmountError(
                f"amount={amount!r} asks to remove {k} of the {len(live[i])} live units of {g.name!r}, but "
                f"min_keep={min_keep}"
                + (
                    f" and max_layer_sparsity={max_layer_sparsity}"
                    if max_layer_sparsity is not None
                    else ""
                )
                + f" allow at most {caps[i]}; lower amount or relax the limits"
            )
        values = scores[i][live[i]]
        order = sorted(range(len(live[i])), key=lambda j: (float(values[j]), j))
        chosen[i].extend(live[i][j] for j in order[:k])
    return chosen


# -- applying: masks, or removal ------------------------------------------------------------------------------


def _group_masks(
    groups: list[_Group], removed: list[list[int]]
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


def _hook_dicts(model: nn.Module) -> list[tuple[dict[Any, Any], dict[Any, Any]]]:
    """Every hook dict of every module, with a copy of its content."""
    return [
        (value, dict(value))
        for module in model.modules()
        for key, value in vars(module).items()
        if "hook" in key and isinstance(value, dict)
    ]


def _restore_hook_dicts(saved: list[tuple[dict[Any, Any], dict[Any, Any]]]) -> None:
    for live, content in saved:
        live.clear()
        live.update(content)


def _training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _max_diff(before: Any, after: Any) -> tuple[float, float]:
    """Largest absolute difference between two outputs, and the largest magnitude of ``before``."""
    a, b = output_tensors(before), output_tensors(after)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return math.inf, 0.0
    diff = max(
        (
            float((x.detach() - y.detach()).abs().max())
            for x, y in zip(a, b, strict=True)
            if x.numel()
        ),
        default=0.0,
    )
    scale = max((float(x.detach().abs().max()) for x in a if x.numel()), default=0.0)
    return diff, scale


def _validate(
    model: nn.Module,
    example_inputs: Inputs,
    min_keep: int,
    max_layer_sparsity: float | None,
    tolerance: float,
) -> None:
    if not isinstance(model, nn.Module):
        raise TargetError(
            f"model must be a torch.nn.Module, not {type(model).__name__} ({model!r:.80})"
        )
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
    min_keep: int,
    max_layer_sparsity: float | None,
    data: Any,
    registry: Registry,
    need_masks: bool,
) -> tuple[Any, _Traced, list[_Group], list[list[int]]]:
    """Trace, plan and rank without changing the model (its training flags excepted, restored by callers)."""
    tp = _torch_pruning()
    criterion = None
    global_ranking = False
    amount: int | float = 0
    if strategy is not None:
        criterion, global_ranking, amount = _criterion_of(strategy, options, registry)
    elif options:
        raise ConfigError(
            f"options {sorted(options)} need a strategy: shrink(model, inputs, 'l1_structured', amount=0.5)"
        )
    elif need_masks:
        raise ConfigError(
            "prune_channels needs a strategy, e.g. prune_channels(model, inputs, 'l1_structured', amount=0.5)"
        )
    traced = _trace(model, example_inputs, tp)
    groups = _plan(
        model,
        traced,
        tp,
        ignore=glob_patterns("ignore", ignore),
        heads=dict(heads or {}),
        exact=exact,
    )
    if strategy is None:
        _check_structured(model, groups)
    dead = [_dead_units(g, exact) if g.left is None else [False] * len(g.units) for g in groups]
    if criterion is None:
        removed = [[u for u, d in enumerate(flags) if d] for flags in dead]
        return tp, traced, groups, removed
    context = PruneContext(model=model, targets=[], data=data)
    try:
        with torch.no_grad():
            scores = _scores(groups, criterion, context, registry, strategy or "shrink")
    except PrunusError:
        raise
    except Exception as error:
        raise PluginError(
            f"criterion {criterion.name!r} raised {type(error).__name__}: {error}; the model was not changed"
        ) from error
    removed = _choose(groups, scores, dead, amount, global_ranking, min_keep, max_layer_sparsity)
    return tp, traced, groups, removed


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
    flags = _training_flags(model)
    try:
        _, traced, groups, removed = _prepare(
            model,
            example_inputs,
            strategy,
            options,
            ignore=ignore,
            heads=heads,
            exact=exact,
            min_keep=min_keep,
            max_layer_sparsity=max_layer_sparsity,
            data=data,
            registry=registry,
            need_masks=True,
        )
    finally:
        for module, training in flags:
            module.training = training
    masks = _group_masks(groups, removed)
    names = _names(model)
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
        groups=[
            g.report([c for u in units for c in g.units[u]])
            for g, units in zip(groups, removed, strict=True)
        ],
        params_before=params,
        params_after=params,
        macs_before=traced.macs,
        macs_after=traced.macs,
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
    tolerance: float = 1e-4,
    data: Any = None,
    registry: Registry = registry,
    **options: Any,
) -> ShrinkReport:
    """Remove pruned channels for real: a smaller dense model that computes what the pruned one computes.

    Args:
        model: changed in place (its modules get new, smaller parameters: build optimizers after this call).
        example_inputs: what ``model(...)`` takes (a tensor, a tuple of positional arguments or a dict of keyword
            arguments), used to trace how the layers are coupled and to check the result.
        strategy: ``None`` to remove the channels that masks (or zeros) already silenced; or a
            ``"<criterion>_structured"`` name (one ranking per group of coupled channels) or
            ``"<criterion>_global"`` name (one ranking across all groups) with ``amount=``, any registered
            criterion, third-party ones included, to choose and remove channels in one call.
        ignore: glob patterns of layer names to leave alone: no group touching them changes.
        heads: ``{layer pattern: head count}`` for attention: a group whose channels come out of those layers
            loses whole heads only (the forward must infer the head count from shapes, e.g.
            ``x.view(B, N, -1, head_dim)``).
        min_keep: units every group keeps (default 1: no layer collapses to zero channels; 0 allows it).
        max_layer_sparsity: the largest fraction of a group's units that may be removed.
        exact: only remove channels whose removal provably leaves the outputs unchanged: silent producers
            (weights, biases and BatchNorm shifts all zero) or ignored inputs; groups normalized across channels
            (LayerNorm, GroupNorm) are left alone. The outputs are compared on ``example_inputs`` and a difference
            above ``tolerance`` (relative to the output's magnitude) undoes everything. ``False`` removes channels
            whose weights are zero even if a bias or a norm shift survives (the usual structured pruning
            trade-off), and allows LayerNorm and GroupNorm groups.
        tolerance: see ``exact``.
        data: passed to data-aware criteria.
        registry: where ``strategy`` and its criterion are looked up.
        **options: the strategy's options: ``amount`` (a fraction of each group's units, or of all units for a
            global ranking, or an int count) and the criterion's own (``seed``, ``n``, ...).

    Returns:
        A :class:`ShrinkReport`: groups and removed channels, parameters and MACs before and after, the output
        difference. Every prunus mask in the model is dropped (removal is permanent, like :func:`prunus.remove`);
        masked entries that could not be removed stay zero.

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
    try:
        with transaction() as tx:
            snapshot = ModuleSnapshot(model)
            tx.record(snapshot)
            _, traced, groups, removed = _prepare(
                model,
                example_inputs,
                strategy,
                options,
                ignore=ignore,
                heads=heads,
                exact=exact,
                min_keep=min_keep,
                max_layer_sparsity=max_layer_sparsity,
                data=data,
                registry=registry,
                need_masks=False,
            )
            if strategy is None and not any(removed):
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
            reports = []
            for g, units in zip(groups, removed, strict=True):
                channels = sorted({c for u in units for c in g.units[u]})
                reports.append(g.report(channels))
                if channels:
                    tp_group = traced.graph.get_pruning_group(g.root, g.handler, channels)
                    if not traced.graph.check_pruning_group(tp_group):
                        raise ShrinkError(
                            f"removing {len(channels)} channels of {g.name!r} would empty a layer"
                        )
                    tp_group.prune(record_history=False)
            _keep_requires_grad(snapshot)
            counter = _MacCounter(model)
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
    )


def _keep_requires_grad(snapshot: ModuleSnapshot) -> None:
    """Torch-Pruning makes new Parameters that always require grad: carry the old flag over."""
    for module, state in snapshot.states:
        for name, old in state["_parameters"].items():
            new = module._parameters.get(name)
            if old is not None and new is not None and new is not old:
                new.requires_grad_(old.requires_grad)
