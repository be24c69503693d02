"""Sharded parameters (``torch.distributed.tensor.DTensor``, as FSDP2's ``fully_shard`` makes them) and the
collectives that let the ranks of a process group agree on one ranking.

A DTensor is one logical tensor whose pieces live on several ranks. prunus keeps its semantics: a mask of a
sharded parameter is the mask the whole parameter would get in one process, held as a DTensor with the
parameter's placements (each rank stores the part of the mask for its own shard). This module is the one
place that knows how shards are laid out:

* :func:`is_sharded`, :func:`local` and :func:`like`: recognise a DTensor, take its local part, wrap a local
  result back with the same placements;
* :class:`Shard`: where a rank's local part sits in the flat (row-major) order of the whole tensor, and
  whether this rank *owns* it (replicated placements put the same part on several ranks; one counts it);
* :class:`Collectives`: sums and gathers across the ranks of a ranking (:data:`LOCAL` in one process);
* :func:`count_true`: the number of ``True`` entries of a bool mask, of the whole tensor when it is sharded
  (``int(dtensor.sum())`` gives the local count only).

``torch.distributed.tensor`` is imported only when a tensor is not a plain ``torch.Tensor``, so ``import
prunus`` and single-process pruning never pay for it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "LOCAL",
    "Collectives",
    "Shard",
    "any_anywhere",
    "box_of",
    "collectives_of",
    "count_true",
    "is_sharded",
    "like",
    "local",
    "local_along",
    "replicated_if_partial",
    "shard_of",
]

_PLAIN = (Tensor, nn.Parameter)


def is_sharded(tensor: object) -> bool:
    """Whether ``tensor`` is a DTensor (a tensor laid out over the ranks of a device mesh)."""
    if type(tensor) in _PLAIN or not isinstance(tensor, Tensor):
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local(tensor: Tensor) -> Tensor:
    """This rank's part of ``tensor`` (the tensor itself when it is not sharded), sharing its storage."""
    if is_sharded(tensor):
        return tensor.to_local()  # type: ignore[attr-defined, no-any-return]
    return tensor


def like(part: Tensor, reference: Tensor) -> Tensor:
    """``part`` (this rank's piece) as a tensor laid out like ``reference``: a DTensor when that is one."""
    if not is_sharded(reference):
        return part
    from torch.distributed.tensor import DTensor

    assert isinstance(reference, DTensor)
    return DTensor.from_local(
        part,
        reference.device_mesh,
        reference.placements,
        run_check=False,
        shape=reference.shape,
        stride=reference.stride(),
    )


@dataclass(frozen=True)
class Shard:
    """Where this rank's part of a tensor sits in the whole tensor.

    Attributes:
        shape: the whole tensor's shape.
        local_shape: the shape of this rank's part.
        offset: the index, in every dim, of the part's first entry in the whole tensor.
        owner: whether this rank counts the part (a part replicated over several ranks is counted once).
    """

    shape: tuple[int, ...]
    local_shape: tuple[int, ...]
    offset: tuple[int, ...]
    owner: bool = True

    @functools.cached_property
    def start(self) -> int:
        """The flat position, in the whole tensor, of the part's first entry."""
        position = 0
        for index, size in zip(self.offset, self.shape, strict=True):
            position = position * size + index
        return position

    @functools.cached_property
    def contiguous(self) -> bool:
        """Whether the part's entries are consecutive in the whole tensor's flat order (a block of rows)."""
        if 0 in self.local_shape:
            return True
        spanned = [dim for dim, size in enumerate(self.local_shape) if size != 1]
        # Row-major: past the first dim the part spans more than one index of, it must span every dim fully.
        return not spanned or all(
            self.local_shape[dim] == self.shape[dim]
            for dim in range(spanned[0] + 1, len(self.shape))
        )

    def positions(self, flat: Tensor) -> Tensor:
        """Flat positions in the whole tensor of the part's entries at local flat positions ``flat``."""
        if self.contiguous:
            return flat + self.start if self.start else flat
        position = torch.zeros_like(flat)
        rest = flat
        for dim in range(len(self.shape) - 1, -1, -1):
            index = rest % self.local_shape[dim]
            rest = rest // self.local_shape[dim]
            position += (index + self.offset[dim]) * math.prod(self.shape[dim + 1 :])
        return position


