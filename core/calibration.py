"""Running calibration data through a model, one block at a time, gathering the statistics strategies declare.

:func:`calibration_pass` is the loop every data-aware ``prune`` call (and :func:`calibrate`) goes through. For a
model with a stack of blocks (:func:`prunus.layout.find_blocks`: a decoder's layers, BERT's encoder layers,
GPT-2's blocks) it works as SparseGPT and Wanda do on large models:

1. it runs each batch up to the first block and keeps that block's inputs (and, for the first batch, runs the
   whole model to check that the blocks really form a chain: each one fed by the one before, all called with
   the same other arguments);
2. for each block in turn it runs the kept inputs through the block with hooks on the targeted layers, which
   fold each layer's inputs into streaming :class:`~prunus.statistics.Statistic` objects, and yields a
   :class:`Unit` (the block's targets and their statistics) to the caller, who prunes the block;
3. it runs the inputs through the block again, as the caller left it, to get the inputs of the next block.

Only one block's activations and statistics are held at a time, and the inputs of block ``i + 1`` come from block
``i`` already pruned. Targets outside the stack (an output head named in ``include``), and every target of a model
without a stack (or whose blocks do not chain), are calibrated in one pass of the whole model, last.

A model whose weights are not all in memory (a checkpoint streamed from disk) is calibrated the same way with a
:class:`BlockLoader`, which puts the weights before the stack in memory while the inputs of the first block are
computed, and each block's weights while it runs: then only one block's weights are held too.

``data`` is one batch (a tensor, or a mapping of keyword arguments such as a tokenizer's output) or an iterable of
batches; a tuple is the positional arguments of one batch (the rule of :func:`prunus.forward.call_model`). Tensors
are moved to the model's device, and a model whose ``forward`` takes ``use_cache`` (Hugging Face) is called with
``use_cache=False`` so that no key/value cache grows while blocks are replayed. The model runs in eval mode
under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .errors import CalibrationError, ConfigError
from .forward import evaluation_mode, to_device
from .layout import find_blocks, gatherable, input_columns, input_features
from .progress import progress
from .statistics import InputNorms, Statistic, Statistics
from .strategy import Target
from .targets import FilterFn, Patterns, listing, select_targets

__all__ = ["BlockLoader", "Unit", "batches_of", "calibrate", "calibration_pass", "group_by_block"]


@dataclass(frozen=True, eq=False)
class Unit:
    """One step of a calibration pass: a block's targets and their statistics.

    Attributes:
        name: the block's qualified name (``"model.layers.3"``); ``""`` for the targets calibrated in one pass
            of the whole model.
        targets: the targets inside it, in model order.
        statistics: their statistics, gathered with every block before this one as the caller left it.
    """

    name: str
    targets: list[Target]
    statistics: Statistics


class BlockLoader(Protocol):
    """Puts the weights of a model that does not fit in memory there one part at a time, for a calibration pass.

    The model's parameters stay on the meta device but for the part a context manager holds.

    Attributes:
        chained: set by the first calibration pass that checked that the blocks run one after the other (a pass
            of the first batch through every block); later passes (pruning after an allocation measured the
            blocks) skip the check and read each block once.
    """

    chained: bool

    def head(self) -> AbstractContextManager[None]:
        """The weights the model reads before its first block (the embeddings), in memory while it is held."""
        ...

    def block(self, index: int, *, final: bool) -> AbstractContextManager[None]:
        """The weights of block ``index`` of the stack, in memory while it is held.

        ``final`` is true on the block's last visit, the one where the caller prunes it: left without an
        error, the block is done (its weights may be written out). Other visits change nothing: the first batch
        run through the whole stack to check that the blocks chain, or a pass that only measures the blocks.
        """
        ...


def batches_of(data: Any) -> list[Any]:
    """The calibration batches in ``data``: one batch (tensor, mapping, tuple) or an iterable of them.

    Raises:
        CalibrationError: ``data`` is ``None``, not iterable, or holds no batch.
    """
    if data is None:
        raise CalibrationError(
            "no calibration data: pass data= with batches of inputs (input_ids tensors, or tokenizer "
            "outputs as dicts), e.g. prune(model, 'wanda_row', amount=0.5, data=[tok(text, "
            "return_tensors='pt') for text in texts])"
        )
    if isinstance(data, Tensor | Mapping | tuple):
        return [data]
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise CalibrationError(
            f"data={data!r:.80} is not calibration data: give a batch (a tensor, a dict of keyword "
            "arguments) or an iterable of batches (tokenize text first)"
        )
    batches = list(data)
    if not batches:
        raise CalibrationError(
            "data= holds no batch; give at least one batch of calibration inputs"
        )
    return batches


def group_by_block(
    model: nn.Module, targets: Sequence[Target]
) -> tuple[tuple[str, nn.ModuleList] | None, dict[int, list[Target]], list[Target]]:
    """The model's stack of blocks, the targets inside each block (by index) and the targets outside it."""
    stack = find_blocks(model)
    inside: dict[int, list[Target]] = {}
    outside: list[Target] = []
    owner: dict[int, int] = {}
    if stack is not None:
        for index, block in enumerate(stack[1]):
            for param in block.parameters():
                owner[id(param)] = index
    for target in targets:
        where = owner.get(id(target.parameter))
        if where is None:
            outside.append(target)
        else:
            inside.setdefault(where, []).append(target)
    return (stack if inside else None), inside, (outside if inside else list(targets))


