"""prunus's built-in hardware-aware selection policy (the ``prunus_select_strategy`` hook, ``trylast``).

The rules, first match wins:

1. objective ``accuracy``: ``l1_unstructured`` (the finest granularity keeps the most accuracy at a sparsity).
2. ``sparse_accelerator``: ``l1_unstructured`` (every zero is work skipped there).
3. ``gpu`` with 2:4 kernels (CUDA compute capability >= 8.0, unless a probe measured them slower), large
   Linear layers, and an asked sparsity within 10 points of 50 %: ``l1_nm`` (2:4) on those layers.
4. ``gpu`` otherwise: ``l1_aligned``: whole output channels / neurons, the kept count a multiple of 8.
5. ``cpu``: ``l1_unstructured`` when the asked sparsity is at or above the CSR crossover measured on that CPU
   (:func:`prunus.probe`) for layers of the sizes of the model's Linear layers (their median, weighted by
   weight count), and Linear layers hold most of the weights (convolutions have no sparse kernel there);
   objective ``memory``: above 50 %, where CSR with 32-bit indices is smaller than dense. Else
   ``l1_aligned`` rounded to the CPU's float32 vector width.
6. anything else: ``l1_structured`` (removing whole neurons shrinks the dense computation anywhere).

Structured selections leave the model's last Linear or Conv layer whole (its outputs are the model's: pruning
its rows would remove outputs). A third-party plugin that implements the hook and returns a selection wins
over this one.
"""

from __future__ import annotations

from torch import Tensor, nn

from prunus.plugin_api import HardwareProfile, Selection, hookimpl, select_targets

LARGE_LINEAR_MIN_DIM = 512
"""A Linear layer is large enough for 2:4 kernels to pay off when both dims are at least this ..."""
LARGE_LINEAR_MIN_NUMEL = 2**20
"""... its weight has at least this many entries ..."""
SEMI_STRUCTURED_MULTIPLE = 64
"""... and both dims are multiples of this (what torch's 2:4 kernels accept in float16)."""
NM_TOLERANCE = 0.1
"""2:4 removes exactly 50 %; it is selected when the asked sparsity is this close to it."""


def large_linear_weights(model: nn.Module) -> list[str]:
    """Qualified names of the weights of the Linear layers 2:4 kernels suit (see the constants above)."""
    out = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        out_f, in_f = module.out_features, module.in_features
        if (
            min(out_f, in_f) >= LARGE_LINEAR_MIN_DIM
            and out_f * in_f >= LARGE_LINEAR_MIN_NUMEL
            and out_f % SEMI_STRUCTURED_MULTIPLE == 0
            and in_f % SEMI_STRUCTURED_MULTIPLE == 0
        ):
            out.append(f"{name}.weight" if name else "weight")
    return out


def _all_but_last(model: nn.Module) -> tuple[list[str] | None, str]:
    """Default targets without the last one (the output layer), and a note for the reason."""
    names = [name for name, _, _ in select_targets(model)]
    if len(names) < 2:
        return None, ""
    return names[:-1], f"; {names[-1]} (the output layer) is left whole"


def _structured(model: nn.Module, profile: HardwareProfile, sparsity: float, why: str) -> Selection:
    include, note = _all_but_last(model)
    multiple = profile.alignment
    return Selection(
        strategy="l1_aligned",
        options={"amount": sparsity, "dim": 0, "round_to": multiple},
        include=include,
        reason=(
            f"{why}: structured pruning zeroes whole output channels and neurons, and a layer shrunk to "
            f"the ones kept is a smaller dense layer, faster on any hardware (prunus.analyze measures it); "
            f"the number kept is rounded to a multiple of {multiple}, the width dense kernels handle best "
            f"on this target{note}"
        ),
    )


def _unstructured(sparsity: float, reason: str) -> Selection:
    return Selection(strategy="l1_unstructured", options={"amount": sparsity}, reason=reason)


def _gpu(model: nn.Module, profile: HardwareProfile, sparsity: float) -> Selection:
    large = large_linear_weights(model)
    obstacles = []
    if not profile.supports_semi_structured:
        capability = profile.gpu.compute_capability if profile.gpu is not None else None
        obstacles.append(
            "its compute capability is unknown"
            if capability is None
            else f"its compute capability {capability[0]}.{capability[1]} is below 8.0"
        )
    measured = profile.semi_structured_speedup
    if measured is not None and measured <= 1.0:
        obstacles.append(f"2:4 layers were measured {measured:.2f}x of dense there")
    if not large:
        obstacles.append(
            f"the model has no Linear layer of at least {LARGE_LINEAR_MIN_DIM} x {LARGE_LINEAR_MIN_DIM} "
            f"(dims multiples of {SEMI_STRUCTURED_MULTIPLE})"
        )
    if abs(sparsity - 0.5) > NM_TOLERANCE:
        obstacles.append(f"2:4 removes exactly 50 %, not the {sparsity:.0%} asked")
    if obstacles:
        return _structured(
            model,
            profile,
            sparsity,
            f"GPU without 2:4 semi-structured sparsity here ({'; '.join(obstacles)})",
        )
    speed = (
        f"measured {measured:.2f}x faster than dense there"
        if measured is not None
        else "not measured here: prunus.probe('cuda') on the GPU measures it"
    )
    return Selection(
        strategy="l1_nm",
        options={"n_keep": 2, "m_group": 4},
        include=large,
        reason=(
            f"GPU with 2:4 semi-structured sparse kernels and {len(large)} large Linear layer"
            f"{'s' * (len(large) > 1)}: 2:4 removes exactly 50 % of their weights in a pattern the sparse "
            f"tensor cores execute ({speed}; convert with prunus.to_sparse(model) in float16 or bfloat16); "
            "other layers are left whole"
        ),
    )


