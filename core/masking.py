"""How a mask lives on a model: zeros in place, a bool mask on the side, and the pruned values for ``restore``.

Unlike ``torch.nn.utils.prune``, prunus does not reparametrize: the parameter stays a plain ``nn.Parameter``
whose pruned entries are zero, so the ``state_dict`` keeps its keys and a forward pass costs what the dense
model costs. Beside the parameter, two *non-persistent* buffers (moved by ``.to()``, absent from the
``state_dict``) hold:

* ``_prunus_mask_<name>``: the bool keep-mask (1 byte per entry);
* ``_prunus_pruned_<name>``: the original values of the pruned entries, in flat order, so :func:`restore_parameter`
  puts them back bit for bit (absent when the caller opted out of restoring).

Pruned entries stay zero through training: after every ``optimizer.step()`` a global step hook (registered on
first use) zeroes them again in the parameters that optimizer updated. Modules with masks are tracked in a weak
set; a small tracker object in each such module re-enrols copies made by ``copy.deepcopy`` and ``pickle``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .errors import NotPrunedError

__all__ = [
    "MASK_PREFIX",
    "VALUES_PREFIX",
    "attach_mask",
    "get_mask",
    "is_restorable",
    "masked_parameters",
    "remove_parameter",
    "restore_parameter",
]

MASK_PREFIX = "_prunus_mask_"
VALUES_PREFIX = "_prunus_pruned_"
_TRACKER = "_prunus_tracker"

_LIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_hook_handle: Any = None


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
    if _hook_handle is None:
        _hook_handle = register_optimizer_step_post_hook(_reapply_masks)


def _reapply_masks(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Zero the pruned entries again in the parameters ``optimizer`` just updated."""
    if not _LIVE:
        return
    updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with torch.no_grad():
        for module in list(_LIVE):
            for name, mask in _masks_of(module):
                param = module._parameters.get(name)
                if param is not None and id(param) in updated:
                    param.mul_(mask)


def _masks_of(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    for key, buffer in module._buffers.items():
        if key.startswith(MASK_PREFIX) and buffer is not None:
            yield key[len(MASK_PREFIX) :], buffer


def get_mask(module: nn.Module, name: str) -> Tensor | None:
    """The keep-mask on ``module.<name>``, or ``None`` if it is not pruned."""
    return module._buffers.get(MASK_PREFIX + name)


def is_restorable(module: nn.Module, name: str) -> bool:
    """Whether the original values of ``module.<name>``'s pruned entries are kept."""
    return module._buffers.get(VALUES_PREFIX + name) is not None


def masked_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(qualified name, module, parameter name)`` for every masked parameter in ``model``."""
    for prefix, module in model.named_modules():
        for name, _ in _masks_of(module):
            yield (f"{prefix}.{name}" if prefix else name), module, name


def attach_mask(
    module: nn.Module, name: str, mask: Tensor, *, restorable: bool = True
) -> Callable[[], None]:
    """Put ``mask`` on ``module.<name>``: zero the pruned entries and remember what ``restore`` needs.

    ``mask`` is the full keep-mask (already combined with any earlier one). Returns a function that undoes this
    call exactly, used to leave the model as it was when a later step of the same ``prune`` fails.
    """
    param = module._parameters[name]
    assert param is not None
    prior = get_mask(module, name)
    prior_values = module._buffers.get(VALUES_PREFIX + name)
    had_tracker = _TRACKER in module.__dict__
    data = param.detach()

    values: Tensor | None = None
    if restorable and (prior is None or prior_values is not None):
        if prior is None:
            values = data[~mask]
        else:
            # Entries pruned earlier are zero in `data`; their originals are in `prior_values`.
            assert prior_values is not None
            full = data.clone()
            full[~prior] = prior_values
            values = full[~mask]
    # What undo() needs: the values this call zeroes (shared with `values` on a first prune).
    newly_pruned = ~mask if prior is None else prior & ~mask
    newly = values if prior is None and values is not None else data[newly_pruned]

    with torch.no_grad():
        param.masked_fill_(~mask, 0)
    module.register_buffer(MASK_PREFIX + name, mask, persistent=False)
    if values is not None:
        module.register_buffer(VALUES_PREFIX + name, values, persistent=False)
    elif prior_values is not None or not restorable:
        _pop_buffer(module, VALUES_PREFIX + name)
    if not had_tracker:
        module.__dict__[_TRACKER] = _Tracker(module)

    def undo() -> None:
        with torch.no_grad():
            param.masked_scatter_(newly_pruned, newly)
        _drop(module, name)
        if prior is not None:
            module.register_buffer(MASK_PREFIX + name, prior, persistent=False)
        if prior_values is not None:
            module.register_buffer(VALUES_PREFIX + name, prior_values, persistent=False)
        if not had_tracker:
            _untrack(module)

    return undo


def _pop_buffer(module: nn.Module, key: str) -> None:
    # register_buffer(persistent=False) also records the name in _non_persistent_buffers_set.
    module._buffers.pop(key, None)
    module._non_persistent_buffers_set.discard(key)


def _drop(module: nn.Module, name: str) -> None:
    _pop_buffer(module, MASK_PREFIX + name)
    _pop_buffer(module, VALUES_PREFIX + name)


def _untrack(module: nn.Module) -> None:
    if next(_masks_of(module), None) is None:
        module.__dict__.pop(_TRACKER, None)
        _LIVE.discard(module)


def remove_parameter(module: nn.Module, name: str) -> None:
    """Make the pruning of ``module.<name>`` permanent: the zeros stay, the mask and saved values go."""
    if get_mask(module, name) is None:
        raise NotPrunedError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    _drop(module, name)
    _untrack(module)


def restore_parameter(module: nn.Module, name: str) -> None:
    """Put the original values of ``module.<name>``'s pruned entries back and drop the mask.

    Entries that were kept keep their current values (their originals unless they were trained since).
    """
    mask = get_mask(module, name)
    if mask is None:
        raise NotPrunedError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    values = module._buffers.get(VALUES_PREFIX + name)
    if values is None:
        raise NotPrunedError(
            f"parameter {name!r} of {type(module).__name__} was pruned with restorable=False, so its "
            "original values were not kept; use prunus.remove() to make the pruning permanent"
        )
    param = module._parameters[name]
    assert param is not None
    with torch.no_grad():
        param.masked_scatter_(~mask, values.to(param.dtype))
    _drop(module, name)
    _untrack(module)
