"""Bit-level helpers shared by the file formats: packed masks and the "nonzero bits" of a tensor.

Masks are written one bit per entry with numpy's ``packbits`` in little bit order (entry ``i`` of a byte is bit
``i``), the order compressed-tensors' sparse-bitmask layout uses. "Nonzero" means *any bit set*, not
``!= 0``: ``-0.0`` is kept as a value, so decompression gives back every tensor bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .. import masking

__all__ = ["nonzero_bits", "pack_mask", "pack_rows", "unpack_mask", "unpack_rows"]

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def nonzero_bits(tensor: Tensor) -> Tensor:
    """A bool tensor of ``tensor``'s shape: ``True`` where an entry has any bit set (``-0.0`` included)."""
    if tensor.dtype == torch.bool:
        return tensor.clone()
    if tensor.is_complex() or tensor.element_size() not in _INT_OF_SIZE:
        return tensor != 0
    return tensor.contiguous().view(_INT_OF_SIZE[tensor.element_size()]) != 0


def pack_mask(mask: Tensor) -> Tensor:
    """A bool tensor as ``ceil(numel / 8)`` bytes (uint8, one bit per entry, flat row-major order).

    The packing prunus keeps masks in on a model (:func:`prunus.masking.pack_bits`), on the CPU.
    """
    return masking.pack_bits(mask.detach().cpu())


def unpack_mask(packed: Tensor, shape: Sequence[int]) -> Tensor:
    """The bool tensor of ``shape`` that :func:`pack_mask` packed.

    Raises:
        ValueError: ``packed`` does not hold exactly the bytes that ``shape`` needs.
    """
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(numel / 8):
        raise ValueError(
            f"a packed mask of shape {list(shape)} is {math.ceil(numel / 8)} uint8 bytes, got "
            f"{packed.numel()} {packed.dtype}"
        )
    return masking.unpack_bits(packed.cpu(), shape).clone()


def pack_rows(mask: Tensor) -> Tensor:
    """A 2-D bool tensor as ``rows x ceil(cols / 8)`` bytes, each row packed on its own (sparse-bitmask layout)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy(), axis=-1, bitorder="little"))


def unpack_rows(packed: Tensor, rows: int, cols: int) -> Tensor:
    """The ``rows x cols`` bool tensor that :func:`pack_rows` packed.

    Raises:
        ValueError: ``packed`` is not ``rows x ceil(cols / 8)`` uint8 bytes.
    """
    if packed.dtype != torch.uint8 or tuple(packed.shape) != (rows, math.ceil(cols / 8)):
        raise ValueError(
            f"a bitmask of {rows} x {cols} entries is {rows} x {math.ceil(cols / 8)} uint8 bytes, got "
            f"{tuple(packed.shape)} {packed.dtype}"
        )
    bits = np.unpackbits(packed.cpu().numpy(), axis=-1, count=cols, bitorder="little")
    return torch.from_numpy(bits.astype(np.bool_))
