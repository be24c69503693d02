"""A pruned model's state on disk without pickle: masks, restore data, a manifest, and optionally the weights.

``torch.save(model.state_dict())`` keeps the weights with their zeros, but not the masks (non-persistent
buffers), so a reloaded model would let training revive pruned entries, and ``prunus.restore`` would have
nothing to restore. :func:`save_pruned` writes one safetensors file that holds:

* ``mask.<name>``: each pruned parameter's keep-mask, one bit per entry (uint8, little bit order);
* ``pruned.<name>``: the original values of its pruned entries, when it was pruned restorable;
* ``state.*``: the model's ``state_dict`` in the sparse-bitmask layout of :mod:`prunus.persistence.compressed`
  (unless ``weights=False``, for a checkpoint or a Hugging Face directory that stores the weights itself);
* the manifest (safetensors metadata ``prunus.manifest``, JSON): the format version, the prunus, torch and
  plugin versions, every pruned parameter's shape, dtype and count, the strategies that pruned it and the
  plugins that provided them, a :class:`~prunus.GradualPruner`'s state (schedule position and history), and the
  architecture record of :func:`prunus.shrink_state`, so a shrunken model rebuilds on a fresh instance.

:func:`load_pruned` reads it into a fresh instance of the model class, with ``weights_only`` semantics (tensors
and JSON, nothing executed), after checking names, shapes, dtypes and versions: what does not fit is refused
with a :class:`~prunus.StateError` and the model is left as it was. :func:`pruning_state` and
:func:`load_pruning_state` are the same state as a dict of tensors and a string, for training checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .. import files, masking
from ..errors import FileFormatError, PrunusError, StateError, UnknownStrategyError
from ..registration import Provider, Registry, registry
from ..report import PruneReport
from ..shrinking.record import load_shrunk, shrink_state
from ..transaction import ModuleSnapshot, transaction
from .bits import pack_mask, unpack_mask
from .compressed import FORMAT, FORMAT_KEY, LAYOUT_KEY, compress_state, decompress_state
from .files import read_safetensors_metadata

__all__ = [
    "STATE_FORMAT",
    "Manifest",
    "ParameterState",
    "Resumable",
    "load_pruned",
    "load_pruning_state",
    "pruning_state",
    "read_manifest",
    "save_pruned",
]

STATE_FORMAT = "prunus.pruning-state/1"
"""The ``format`` of a manifest this prunus writes and reads."""

MANIFEST_KEY = "prunus.manifest"
_MASK, _PRUNED, _STATE = "mask.", "pruned.", "state."


class Resumable(Protocol):
    """What :func:`save_pruned` stores of a pruner: a JSON-serializable state and a way back into it."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class ParameterState(BaseModel):
    """One pruned parameter in a manifest."""

    model_config = ConfigDict(frozen=True)

    name: str
    shape: list[int]
    dtype: str
    numel: int
    pruned: int
    restorable: bool


class Manifest(BaseModel):
    """What a saved pruning state says about itself (the ``prunus.manifest`` JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: str
    prunus_version: str
    torch_version: str
    python_version: str
    model_class: str
    weights: bool
    """Whether the file holds the model's weights (``state.*``) too."""
    parameters: list[ParameterState]
    strategies: list[dict[str, Any]]
    """Each prune recorded: ``name``, ``options`` and ``provider`` (plugin, distribution, version)."""
    plugins: dict[str, dict[str, str | None]]
    """Every plugin that provided a recorded strategy or schedule: its distribution and version."""
    pruner: dict[str, Any] | None
    """The pruner's :meth:`~prunus.GradualPruner.state_dict` (schedule position, history), when one was saved."""
    schedule: dict[str, Any] | None = None
    """The pruner's schedule: ``name``, ``options`` and ``provider``."""
    architecture: dict[str, Any]
    """:func:`prunus.shrink_state` of the model (its shapes and layer sizes)."""
    state_layout: str | None = None
    """The ``prunus.layout`` of the weights when ``weights`` (see :mod:`prunus.persistence.compressed`)."""

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned parameters' entries that are pruned."""
        numel = sum(p.numel for p in self.parameters)
        return sum(p.pruned for p in self.parameters) / numel if numel else 0.0


def _provider(provider: Provider) -> dict[str, str | None]:
    return {
        "plugin": provider.plugin,
        "distribution": provider.distribution,
        "version": provider.version,
    }


