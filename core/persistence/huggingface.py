"""Hugging Face model directories that carry the pruning state.

:func:`save_pretrained` calls the model's own ``save_pretrained`` (``config.json``, ``model.safetensors``: the
weights with their zeros) and writes the masks, restore data and manifest beside them, in
``prunus_pruning.safetensors`` (:func:`prunus.save_pruned` with ``weights=False``). :func:`load_pretrained`
calls ``from_pretrained`` and loads that file back, so the model comes back pruned exactly as it was saved.

Without prunus, a plain ``AutoModel.from_pretrained(directory)`` loads the same directory: it reads
``model.safetensors`` (the weights with their zeros) and ignores the extra file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import StateError
from ..registration import Registry, registry
from ..report import PruneReport
from .state import Manifest, Resumable, load_pruned, save_pruned

__all__ = ["STATE_FILE", "load_pretrained", "save_pretrained"]

STATE_FILE = "prunus_pruning.safetensors"
"""The name of the pruning-state file in a model directory."""


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    *,
    pruner: Resumable | None = None,
    reports: Iterable[PruneReport] = (),
    registry: Registry = registry,
    **kwargs: Any,
) -> Manifest:
    """``model.save_pretrained(directory, **kwargs)``, plus the pruning state in ``prunus_pruning.safetensors``.

    Args:
        model: a Hugging Face ``PreTrainedModel`` (anything with ``save_pretrained``).
        pruner: recorded in the manifest, as in :func:`prunus.save_pruned`.
        reports: recorded in the manifest, as in :func:`prunus.save_pruned`.
        **kwargs: passed to ``save_pretrained`` (``safe_serialization``, ``max_shard_size``, ...).

    Returns:
        The manifest of the pruning state written.
    """
    save = getattr(model, "save_pretrained", None)
    if not callable(save):
        raise StateError(
            f"{type(model).__name__} has no save_pretrained (not a Hugging Face model); "
            "use prunus.save_pruned(model, path) instead"
        )
    target = Path(directory)
    save(str(target), **kwargs)
    return save_pruned(
        model, target / STATE_FILE, weights=False, pruner=pruner, reports=reports, registry=registry
    )


def load_pretrained(
    model_class: Any,
    directory: str | Path,
    *,
    pruner_factory: Any = None,
    check_versions: bool = True,
    registry: Registry = registry,
    **kwargs: Any,
) -> nn.Module:
    """``model_class.from_pretrained(directory, **kwargs)`` with the pruning state of the directory loaded.

    Args:
        model_class: ``AutoModelForCausalLM``, ``LlamaForCausalLM``, ... (anything with ``from_pretrained``).
        directory: a directory written by :func:`save_pretrained` (one without ``prunus_pruning.safetensors``
            loads as a plain ``from_pretrained`` would).
        pruner_factory: ``pruner_factory(model) -> GradualPruner``, to resume a saved pruner; the pruner is
            then at ``model.prunus_pruner``.
        **kwargs: passed to ``from_pretrained``.

    Raises:
        StateError: the pruning state does not fit the loaded model.
    """
    model = model_class.from_pretrained(str(directory), **kwargs)
    state = Path(directory) / STATE_FILE
    if state.is_file():
        pruner = pruner_factory(model) if pruner_factory is not None else None
        load_pruned(model, state, pruner=pruner, check_versions=check_versions, registry=registry)
        if pruner is not None:
            model.prunus_pruner = pruner
    if not isinstance(model, nn.Module):
        raise StateError(
            f"{model_class!r}.from_pretrained returned {type(model).__name__}, not a module"
        )
    return model
