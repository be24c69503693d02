"""Attention heads: whole heads, and whole key/value groups under grouped-query attention, as removable units.

Torch-Pruning's graph cannot tell heads apart inside an attention block (it follows the block's reshapes,
rotary embeddings and kernel as if they were element-wise) and building its groups through them blows up, so
the block is cut out of the trace (:func:`prunus.shrinking.tracing.trace`) and its heads are coupled here from
the block's layout, recognised by the attributes the common implementations share (no import of
``transformers``):

* ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` Linear layers and an integer ``head_dim``: Hugging Face Llama,
  Mistral, Qwen2, Gemma, ViT and most decoders, grouped-query attention included;
* ``query``, ``key``, ``value`` Linear layers with ``num_attention_heads`` and ``attention_head_size``: BERT and
  its relatives, whose output projection is the sibling ``output.dense``;
* ``c_attn`` and ``c_proj`` ``Conv1D`` layers with ``num_heads``, ``head_dim`` and ``split_size``: GPT-2 (the
  query, key and value projections packed in one layer);
* ``nn.MultiheadAttention`` (without ``add_bias_kv`` or ``add_zero_attn``), which becomes a
  :class:`~prunus.shrinking.mha.HeadPrunedMultiheadAttention` once it loses heads.

One unit is one key/value group: a key head, a value head and the query heads that share them (one query head
when there are as many key/value heads as query heads), so every group keeps the same number of query heads and
the block's head counts stay consistent. The attributes the forward reads are updated after removal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..targets import matches
from .groups import Group, Removal, Slice
from .mha import prunable_heads, remove_heads
from .tracing import conv1d_size, is_conv1d

__all__ = ["Attention", "find_attention", "head_group"]


@dataclass
class Projection:
    """Rows (outputs) or columns (inputs) of one layer that hold heads, from ``offset`` on."""

    module: nn.Module
    name: str
    offset: int = 0
    weight: str = "weight"
    bias: str = "bias"
    bias_offset: int | None = None  # where its bias entries start, if not at ``offset``

    @property
    def bias_start(self) -> int:
        return self.offset if self.bias_offset is None else self.bias_offset


@dataclass
class Attention:
    """An attention block's layout: head counts and the layers that hold the heads."""

    name: str
    module: nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    q: Projection
    k: Projection
    v: Projection
    o: Projection
    attributes: Callable[[int, int], dict[str, int]]
    cut: list[nn.Module] = field(default_factory=list)
    remove: Callable[[nn.Module, Sequence[int]], None] | None = None

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(p.name for p in (self.q, self.k, self.v, self.o)))


def _int(module: nn.Module, name: str) -> int | None:
    value = getattr(module, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _linears(module: nn.Module, *names: str) -> list[nn.Linear] | None:
    found = [getattr(module, n, None) for n in names]
    return found if all(isinstance(m, nn.Linear) for m in found) else None  # type: ignore[return-value]


def find_attention(model: nn.Module) -> list[Attention]:
    """Every attention block of ``model`` whose layout is known (see the module docstring)."""
    modules = dict(model.named_modules())
    found = []
    for name, module in modules.items():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention):
            if prunable_heads(module) is None:
                found.append(_multihead(name, module))
            continue
        head_dim = _int(module, "head_dim")
        qkvo = _linears(module, "q_proj", "k_proj", "v_proj", "o_proj")
        if qkvo is not None and head_dim:
            q, k, v, _ = qkvo
            if (
                q.out_features % head_dim
                or k.out_features % head_dim
                or k.out_features != v.out_features
            ):
                continue
            heads, kv = q.out_features // head_dim, k.out_features // head_dim
            if heads % kv:
                continue
            names = [f"{prefix}{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj")]

            def attributes(h: int, kv: int, module: nn.Module = module) -> dict[str, int]:
                return {
                    key: value
                    for key, value in (
                        ("num_heads", h),
                        ("num_attention_heads", h),
                        ("num_key_value_heads", kv),
                    )
                    if key in module.__dict__
                }

            found.append(
                Attention(
                    name,
                    module,
                    heads,
                    kv,
                    head_dim,
                    Projection(q, names[0]),
                    Projection(k, names[1]),
                    Projection(v, names[2]),
                    Projection(qkvo[3], names[3]),
                    attributes=attributes,
                    cut=[q, k, v],
                )
            )
            continue
        head_size = _int(module, "attention_head_size")
        qkv = _linears(module, "query", "key", "value")
        parent = modules.get(name.rsplit(".", 1)[0]) if "." in name else None
        output = getattr(getattr(parent, "output", None), "dense", None)
        if qkv is not None and head_size and isinstance(output, nn.Linear) and "." in name:
            q, k, v = qkv
            if q.out_features % head_size or not (
                q.out_features == k.out_features == v.out_features
            ):
                continue
            heads = q.out_features // head_size
            parent_name = name.rsplit(".", 1)[0]

            def bert_attributes(h: int, kv: int, module: nn.Module = module) -> dict[str, int]:
                return {
                    "num_attention_heads": h,
                    "all_head_size": h * int(vars(module)["attention_head_size"]),
                }

            found.append(
                Attention(
                    name,
                    module,
                    heads,
                    heads,
                    head_size,
                    Projection(q, f"{prefix}query"),
                    Projection(k, f"{prefix}key"),
                    Projection(v, f"{prefix}value"),
                    Projection(output, f"{parent_name}.output.dense"),
                    attributes=bert_attributes,
                    cut=[q, k, v],
                )
            )
            continue
        c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
        split = _int(module, "split_size")
        if (
            isinstance(c_attn, nn.Module)
            and isinstance(c_proj, nn.Module)
            and is_conv1d(c_attn)
            and is_conv1d(c_proj)
            and head_dim
            and split
            and conv1d_size(c_attn, "nf") == 3 * split
            and split % head_dim == 0
            and getattr(module, "q_attn", None)
            is None  # cross-attention packs only keys and values
        ):
            heads = split // head_dim

            def gpt2_attributes(h: int, kv: int, module: nn.Module = module) -> dict[str, int]:
                return {"num_heads": h, "split_size": h * int(vars(module)["head_dim"])}

            found.append(
                Attention(
                    name,
                    module,
                    heads,
                    heads,
                    head_dim,
                    Projection(c_attn, f"{prefix}c_attn", 0),
                    Projection(c_attn, f"{prefix}c_attn", split),
                    Projection(c_attn, f"{prefix}c_attn", 2 * split),
                    Projection(c_proj, f"{prefix}c_proj"),
                    attributes=gpt2_attributes,
                    cut=[c_attn],
                )
            )
    return found


