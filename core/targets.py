"""Which parameters a call prunes: ``include`` / ``exclude`` glob patterns, ``filter_fn``, and the default.

One rule for glob patterns serves every call that takes them (``prune``, ``to_sparse``, ``shrink``...): a
pattern or a list of patterns, each of which must match something, and never an empty list.

The default is the ``weight`` of every Linear and Conv layer (GPT-2's ``Conv1D`` included); in a language model
(a model with an ``nn.Embedding`` and a stack of blocks, see :func:`prunus.layout.find_blocks`) only those inside
the blocks, so the embeddings and the output head (often tied to them) are left alone, as every LLM pruning
method does. A wildcard pattern that selects parameters of normalization layers beside those of other layers
(``"model.layers.*"``) draws a :class:`~prunus.errors.TargetWarning`: pruning them is almost never meant and
ruins a model.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

from torch import nn

from . import masking
from .arguments import check_model
from .errors import PrunusWarning, TargetError, TargetTypeError, TargetWarning, brief
from .layout import find_blocks, input_dim, is_transposed_linear

__all__ = [
    "DEFAULT_LAYERS",
    "FilterFn",
    "Patterns",
    "glob_patterns",
    "input_dim",
    "is_default_layer",
    "is_normalization",
    "listing",
    "matches",
    "select_targets",
    "skipped_layers",
]

DEFAULT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
"""Layers whose ``weight`` ``prune`` targets when no ``include`` or ``filter_fn`` is given (with GPT-2's
``Conv1D``, recognised by name: see :data:`prunus.layout.TRANSPOSED_LINEARS`)."""

FilterFn = Callable[[nn.Module, str], bool]
"""``filter_fn(module, qualified_name) -> bool``: choose parameters by any rule."""
Patterns = str | Sequence[str] | None
"""One glob pattern over qualified names, a list of them, or ``None``."""


def is_default_layer(module: nn.Module) -> bool:
    """Whether ``module``'s ``weight`` is one ``prune`` targets by default: a Linear, Conv or GPT-2 ``Conv1D``."""
    return isinstance(module, DEFAULT_LAYERS) or is_transposed_linear(module)


