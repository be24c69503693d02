"""Model configurations that follow a shrink: a Hugging Face model's ``config`` describes the smaller model.

After heads, key/value groups, FFN neurons or hidden channels are removed, the entries a Hugging Face config
holds for them (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``intermediate_size`` /
``n_inner``, ``hidden_size``) are set from the layers' new widths, so ``save_pretrained`` writes a config that
rebuilds the smaller architecture and ``from_pretrained`` loads it with no pickle. A config holds one value per
entry: layers shrunk unevenly (a global ranking) cannot be described, nor can heads in architectures that derive
the head width from ``hidden_size / num_attention_heads`` (BERT, GPT-2). Whether the config suffices is not
assumed but checked: the class is built from the new config on the meta device (no memory, no weights) and its
parameter shapes compared with the shrunken model's. Where it does not suffice, :func:`prunus.save_pruned` and
:func:`prunus.load_pruned` (or :func:`prunus.shrink_state` and :func:`prunus.load_shrunk`) save and rebuild the
model without pickle all the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .heads import Attention
from .tracing import conv1d_size, is_conv1d

__all__ = ["hidden_width", "update_config"]

# Config entries of FFN widths: the layers whose width each one gives, by qualified-name suffix and attribute.
_FFN = {
    "intermediate_size": (
        ("mlp.up_proj", "out_features"),
        ("mlp.gate_proj", "out_features"),
        ("intermediate.dense", "out_features"),
        ("mlp.fc1", "out_features"),
    ),
    "n_inner": (("mlp.c_fc", "nf"),),
}


def hidden_width(model: nn.Module) -> int | None:
    """The width of the residual stream: the input embeddings' (or a patch embedding's convolution)."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        embeddings = None
    if isinstance(embeddings, nn.Embedding):
        return embeddings.embedding_dim
    for module in embeddings.modules() if isinstance(embeddings, nn.Module) else ():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.out_channels
    return None


def _head_counts(att: Attention) -> tuple[int, int]:
    """Query and key/value heads of an attention block now."""
    if is_conv1d(att.q.module):
        heads = conv1d_size(att.q.module, "nf") // 3 // att.head_dim
        return heads, heads
    q, k = att.q.module, att.k.module
    assert isinstance(q, nn.Linear) and isinstance(k, nn.Linear)
    return q.out_features // att.head_dim, k.out_features // att.head_dim


def _uniform(values: list[int], what: str, problems: list[str]) -> int | None:
    if not values:
        return None
    if len(set(values)) > 1:
        problems.append(
            f"{what} differs between layers ({min(values)} to {max(values)}) and the config holds one value: "
            "shrink every layer alike (a '<criterion>_structured' ranking) for from_pretrained to rebuild it"
        )
        return None
    return values[0]


def update_config(
    model: nn.Module, attentions: list[Attention], hidden_before: int | None
) -> tuple[dict[str, Any], str | None, Callable[[], None]]:
    """Set ``model.config`` from the shrunken layers.

    Returns:
        The entries changed (name: new value), whether the config alone rebuilds the smaller model (a sentence,
        or ``None`` for a model without a Hugging Face config), and an undo that puts the old values back.
    """
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        return {}, None, lambda: None
    problems: list[str] = []
    wanted: dict[str, int] = {}
    if attentions:
        counts = [_head_counts(a) for a in attentions]
        heads = _uniform([c[0] for c in counts], "the number of attention heads", problems)
        kv = _uniform([c[1] for c in counts], "the number of key/value heads", problems)
        if heads is not None and heads != getattr(config, "num_attention_heads", None):
            wanted["num_attention_heads"] = heads
            wanted["head_dim"] = attentions[0].head_dim
        if kv is not None and kv != getattr(config, "num_key_value_heads", kv):
            wanted["num_key_value_heads"] = kv
    modules = dict(model.named_modules())
    for key, places in _FFN.items():
        if not hasattr(config, key):
            continue
        widths = [
            int(getattr(m, attr))
            for name, m in modules.items()
            for suffix, attr in places
            if name.endswith(suffix) and isinstance(getattr(m, attr, None), int)
        ]
        width = _uniform(widths, key, problems)
        if width is not None and width != getattr(config, key):
            wanted[key] = width
    hidden = hidden_width(model)
    if hidden is not None and hidden != hidden_before and hasattr(config, "hidden_size"):
        wanted["hidden_size"] = hidden
    old = {key: getattr(config, key, None) for key in wanted}
    missing = {key for key in wanted if not hasattr(config, key)}
    for key, value in wanted.items():
        setattr(config, key, value)

    def undo() -> None:
        for key, value in old.items():
            if key in missing:
                delattr(config, key)
            else:
                setattr(config, key, value)

    return wanted, _rebuilds(model, config, problems), undo


def _rebuilds(model: nn.Module, config: Any, problems: list[str]) -> str:
    """Whether ``type(model)(config)`` has the shrunken model's parameter shapes (built on the meta device)."""
    try:
        with torch.device("meta"):
            fresh = type(model)(copy.deepcopy(config))
    except Exception as error:
        return f"no: {type(model).__name__}(config) fails: {type(error).__name__}: {error}"
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    theirs = {n: tuple(p.shape) for n, p in fresh.named_parameters()}
    wrong = [n for n in ours if theirs.get(n) != ours[n]]
    if not wrong and not problems:
        return "yes: the config describes every layer, save_pretrained then from_pretrained rebuilds the model"
    why = (
        "; ".join(problems)
        if problems
        else (
            f"{type(model).__name__} builds {wrong[0]} as {theirs.get(wrong[0])} from its config, not "
            f"{ours[wrong[0]]} (its config cannot describe this change"
            + (
                ", e.g. heads whose width it derives from hidden_size / num_attention_heads)"
                if wrong
                else ")"
            )
        )
    )
    return (
        f"no: {why}. Save with prunus.save_pruned(model, path) (weights and shapes in one safetensors file) and "
        "rebuild with prunus.load_pruned(type(model)(model.config), path)"
    )