def _json_part(state: Mapping[str, Any]) -> dict[str, Any]:
    """A pruner's state without its tensors: entries that hold tensors (masks, pruned values) become empty,
    since the pruning state stores the masks and pruned values itself, packed."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Tensor) or (
            isinstance(value, Mapping) and any(isinstance(v, Tensor) for v in value.values())
        ):
            out[key] = {}
        else:
            out[key] = value
    return out


def _strategy_entry(name: str, options: Mapping[str, Any], where: Registry) -> dict[str, Any]:
    try:
        provider: dict[str, str | None] | None = _provider(where.info(name).provider)
    except UnknownStrategyError:
        provider = None
    return {"name": name, "options": dict(options), "provider": provider}


def _manifest(
    model: nn.Module,
    *,
    weights: bool,
    restore_data: bool,
    pruner: Resumable | None,
    reports: Iterable[PruneReport],
    where: Registry,
    state_layout: str | None,
) -> Manifest:
    from .. import __version__

    parameters = []
    for name, module, pname in masking.masked_parameters(model):
        mask = masking.get_mask(module, pname)
        param = module._parameters[pname]
        assert mask is not None and param is not None
        parameters.append(
            ParameterState(
                name=name,
                shape=list(param.shape),
                dtype=str(param.dtype).removeprefix("torch."),
                numel=param.numel(),
                pruned=param.numel() - int(torch.count_nonzero(mask)),
                restorable=restore_data and masking.is_restorable(module, pname),
            )
        )
    strategies = [_strategy_entry(r.strategy, r.options, where) for r in reports]
    pruner_state = _json_part(pruner.state_dict()) if pruner is not None else None
    schedule: dict[str, Any] | None = None
    if pruner_state is not None and "strategy" in pruner_state:
        strategies.append(
            _strategy_entry(
                pruner_state["strategy"], pruner_state.get("strategy_options", {}), where
            )
        )
        saved = pruner_state.get("schedule")
        if isinstance(saved, dict) and "name" in saved:
            try:
                provider: dict[str, str | None] | None = _provider(
                    where.provider("schedule", saved["name"])
                )
            except PrunusError:
                provider = None
            schedule = {**saved, "provider": provider}
    plugins: dict[str, dict[str, str | None]] = {}
    for entry in [*strategies, *([schedule] if schedule else [])]:
        provider = entry["provider"]
        if provider is not None:
            plugins[str(provider["plugin"])] = {
                "distribution": provider["distribution"],
                "version": provider["version"],
            }
    return Manifest(
        format=STATE_FORMAT,
        prunus_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        weights=weights,
        parameters=parameters,
        strategies=strategies,
        plugins=plugins,
        pruner=pruner_state,
        schedule=schedule,
        architecture=_architecture(model),
        state_layout=state_layout,
    )


def _architecture(model: nn.Module) -> dict[str, Any]:
    """:func:`prunus.shrink_state` of ``model`` without prunus's own mask and restore buffers."""
    record = shrink_state(model)
    for entry in record["modules"].values():
        entry["buffers"] = {
            key: shape
            for key, shape in entry["buffers"].items()
            if not key.startswith(
                (masking.MASK_PREFIX, masking.VALUES_PREFIX, masking.ORIGINAL_PREFIX)
            )
        }
    return record


def pruning_state(
    model: nn.Module,
    *,
    weights: bool = False,
    restore_data: bool = True,
    pruner: Resumable | None = None,
    reports: Iterable[PruneReport] = (),
    registry: Registry = registry,
) -> dict[str, Any]:
    """The pruning state of ``model`` as ``{"manifest": <JSON str>, "tensors": {name: tensor}}``.

    The form to put in a training checkpoint (``torch.save`` and ``torch.load(weights_only=True)`` both take
    it); :func:`save_pruned` writes the same to a safetensors file. Arguments as in :func:`save_pruned`.
    """
    if not isinstance(model, nn.Module):
        raise StateError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    tensors: dict[str, Tensor] = {}
    with masking.MASK_LOCK:
        for name, module, pname in masking.masked_parameters(model):
            mask = masking.get_mask(module, pname)
            assert mask is not None
            tensors[_MASK + name] = pack_mask(mask)
            values = masking.saved_values(module, pname) if restore_data else None
            if values is not None:
                tensors[_PRUNED + name] = values.detach().cpu().contiguous().clone()
        layout = None
        if weights:
            state_tensors, metadata = compress_state(model.state_dict())
            tensors.update({_STATE + key: value for key, value in state_tensors.items()})
            layout = metadata[LAYOUT_KEY]
        manifest = _manifest(
            model,
            weights=weights,
            restore_data=restore_data,
            pruner=pruner,
            reports=reports,
            where=registry,
            state_layout=layout,
        )
    return {"manifest": manifest.model_dump_json(), "tensors": tensors}