def calibration_pass(
    model: nn.Module,
    batches: Sequence[Any],
    targets: Sequence[Target],
    kinds: Sequence[type[Statistic]],
    *,
    show_progress: bool = False,
    desc: str = "calibrating",
    loader: BlockLoader | None = None,
    final_visits: bool = True,
) -> Generator[Unit, None, None]:
    """Run ``batches`` through ``model`` block by block and yield each block's targets with their statistics.

    After a :class:`Unit` is yielded the caller may change that block's parameters (prune them): the pass resumes
    by running the block's inputs through the block as it now is, to make the inputs of the next block.

    Args:
        model: the model; it runs in eval mode under ``torch.no_grad()``.
        batches: the calibration batches (see :func:`batches_of`).
        targets: the parameters to gather statistics for; each must be the weight of a Linear, ``Conv1D``,
            ``Conv1d`` or ``Conv2d`` layer (:func:`prunus.layout.gatherable`).
        kinds: the :class:`~prunus.statistics.Statistic` classes to gather.
        show_progress: show a progress bar over the blocks.
        desc: the bar's label.
        loader: loads the model's weights part by part when they are not in memory (the parameters on the
            meta device); then every target must be inside blocks that chain.
        final_visits: whether the caller prunes the blocks this pass yields (each block's visit is then its
            final one for ``loader``); false for a pass that only measures.

    Raises:
        CalibrationError: a target's layer cannot be calibrated, never runs on the data, or a batch fails in
            the model.
        ConfigError: with ``loader``, targets outside the stack of blocks, or blocks that do not chain (those
            need the whole model in memory).
    """
    _check_gatherable(targets)
    with torch.no_grad(), evaluation_mode(model):
        batches = [to_device(batch, None if loader else _device(model)) for batch in batches]
        stack, inside, outside = group_by_block(model, targets)
        if loader is not None and (stack is None or outside):
            raise ConfigError(
                f"{listing([t.name for t in outside], 5)} are outside the model's stack of blocks; a model "
                "streamed block by block calibrates only the layers inside its blocks: exclude them, or prune "
                "the model in memory with prunus.prune"
            )
        streams = None
        if stack is not None:
            with contextlib.nullcontext() if loader is None else loader.head():
                streams = _capture(model, stack[1], batches, loader)
        if stack is not None and streams is None:
            if loader is not None:
                raise ConfigError(
                    f"the blocks of {stack[0] or type(model).__name__} do not run one after the other on the "
                    "same arguments, so they cannot be calibrated one at a time from disk; prune the model in "
                    "memory with prunus.prune"
                )
            outside = list(targets)  # the blocks do not chain: calibrate everything at once
        if stack is not None and streams is not None:
            name, blocks = stack
            last = max(inside)  # the blocks after the last one with targets need not run
            steps = progress(range(last + 1), enabled=show_progress, total=last + 1, desc=desc)
            for index in steps:
                block = blocks[index]
                group = inside.get(index)
                with (
                    contextlib.nullcontext()
                    if loader is None
                    else loader.block(index, final=final_visits)
                ):
                    if group:
                        with _Gatherer(group, kinds) as gatherer:
                            for stream in streams:
                                gatherer.next_batch()
                                stream.run(block)
                        unit = Unit(
                            f"{name}.{index}" if name else str(index), group, gatherer.result()
                        )
                        del (
                            gatherer
                        )  # one block's statistics at a time: these go once the caller is done
                        yield unit
                        del unit
                    if index < last:
                        for stream in streams:
                            stream.advance(block)
            del streams
        if outside:
            with _Gatherer(outside, kinds) as gatherer:
                for number, batch in enumerate(batches):
                    gatherer.next_batch()
                    _run_model(model, batch, number)
            yield Unit("", outside, gatherer.result())


