"""How a mask lives on a model: zeros in place, a bool mask on the side, and the pruned values for ``restore``.

Unlike ``torch.nn.utils.prune``, prunus does not reparametrize: the parameter stays a plain ``nn.Parameter``
whose pruned entries are zero, so the ``state_dict`` keeps its keys and a forward pass costs what the dense
model costs. Beside the parameter, two *non-persistent* buffers (moved by ``.to()``, absent from the
``state_dict``) hold:

* ``_prunus_mask_<name>``: the keep-mask, packed 1 bit per entry (``uint8``, flat, the last byte padded; a bool
  mask costs 8 times more, a sixteenth of a bf16 weight's bytes packed instead of half); a parameter of fewer
  than 8 entries keeps a bool mask. :func:`get_mask` always returns the bool mask of the parameter's shape;
* ``_prunus_pruned_<name>``: the original values of the pruned entries, in flat order, so :func:`restore_parameter`
  puts them back bit for bit (absent when the caller opted out of restoring);
* ``_prunus_original_<name>``: instead of the pruned values, the whole original parameter, once a reconstruction
  (:func:`replace_values`) has changed the entries the mask keeps too.

Pruned entries stay zero through training: after every ``optimizer.step()`` a global step hook (registered on
first use) zeroes them again in the parameters that optimizer updated, in one pass over a ``(parameter, mask)``
list cached per optimizer (rebuilt only when masks or the optimizer's parameters change): numpy views of the
bits on CPU, one fused ``torch._foreach_mul_`` elsewhere. The list holds the masks of the parameters that
optimizer trains unpacked, so a step costs what it did with bool masks.
Modules with masks are tracked in a weak set; a small tracker object in each such module re-enrols copies made by
``copy.deepcopy`` and ``pickle``.

Sharded parameters (DTensors, e.g. under FSDP2's ``fully_shard``) keep their masks with their shards: the mask
is a DTensor laid out like the parameter, the pruned values of each rank's shard stay on that rank, and zeroing,
restoring and the step hook work on the local shards only. A mask attached before the model was sharded is
split along with it the first time it is needed (:func:`follow_sharding`).

Memory and speed of :func:`attach_mask`: the pruned values are gathered in one pass without index tensors, and the
only temporary is one inverted bool mask. Inside :func:`deferred_zeroing` (which ``prunus.prune`` uses) the zeroing
itself waits until every mask of the call has been attached, so undoing an attachment never has to write the
weights back and needs no copy of them: ``prune(..., restorable=False)`` keeps nothing but the masks.
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .distributed import box_of, is_sharded, like, local
from .errors import NotPrunedError

__all__ = [
    "MASK_LOCK",
    "MASK_PREFIX",
    "ORIGINAL_PREFIX",
    "VALUES_PREFIX",
    "attach_mask",
    "deferred_zeroing",
    "follow_sharding",
    "get_mask",
    "immediate_zeroing",
    "is_restorable",
    "masked_parameters",
    "pack",
    "pack_bits",
    "pruned_values",
    "remove_parameter",
    "replace_values",
    "restore_parameter",
    "saved_values",
    "unpack",
    "unpack_bits",
    "zero_pruned",
]

MASK_LOCK = threading.RLock()
"""Held by everything that attaches, drops or restores masks (see :func:`prunus.transaction.transaction`).

One lock for the process rather than one per model: modules can be shared between models, and pruning is never
a hot path, while the optimizer step hook (which only reads masks) never takes it.
"""

MASK_PREFIX = "_prunus_mask_"
VALUES_PREFIX = "_prunus_pruned_"
ORIGINAL_PREFIX = "_prunus_original_"
_TRACKER = "_prunus_tracker"

F = TypeVar("F", bound=Callable[..., Any])

_LIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_hook_handle: Any = None

_generation = 0
"""Bumped whenever a mask is attached or dropped anywhere: the step hook's caches check it."""

_DEFERRED: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "prunus_deferred_zeroing", default=None
)


