"""The model of a checkpoint without its weights, and the plan of groups its tensors stream in.

The model is built with its parameters on the meta device (no memory for its weights) and its buffers real (a
rotary embedding's frequencies, which no checkpoint holds, computed as usual): from a class or a factory the caller
gives, or, for a Hugging Face directory, from its ``config.json`` through ``transformers`` (its ``architectures``
entry).
It tells which tensors are prunable parameters (the weight of every Linear and Conv layer by default, as for
:func:`prunus.prune`), what modules own them (a granularity may look at the module: N:M groups run along a
Linear's input dim), and which *block* each belongs to: the blocks of the model's stack
(:func:`prunus.layout.find_blocks`: the decoder layers of a transformer), the blocks a calibration pass runs one
at a time.

:func:`plan` cuts the checkpoint into :class:`Group` s in model order, each loaded, pruned and written as one
shard: one per block, and runs of the other tensors (embeddings, final norm, head) up to the size of a block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError, MissingDependencyError, TargetError
from ..layout import find_blocks
from .checkpoint import Checkpoint

__all__ = ["Group", "Member", "build", "plan", "residents"]

_MIN_RUN = 256 << 20
"""Tensors outside the blocks are grouped in runs of at least this many bytes (or a block's size)."""


def build(model: Any, source: Checkpoint) -> nn.Module:
    """The model to prune, its parameters on the meta device.

    Args:
        model: an ``nn.Module`` subclass or any factory called with no arguments (its parameters put on the meta
            device as they are made, its buffers kept), a module already on the meta device, or ``None`` to
            build the Hugging Face model ``source``'s ``config.json`` describes.
        source: the checkpoint.

    Raises:
        ConfigError: ``model`` is none of those, or holds real weights.
        CheckpointError: ``model`` is ``None`` and the checkpoint has no ``config.json``.
        MissingDependencyError: ``transformers`` is needed and not installed.
    """
    if model is None:
        return _from_config(source)
    if isinstance(model, nn.Module):
        real = [name for name, p in model.named_parameters() if not p.is_meta]
        if real:
            raise ConfigError(
                f"model= holds real weights ({real[0]!r}...): give its class or a factory, or build it under "
                "`with torch.device('meta'):`, so that the checkpoint's weights stream in one group at a time"
            )
        return model
    if callable(model):
        with parameters_on_meta():
            built = model()
        if not isinstance(built, nn.Module):
            raise ConfigError(
                f"model={model!r:.80} built a {type(built).__name__}, not a torch.nn.Module"
            )
        return built
    raise ConfigError(
        f"model= must be an nn.Module class, a factory or a module on the meta device, not {type(model).__name__}"
    )


def _from_config(source: Checkpoint) -> nn.Module:
    config_file = source.directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{source.path} has no config.json to build the model from; pass model= (its class or a factory)"
        )
    try:
        import transformers
    except ImportError as error:
        raise MissingDependencyError(
            "a Hugging Face checkpoint needs transformers: pip install 'prunus[transformers]'"
        ) from error
    try:
        config = transformers.AutoConfig.from_pretrained(str(source.directory))
    except Exception as error:
        raise CheckpointError(f"cannot read {config_file}: {error}") from None
    architectures = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, architectures[0], None) if architectures else None
    with parameters_on_meta():
        if cls is None:
            built = transformers.AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        else:
            built = cls(config)
    assert isinstance(built, nn.Module)
    return built.eval()


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules made inside get their parameters on the meta device as each is registered, their buffers real.

    A parameter is made on the CPU (uninitialised memory, never touched) and moved at once; its initialisation
    then runs on the meta device and costs nothing.
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: Any) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            kept = module._parameters[name]
            assert kept is not None
            module._parameters[name] = type(kept)(
                kept.to("meta"), **{**kept.__dict__, "requires_grad": kept.requires_grad}
            )

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


@dataclass(frozen=True)
class Member:
    """A parameter to prune, and where its values are in the checkpoint.

    Attributes:
        index: its position among all the parameters pruned (model order: the order ties are broken in).
        name: its qualified name in the model (as :func:`prunus.prune` reports it).
        module: the module that owns it.
        param_name: its name in ``module``.
        key: the checkpoint's name for its tensor (another one for a weight tied to it, say).
    """

    index: int
    name: str
    module: nn.Module
    param_name: str
    key: str