def calibrate(
    model: nn.Module,
    data: Any,
    statistics: Sequence[type[Statistic]] = (InputNorms,),
    *,
    include: Patterns = None,
    exclude: Patterns = None,
    filter_fn: FilterFn | None = None,
    show_progress: bool = False,
) -> Statistics:
    """Gather calibration statistics of a model's layers without pruning anything.

    The same pass ``prune`` runs, block by block, but nothing changes between blocks, so every statistic is of
    the unpruned model. Pass the result as ``prune(..., data=statistics)`` to prune several ways from one
    calibration (each then prunes every layer from the unpruned model's inputs, rather than block by block).

    Args:
        model: the model.
        data: calibration batches (see :func:`batches_of`).
        statistics: the :class:`~prunus.statistics.Statistic` classes to gather (default: input norms).
        include: which parameters, as in :func:`prunus.prune` (default: the layers' weights; in a language
            model those of its blocks).
        exclude: parameters to leave out, as in :func:`prunus.prune`.
        filter_fn: a rule over each parameter, as in :func:`prunus.prune`.
        show_progress: show a progress bar over the blocks.

    Returns:
        The statistics of every chosen parameter.
    """
    chosen = select_targets(model, include=include, exclude=exclude, filter_fn=filter_fn)
    targets = [Target(name, module, pname) for name, module, pname in chosen]
    out = Statistics()
    for unit in calibration_pass(
        model, batches_of(data), targets, list(statistics), show_progress=show_progress
    ):
        out = out.merged(unit.statistics)
    return out


# -- running the model -------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by a hook to stop a forward pass once it has what it needs."""


def _device(model: nn.Module) -> torch.device | None:
    devices = {p.device for p in model.parameters()}
    return devices.pop() if len(devices) == 1 else None


def _takes_use_cache(model: nn.Module) -> bool:
    try:
        return "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _run_model(model: nn.Module, batch: Any, number: int) -> Any:
    """``model`` called on one batch by the rule of ``call_model``, with ``use_cache=False`` where it takes it."""
    extra = {"use_cache": False} if _takes_use_cache(model) else {}
    try:
        if isinstance(batch, tuple):
            return model(*batch, **extra)
        if isinstance(batch, Mapping):
            return model(**{**extra, **batch})
        return model(batch, **extra)
    except (_Stop, CalibrationError):
        raise
    except Exception as error:
        raise CalibrationError(
            f"calibration batch {number} ({_describe(batch)}) failed in {type(model).__name__}: "
            f"{type(error).__name__}: {error}"
        ) from error


def _describe(batch: Any) -> str:
    if isinstance(batch, Tensor):
        return f"a {batch.dtype} tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return "keyword arguments " + ", ".join(map(str, batch))
    return type(batch).__name__


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    first = getattr(output, "last_hidden_state", None)  # a ModelOutput
    return first if isinstance(first, Tensor) else None