def save_pruned(
    model: nn.Module,
    path: str | Path,
    *,
    weights: bool = True,
    restore_data: bool = True,
    pruner: Resumable | None = None,
    reports: Iterable[PruneReport] = (),
    registry: Registry = registry,
) -> Manifest:
    """Save ``model``'s pruning state (and by default its weights) to one safetensors file, without pickle.

    >>> report = prunus.prune(model, "l1_unstructured", amount=0.7)         # doctest: +SKIP
    >>> prunus.save_pruned(model, "pruned.safetensors", reports=[report])   # doctest: +SKIP
    >>> fresh = Net()                                                        # doctest: +SKIP
    >>> prunus.load_pruned(fresh, "pruned.safetensors")   # weights, masks, restore data, history

    Args:
        model: the pruned (or shrunken, or not pruned at all) model.
        path: the file to write (``.safetensors``); written whole or not at all.
        weights: store the ``state_dict`` too (compressed). ``False`` stores the masks, restore data and
            manifest only, beside weights saved elsewhere (a training checkpoint, a Hugging Face directory).
        restore_data: store the original values of the pruned entries (what ``prunus.restore`` puts back; as
            large as the pruned entries themselves). ``False`` loads the model as if pruned with
            ``restorable=False``: the masks still hold, ``prunus.remove`` works, ``prunus.restore`` does not.
        pruner: a :class:`~prunus.GradualPruner` (or anything with ``state_dict``/``load_state_dict``) whose
            state is saved in the manifest, to resume it with :func:`load_pruned`.
        reports: the :class:`~prunus.PruneReport` of each ``prune`` call, recorded in the manifest (strategy,
            options, the plugin that provided it and its version).

    Returns:
        The :class:`Manifest` written.
    """
    from safetensors.torch import save_file

    state = pruning_state(
        model,
        weights=weights,
        restore_data=restore_data,
        pruner=pruner,
        reports=reports,
        registry=registry,
    )
    metadata = {"format": "pt", MANIFEST_KEY: state["manifest"]}
    files.write_atomic_path(
        path, lambda temporary: save_file(state["tensors"], str(temporary), metadata=metadata)
    )
    return Manifest.model_validate_json(state["manifest"])


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of a file :func:`save_pruned` wrote, read from its header alone (no tensor is loaded).

    Raises:
        StateError: the file is not a prunus pruning state, or its format is not one this prunus reads.
    """
    metadata = read_safetensors_metadata(path)
    if metadata is None or MANIFEST_KEY not in metadata:
        raise StateError(
            f"{path} is not a prunus pruning state (a safetensors file with a {MANIFEST_KEY!r} manifest; "
            "write one with prunus.save_pruned)"
        )
    return _parse_manifest(metadata[MANIFEST_KEY], str(path))


def _parse_manifest(text: str, where: str) -> Manifest:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise StateError(f"{where}: the manifest is not JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise StateError(
            f"{where}: pruning-state format {found!r} is not the one this prunus reads ({STATE_FORMAT!r})"
            + ("; a newer prunus wrote it: upgrade prunus" if isinstance(found, str) else "")
        )
    try:
        return Manifest.model_validate(raw)
    except ValueError as error:
        raise StateError(f"{where}: the manifest is damaged: {error}") from None


def load_pruned(
    model: nn.Module,
    path: str | Path,
    *,
    pruner: Resumable | None = None,
    check_versions: bool = True,
    registry: Registry = registry,
) -> Manifest:
    """Load a file of :func:`save_pruned` into ``model``, a fresh instance of the class that was saved.

    Puts back the weights (when the file holds them; a shrunken architecture is rebuilt first), every mask with
    its pruned values (so training keeps the zeros and ``prunus.restore`` works as before the save), and the
    ``pruner``'s state. Only tensors and JSON are read: nothing is unpickled or executed.

    Args:
        model: a freshly built model; its parameters must not carry prunus masks yet.
        path: a file written by :func:`save_pruned`.
        pruner: a pruner built as the saved one was, to resume it (its history is put back).
        check_versions: refuse to resume ``pruner`` when the plugin that provides its strategy or schedule is
            installed in another version than the one that saved it (later masks could differ).

    Returns:
        The file's :class:`Manifest`.

    Raises:
        StateError: the file is not a pruning state, its format is unknown, or names, shapes or dtypes do not
            fit ``model``; ``model`` and ``pruner`` are left as they were.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    manifest = read_manifest(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise FileFormatError(f"{path} is damaged: {error}") from None
    with _damage_reported(str(path)):
        _apply(model, manifest, tensors, pruner, check_versions, registry, str(path))
    return manifest


def load_pruning_state(
    model: nn.Module,
    state: Mapping[str, Any],
    *,
    pruner: Resumable | None = None,
    check_versions: bool = True,
    registry: Registry = registry,
) -> Manifest:
    """Load what :func:`pruning_state` returned into ``model``, as :func:`load_pruned` loads a file."""
    if not isinstance(state, Mapping) or not isinstance(state.get("manifest"), str):
        raise StateError(f"not a prunus pruning state (from prunus.pruning_state): {state!r:.80}")
    tensors = state.get("tensors")
    if not isinstance(tensors, Mapping) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise StateError("the pruning state's 'tensors' must map names to tensors")
    manifest = _parse_manifest(state["manifest"], "pruning state")
    with _damage_reported("pruning state"):
        _apply(model, manifest, tensors, pruner, check_versions, registry, "pruning state")
    return manifest


@contextlib.contextmanager
def _damage_reported(where: str) -> Iterator[None]:
    """Anything a damaged state makes fail, that no check foresaw (a mask that unpacks to the wrong shape, say),
    raised as a :class:`FileFormatError` naming the file; prunus errors pass as they are. The model was left
    as it was by then (:func:`_apply` works in a transaction)."""
    try:
        yield
    except PrunusError:
        raise
    except Exception as error:
        text = " ".join(str(error).split())[:200]
        raise FileFormatError(
            f"{where} is damaged: {type(error).__name__}: {text}; the model was left as it was"
        ) from error


def _apply(
    model: nn.Module,
    manifest: Manifest,
    tensors: Mapping[str, Tensor],
    pruner: Resumable | None,
    check_versions: bool,
    where_registry: Registry,
    where: str,
) -> None:
    if not isinstance(model, nn.Module):
        raise StateError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    weights = _weights(manifest, tensors, where) if manifest.weights else None
    rebuild = _differs(model, manifest.architecture)
    if rebuild and weights is None:
        raise StateError(
            f"{where}: the saved model was shrunk ({rebuild}); its weights are not in this file, so load them "
            "first with prunus.load_shrunk(model, state_dict, record), or save with weights=True"
        )
    with masking.MASK_LOCK:
        if not rebuild:
            if weights is not None:
                _check_weights(model, weights, where)
            _check_masks(model, manifest, tensors, where)
        if pruner is not None and manifest.pruner is None:
            raise StateError(f"{where}: a pruner was given but the file holds no pruner state")
        if pruner is not None and check_versions:
            _check_versions(manifest, where_registry, where)
        before = pruner.state_dict() if pruner is not None else None
        with transaction() as tx:
            if pruner is not None and before is not None:
                assert manifest.pruner is not None
                pruner.load_state_dict(manifest.pruner)
                tx.record(lambda: pruner.load_state_dict(before))
            if weights is not None and rebuild:
                tx.record(ModuleSnapshot(model))
                load_shrunk(model, weights, manifest.architecture)
                _check_masks(model, manifest, tensors, where)
            elif weights is not None:
                model.load_state_dict(weights)
            for entry in manifest.parameters:
                module, pname = _owner(model, entry.name)
                mask = unpack_mask(tensors[_MASK + entry.name], entry.shape)
                param = module._parameters[pname]
                assert param is not None
                values = tensors.get(_PRUNED + entry.name)
                tx.record(
                    masking.attach_mask(
                        module,
                        pname,
                        mask.to(param.device),
                        restorable=values is not None,
                        values=values.to(param.device) if values is not None else None,
                    )
                )


def _weights(manifest: Manifest, tensors: Mapping[str, Tensor], where: str) -> dict[str, Any]:
    state = {key[len(_STATE) :]: value for key, value in tensors.items() if key.startswith(_STATE)}
    if manifest.state_layout is None:
        raise StateError(f"{where}: the manifest says the file holds weights but records no layout")
    return decompress_state(state, {FORMAT_KEY: FORMAT, LAYOUT_KEY: manifest.state_layout})


def _differs(model: nn.Module, record: Mapping[str, Any]) -> str | None:
    """Where the recorded architecture is a shrunken ``model`` (``None`` when their shapes are the same).

    Raises:
        StateError: a recorded shape is larger than the model's, or has another rank (another model).
    """
    modules = dict(model.named_modules())
    for name, entry in record.get("modules", {}).items():
        module = modules.get(name)
        if module is None:
            return f"the file has a module {name!r} that {type(model).__name__} lacks"
        for kind, table in (("parameters", module._parameters), ("buffers", module._buffers)):
            for key, shape in entry.get(kind, {}).items():
                tensor = table.get(key)
                if tensor is not None and list(tensor.shape) != list(shape):
                    qualified = f"{name}.{key}" if name else key
                    found = f"{qualified} is {list(shape)} in the file, {list(tensor.shape)} in the model"
                    if len(shape) != tensor.dim() or any(
                        s > t for s, t in zip(shape, tensor.shape, strict=True)
                    ):
                        # Larger than the model: not a shrunken version of it, so nothing to rebuild.
                        raise StateError(
                            f"{found}; load into a fresh instance of the class and configuration that "
                            "was saved"
                        )
                    return found
    return None


def _check_weights(model: nn.Module, weights: Mapping[str, Any], where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        raise StateError(
            f"{where}: the saved weights do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; load into a fresh instance of the class that was saved"
        )
    for key, value in weights.items():
        mine = own[key]
        if isinstance(value, Tensor) and isinstance(mine, Tensor) and value.shape != mine.shape:
            raise StateError(
                f"{where}: {key!r} is {list(value.shape)} in the file, {list(mine.shape)} in the model"
            )


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, pname = name.rpartition(".")
    try:
        module = model.get_submodule(prefix)
    except AttributeError:
        raise StateError(
            f"the file prunes {name!r}, but {type(model).__name__} has no module {prefix!r}"
        ) from None
    if module._parameters.get(pname) is None:
        raise StateError(
            f"the file prunes {name!r}, but {type(model).__name__} has no such parameter"
        )
    return module, pname


def _check_masks(
    model: nn.Module, manifest: Manifest, tensors: Mapping[str, Tensor], where: str
) -> None:
    for entry in manifest.parameters:
        module, pname = _owner(model, entry.name)
        param = module._parameters[pname]
        assert param is not None
        if list(param.shape) != entry.shape:
            raise StateError(
                f"{where}: {entry.name!r} is {entry.shape} in the file, {list(param.shape)} in the model"
            )
        if str(param.dtype).removeprefix("torch.") != entry.dtype:
            raise StateError(
                f"{where}: {entry.name!r} is {entry.dtype} in the file, {param.dtype} in the model; convert the "
                "model to the saved dtype before loading, and back after"
            )
        if masking.get_mask(module, pname) is not None:
            raise StateError(
                f"{where}: {entry.name!r} already carries a prunus mask; load into a freshly built model (or "
                "prunus.remove / prunus.restore it first)"
            )
        packed = tensors.get(_MASK + entry.name)
        if packed is None or packed.numel() != math.ceil(entry.numel / 8):
            raise StateError(
                f"{where}: the mask of {entry.name!r} is missing or has the wrong size"
            )
        values = tensors.get(_PRUNED + entry.name)
        if entry.restorable and (values is None or values.numel() != entry.pruned):
            raise StateError(
                f"{where}: the restore data of {entry.name!r} is missing or has the wrong size"
            )
        if values is not None and values.dtype != param.dtype:
            raise StateError(
                f"{where}: the restore data of {entry.name!r} is {values.dtype}, not {param.dtype}"
            )
        count = entry.numel - int(unpack_mask(packed, entry.shape).sum())
        if count != entry.pruned:
            raise StateError(
                f"{where}: the mask of {entry.name!r} prunes {count}, the manifest says {entry.pruned}"
            )


def _check_versions(manifest: Manifest, where_registry: Registry, where: str) -> None:
    assert manifest.pruner is not None
    recorded: list[tuple[str, str, Any]] = [
        (
            "strategy",
            str(manifest.pruner.get("strategy")),
            manifest.strategies[-1]["provider"] if manifest.strategies else None,
        )
    ]
    if manifest.schedule is not None:
        recorded.append(
            ("schedule", str(manifest.schedule.get("name")), manifest.schedule.get("provider"))
        )
    for kind, name, provider in recorded:
        if provider is None:
            continue
        try:
            installed = (
                where_registry.info(name).provider
                if kind == "strategy"
                else where_registry.provider("schedule", name)
            )
        except PrunusError as error:
            raise StateError(
                f"{where}: the saved pruner's {kind} {name!r} is not installed: {error}"
            ) from None
        if (installed.distribution, installed.version) != (
            provider["distribution"],
            provider["version"],
        ):
            raise StateError(
                f"{where}: the saved pruner's {kind} {name!r} came from {provider['distribution']} "
                f"{provider['version']}, installed is {installed.distribution} {installed.version}; later masks "
                "could differ. Install that version, or pass check_versions=False to resume anyway"
            )