def shard_of(tensor: Tensor) -> Shard:
    """The :class:`Shard` of ``tensor`` on this rank (the whole tensor when it is not sharded)."""
    shape = tuple(tensor.shape)
    if not is_sharded(tensor):
        return Shard(shape, shape, (0,) * len(shape))
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh, placements = tensor.device_mesh, tensor.placements  # type: ignore[attr-defined]
    local_shape, offset = compute_local_shape_and_global_offset(tensor.shape, mesh, placements)
    coordinate = mesh.get_coordinate()
    owner = coordinate is not None and all(
        coordinate[dim] == 0
        for dim, placement in enumerate(placements)
        if isinstance(placement, Replicate)
    )
    return Shard(shape, tuple(local_shape), tuple(offset), owner)


class Collectives:
    """How the ranks that share one ranking agree: sums and gathers (the identity in one process).

    Every rank of the group must make the same calls in the same order, as with any collective.
    """

    world = 1
    rank = 0

    def sum(self, values: Tensor) -> Tensor:
        """The elementwise sum of ``values`` (an int64 tensor) over the ranks."""
        return values

    def gather(self, values: Tensor) -> list[Tensor]:
        """Every rank's 1-D ``values`` (lengths may differ), in rank order."""
        return [values]

    def gather_cat(self, values: Tensor) -> Tensor:
        """Every rank's 1-D ``values`` concatenated in rank order."""
        parts = self.gather(values)
        return parts[0] if len(parts) == 1 else torch.cat(parts)


LOCAL = Collectives()
"""The collectives of one process: nothing to agree with."""


class _ProcessGroup(Collectives):
    """The collectives of a ``torch.distributed`` process group (gloo, NCCL, ...)."""

    def __init__(self, group: Any, device: torch.device) -> None:
        import torch.distributed as dist

        self.group = group
        self.device = device
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def sum(self, values: Tensor) -> Tensor:
        import torch.distributed as dist

        buffer = values.to(self.device, torch.int64).clone()
        dist.all_reduce(buffer, group=self.group)
        return buffer.to(values.device)

    def gather(self, values: Tensor) -> list[Tensor]:
        import torch.distributed as dist

        sizes = self.sum(self._one_hot(values.numel()))
        longest = int(sizes.max())
        padded = torch.zeros(longest, dtype=values.dtype, device=self.device)
        padded[: values.numel()] = values.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return [
            part[: int(size)].to(values.device) for part, size in zip(parts, sizes, strict=True)
        ]

    def _one_hot(self, value: int) -> Tensor:
        out = torch.zeros(self.world, dtype=torch.int64)
        out[self.rank] = value
        return out


def collectives_of(tensors: Sequence[Tensor]) -> Collectives:
    """The collectives the ranks holding ``tensors`` agree through: :data:`LOCAL` unless any is sharded.

    Raises:
        ValueError: sharded tensors on different device meshes (one ranking needs one group of ranks).
    """
    meshes: list[Any] = []
    for tensor in tensors:
        if is_sharded(tensor):
            mesh = tensor.device_mesh  # type: ignore[attr-defined]
            # fully_shard builds a mesh per call: equal meshes (same ranks, same device) are one group.
            if not any(mesh == seen for seen in meshes):
                meshes.append(mesh)
    if not meshes:
        return LOCAL
    if len(meshes) > 1:
        raise ValueError(
            "the parameters ranked together are sharded over different device meshes; rank each mesh's "
            "parameters in its own prune call"
        )
    (mesh,) = meshes
    if mesh.ndim == 1:
        group = mesh.get_group()
    else:
        import torch.distributed as dist

        group = dist.group.WORLD if mesh.size() == dist.get_world_size() else None
        if group is None:
            raise ValueError(
                f"a {mesh.ndim}-D device mesh that spans part of the world ({mesh.size()} of "
                f"{dist.get_world_size()} ranks) is not supported for a ranking across its shards"
            )
    return _ProcessGroup(group, torch.device(mesh.device_type))