class _Stream:
    """One batch's inputs of the current block: the hidden states and the arguments every block shares."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = list(args)
        self.kwargs = dict(kwargs)
        self.key: int | str = 0 if args and isinstance(args[0], Tensor) else "hidden_states"
        if self.key == "hidden_states" and not isinstance(kwargs.get("hidden_states"), Tensor):
            raise CalibrationError(
                "the first block is called without a hidden-states tensor (first positional argument or "
                "hidden_states=); calibrate its parameters in one pass instead"
            )

    @property
    def hidden(self) -> Tensor:
        value = self.args[0] if self.key == 0 else self.kwargs["hidden_states"]
        assert isinstance(value, Tensor)
        return value

    def run(self, block: nn.Module) -> Tensor:
        output = _first_tensor(block(*self.args, **self.kwargs))
        if output is None:
            raise CalibrationError(
                f"block {type(block).__name__} returned no tensor to feed the next one"
            )
        return output

    def advance(self, block: nn.Module) -> None:
        """Replace the hidden states by the block's output on them."""
        output = self.run(block)
        if self.key == 0:
            self.args[0] = output
        else:
            self.kwargs["hidden_states"] = output


def _capture(
    model: nn.Module,
    blocks: nn.ModuleList,
    batches: Sequence[Any],
    loader: BlockLoader | None = None,
) -> list[_Stream] | None:
    """Every batch's inputs to the first block, or ``None`` when the blocks do not form a chain.

    The first batch runs through the whole model with every block's call recorded, to check that block ``i``
    is called once, after block ``i - 1``, on its output, with the same other arguments; the other batches stop
    at the first block. With a ``loader`` each block is loaded for its call, and the first batch stops after the
    last block (what follows the stack is not in memory).
    """
    if loader is not None and loader.chained:
        return _first_inputs(model, blocks, batches, [])
    calls: list[tuple[int, tuple[Any, ...], dict[str, Any], Any]] = []
    held = contextlib.ExitStack()

    def record(index: int) -> Callable[..., None]:
        def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls.append((index, args, kwargs, None))
            if loader is not None:
                held.enter_context(loader.block(index, final=False))

        return pre

    def output(index: int) -> Callable[..., None]:
        def post(module: nn.Module, args: Any, kwargs: Any, result: Any) -> None:
            last = calls[-1]
            if last[0] == index:
                calls[-1] = (*last[:3], _first_tensor(result))
            if loader is not None:
                held.close()
                if index == len(blocks) - 1:
                    raise _Stop

        return post

    handles = []
    try:
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(record(index), with_kwargs=True))
            handles.append(block.register_forward_hook(output(index), with_kwargs=True))
        with contextlib.suppress(_Stop):
            _run_model(model, batches[0], 0)
    finally:
        held.close()
        for handle in handles:
            handle.remove()
    if not _chained(calls, len(blocks)):
        return None
    if loader is not None:
        loader.chained = True
    streams = [_Stream(calls[0][1], calls[0][2])]
    calls.clear()
    return _first_inputs(model, blocks, batches[1:], streams)


