"""Planning: Torch-Pruning's groups turned into prunus groups of parameter slices, and which channels are dead.

Each group rooted at a Linear, Conv or Conv1D output lists, per coupled layer, the parameter entries every root
channel owns (:class:`~prunus.shrinking.groups.Slice`). A group is *left alone*, with the reason in the report,
when removing its channels cannot be done right: it feeds the model's output, touches an ignored layer, passes
through a layer Torch-Pruning cannot prune, or the graph loses track of some of its channels before a layer
reads them (a split whose halves meet one shared layer, a view into a transposed convolution...). Losing track
is never taken to mean a channel is unread.

A unit (a channel, a head...) is *dead* when removing it provably leaves the outputs unchanged (see
:func:`dead_units`); ``amount`` counts live units only, and every dead unit removed is reported as beyond it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import ConfigError, MaskError
from ..targets import matches
from .groups import Group, Slice
from .tracing import Traced

__all__ = ["DEAD_IGNORED", "DEAD_MASKED", "DEAD_SILENT", "check_structured", "dead_units", "plan"]

DEAD_SILENT = "silent: its weights, biases and norm shifts are all zero"
DEAD_IGNORED = "ignored: every layer that reads it has all-zero weights for it"
DEAD_MASKED = "masked: its weights and every layer's weights reading it are zero"

# Ops between the layers of a group, by the name of their autograd node (lowercase, without "backward" and the
# version digit). A zero channel stays zero through these (so a channel whose producers are silent is zero where
# it is read) ...
_ZERO_PRESERVING = {
    "relu", "relu6", "gelu", "silu", "tanh", "hardswish", "hardtanh", "leakyrelu", "elu", "mish",
    "mul", "add", "sub", "neg", "dropout", "nativedropout", "clone", "alias", "view", "unsafeview",
    "reshape", "reshapealias", "squeeze", "unsqueeze", "expand", "cat", "split", "splitwithsizes", "slice",
    "maxpool2dwithindices", "maxpool1dwithindices", "maxpool3dwithindices", "avgpool2d", "avgpool1d",
    "avgpool3d", "adaptiveavgpool2d", "adaptiveavgpool1d", "adaptivemaxpool2d", "mean", "sum",
    "upsamplenearest2d", "upsamplebilinear2d", "constantpadnd", "tocopy", "t", "permute", "transpose",
}  # fmt: skip
# ... and these act on each channel on its own (so a channel whose every reader ignores it is ignored).
_CHANNEL_WISE = {
    "relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "hardswish", "hardsigmoid", "hardtanh", "leakyrelu",
    "elu", "mish", "mul", "add", "sub", "neg", "dropout", "nativedropout", "clone", "alias", "view",
    "unsafeview", "reshape", "reshapealias", "cat", "split", "splitwithsizes", "slice",
    "maxpool2dwithindices", "maxpool1dwithindices", "avgpool2d", "avgpool1d", "adaptiveavgpool2d",
    "adaptiveavgpool1d", "adaptivemaxpool2d", "upsamplenearest2d", "upsamplebilinear2d", "constantpadnd",
    "tocopy", "t",
}  # fmt: skip


def _op_name(node: Any) -> str:
    grad_fn = node.grad_fn
    if grad_fn is None or not hasattr(grad_fn, "name"):
        return "?"
    name = str(grad_fn.name()).lower()
    return name.rstrip("0123456789").removesuffix("backward")


def _op_is(node: Any, allowed: set[str]) -> bool:
    """Whether ``node`` is one of ``allowed`` and, if it adds or subtracts, all its operands are traced."""
    name = _op_name(node)
    if name not in allowed:
        return False
    if name in ("add", "sub"):
        # x + constant (a buffer, a number) maps a zero channel to non-zero: only sums of traced tensors qualify.
        nexts = getattr(node.grad_fn, "next_functions", ())
        return len(nexts) >= 2 and all(f[0] is not None for f in nexts)
    return True


def plan(
    model: nn.Module,
    traced: Traced,
    tp: Any,
    *,
    ignore: Sequence[str],
    heads: Mapping[str, int],
    normalized: bool,
    skip_roots: set[int],
) -> list[Group]:
    """Every group of coupled channels rooted at a Linear, Conv or Conv1D output, with its parameter slices.

    ``skip_roots`` are the ids of layers whose output groups are planned elsewhere (attention projections).
    """
    graph = traced.graph
    fn = tp.pruner.function
    names = {id(m): n for n, m in model.named_modules()}
    owners = {
        id(p): (m, pname, f"{mname}.{pname}" if mname else pname)
        for mname, m in model.named_modules()
        for pname, p in m.named_parameters(recurse=False)
    }
    heads_of = _heads_of(model, heads)
    out_fns = {
        fn.prune_conv_out_channels,
        fn.prune_linear_out_channels,
        fn.prune_depthwise_conv_out_channels,
    }
    if traced.conv1d is not None:
        out_fns.add(traced.conv1d.prune_out_channels)
    root_types: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear)
    if traced.conv1d is not None:
        root_types += tuple(graph.CUSTOMIZED_PRUNERS)
    passive = (
        tp.ops.OPTYPE.ELEMENTWISE,
        tp.ops.OPTYPE.CONCAT,
        tp.ops.OPTYPE.SPLIT,
        tp.ops.OPTYPE.RESHAPE,
        tp.ops.OPTYPE.UNBIND,
        tp.ops.OPTYPE.EXPAND,
        tp.ops.OPTYPE.SLICE,
        tp.ops.OPTYPE.OUTPUT,
    )
    groups = []
    for tp_group in graph.get_all_groups(root_module_types=root_types):
        root_dep = tp_group[0].dep
        root = root_dep.target.module
        if id(root) in skip_roots:
            continue
        group = Group(
            name=names.get(id(root), type(root).__name__),
            root=root,
            handler=root_dep.handler,
            channels=len(tp_group[0].idxs),
        )
        channel_groups = 1
        head_count = 0
        zero_preserving = channel_wise = True
        for item in tp_group:
            dep, idxs, roots = item.dep, list(item.idxs), list(item.root_idxs)
            node, module, handler = dep.target, dep.target.module, dep.handler
            if node in traced.output_nodes and graph.is_out_channel_pruning_fn(handler):
                group.left = "feeds the model's output"
            if isinstance(module, nn.Parameter):
                owner, pname, qualified = owners.get(id(module), (None, "", "a bare parameter"))
                if owner is None or any(r is None for r in roots):
                    group.left = group.left or f"cannot map the channels of {qualified}"
                    continue
                _add_parameter(group, owner, pname, qualified, node.pruning_dim, idxs, roots)
                continue
            if not isinstance(module, nn.Module) or node.type in passive:
                if node.type == tp.ops.OPTYPE.ELEMENTWISE:
                    zero_preserving &= _op_is(node, _ZERO_PRESERVING)
                    channel_wise &= _op_is(node, _CHANNEL_WISE)
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
            depthwise = _depthwise(module)
            if groups_here > 1 and not depthwise:
                channel_groups = max(channel_groups, groups_here)
            problem = _slices(group, module, name, handler, idxs, roots, fn)
            if problem:
                group.left = group.left or problem
        _check_coverage(group)
        if group.normalized is not None and not normalized and group.left is None:
            group.left = (
                f"normalized across channels by {group.normalized!r}: removing channels changes its statistics "
                "(pass normalized=True or exact=False to allow)"
            )
        _units(group, channel_groups, head_count)
        group.zero_preserving, group.channel_wise = zero_preserving, channel_wise
        groups.append(group)
    return groups


def _heads_of(model: nn.Module, heads: Mapping[str, int]) -> dict[int, int]:
    out = {}
    for pattern, count in heads.items():
        matched = [m for n, m in model.named_modules() if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(
                f"heads pattern {pattern!r} matches no module of {type(model).__name__}"
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"heads[{pattern!r}]={count!r} must be a positive int")
        for m in matched:
            out[id(m)] = count
    return out


def _depthwise(module: nn.Module) -> bool:
    """A depthwise convolution: one input and one output channel per group (a pass-through for the group)."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def _check_coverage(group: Group) -> None:
    """Leave a group some of whose channels no consumer slice reaches: the graph lost track of them."""
    consumers = [s for s in group.slices if not s.producer and s.weight]
    if group.left is not None or not consumers:
        if group.left is None:
            group.left = "no layer consumes its channels"
        return
    covered = torch.zeros(group.channels, dtype=torch.bool)
    for s in consumers:
        covered[torch.tensor(s.roots, dtype=torch.long)] = True
    lost = int((~covered).sum())
    if lost:
        readers = sorted({s.module_name for s in consumers})
        group.left = (
            f"the dependency graph maps only {group.channels - lost} of its {group.channels} channels to the "
            f"layers that read them ({', '.join(readers)}): it loses track of the rest (e.g. a split whose parts "
            "meet one shared layer, or a view between layers), so no channel of it can be removed safely"
        )


