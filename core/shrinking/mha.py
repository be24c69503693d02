"""``nn.MultiheadAttention`` with whole heads removed.

PyTorch's forward derives the head width from the input width (``embed_dim // num_heads``) and requires the
query, key and value projections to be ``embed_dim`` wide, so a block with fewer heads of the same width cannot
run through it. :class:`HeadPrunedMultiheadAttention` is the same module (a subclass: same parameters, same
``state_dict`` keys, ``isinstance`` still true) whose forward takes the head width from ``head_dim`` and the
projections' widths from their shapes. :func:`prunus.shrink` switches a block to it when it removes heads;
:func:`prunus.shrink_state` records the switch and :func:`prunus.load_shrunk` repeats it on a fresh model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HeadPrunedMultiheadAttention", "prunable_heads", "remove_heads"]


class HeadPrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with ``num_heads * head_dim`` smaller than ``embed_dim`` (heads removed).

    Same arguments and results as :meth:`torch.nn.MultiheadAttention.forward`; a 3-D ``attn_mask`` has one slice
    per remaining head. The fused fast path of PyTorch is not used.
    """

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        length, batch, _ = query.shape
        source = key.shape[0]
        heads, width = self.num_heads, self.head_dim
        inner = heads * width
        if self._qkv_same_embed_dim:
            assert self.in_proj_weight is not None
            w_q, w_k, w_v = torch.split(self.in_proj_weight, inner)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = torch.split(self.in_proj_bias, inner)

        def split(x: Tensor, w: Tensor, b: Tensor | None, steps: int) -> Tensor:
            return F.linear(x, w, b).reshape(steps, batch * heads, width).transpose(0, 1)

        q, k, v = (
            split(query, w_q, b_q, length),
            split(key, w_k, b_k, source),
            split(value, w_v, b_v, source),
        )
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(width)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
            scores = (
                scores.masked_fill(mask, float("-inf"))
                if mask.dtype == torch.bool
                else scores + mask
            )
        if key_padding_mask is not None:
            padding = key_padding_mask.reshape(batch, 1, 1, source).expand(batch, heads, 1, source)
            padding = padding.reshape(batch * heads, 1, source)
            scores = (
                scores.masked_fill(padding, float("-inf"))
                if padding.dtype == torch.bool
                else scores + padding
            )
        weights = scores.softmax(-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        out = torch.bmm(weights, v).transpose(0, 1).reshape(length, batch, inner)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        per_head = weights.reshape(batch, heads, length, source)
        result = per_head.mean(1) if average_attn_weights else per_head
        return out, result if batched else result.squeeze(0)


def prunable_heads(module: nn.MultiheadAttention) -> str | None:
    """Why the heads of ``module`` cannot be removed, or ``None`` if they can."""
    if module.bias_k is not None or module.add_zero_attn:
        return "nn.MultiheadAttention with add_bias_kv or add_zero_attn"
    return None


def remove_heads(module: nn.MultiheadAttention, heads: Sequence[int]) -> None:
    """Remove whole ``heads`` (indices) from ``module``, switching it to :class:`HeadPrunedMultiheadAttention`."""
    width = module.head_dim
    keep_heads = [h for h in range(module.num_heads) if h not in set(heads)]
    keep = torch.tensor([h * width + t for h in keep_heads for t in range(width)], dtype=torch.long)
    inner = module.num_heads * width
    rows = torch.cat([keep, keep + inner, keep + 2 * inner])

    def cut(owner: nn.Module, name: str, index: Tensor, dim: int) -> None:
        param = owner._parameters.get(name)
        if param is not None:
            new = nn.Parameter(
                param.detach().index_select(dim, index.to(param.device)).clone(),
                requires_grad=param.requires_grad,
            )
            owner._parameters[name] = new

    for name in ("in_proj_weight", "in_proj_bias"):
        cut(module, name, rows, 0)
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        cut(module, name, keep, 0)
    out = module.out_proj
    cut(out, "weight", keep, 1)
    out.in_features = len(keep)
    module.num_heads = len(keep_heads)
    module.__class__ = HeadPrunedMultiheadAttention