@dataclass
class Group:
    """Tensors loaded, pruned and written together (one shard of the destination).

    Attributes:
        keys: the checkpoint tensors in it.
        members: the parameters to prune among them, in model order.
        block: the block it is, or ``None`` for tensors outside the stack.
    """

    keys: list[str]
    members: list[Member] = field(default_factory=list)
    block: str | None = None

    @property
    def first(self) -> int:
        """The model-order index of its first member (groups without one sort last)."""
        return min((m.index for m in self.members), default=1 << 62)


def plan(
    model: nn.Module,
    source: Checkpoint,
    targets: Sequence[tuple[str, nn.Module, str]],
) -> list[Group]:
    """The groups of ``source``'s tensors in model order, with ``targets`` (from ``select_targets``) placed.

    Raises:
        TargetError: a parameter to prune has no tensor in the checkpoint.
    """
    state = model.state_dict(keep_vars=True)
    key_of = _keys(model, list(state), source)
    # The first name of each tensor object: tied weights share one (and one checkpoint entry).
    canonical: dict[int, str] = {}
    for name, tensor in state.items():
        canonical.setdefault(id(tensor), name)
    position = {key: i for i, name in enumerate(state) if (key := key_of.get(name)) is not None}
    stack = find_blocks(model)
    block_of: dict[str, str] = {}
    if stack is not None:
        prefix = f"{stack[0]}." if stack[0] else ""
        for name in state:
            key = key_of.get(name)
            if key is not None and name.startswith(prefix):
                block_of.setdefault(key, prefix + name[len(prefix) :].split(".", 1)[0])
    ordered = sorted(source.tensors, key=lambda k: (position.get(k, len(position)), k))
    sizes = {key: max(source.tensors[key].nbytes, 1) for key in ordered}
    blocks: dict[str, list[str]] = {}
    for key in ordered:
        if key in block_of:
            blocks.setdefault(block_of[key], []).append(key)
    budget = max([_MIN_RUN, *(sum(sizes[k] for k in keys) for keys in blocks.values())])
    groups: list[Group] = []
    run: list[str] = []
    held = 0
    for key in ordered:
        block = block_of.get(key)
        if block is not None:
            if run:
                groups.append(Group(run))
                run, held = [], 0
            if not groups or groups[-1].block != block:
                groups.append(Group([], block=block))
            groups[-1].keys.append(key)
            continue
        if run and held + sizes[key] > budget:
            groups.append(Group(run))
            run, held = [], 0
        run.append(key)
        held += sizes[key]
    if run:
        groups.append(Group(run))
    where = {key: group for group in groups for key in group.keys}
    for index, (name, module, param_name) in enumerate(targets):
        param = module._parameters[param_name]
        owner = canonical.get(id(param), name)
        key = key_of.get(owner)
        if key is None:
            raise TargetError(
                f"the checkpoint has no tensor for {name!r}"
                + (f" (nor for {owner!r}, whose weight it shares)" if owner != name else "")
                + f"; its tensors include {', '.join(list(source.tensors)[:5])}..."
            )
        where[key].members.append(Member(index, name, module, param_name, key))
    return groups


def residents(model: nn.Module, source: Checkpoint) -> dict[str, list[tuple[nn.Module, str]]]:
    """Where each checkpoint tensor goes: the modules and the names of the parameters or buffers it fills."""
    modules = dict(model.named_modules(remove_duplicate=False))
    out: dict[str, list[tuple[nn.Module, str]]] = {}
    for name, key in _keys(model, list(model.state_dict(keep_vars=True)), source).items():
        owner, _, attr = name.rpartition(".")
        out.setdefault(key, []).append((modules[owner], attr))
    return out


def _keys(model: nn.Module, names: list[str], source: Checkpoint) -> dict[str, str]:
    """Model state name to checkpoint key: the same name, or without (or with) the base model's prefix."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    out = {}
    for name in names:
        candidates = [name]
        if prefix:
            candidates += [name.removeprefix(f"{prefix}."), f"{prefix}.{name}"]
        key = next((c for c in candidates if c in source.tensors), None)
        if key is not None:
            out[name] = key
    return out
