"""``prune_checkpoint``: one-shot pruning of a checkpoint that does not fit in memory, one group at a time.

The model is built on the meta device, then each group of tensors (a block of the model's stack, or a run of
the tensors outside it: see :mod:`prunus.streaming.skeleton`) is loaded, its parameters are put into the
model, pruned by the ordinary :func:`prunus.prune` (the same strategies, plugins and checks), written out as one
shard of the destination, and freed before the next group is read. Memory holds one group and its masks.

Strategies come in two kinds:

* **separable** ones (a mask per parameter from that parameter alone: ``unstructured``, ``structured``,
  ``aligned``, ``nm``, ``block`` and any strategy that only looks at one block's parameters) are applied group
  by group, in one pass;
* a **global ranking** (``<criterion>_global``, ``global_unstructured``) reads the checkpoint twice: a first pass
  counts every score into the histogram of :mod:`prunus.chunked_ranking` (one pass finds the exact threshold for
  bfloat16 and float16 weights; float32 needs a second counting pass), and the last pass writes every mask as
  it goes: below the threshold pruned, above kept, ties pruned in model order until the count is reached. The
  result is bit for bit what ``prune`` gives on the whole model in memory.

With calibration data (``wanda_*``, ``sparsegpt_*``, a reconstruction, an OWL allocation) the strategy runs
through the ordinary ``prune`` too, its calibration pass handed a :class:`~prunus.calibration.BlockLoader`: the
tensors before the model's stack of blocks (the embeddings) are loaded while the batches are embedded, then each
block is loaded, run on its inputs to gather the statistics the strategy reads, pruned (and reconstructed), run
again to make the next block's inputs from the pruned block, written out and freed. Memory holds one block's
weights and one block's activations. Two streaming passes come first: the first batch runs through every block
once to check that the blocks chain (as in memory), and an allocation that reads statistics (OWL) measures every
block before any is pruned (the check is not repeated for the pass that prunes). The tensors no block holds are
copied last. The result is what ``prune`` gives on
the whole model in memory.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import masking
from ..arguments import check_bool, check_callable, check_path
from ..calibration import batches_of
from ..chunked_ranking import (
    ChunkedRanking,
    Inconsistent,
    chunks_of,
    empty_mask,
    key_bits,
    zero_low_bits,
)
from ..config import count_to_prune, jsonable
from ..engine import prune
from ..errors import CheckpointError, ConfigError, ConfigTypeError, PluginError, brief
from ..progress import progress
from ..registration import Registry, registry
from ..report import ParameterReport, PruneReport
from ..statistics import Statistics
from ..strategy import ComposedStrategy, PruneContext, Scorer, Strategy, Target
from ..targets import FilterFn, Patterns, select_targets
from .checkpoint import Checkpoint, Destination
from .skeleton import Group, Member, build, plan, residents

__all__ = ["prune_checkpoint"]


def prune_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    strategy: Strategy | str,
    /,
    *,
    data: Any = None,
    model: Any = None,
    include: Patterns = None,
    exclude: Patterns = None,
    filter_fn: FilterFn | None = None,
    reconstruct: Any = None,
    allocation: Any = None,
    overwrite: bool = False,
    show_progress: bool = False,
    registry: Registry = registry,
    **options: Any,
) -> PruneReport:
    """Prune the safetensors checkpoint ``src`` into ``dst`` without ever holding it all in memory.

    Args:
        src: a Hugging Face model directory (``config.json`` and ``model.safetensors``, or shards listed by
            ``model.safetensors.index.json``), a directory of safetensors files, or one file.
        dst: the directory to write: shards, their index, and the source's other files (config, tokenizer),
            which ``from_pretrained`` (or ``load_state_dict`` over the shards) reads. Written in full or not
            at all.
        strategy: a registered strategy name configured by ``options`` (``"l1_unstructured"``, ``"l1_nm"``,
            ``"l1_global"``...), or a configured strategy.
        data: calibration batches for a strategy that reads calibration statistics (``wanda_*``,
            ``sparsegpt_*``), as :func:`prunus.prune` takes them: one batch or an iterable of them, each a
            tensor of ``input_ids`` or a dict of keyword arguments (a tokenizer's output). The blocks are then
            calibrated and pruned one at a time, each on the outputs of the blocks before it, already pruned.
        model: how to build the model without its weights: an ``nn.Module`` class or a factory (called under
            ``torch.device("meta")``), or a module already on the meta device. Default: the Hugging Face model
            ``src/config.json`` describes (needs the ``transformers`` extra).
        include: glob patterns of the parameters to prune, as in :func:`prunus.prune` (default: the weight
            of every Linear and Conv layer).
        exclude: glob patterns of parameters to leave alone.
        filter_fn: ``filter_fn(module, name) -> bool``, to choose parameters by any rule.
        reconstruct: with ``data``, re-solve the weights each mask keeps, as in :func:`prunus.prune`
            (default: what the strategy does; ``sparsegpt_*`` reconstructs).
        allocation: with ``data``, split ``amount`` across blocks, as in :func:`prunus.prune` (``"owl"``: one
            more streaming pass measures every block first).
        overwrite: replace an existing ``dst`` (it stays as it was until the new one is complete).
        show_progress: a progress bar per pass.
        registry: where to look ``strategy`` up.
        **options: the strategy's options when ``strategy`` is a name.

    Returns:
        The :class:`~prunus.report.PruneReport` of the whole checkpoint, as ``prune`` would report it.

    Raises:
        MissingShardError, CorruptShardError: a shard of ``src`` is missing or unreadable (before anything is
            written).
        CheckpointError: ``dst`` exists (without ``overwrite``) or cannot be written (also an ``OSError``).
        ConfigTypeError: an argument of the wrong type (also a ``TypeError``), named in the message.
        ConfigError: ``dst`` is ``src``; a global ``min_keep`` floor that binds; ``reconstruct`` or
            ``allocation`` without ``data``; with ``data``, a strategy that ranks every block together
            (``wanda_global``), targets outside the model's stack of blocks, or blocks that do not run one after
            the other (nothing is written).
        CalibrationError: ``data`` holds no batch, or a batch fails in the model.
        ConfigError, TargetError, PluginError, WeightError: as :func:`prunus.prune` raises them.
    """
    check_path("src", src)
    check_path("dst", dst)
    check_bool("overwrite", overwrite)
    check_bool("show_progress", show_progress)
    if filter_fn is not None:
        check_callable("filter_fn", filter_fn)
    if not isinstance(registry, Registry):
        raise ConfigTypeError(f"registry must be a prunus.Registry, not {type(registry).__name__}")
    source = Checkpoint(src)
    destination_path = Path(dst)
    if destination_path.resolve() in (source.path.resolve(), source.directory.resolve()):
        raise ConfigError(
            f"the destination {dst} is the checkpoint itself; write to another directory"
        )
    if data is None and (allocation is not None or reconstruct not in (None, False)):
        raise ConfigError(
            f"{'allocation=' if allocation is not None else 'reconstruct='} works from calibration data; "
            "give data= (batches of input_ids or tokenizer outputs)"
        )
    if isinstance(data, Statistics):
        raise ConfigError(
            "data= must be calibration batches: a Statistics table prunes every block at once, and the blocks "
            "of a streamed checkpoint are pruned one at a time, each on the outputs of the ones before it"
        )
    if data is not None:
        skeleton = build(model, source)
        chosen = select_targets(skeleton, include=include, exclude=exclude, filter_fn=filter_fn)
        streamer = _Streamer(skeleton, source, plan(skeleton, source, chosen))
        batches = batches_of(
            data
        )  # listed once: an allocation's pass and the pruning pass each read them
        with Destination(destination_path, overwrite=overwrite) as destination:
            report = prune(
                skeleton,
                strategy,
                include=include,
                exclude=exclude,
                filter_fn=filter_fn,
                data=batches,
                reconstruct=reconstruct,
                allocation=allocation,
                restorable=False,
                progress=show_progress,
                registry=registry,
                loader=streamer.writing(destination),
                **options,
            )
            streamer.write_rest(destination)
            for file in source.other_files():
                destination.copy(file)
        return report
    if isinstance(strategy, str):
        configured = registry.get(strategy, **options)
    elif isinstance(strategy, Strategy):
        if options:
            raise ConfigError(
                f"options {sorted(options)} were given with an already configured strategy {strategy.name!r}"
            )
        configured = strategy
    else:
        raise ConfigTypeError(
            f"strategy must be a registered name (see prunus.registry.names()) or a Strategy from "
            f"prunus.registry.get(), not {type(strategy).__name__} ({brief(strategy)})"
        )
    skeleton = build(model, source)
    chosen = select_targets(skeleton, include=include, exclude=exclude, filter_fn=filter_fn)
    groups = plan(skeleton, source, chosen)
    composed = _global(configured)
    with Destination(destination_path, overwrite=overwrite) as destination:
        if composed is None:
            reports = _separable(
                skeleton, source, groups, configured, destination, registry, show_progress
            )
        else:
            reports = _ranked(
                skeleton, source, groups, composed, destination, registry, show_progress
            )
        for file in source.other_files():
            destination.copy(file)
    return PruneReport(
        strategy=configured.name,
        options=jsonable(configured.options),
        parameters=sorted(reports, key=lambda r: [t[0] for t in chosen].index(r.name)),
        model_numel=sum(p.numel() for p in skeleton.parameters()),
    )


def _global(strategy: Strategy) -> ComposedStrategy | None:
    """The composed global strategy behind ``strategy`` (``global_unstructured`` wraps one), or ``None``.

    Raises:
        ConfigError: a strategy that ranks across parameters in a way prunus cannot stream.
    """
    inner = getattr(strategy, "inner", strategy)
    if isinstance(inner, ComposedStrategy) and inner.granularity_component.name == "global":
        return inner
    if strategy.granularity == "global":
        raise ConfigError(
            f"strategy {strategy.name!r} ranks across parameters in its own way; a streamed checkpoint can "
            "be ranked globally through the 'global' granularity (<criterion>_global, global_unstructured)"
        )
    return None


def _shard(position: int, count: int) -> str:
    return f"model-{position + 1:05d}-of-{count:05d}.safetensors"


class _Arena:
    """One block of memory that holds a group's parameters, group after group.

    The tensors a shard is read into are views of the file's memory map; pruning them in place would copy each
    page on its first write (a page fault per 4 KiB). Copied into memory reused for every group instead, they
    fault only for the first group.
    """

    _ALIGN = 64

    def __init__(self) -> None:
        self.buffer = torch.empty(0, dtype=torch.uint8)

    def hold(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Copies of ``tensors`` in the arena (valid until the next call)."""
        sizes = [-(-t.numel() * t.element_size() // self._ALIGN) * self._ALIGN for t in tensors]
        if sum(sizes) > self.buffer.numel():
            self.buffer = torch.from_numpy(np.empty(sum(sizes), dtype=np.uint8))
        out, offset = [], 0
        for tensor, size in zip(tensors, sizes, strict=True):
            nbytes = tensor.numel() * tensor.element_size()
            view = self.buffer[offset : offset + nbytes].view(tensor.dtype).view(tensor.shape)
            out.append(view.copy_(tensor))
            offset += size
        return out


Place = tuple[nn.Module, str, str]
"""Where a checkpoint tensor goes: the module, the name of its parameter or buffer there, the tensor's key."""


def _places(group: Group) -> list[Place]:
    """Where the group's parameters to prune go."""
    return [(member.module, member.param_name, member.key) for member in group.members]


@contextmanager
def _loaded(
    places: Sequence[Place], tensors: dict[str, Tensor], arena: _Arena | None
) -> Iterator[None]:
    """The tensors put into the model at their places, and the meta ones they replaced put back after.

    Copied into ``arena`` when they are to be pruned in place; read where they are (``None``) otherwise.
    """
    saved: list[tuple[dict[str, Any], str, Any]] = []  # the module's parameter or buffer slots
    keys = list(dict.fromkeys(key for _, _, key in places))
    held = [tensors[k] for k in keys] if arena is None else arena.hold([tensors[k] for k in keys])
    real = dict(zip(keys, held, strict=True))
    params = {key: nn.Parameter(tensor, requires_grad=False) for key, tensor in real.items()}
    for module, name, key in places:
        slots: dict[str, Any] = module._buffers if name in module._buffers else module._parameters
        saved.append((slots, name, slots[name]))
        slots[name] = real[key] if slots is module._buffers else params[key]
    try:
        yield
    finally:
        for (slots, name, old), (module, _, _) in zip(saved, places, strict=True):
            if masking.get_mask(module, name) is not None:
                masking.remove_parameter(module, name)
            slots[name] = old


def _written(group: Group, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The group's tensors as they go to disk: the pruned parameters' current values, the others as read."""
    out = dict(tensors)
    for member in group.members:
        param = member.module._parameters[member.param_name]
        assert param is not None
        out[member.key] = param.detach().contiguous()
    return out


class _Streamer:
    """The :class:`~prunus.calibration.BlockLoader` of a streamed checkpoint: each part read when it is asked for.

    A block's final visit, left without an error, writes its tensors (pruned) as its shard of the destination.
    """

    def __init__(self, skeleton: nn.Module, source: Checkpoint, groups: Sequence[Group]) -> None:
        self.source = source
        self.groups = list(groups)
        self.where = residents(skeleton, source)
        self.position = {group.block: at for at, group in enumerate(groups) if group.block}
        first = min(self.position.values(), default=len(groups))
        self.before = [key for group in groups[:first] for key in group.keys]
        self.stack = next(iter(self.position), "").rpartition(".")[0]
        self.destination: Destination | None = None
        self.chained = False
        self.written: set[int] = set()
        self.arena = _Arena()
        filled = {(id(module), name) for places in self.where.values() for module, name in places}
        meta = [
            f"{owner}.{name}" if owner else name
            for owner, module in skeleton.named_modules()
            for name, buffer in module._buffers.items()
            if buffer is not None and buffer.is_meta and (id(module), name) not in filled
        ]
        if meta:
            raise ConfigError(
                f"the model's buffers {', '.join(meta[:3])} are on the meta device and not in the checkpoint, so "
                "its blocks cannot run; give model= as its class or a factory (its buffers are then made as usual)"
            )

    def writing(self, destination: Destination) -> _Streamer:
        """Itself, writing each block it has pruned to ``destination``."""
        self.destination = destination
        return self

    def _places(self, keys: Sequence[str]) -> list[Place]:
        return [(module, name, key) for key in keys for module, name in self.where.get(key, [])]

    @contextmanager
    def head(self) -> Iterator[None]:
        """The tensors before the stack (the embeddings), read where they are."""
        tensors = self.source.load(self.before)
        with _loaded(self._places(self.before), tensors, None):
            yield

    @contextmanager
    def block(self, index: int, *, final: bool) -> Iterator[None]:
        """Block ``index``: copied into the arena on its final visit, written out when that visit ends well."""
        at = self.position.get(f"{self.stack}.{index}" if self.stack else str(index))
        if at is None:
            raise CheckpointError(
                f"block {index} of the model's stack {self.stack!r} has no tensors in the checkpoint"
            )
        group = self.groups[at]
        if at + 1 < len(self.groups) and self.groups[at + 1].block:
            self.source.prefetch(self.groups[at + 1].keys)  # read from disk while this block runs
        tensors = self.source.load(group.keys)
        with _loaded(self._places(group.keys), tensors, self.arena if final else None):
            yield
            written = _written(group, tensors) if final else None
        del tensors
        if written is not None and self.destination is not None:
            self.destination.write_shard(_shard(at, len(self.groups)), written)
            self.written.add(at)

    def write_rest(self, destination: Destination) -> None:
        """Copy every group not written yet (the tensors outside the stack, blocks left alone) as it is."""
        for at, group in enumerate(self.groups):
            if at not in self.written:
                destination.write_shard(_shard(at, len(self.groups)), self.source.load(group.keys))


def _separable(
    skeleton: nn.Module,
    source: Checkpoint,
    groups: Sequence[Group],
    strategy: Strategy,
    destination: Destination,
    registry: Registry,
    show_progress: bool,
) -> list[ParameterReport]:
    """One pass: each group loaded, pruned by ``prune`` (its own parameters only), written, freed."""
    reports: list[ParameterReport] = []
    arena = _Arena()
    for position, group in enumerate(
        progress(groups, enabled=show_progress, total=len(groups), desc="prune")
    ):
        if position + 1 < len(groups):
            source.prefetch(groups[position + 1].keys)  # read from disk while this group is pruned
        tensors = source.load(group.keys)
        with _loaded(_places(group), tensors, arena):
            if group.members:
                # The calibration pass of a data-aware criterion would run this block here first.
                report = prune(
                    skeleton,
                    strategy,
                    include=[glob.escape(m.name) for m in group.members],
                    restorable=False,
                    registry=registry,
                )
                reports.extend(report.parameters)
            written = _written(group, tensors)
        del tensors
        destination.write_shard(_shard(position, len(groups)), written)
        del written
    return reports


def _ranked(
    skeleton: nn.Module,
    source: Checkpoint,
    groups: Sequence[Group],
    composed: ComposedStrategy,
    destination: Destination,
    registry: Registry,
    show_progress: bool,
) -> list[ParameterReport]:
    """A global ranking in streaming passes: histograms of every score, then every mask written in order."""
    members = sorted((m for g in groups for m in g.members), key=lambda m: m.index)
    order = sorted(range(len(groups)), key=lambda i: groups[i].first)
    if [m.index for i in order for m in groups[i].members] != [m.index for m in members]:
        raise CheckpointError(
            "the parameters ranked together are laid out out of model order in the checkpoint's groups; "
            "rank them with prunus.prune in memory"
        )
    context = PruneContext(model=skeleton, targets=[], restorable=False)
    scorer = Scorer(
        composed.criterion,
        context,
        registry.hooks.score,
        composed.name,
        registry.hooks.scores_directly(),
    )
    amount = composed.granularity_component.options["amount"]
    size = sum(source.tensors[m.key].numel for m in members)
    k = count_to_prune(amount, size, what="entries across all targets")
    min_keep = composed.granularity_component.options.get("min_keep", 0)
    floors = {m.index: min(min_keep, source.tensors[m.key].numel) for m in members}
    if k == size or k > size - sum(floors.values()):
        floors = {}  # the amount asks for more than the floor leaves: followed, as in memory
    # Score dtypes are known up front for an elementwise criterion; another one may return float64 scores,
    # so its keys are 64-bit (exact for every float dtype).
    dtypes = [_score_dtype(scorer, source.tensors[m.key].dtype) for m in members]
    bits = 64 if None in dtypes else max((key_bits(d) for d in dtypes if d is not None), default=32)
    ranking = None
    arena = _Arena()
    if 0 < k < size:
        zero_bits = 0 if None in dtypes else min(zero_low_bits(d, bits) for d in dtypes if d)
        ranking = ChunkedRanking(k, size, None, bits=bits, decisive=True, zero_bits=zero_bits)
        while ranking.pass_kind == "histogram":
            for at, member in enumerate(
                progress(members, enabled=show_progress, total=len(members), desc="rank")
            ):
                if at + 1 < len(members):
                    source.prefetch([members[at + 1].key])
                group = Group([member.key], [member])
                tensors = source.load([member.key])
                with _loaded(_places(group), tensors, None):
                    ranking.feed(member.index, _scores(scorer, member))
                del tensors
            _settle(ranking)
    reports: list[ParameterReport] = []
    for position, index in enumerate(
        progress(order, enabled=show_progress, total=len(order), desc="write")
    ):
        if position + 1 < len(order):
            source.prefetch(groups[order[position + 1]].keys)
        group = groups[index]
        tensors = source.load(group.keys)
        with _loaded(_places(group), tensors, arena):
            for member in group.members:
                param = member.module._parameters[member.param_name]
                assert param is not None
                if ranking is None:
                    keep = torch.full((param.numel(),), k == 0, dtype=torch.bool)
                else:
                    keep = empty_mask(param.numel(), param.device)
                    ranking.feed(member.index, _scores(scorer, member), keep)
                pruned = param.numel() - int(torch.count_nonzero(keep))
                if param.numel() - pruned < floors.get(member.index, 0):
                    raise ConfigError(
                        f"{composed.name}: the ranking keeps {param.numel() - pruned} entries of "
                        f"{member.name!r}, fewer than min_keep={min_keep}; a streamed ranking cannot hold "
                        "that floor (it would rank the checkpoint again without those entries). Give "
                        "min_keep=0 for the plain ranking, or prune the model in memory with prunus.prune. "
                        "Nothing was written"
                    )
                masking.zero_pruned(param.detach(), keep.reshape(param.shape))
                reports.append(
                    ParameterReport(
                        name=member.name,
                        shape=tuple(param.shape),
                        numel=param.numel(),
                        pruned=pruned,
                        newly_pruned=pruned,
                    )
                )
            written = _written(group, tensors)
        del tensors
        destination.write_shard(_shard(position, len(groups)), written)
        del written
    if ranking is not None:
        _settle(ranking)  # the counts of the last pass must match: the masks are exact
    return reports


def _settle(ranking: ChunkedRanking) -> None:
    try:
        ranking.settle()
    except Inconsistent:
        raise PluginError(
            "the criterion's scores changed between two passes over the checkpoint; a streamed global "
            "ranking needs a deterministic (or seeded) criterion"
        ) from None


def _score_dtype(scorer: Scorer, dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype of the scores of values of ``dtype`` (``None`` when only scoring tells)."""
    if dtype is None or not scorer.elementwise:
        return None
    return scorer.criterion.score_values(torch.empty(0, dtype=dtype)).dtype


def _scores(scorer: Scorer, member: Member) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """The member's scores chunk by chunk: straight from its values for an elementwise criterion."""
    target = Target(member.name, member.module, member.param_name)
    if not scorer.elementwise:
        yield from chunks_of(scorer(target).reshape(-1), None)
        return
    values = target.tensor.reshape(-1)
    buffer: Tensor | None = None
    for start, chunk, _ in chunks_of(values, None):
        if buffer is None:
            dtype = scorer.values(target, chunk[:1]).dtype
            buffer = torch.empty(chunk.numel(), dtype=dtype, device=chunk.device)
        yield start, scorer.values(target, chunk, buffer[: chunk.numel()]), None