_NORMALIZATIONS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def is_normalization(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer: torch's, or a class named ``...Norm`` (``LlamaRMSNorm``)."""
    return isinstance(module, _NORMALIZATIONS) or any(
        re.search(r"Norm(\d+d)?$", cls.__name__) for cls in type(module).__mro__
    )


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` matches any of the glob ``patterns`` (case-sensitive, as qualified names are)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_targets(
    model: nn.Module,
    *,
    include: Patterns = None,
    exclude: Patterns = None,
    filter_fn: FilterFn | None = None,
) -> list[tuple[str, nn.Module, str]]:
    """The parameters ``prune`` would target: ``(qualified name, owning module, parameter name)``.

    With no ``include`` and no ``filter_fn``, Linear and Conv layers whose weight is not a plain parameter
    (parametrized, or pruned by ``torch.nn.utils.prune``) are left out with a :class:`~prunus.PrunusWarning`
    that names each and says how to prune it (see :func:`skipped_layers`).

    Raises:
        TargetError: a pattern matches nothing, or nothing is left to prune.
        TargetTypeError: ``model``, a pattern or ``filter_fn`` has the wrong type.
    """
    check_model(model)
    include_patterns = glob_patterns("include", include)
    exclude_patterns = glob_patterns("exclude", exclude)
    # Every name of every parameter: a tied weight (an embedding shared with an output layer) or a module
    # registered twice is listed under each of its names, so any of them can choose it; it is pruned once.
    candidates: list[tuple[str, nn.Module, str]] = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        for pname, param in module._parameters.items():
            if param is not None:
                candidates.append((f"{prefix}.{pname}" if prefix else pname, module, pname))
    names = [name for name, _, _ in candidates]

    if include_patterns:
        for pattern in include_patterns:
            if not fnmatch.filter(names, pattern):
                raise TargetError(
                    f"include pattern {pattern!r} matches no parameter of {type(model).__name__}; "
                    f"parameters: {listing(names)}"
                )
        chosen = [c for c in candidates if matches(c[0], include_patterns)]
    elif filter_fn is None:
        chosen = _default(model, candidates)
        _warn_skipped(model)
    else:
        chosen = candidates
    if filter_fn is not None:
        if not callable(filter_fn):
            raise TargetTypeError(
                f"filter_fn must be a function of (module, name) returning a bool, not "
                f"{type(filter_fn).__name__} ({brief(filter_fn)})"
            )
        chosen = [c for c in chosen if _chosen_by(filter_fn, c)]

    chosen_names = [name for name, _, _ in chosen]
    _warn_normalization(chosen, include_patterns, exclude_patterns)
    for pattern in exclude_patterns:
        if not fnmatch.filter(chosen_names, pattern):
            raise TargetError(
                f"exclude pattern {pattern!r} matches none of the parameters chosen for pruning: "
                f"{listing(chosen_names)}"
            )
    # Excluding any name of a tied parameter excludes the parameter.
    excluded = {
        id(c[1]._parameters[c[2]])
        for c in chosen
        if any(fnmatch.fnmatchcase(c[0], p) for p in exclude_patterns)
    }
    chosen = _one_per_parameter(
        [c for c in chosen if id(c[1]._parameters[c[2]]) not in excluded], candidates
    )

    for name, module, pname in chosen:
        param = module._parameters[pname]
        assert param is not None
        if not param.is_floating_point():
            raise TargetError(
                f"parameter {name!r} has dtype {param.dtype}; only floating-point parameters can be pruned"
            )
    if not chosen:
        how = (
            "no Linear or Conv layer with a weight"
            if not include_patterns and filter_fn is None and not exclude_patterns
            else "no parameter left after include/exclude/filter_fn"
        )
        raise TargetError(
            f"nothing to prune in {type(model).__name__}: {how}. Choose parameters with include=[...] "
            f"or filter_fn=...; parameters: {listing(names)}"
        )
    return chosen


def _default(
    model: nn.Module, candidates: list[tuple[str, nn.Module, str]]
) -> list[tuple[str, nn.Module, str]]:
    """The default targets: layer weights; in a language model only those inside its stack of blocks."""
    chosen = [c for c in candidates if is_default_layer(c[1]) and c[2] == "weight"]
    blocks = find_blocks(model)
    if blocks is not None and any(isinstance(m, nn.Embedding) for m in model.modules()):
        inside = {id(p) for p in blocks[1].parameters()}
        chosen = [c for c in chosen if id(c[1]._parameters[c[2]]) in inside]
    return chosen


def _warn_normalization(
    chosen: list[tuple[str, nn.Module, str]], include: list[str], exclude: list[str]
) -> None:
    """Warn when a wildcard include pattern selects normalization parameters beside other layers' ones.

    A pattern that selects only normalization parameters (``"block.bn*.weight"``) asks for them on purpose.
    """
    kept = [c for c in chosen if not any(fnmatch.fnmatchcase(c[0], p) for p in exclude)]
    names: list[str] = []
    broad: list[str] = []
    for pattern in include:
        if not any(ch in pattern for ch in "*?["):
            continue
        matched = [c for c in kept if fnmatch.fnmatchcase(c[0], pattern)]
        norms = [name for name, module, _ in matched if is_normalization(module)]
        if norms and len(norms) < len(matched):
            broad.append(pattern)
            names += [n for n in norms if n not in names]
    if names:
        warnings.warn(
            f"include pattern(s) {', '.join(repr(p) for p in broad)} also select {len(names)} parameters of "
            f"normalization layers ({listing(names, 4)}); pruning them scales whole features to zero and is "
            "rarely meant (half of a language model's norm weights pruned makes it useless). Narrow the "
            "pattern to the layers' weights (e.g. 'model.layers.*_proj.weight'), exclude them "
            "(exclude='*norm*'), or select them with a pattern of their own to prune them on purpose",
            TargetWarning,
            stacklevel=4,
        )


def _chosen_by(filter_fn: FilterFn, candidate: tuple[str, nn.Module, str]) -> bool:
    answer = filter_fn(candidate[1], candidate[0])
    try:
        if answer is None:
            raise TypeError("None")  # a function that forgot to return
        return bool(answer)
    except Exception:
        raise TargetTypeError(
            f"filter_fn returned {type(answer).__name__} ({brief(answer)}) for {candidate[0]!r}; "
            "it must return True or False"
        ) from None


def skipped_layers(model: nn.Module) -> dict[str, str]:
    """The Linear and Conv layers whose ``weight`` the default targeting cannot prune, with why and what to do.

    Their weight is not a plain parameter: it is computed from others by ``torch.nn.utils.parametrize`` (or
    ``torch.nn.utils.parametrizations.weight_norm``), by the older ``torch.nn.utils.weight_norm``, or by
    ``torch.nn.utils.prune`` (``weight_orig`` times ``weight_mask``). Zeros in those other tensors are zeros in
    the weight only for some of them, so prunus does not guess: it names them and how to prune them.
    """
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if not is_default_layer(module) or "weight" in module._parameters:
            continue
        where = name or "the model itself"
        prefix = f"{name}." if name else ""
        parametrizations = getattr(module, "parametrizations", None)
        if isinstance(parametrizations, nn.ModuleDict) and "weight" in parametrizations:
            originals = [
                f"{prefix}parametrizations.weight.{p}"
                for p, _ in parametrizations["weight"].named_parameters(recurse=False)
            ]
            out[where] = (
                "its weight is parametrized (torch.nn.utils.parametrize); a zero in "
                f"{' or '.join(originals)} is a zero of the weight only for some parametrizations: prune it with "
                f"include={originals[-1]!r} if yours is one (weight_norm's original1 is), or remove the "
                "parametrization first"
            )
        elif "weight_orig" in module._parameters and "weight_mask" in module._buffers:
            out[where] = (
                "it is pruned by torch.nn.utils.prune (weight = weight_orig * weight_mask): call "
                f"torch.nn.utils.prune.remove(module, 'weight') first, or prune include={prefix + 'weight_orig'!r}"
            )
        elif "weight_v" in module._parameters:
            out[where] = (
                "its weight is computed by torch.nn.utils.weight_norm from weight_g and weight_v: prune "
                f"include={prefix + 'weight_v'!r} (a zero there is a zero of the weight), or remove the weight norm"
            )
    return out


def _warn_skipped(model: nn.Module) -> None:
    skipped = skipped_layers(model)
    if skipped:
        details = "; ".join(f"{name!r}: {why}" for name, why in skipped.items())
        warnings.warn(
            f"the default targets leave out {len(skipped)} Linear/Conv layer(s) whose weight is not a plain "
            f"parameter: {details}",
            PrunusWarning,
            stacklevel=3,
        )


def _one_per_parameter(
    chosen: list[tuple[str, nn.Module, str]], candidates: list[tuple[str, nn.Module, str]]
) -> list[tuple[str, nn.Module, str]]:
    """Each chosen parameter once, in model order: under the name whose module holds its mask, if any."""
    masked = {
        id(c[1]._parameters[c[2]]): c
        for c in candidates
        if masking.get_mask(c[1], c[2]) is not None
    }
    out: dict[int, tuple[str, nn.Module, str]] = {}
    for entry in chosen:
        key = id(entry[1]._parameters[entry[2]])
        if key not in out:
            out[key] = masked.get(key, entry)
    return list(out.values())


def glob_patterns(what: str, value: Patterns) -> list[str]:
    """``value`` (one glob pattern, a list of them, or ``None``) as a list, checked.

    Raises:
        TargetError: ``value`` is not a string or a sequence of strings, or is an empty list (which would
            silently mean "the default" for an include and "nothing" for an exclude).
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, Iterable)
        or isinstance(items, (bytes, Mapping))
        or not all(isinstance(p, str) for p in items)
    ):
        raise TargetTypeError(
            f"{what} must be a glob pattern or a list of them, not {brief(value)}"
        )
    patterns = list(items)
    if not patterns:
        # An empty list would silently mean "the default selection" for include, "nothing" for exclude.
        raise TargetError(f"{what}=[] names no pattern; give at least one or leave {what}=None")
    return patterns


def listing(names: Sequence[str], limit: int = 20) -> str:
    """``names`` joined for an error message, the first ``limit`` of them and the count."""
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