def _locked(function: F) -> F:
    """Run ``function`` holding :data:`MASK_LOCK` (reads of the earlier mask and writes of the new one together)."""

    @functools.wraps(function)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with MASK_LOCK:
            return function(*args, **kwargs)

    return cast(F, locked)


def _changed() -> None:
    global _generation
    _generation += 1


class _Tracker:
    """Keeps its module enrolled for mask enforcement, through ``deepcopy`` and pickling too."""

    def __init__(self, module: nn.Module | None) -> None:
        self._module = weakref.ref(module) if module is not None else None
        if module is not None:
            _enrol(module)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Tracker:
        # copy.deepcopy puts the new module in the memo before copying its __dict__, where we live.
        old = self._module() if self._module is not None else None
        new = memo.get(id(old)) if old is not None else None
        return _Tracker(new if isinstance(new, nn.Module) else None)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickle memoizes the module before its state, so this reference resolves to the loaded module.
        module = self._module() if self._module is not None else None
        return (_Tracker, (module,))


def _enrol(module: nn.Module) -> None:
    global _hook_handle
    _LIVE.add(module)
    _changed()
    if _hook_handle is None:
        _hook_handle = register_optimizer_step_post_hook(_reapply_masks)


class _StepPlan:
    """What the step hook zeroes for one optimizer, and what that list was built from.

    CPU parameters are zeroed through numpy views of their bits (``np.multiply`` by the bool mask: several
    times faster than torch's float-by-bool multiply on one thread, no temporary, and pruned entries read
    exactly +0.0 even where a value became inf or NaN); the others through :func:`zero_pruned`. Sharded
    parameters are zeroed on their local shards. The views are built once and checked cheaply at each step.
    """

    __slots__ = ("arrays", "entries", "fingerprint", "generation", "others", "pointers")

    def __init__(
        self,
        generation: int,
        fingerprint: tuple[int, ...],
        entries: list[tuple[weakref.ref[nn.Module], str, Tensor, Tensor]],
    ) -> None:
        self.generation = generation
        self.fingerprint = fingerprint
        self.entries = entries
        # Pointers catch storage swapped under a kept object (param.data = ..., module.to()).
        self.pointers = [
            (local(param).data_ptr(), local(mask).data_ptr()) for _, _, param, mask in entries
        ]
        self.arrays: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
        self.others: list[tuple[Tensor, Tensor]] = []
        for _, _, param, buffer in entries:
            mask = unpack(buffer, param.shape)
            bits, keep = _bits(param), _bits(mask)
            if bits is not None and keep is not None and bits.size == keep.size:
                self.arrays.append((bits, keep))
            else:
                self.others.append((param, mask))

    def valid(self, fingerprint: tuple[int, ...]) -> bool:
        if self.generation != _generation or self.fingerprint != fingerprint:
            return False
        # A parameter or a mask replaced behind our back (module.to(), a new nn.Parameter) invalidates the list.
        for (ref, name, param, mask), (param_ptr, mask_ptr) in zip(
            self.entries, self.pointers, strict=True
        ):
            module = ref()
            if (
                module is None
                or module._parameters.get(name) is not param
                or module._buffers.get(MASK_PREFIX + name) is not mask
                or local(param).data_ptr() != param_ptr
                or local(mask).data_ptr() != mask_ptr
            ):
                return False
        return True

    def run(self) -> None:
        with torch.no_grad():
            for bits, keep in self.arrays:
                np.multiply(bits, keep, out=bits)
            if self.arrays:
                torch.autograd.graph.increment_version(
                    [local(param) for _, _, param, _ in self.entries]
                )  # as an in-place torch op would
            for param, mask in self.others:
                zero_pruned(param, mask)


_PLANS: weakref.WeakKeyDictionary[torch.optim.Optimizer, _StepPlan] = weakref.WeakKeyDictionary()