def _add_parameter(
    group: Group,
    owner: nn.Module,
    pname: str,
    qualified: str,
    dim: int,
    idxs: list[int],
    roots: list[int],
) -> None:
    """A bare ``nn.Parameter`` in the group (a position embedding, a class token, an RMSNorm scale)."""
    module_name = qualified.rsplit(".", 1)[0] if "." in qualified else ""
    norm = "norm" in type(owner).__name__.lower()
    if norm and group.normalized is None:
        group.normalized = module_name
    if module_name not in group.layers:
        group.layers.append(module_name)
    group.slices.append(Slice(owner, module_name, pname, dim, idxs, roots, True, False, norm=norm))


def _slices(
    group: Group,
    module: nn.Module,
    name: str,
    handler: Any,
    idxs: list[int],
    roots: list[int],
    fn: Any,
) -> str | None:
    """Add the parameter slices ``handler`` touches on ``module``; a reason string if it cannot be handled."""

    def add(param: str, dim: int, producer: bool, weight: bool, **kw: Any) -> None:
        if getattr(module, param, None) is not None:
            group.slices.append(
                Slice(module, name, param, dim, idxs, roots, producer, weight, **kw)
            )

    declared = getattr(getattr(handler, "__self__", None), "prunus_dims", None)
    if declared is not None:  # a customized pruner that says where its channels are (Conv1D)
        out = handler == handler.__self__.prune_out_channels
        for param, dim, weight in declared["out" if out else "in"]:
            add(param, dim, out, weight)
    elif handler == fn.prune_linear_out_channels:
        add("weight", 0, True, True)
        add("bias", 0, True, False)
    elif handler == fn.prune_linear_in_channels:
        add("weight", 1, False, True)
    elif handler in (fn.prune_conv_out_channels, fn.prune_depthwise_conv_out_channels):
        assert isinstance(module, nn.modules.conv._ConvNd)
        if module.transposed and module.groups > 1:
            return f"grouped transposed convolution {name!r}"
        if module.groups == module.out_channels > 1 and module.in_channels != module.groups:
            return (
                f"grouped convolution {name!r} has out_channels == groups == {module.groups} but in_channels="
                f"{module.in_channels}: Torch-Pruning would prune it as a depthwise one"
            )
        add("weight", 1 if module.transposed else 0, True, True)
        add("bias", 0, True, False)
    elif handler == fn.prune_conv_in_channels:
        assert isinstance(module, nn.modules.conv._ConvNd)
        if module.groups == module.out_channels > 1 and module.in_channels != module.groups:
            return (
                f"grouped convolution {name!r} has out_channels == groups == {module.groups} but in_channels="
                f"{module.in_channels}: Torch-Pruning would prune it as a depthwise one"
            )
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
                Slice(
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
        group.normalized = group.normalized or name
        dim = -1 if handler == fn.prune_layernorm_out_channels else 0
        add("weight", dim, True, False, norm=True)
        add("bias", dim, True, False, norm=True)
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


def _units(group: Group, channel_groups: int, heads: int) -> None:
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


# -- reading masks off slices ---------------------------------------------------------------------------------


def per_root(slice_: Slice, tensor: Tensor, reduce: Any) -> Tensor:
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


def _zero_per_root(slice_: Slice) -> Tensor:
    """Whether each root channel's entries of the slice are all zero."""
    value = getattr(slice_.module, slice_.param).detach()
    if int(torch.count_nonzero(value)) == value.numel():  # one fast pass: the common dense case
        return torch.zeros(len(slice_.roots), dtype=torch.bool)
    return per_root(slice_, value == 0, _all)


def _silent(group: Group, slices: list[Slice]) -> Tensor:
    """Per root channel: are all its entries in ``slices`` zero? (Several entries per channel: all of them.)"""
    n = group.channels
    alive = torch.zeros(n, dtype=torch.long)
    for s in slices:
        alive.index_add_(
            0, torch.tensor(s.roots, dtype=torch.long), (~_zero_per_root(s)).long().cpu()
        )
    return alive == 0


def dead_units(group: Group, exact: bool) -> dict[str, list[int]]:
    """The units whose removal provably leaves the outputs unchanged, by reason (empty for groups left alone).

    * silent: every producer entry of the unit is zero (weights, biases, norm affine terms, the BatchNorm shift
      ``beta - gamma * mean / std``) and every op between the group's layers maps zero to zero, so the channel
      is zero wherever it is read;
    * ignored: every consumer column of the unit is zero and every op between the group's layers acts on each
      channel alone, so nothing reads the channel;
    * masked: both producers and consumers are zero (what :func:`prunus.prune_channels` leaves); shrinking from
      such masks compares the outputs before and after in ``exact`` mode.

    With ``exact=False``, producers count as silent when their *weights* are zero (biases and norm shifts left
    alive are folded into the next layers by :func:`prunus.shrink`).
    """
    if group.left is not None or not group.units:
        return {}
    producers = [s for s in group.slices if s.producer and (s.weight or exact)]
    consumers = [s for s in group.slices if not s.producer and s.weight]
    produced_zero = _silent(group, producers)
    if exact:
        produced_zero &= _norms_silent(group)
    read_zero = _silent(group, consumers)
    units = group.unit_index()
    out: dict[str, list[int]] = {}
    taken: set[int] = set()
    rules = [
        (DEAD_MASKED, produced_zero & read_zero, True),
        (DEAD_SILENT, produced_zero, group.zero_preserving or not exact),
        (DEAD_IGNORED, read_zero, group.channel_wise),
    ]
    for reason, per_channel, allowed in rules:
        if not allowed:
            continue
        flags = per_channel[units].all(dim=1).tolist()
        found = [u for u, dead in enumerate(flags) if dead and u not in taken]
        if found:
            out[reason] = found
            taken.update(found)
    return out


def _norms_silent(group: Group) -> Tensor:
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


def check_structured(model: nn.Module, groups: list[Group]) -> None:
    """Refuse masks whose pruned entries do not form whole channel slices: shrinking cannot use them."""
    slices: dict[tuple[int, str], list[Slice]] = {}
    for g in groups:
        for s in g.slices:
            slices.setdefault((id(s.module), s.param), []).append(s)
    names = {id(m): n for n, m in model.named_modules()}
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