def model_crossover(model: nn.Module, profile: HardwareProfile) -> tuple[float | None, float]:
    """The CSR crossover for ``model``'s Linear layers on ``profile``, and the share of weights they hold.

    Each Linear layer takes the crossover probed for the closest shape; the model's is the median of those,
    weighted by the layers' weight counts (the sparsity above which most of its Linear weights run faster
    sparse). ``None`` when nothing was measured or the model has no Linear layer.
    """
    sizes: list[tuple[int, float | None]] = []
    total = 0
    for _, module, _ in select_targets(model):
        weight = module.weight
        assert isinstance(weight, Tensor)
        total += weight.numel()
        if type(module) is nn.Linear:
            sizes.append(
                (weight.numel(), profile.crossover_for(module.out_features, module.in_features))
            )
    share = sum(n for n, _ in sizes) / total if total else 0.0
    if not sizes or any(c is None for _, c in sizes):
        return None, share
    ordered = sorted((c, n) for n, c in sizes if c is not None)
    half, running = sum(n for _, n in ordered) / 2, 0
    for crossover, numel in ordered:
        running += numel
        if running >= half:
            return crossover, share
    return ordered[-1][0], share  # pragma: no cover - the loop always returns


def _cpu(model: nn.Module, profile: HardwareProfile, objective: str, sparsity: float) -> Selection:
    crossover, linear_share = model_crossover(model, profile)
    if objective == "memory":
        if sparsity > 0.5:
            return _unstructured(
                sparsity,
                f"objective memory at {sparsity:.0%}: unstructured pruning stored in CSR with 32-bit indices "
                "(8 bytes per kept float32 weight) is smaller than dense once more than half the weights are "
                "zero; convert with prunus.to_sparse(model)",
            )
        return _structured(
            model,
            profile,
            sparsity,
            f"objective memory at {sparsity:.0%} (CSR would not be smaller)",
        )
    if linear_share < 0.5:
        return _structured(
            model,
            profile,
            sparsity,
            f"CPU, and most of the weights ({1 - linear_share:.0%}) are in convolutions, which have no "
            "sparse kernel there",
        )
    if crossover is None:
        return _structured(
            model,
            profile,
            sparsity,
            "CPU with no measured sparse crossover (run prunus.probe() to measure where CSR sparse "
            "execution beats dense here)",
        )
    source = f" ({profile.crossover_source})" if profile.crossover_source else ""
    sized = "for layers of the sizes of this model's Linear layers"
    if crossover >= 1.0:
        return _structured(
            model,
            profile,
            sparsity,
            f"CPU where CSR sparse execution was faster at no sparsity measured {sized}{source}",
        )
    if sparsity >= crossover:
        return _unstructured(
            sparsity,
            f"CPU where CSR sparse execution was measured faster than dense above {crossover:.1%} sparsity "
            f"{sized}{source}, and {sparsity:.0%} was asked: unstructured pruning keeps the most accuracy "
            f"and runs faster once converted with prunus.to_sparse(model, min_sparsity={crossover:.2f})",
        )
    return _structured(
        model,
        profile,
        sparsity,
        f"CPU where CSR sparse execution was measured faster than dense only above {crossover:.1%} "
        f"sparsity {sized}{source}; unstructured zeros at {sparsity:.0%} would not run faster",
    )


@hookimpl(trylast=True)
def prunus_select_strategy(
    model: nn.Module, hardware: HardwareProfile, objective: str, sparsity: float
) -> Selection:
    """The built-in policy (see the module's documentation)."""
    profile = hardware
    if objective == "accuracy":
        return _unstructured(
            sparsity,
            "objective accuracy: unstructured pruning, the finest granularity, removes the least important "
            "weights one by one and keeps the most accuracy at a given sparsity; it is faster only with "
            "sparse execution above the hardware's crossover (see prunus.analyze)",
        )
    if profile.kind == "sparse_accelerator":
        return _unstructured(
            sparsity,
            "sparse accelerator: it skips zero weights one by one, so unstructured pruning, which keeps the "
            "most accuracy at a given sparsity, turns every zero into work saved",
        )
    if profile.kind == "gpu":
        return _gpu(model, profile, sparsity)
    if profile.kind == "cpu":
        return _cpu(model, profile, objective, sparsity)
    include, note = _all_but_last(model)
    return Selection(
        strategy="l1_structured",
        options={"amount": sparsity, "dim": 0},
        include=include,
        reason=(
            f"{profile.kind} hardware: structured pruning zeroes whole output channels and neurons, and a "
            f"layer shrunk to the ones kept is a smaller dense layer, faster on any hardware{note}"
        ),
    )