def _plan(optimizer: torch.optim.Optimizer, fingerprint: tuple[int, ...]) -> _StepPlan:
    updated = set(fingerprint)
    entries: list[tuple[weakref.ref[nn.Module], str, Tensor, Tensor]] = []
    for module in list(_LIVE):
        for name, _ in list(_masks_of(module)):
            param = module._parameters.get(name)
            if param is not None and id(param) in updated:
                # A mask attached before fully_shard is cut to its shard first.
                follow_sharding(module, name)
                stored = module._buffers[MASK_PREFIX + name]
                assert stored is not None
                entries.append((weakref.ref(module), name, param, stored))
    plan = _StepPlan(_generation, fingerprint, entries)
    _PLANS[optimizer] = plan
    return plan


def _reapply_masks(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Zero the pruned entries again in the parameters ``optimizer`` just updated (one fused pass)."""
    if not _LIVE:
        return
    fingerprint = tuple(id(p) for group in optimizer.param_groups for p in group["params"])
    plan = _PLANS.get(optimizer)
    if plan is None or not plan.valid(fingerprint):
        plan = _plan(optimizer, fingerprint)
    plan.run()


def _masks_of(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    for key, buffer in module._buffers.items():
        if key.startswith(MASK_PREFIX) and buffer is not None:
            yield key[len(MASK_PREFIX) :], buffer


def _split(mask: Tensor, param: Tensor) -> Tensor:
    """A whole-parameter ``mask`` of a sharded ``param``, as a DTensor laid out like it (this rank's part)."""
    part = mask[box_of(param)].contiguous().to(local(param).device)
    return like(part, param)


@_locked
def follow_sharding(module: nn.Module, name: str) -> Tensor | None:
    """The mask of ``module.<name>``, first split like its parameter if the model was sharded after pruning.

    ``fully_shard`` replaces each parameter with its shard; a mask (and pruned values) attached before that
    still describe the whole parameter. The first time they are needed they are cut to this rank's shard, so
    masks keep living with the local shards.
    """
    mask = get_mask(module, name)
    param = module._parameters.get(name)
    if mask is None or param is None or not is_sharded(param) or is_sharded(mask):
        return mask
    box = box_of(param)
    values = module._buffers.get(VALUES_PREFIX + name)
    if values is not None:
        whole = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
        whole.masked_scatter_(~mask, values)
        local_values = whole[box][~mask[box]].to(local(param).device)
        module.register_buffer(VALUES_PREFIX + name, local_values, persistent=False)
    split = _split(mask, param)
    module.register_buffer(MASK_PREFIX + name, split, persistent=False)
    _changed()
    return split


def get_mask(module: nn.Module, name: str) -> Tensor | None:
    """The bool keep-mask of ``module.<name>`` (its shape), or ``None`` if it is not pruned.

    Unpacked from the stored bits: a new tensor on each call unless the mask is stored as bool.
    """
    buffer = module._buffers.get(MASK_PREFIX + name)
    if buffer is None:
        return None
    param = module._parameters.get(name)
    return unpack(buffer, buffer.shape if param is None else param.shape)


_PACK_FROM = 8
"""Masks of at least this many entries are stored packed (below it, packing saves next to nothing)."""


def pack(mask: Tensor) -> Tensor:
    """``mask`` as it is kept on a module: :func:`pack_bits` of it, or the bool mask itself below
    ``_PACK_FROM`` (8) entries or when it is sharded."""
    # A sharded mask stays a bool DTensor laid out like its parameter: no rank holds the bits to pack alone.
    return mask if mask.numel() < _PACK_FROM or is_sharded(mask) else pack_bits(mask)


def unpack(stored: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """The bool mask of ``shape`` that :func:`pack` stored as ``stored`` (a bool mask is returned as it is)."""
    return stored if stored.dtype == torch.bool else unpack_bits(stored, shape)


def pack_bits(mask: Tensor) -> Tensor:
    """A bool tensor as ``ceil(numel / 8)`` bytes: uint8, one bit per entry, flat row-major order, little bit
    order (entry ``i`` of a byte is bit ``i``), the order of numpy's ``packbits(..., bitorder="little")``."""
    flat = mask.reshape(-1)
    if flat.device.type == "cpu":
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    return _pack_torch(flat)


def unpack_bits(packed: Tensor, shape: Sequence[int]) -> Tensor:
    """The bool tensor of ``shape`` that :func:`pack_bits` packed into ``packed``."""
    count = math.prod(shape)
    if packed.device.type == "cpu":
        bits = np.unpackbits(packed.reshape(-1).numpy(), count=count, bitorder="little")
        return torch.from_numpy(bits.view(np.bool_)).reshape(tuple(shape))
    return _unpack_torch(packed.reshape(-1), count).reshape(tuple(shape))


def _pack_torch(flat: Tensor) -> Tensor:
    """:func:`pack_bits` in torch operations, for masks on other devices than the CPU."""
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8)).reshape(-1, 8)
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=flat.device)
    return (padded.to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def _unpack_torch(stored: Tensor, count: int) -> Tensor:
    """:func:`unpack_bits` in torch operations (flat), for masks on other devices than the CPU."""
    shifts = torch.arange(8, dtype=torch.uint8, device=stored.device)
    return ((stored.unsqueeze(1) >> shifts) & 1).reshape(-1)[:count].bool()


def is_restorable(module: nn.Module, name: str) -> bool:
    """Whether the original values of ``module.<name>``'s pruned entries are kept."""
    return (
        module._buffers.get(VALUES_PREFIX + name) is not None
        or module._buffers.get(ORIGINAL_PREFIX + name) is not None
    )


def saved_values(module: nn.Module, name: str) -> Tensor | None:
    """The original values of ``module.<name>``'s pruned entries, kept for ``restore`` (flat row-major order of
    the pruned entries), or ``None`` when it is not pruned or was pruned with ``restorable=False``.

    The tensor itself: do not modify it. A saved pruning state holds it; :func:`attach_mask` takes it back.
    After a reconstruction (:func:`replace_values`) they are read from the kept original, as a new tensor.
    """
    original = module._buffers.get(ORIGINAL_PREFIX + name)
    mask = get_mask(module, name)
    if original is not None and mask is not None:
        return pruned_values(original, mask)
    return module._buffers.get(VALUES_PREFIX + name)


def masked_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(qualified name, module, parameter name)`` for every masked parameter in ``model``."""
    for prefix, module in model.named_modules():
        for name, _ in _masks_of(module):
            yield (f"{prefix}.{name}" if prefix else name), module, name


# -- fast in-place helpers ------------------------------------------------------------------------------------
#
# On CPU, numpy's stream compaction and masked multiply are 5-10x faster than torch's boolean indexing and
# masked_fill_ (which build index tensors), and they share memory with the tensors, so no copy is made. Both
# work on the raw bits (an integer view of the same width), so values are copied bit for bit and zeroing
# writes +0.0 even over inf or NaN. Other devices and layouts use the torch operations.

_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHUNK = 1 << 18


def _int_view(tensor: Tensor) -> Tensor | None:
    """An integer view of the bits of ``tensor``'s local part (a bool tensor as it is), or ``None``."""
    part = local(tensor).detach()
    if part.dtype == torch.bool:
        return part
    if (
        part.is_complex()
        or part.element_size() not in _INT_OF_SIZE
        or part.is_conj()
        or part.is_neg()
    ):
        return None
    return part.view(_INT_OF_SIZE[part.element_size()])


def _bits(tensor: Tensor) -> np.ndarray[Any, Any] | None:
    """A flat numpy view of the bits of ``tensor``'s local part, or ``None`` where that is not possible."""
    view = _int_view(tensor)
    if view is None or view.device.type != "cpu" or not view.is_contiguous():
        return None
    return view.reshape(-1).numpy()


def pruned_values(data: Tensor, keep: Tensor) -> Tensor:
    """The entries of ``data`` where the bool ``keep`` is ``False``, in flat (row-major) order, as a new tensor.

    For a sharded ``data`` and ``keep``: the pruned entries of this rank's shard.
    """
    data, keep = local(data), local(keep)
    bits, keep_bits = _bits(data), _bits(keep)
    if bits is None or keep_bits is None:
        return data[~keep]
    # In chunks: the positions of the pruned entries (int64, 8 bytes each) are computed a chunk at a time,
    # and gathered straight into the result.
    out = np.empty(keep_bits.size - int(np.count_nonzero(keep_bits)), dtype=bits.dtype)
    pruned = np.empty(min(_CHUNK, keep_bits.size), dtype=np.bool_)
    filled = 0
    for start in range(0, keep_bits.size, _CHUNK):
        stop = min(start + _CHUNK, keep_bits.size)
        where = np.flatnonzero(np.logical_not(keep_bits[start:stop], out=pruned[: stop - start]))
        np.take(bits[start:stop], where, out=out[filled : filled + where.size], mode="clip")
        filled += where.size
    return torch.from_numpy(out).view(data.dtype)


def zero_pruned(data: Tensor, keep: Tensor) -> None:
    """Set the entries of ``data`` where the bool ``keep`` is ``False`` to zero, in place (locally, if sharded)."""
    bits, keep_bits = _bits(data), _bits(keep)
    with torch.no_grad():
        if bits is None or keep_bits is None:
            local(data).masked_fill_(~local(keep), 0)
            return
        # An integer multiply by the mask, in place: exact +0.0 even over inf or NaN, no temporary.
        np.multiply(bits, keep_bits, out=bits)
        torch.autograd.graph.increment_version(local(data))  # as an in-place torch op would


class _Zeroing:
    """A zeroing that :func:`deferred_zeroing` runs at commit, unless its attachment was undone first."""

    __slots__ = ("cancelled", "data", "done", "mask")

    def __init__(self, data: Tensor, mask: Tensor) -> None:
        self.data, self.mask = data, mask
        self.cancelled = self.done = False

    def __call__(self) -> None:
        if not self.cancelled and not self.done:
            zero_pruned(self.data, self.mask)
            self.done = True


@contextmanager
def deferred_zeroing() -> Iterator[Callable[[], None]]:
    """Within this block :func:`attach_mask` attaches masks but leaves the zeroing to the returned ``commit``.

    ``prunus.prune`` attaches every mask of a call inside this block and commits once all of them are attached.
    An attachment is then undone by dropping buffers alone: the weights were never changed, so no copy of the
    values it would zero has to be kept for the undo. That is what lets ``restorable=False`` cost only the
    masks. ``commit`` cannot fail on validated masks (it multiplies in place). Leaving the block without
    committing leaves the weights unchanged.
    """
    pending: list[Callable[[], None]] = []
    token = _DEFERRED.set(pending)

    def commit() -> None:
        while pending:
            pending.pop(0)()

    try:
        yield commit
    finally:
        _DEFERRED.reset(token)


@contextmanager
def immediate_zeroing() -> Iterator[None]:
    """Within this block :func:`attach_mask` zeroes at once, even inside :func:`deferred_zeroing`.

    For a call that runs the model between attachments (calibration prunes block by block, and each block's
    inputs come from the blocks before it, already pruned). An undo then writes the zeroed values back from
    what it keeps: the restore data, or a copy of those values when the call keeps none.
    """
    token = _DEFERRED.set(None)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


@_locked
def attach_mask(
    module: nn.Module,
    name: str,
    mask: Tensor,
    *,
    restorable: bool = True,
    values: Tensor | None = None,
) -> Callable[[], None]:
    """Put ``mask`` on ``module.<name>``: zero the pruned entries and remember what ``restore`` needs.

    ``mask`` is the full keep-mask (already combined with any earlier one). Returns a function that undoes this
    call exactly, used to leave the model as it was when a later step of the same ``prune`` fails. Inside
    :func:`deferred_zeroing` the zeroing waits for the commit.

    ``values``: the original values of the pruned entries when they are known from elsewhere (a saved pruning
    state being loaded, see :func:`saved_values`): kept for ``restore`` as they are instead of being gathered
    from the parameter, whose pruned entries may already be zero. Only for a parameter without a mask yet.

    Memory: the mask itself (packed, 1 bit per entry), the pruned values when ``restorable`` (one entry per
    pruned entry), and one transient inverted mask. Outside :func:`deferred_zeroing` the undo also keeps the
    values this call zeroes
    when they are not already kept for ``restore``.
    """
    param = module._parameters[name]
    assert param is not None
    # A mask attached before fully_shard is cut to this rank's shard first.
    follow_sharding(module, name)
    held = _Held(module, name)
    prior, prior_values, prior_original = held.mask, held.values, held.original
    if is_sharded(param) and not is_sharded(mask):
        mask = _split(mask, param)
    # A sharded parameter is pruned on this rank's shard: every tensor below is local.
    data, keep = local(param.detach()), local(mask)
    before = None if prior is None else local(prior)

    supplied = values is not None
    if values is not None:
        if prior is not None:
            raise ValueError(f"values= is for a parameter without a mask; {name!r} already has one")
        pruned_count = keep.numel() - int(torch.count_nonzero(keep))
        if values.numel() != pruned_count:
            raise ValueError(
                f"values= holds {values.numel()} entries but the mask of {name!r} prunes {pruned_count}"
            )
    # A parameter whose whole original is kept (it was reconstructed) keeps that: it holds the pruned values too.
    elif restorable and prior_original is None and (before is None or prior_values is not None):
        if before is None:
            values = pruned_values(data, keep)
        else:
            # Entries pruned earlier are zero in `data`; their originals are in `prior_values`.
            assert prior_values is not None
            full = data.clone()
            full.masked_scatter_(~before, prior_values.to(full.dtype))
            values = pruned_values(full, keep)
            del full

    pending = _DEFERRED.get()
    job: _Zeroing | None = None
    # What undo() writes back if the zeroing happened and `values` is not it.
    newly: Tensor | None = None
    if pending is None:
        if values is None or before is not None or supplied:
            newly = pruned_values(data, keep) if before is None else data[before & ~keep]
        zero_pruned(data, keep)
    else:
        job = _Zeroing(data, keep)
        pending.append(job)

    module.register_buffer(MASK_PREFIX + name, pack(mask), persistent=False)
    if values is not None:
        module.register_buffer(VALUES_PREFIX + name, values, persistent=False)
    elif prior_values is not None or not restorable:
        _pop_buffer(module, VALUES_PREFIX + name)
    if not restorable:
        _pop_buffer(module, ORIGINAL_PREFIX + name)
    if not held.tracked:
        module.__dict__[_TRACKER] = _Tracker(module)
    _changed()

    def undo() -> None:
        if job is not None and not job.done:
            job.cancelled = True  # the weights were never touched
        else:
            back = (
                newly if newly is not None else values if prior is None and not supplied else None
            )
            if back is None:
                raise RuntimeError(
                    "cannot undo a deferred mask attachment after its commit: its values were not kept"
                )
            with torch.no_grad():
                data.masked_scatter_(~keep if before is None else before & ~keep, back)
        held.put_back()

    return undo


class _Held:
    """What a module holds for one parameter before a mask change (its mask as stored and unpacked, its pruned
    values, its kept original, whether it is tracked), and how to put exactly that back: the end of every undo."""

    __slots__ = ("mask", "module", "name", "original", "stored", "tracked", "values")

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module, self.name = module, name
        self.stored = module._buffers.get(MASK_PREFIX + name)
        self.mask = get_mask(module, name)
        self.values = module._buffers.get(VALUES_PREFIX + name)
        self.original = module._buffers.get(ORIGINAL_PREFIX + name)
        self.tracked = _TRACKER in module.__dict__

    def put_back(self) -> None:
        module, name = self.module, self.name
        _drop(module, name)
        for prefix, held in (
            (MASK_PREFIX, self.stored),
            (VALUES_PREFIX, self.values),
            (ORIGINAL_PREFIX, self.original),
        ):
            if held is not None:
                module.register_buffer(prefix + name, held, persistent=False)
        if not self.tracked:
            _untrack(module)
        _changed()


def _pop_buffer(module: nn.Module, key: str) -> None:
    # register_buffer(persistent=False) also records the name in _non_persistent_buffers_set.
    module._buffers.pop(key, None)
    module._non_persistent_buffers_set.discard(key)


def _drop(module: nn.Module, name: str) -> None:
    _pop_buffer(module, MASK_PREFIX + name)
    _pop_buffer(module, VALUES_PREFIX + name)
    _pop_buffer(module, ORIGINAL_PREFIX + name)
    _changed()


def _untrack(module: nn.Module) -> None:
    if next(_masks_of(module), None) is None:
        module.__dict__.pop(_TRACKER, None)
        _LIVE.discard(module)


@_locked
def remove_parameter(module: nn.Module, name: str) -> None:
    """Make the pruning of ``module.<name>`` permanent: the zeros stay, the mask and saved values go."""
    if get_mask(module, name) is None:
        raise NotPrunedError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    _drop(module, name)
    _untrack(module)


@_locked
def restore_parameter(module: nn.Module, name: str) -> None:
    """Put the original values of ``module.<name>``'s pruned entries back and drop the mask.

    Entries that were kept keep their current values (their originals unless they were trained since).
    """
    mask = follow_sharding(module, name)
    if mask is None:
        raise NotPrunedError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    values = module._buffers.get(VALUES_PREFIX + name)
    original = module._buffers.get(ORIGINAL_PREFIX + name)
    if values is None and original is None:
        raise NotPrunedError(
            f"parameter {name!r} of {type(module).__name__} was pruned with restorable=False, so its "
            "original values were not kept; use prunus.remove() to make the pruning permanent"
        )
    param = module._parameters[name]
    assert param is not None
    with torch.no_grad():
        data = local(param.detach())
        if original is not None:
            data.copy_(local(original))
        else:
            assert values is not None
            data.masked_scatter_(~local(mask), values.to(data.dtype))
    _drop(module, name)
    _untrack(module)


@_locked
def replace_values(
    module: nn.Module, name: str, values: Tensor, *, restorable: bool = True
) -> Callable[[], None]:
    """Write ``values`` into the entries the mask of ``module.<name>`` keeps (a reconstruction's result).

    Pruned entries stay zero whatever ``values`` holds there. When the parameter is restorable, its whole
    original is kept from now on (``_prunus_original_<name>``, in place of the pruned values), so
    :func:`restore_parameter` brings back every entry bit for bit, the reconstructed ones too. Returns the undo.

    Raises:
        NotPrunedError: the parameter carries no mask.
    """
    mask = get_mask(module, name)
    if mask is None:
        raise NotPrunedError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    param = module._parameters[name]
    assert param is not None
    data = param.detach()
    pruned = module._buffers.get(VALUES_PREFIX + name)
    original = module._buffers.get(ORIGINAL_PREFIX + name)
    before: Tensor | None = None
    if restorable and original is None and pruned is not None:
        # The original is the kept values now plus the pruned ones; the undo reads the kept values back from it.
        original = data.clone()
        original.masked_scatter_(~mask, pruned.to(data.dtype))
        module.register_buffer(ORIGINAL_PREFIX + name, original, persistent=False)
        _pop_buffer(module, VALUES_PREFIX + name)
        created = True
    else:
        before = data.clone()
        created = False
    with torch.no_grad():
        data.copy_(torch.where(mask, values.to(data.dtype), torch.zeros((), dtype=data.dtype)))

    def undo() -> None:
        with torch.no_grad():
            if created:
                assert original is not None and pruned is not None
                data.copy_(torch.where(mask, original, torch.zeros((), dtype=data.dtype)))
                _pop_buffer(module, ORIGINAL_PREFIX + name)
                module.register_buffer(VALUES_PREFIX + name, pruned, persistent=False)
            else:
                assert before is not None
                data.copy_(before)

    return undo