def local_along(
    dim: int, fn: Callable[..., Tensor], tensor: Tensor, *others: Tensor | None
) -> Tensor:
    """``fn(tensor, *others)``, for an ``fn`` whose result along each line of ``dim`` depends on that line alone.

    A sharded ``tensor`` (and ``others``, sharded alike or ``None``) is computed on this rank's shard when no
    shard splits ``dim``: FSDP shards rows, so the lines along the input dim of a Linear weight stay whole.
    Otherwise the whole tensors are gathered, computed on, and the result cut back to this rank's shard.
    """
    if not is_sharded(tensor):
        return fn(tensor, *others)
    from torch.distributed.tensor import Shard as ShardPlacement

    ndim = tensor.dim()
    placements = tensor.placements  # type: ignore[attr-defined]
    if all(
        (isinstance(p, ShardPlacement) and p.dim % ndim != dim % ndim) or p.is_replicate()
        for p in placements
    ):
        parts = [None if other is None else local(other) for other in others]
        return like(fn(local(tensor), *parts), tensor)
    wholes = [None if other is None else _whole(other) for other in others]
    result = fn(_whole(tensor), *wholes)
    return like(result[box_of(tensor)].contiguous(), tensor)


def _whole(tensor: Tensor) -> Tensor:
    return tensor.full_tensor() if is_sharded(tensor) else tensor  # type: ignore[attr-defined]


def box_of(tensor: Tensor) -> tuple[slice, ...]:
    """The index of this rank's part of ``tensor`` in the whole tensor (every entry when not sharded)."""
    shard = shard_of(tensor)
    return tuple(
        slice(offset, offset + size)
        for offset, size in zip(shard.offset, shard.local_shape, strict=True)
    )


def replicated_if_partial(tensor: Tensor) -> Tensor:
    """``tensor`` with pending reductions done (a sum over a sharded dim leaves partial sums on each rank)."""
    if not is_sharded(tensor):
        return tensor
    from torch.distributed.tensor import Replicate

    placements = tensor.placements  # type: ignore[attr-defined]
    if not any(p.is_partial() for p in placements):
        return tensor
    fixed = [Replicate() if p.is_partial() else p for p in placements]
    return tensor.redistribute(placements=fixed)  # type: ignore[attr-defined, no-any-return]


def any_anywhere(flag: bool, tensor: Tensor) -> bool:
    """Whether ``flag`` holds on any rank holding ``tensor`` (``flag`` itself when it is not sharded).

    A check that raises must raise on every rank, or the others wait forever in their next collective.
    """
    if not is_sharded(tensor):
        return flag
    total = collectives_of([tensor]).sum(torch.tensor([int(flag)], dtype=torch.int64))
    return bool(total[0])


def count_true(mask: Tensor) -> int:
    """The number of ``True`` entries of the bool ``mask``: of the whole tensor when it is sharded."""
    if not is_sharded(mask):
        return _count_local(mask)
    shard = shard_of(mask)
    count = _count_local(local(mask)) if shard.owner else 0
    total = collectives_of([mask]).sum(torch.tensor([count], dtype=torch.int64))
    return int(total[0])


def _count_local(mask: Tensor) -> int:
    if mask.device.type == "cpu" and mask.is_contiguous() and mask.dtype == torch.bool:
        return int(
            np.count_nonzero(mask.numpy())
        )  # several times faster than torch's on one thread
    return int(torch.count_nonzero(mask))