def _first_inputs(
    model: nn.Module, blocks: nn.ModuleList, batches: Sequence[Any], streams: list[_Stream]
) -> list[_Stream]:
    """``streams`` followed by the inputs to the first block of each batch, each run stopped there."""
    start = len(streams)

    def stop(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        streams.append(_Stream(args, kwargs))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for number, batch in enumerate(batches, start=start):
            try:
                _run_model(model, batch, number)
            except _Stop:
                continue
            raise CalibrationError(f"calibration batch {number} never reached the first block")
    finally:
        handle.remove()
    return streams


def _chained(calls: list[tuple[int, tuple[Any, ...], dict[str, Any], Any]], count: int) -> bool:
    if [index for index, *_ in calls] != list(range(count)):
        return False
    first = _Stream(calls[0][1], calls[0][2]) if calls else None
    if first is None:
        return False
    for (_, args, kwargs, _out), (_, _, _, previous) in zip(calls[1:], calls, strict=False):
        try:
            stream = _Stream(args, kwargs)
        except CalibrationError:
            return False
        if previous is None or stream.hidden is not previous or stream.key != first.key:
            return False
        rest = (
            stream.args[1:] if stream.key == 0 else stream.args,
            {k: v for k, v in stream.kwargs.items() if k != "hidden_states"},
        )
        base = (
            first.args[1:] if first.key == 0 else first.args,
            {k: v for k, v in first.kwargs.items() if k != "hidden_states"},
        )
        if not _same(rest, base):
            return False
    return True


def _same(a: Any, b: Any) -> bool:
    """Whether two argument structures hold the same objects (tensors by identity, other values by equality)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return a is b or bool(a == b)
    except Exception:
        return False


# -- gathering statistics ---------------------------------------------------------------------------------------------


def _check_gatherable(targets: Sequence[Target]) -> None:
    problems = [
        f"{t.name} ({reason})"
        for t in targets
        if (reason := gatherable(t.module, t.param_name)) is not None
    ]
    if problems:
        raise CalibrationError(
            f"calibration gathers the inputs of layer weights, and cannot for {len(problems)} of the chosen "
            f"parameters: {listing(problems, 5)}. Leave them out (exclude=...) or prune them with a "
            "strategy that needs no calibration data"
        )


class _Gatherer:
    """Forward pre-hooks that fold each targeted layer's inputs into its statistics.

    Layers that read the same input tensor in one batch (query, key and value projections) share one set of
    statistics: computed once, held once.
    """

    def __init__(self, targets: Sequence[Target], kinds: Sequence[type[Statistic]]) -> None:
        self.targets = list(targets)
        self.kinds = list(dict.fromkeys(kinds))
        self.slots: dict[nn.Module, dict[type[Statistic], Statistic]] = {}
        self.batch: dict[tuple[Any, ...], tuple[Tensor, dict[type[Statistic], Statistic]]] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _Gatherer:
        modules = {id(t.module): t.module for t in self.targets}
        for module in modules.values():
            self.handles.append(module.register_forward_pre_hook(self._hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.batch.clear()

    def next_batch(self) -> None:
        self.batch.clear()

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs = args[0] if args else kwargs.get("input")
        if not isinstance(inputs, Tensor):
            return
        key = (id(inputs), *_layout_key(module))
        slot = self.slots.get(module)
        seen = self.batch.get(key)
        if seen is not None:
            if slot is None:
                self.slots[module] = seen[
                    1
                ]  # the same input as a layer already counted: share its statistics
                return
            if slot is seen[1]:
                return
        weight = module.weight
        assert isinstance(weight, Tensor)
        features = input_features(module, weight.shape)
        columns = input_columns(module, inputs)
        if columns.shape[1] != features:
            raise CalibrationError(
                f"the input of {type(module).__name__} has {columns.shape[1]} features, its weight "
                f"{tuple(weight.shape)} {features}"
            )
        if slot is None:
            slot = {kind: kind(features, columns.device) for kind in self.kinds}
            self.slots[module] = slot
        for statistic in slot.values():
            statistic.add(columns)
        self.batch[key] = (inputs, slot)

    def result(self) -> Statistics:
        done: dict[int, dict[type[Statistic], Tensor]] = {}
        values: dict[str, dict[type[Statistic], Tensor]] = {}
        silent = []
        for target in self.targets:
            slot = self.slots.get(target.module)
            if slot is None:
                silent.append(target.name)
                continue
            if id(slot) not in done:
                done[id(slot)] = {kind: statistic.result() for kind, statistic in slot.items()}
            values[target.name] = done[id(slot)]
        if silent:
            raise CalibrationError(
                f"{listing(silent, 5)} never ran on the calibration data, so nothing is known of their "
                "inputs; exclude them or check that the batches reach them"
            )
        return Statistics(values)


def _layout_key(module: nn.Module) -> tuple[Any, ...]:
    """What decides how a layer turns its input into columns (layers with equal keys read it alike)."""
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return (
            type(module),
            module.kernel_size,
            module.stride,
            module.dilation,
            module._reversed_padding_repeated_twice,
            module.padding_mode,
        )
    return ("linear",)