def _multihead(name: str, module: nn.MultiheadAttention) -> Attention:
    inner = module.num_heads * module.head_dim
    prefix = f"{name}." if name else ""
    if module._qkv_same_embed_dim:
        q, k, v = (
            Projection(module, name, i * inner, "in_proj_weight", "in_proj_bias") for i in range(3)
        )
    else:  # separate weights, each from row 0, and one packed bias
        q, k, v = (
            Projection(module, name, 0, f"{x}_proj_weight", "in_proj_bias", i * inner)
            for i, x in enumerate("qkv")
        )

    def remove(block: nn.Module, channels: Sequence[int]) -> None:
        assert isinstance(block, nn.MultiheadAttention)
        remove_heads(block, sorted({c // block.head_dim for c in channels}))

    return Attention(
        name,
        module,
        module.num_heads,
        module.num_heads,
        module.head_dim,
        q,
        k,
        v,
        Projection(module.out_proj, f"{prefix}out_proj"),
        attributes=lambda h, kv: {},
        remove=remove,
    )


def head_group(att: Attention, fn: Any, conv1d: Any, ignore: Sequence[str]) -> Group:
    """The group of one attention block: root channels are the query rows, one unit per key/value group."""
    h, kv, d = att.heads, att.kv_heads, att.head_dim
    per_group = h // kv
    width = per_group * d
    group = Group(
        name=att.name,
        root=att.module,
        handler=None,
        channels=h * d,
        layers=att.layers,
        unit=width,
        units=[list(range(u * width, (u + 1) * width)) for u in range(kv)],
    )
    queries = list(range(h * d))
    # A key/value row t of group g serves every query head of the group; it is listed once, under the group's
    # first query channel t, so it is scored and removed once.
    kv_roots = [g * width + t for g in range(kv) for t in range(d)]
    kv_index = list(range(kv * d))
    out_rows: dict[int, tuple[list[int], list[int]]] = {}
    for proj, index, roots in (
        (att.q, queries, queries),
        (att.k, kv_index, kv_roots),
        (att.v, kv_index, kv_roots),
    ):
        rows = [i + proj.offset for i in index]
        biases = [i + proj.bias_start for i in index]
        packed = is_conv1d(proj.module)
        group.slices.append(
            Slice(proj.module, proj.name, proj.weight, 1 if packed else 0, rows, roots, True, True)
        )
        if getattr(proj.module, proj.bias, None) is not None:
            group.slices.append(
                Slice(proj.module, proj.name, proj.bias, 0, biases, roots, True, False)
            )
        removal = out_rows.setdefault(id(proj.module), ([], []))
        removal[0].extend(rows)
        removal[1].extend(roots)
    packed_o = is_conv1d(att.o.module)
    group.slices.append(
        Slice(
            att.o.module, att.o.name, "weight", 0 if packed_o else 1, queries, queries, False, True
        )
    )
    if att.remove is not None:  # one call removes the heads everywhere in the block
        group.removals.append(Removal(att.remove, att.module, queries, queries))
    else:
        for proj in (att.q, att.k, att.v):
            if id(proj.module) in out_rows:
                index, roots = out_rows.pop(id(proj.module))
                handler = (
                    conv1d.prune_out_channels
                    if is_conv1d(proj.module)
                    else fn.prune_linear_out_channels
                )
                group.removals.append(Removal(handler, proj.module, index, roots))
        handler = conv1d.prune_in_channels if packed_o else fn.prune_linear_in_channels
        group.removals.append(Removal(handler, att.o.module, queries, queries))
    if any(matches(layer, ignore) for layer in group.layers):
        group.left = (
            f"touches ignored layer {next(x for x in group.layers if matches(x, ignore))!r}"
        )

    def after(removed_units: list[int]) -> None:
        kept_kv = kv - len(removed_units)
        for key, value in att.attributes(kept_kv * per_group, kept_kv).items():
            setattr(att.module, key, value)

    group.after = after
    return group
