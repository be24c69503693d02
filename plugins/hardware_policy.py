"""prunus's built-in hardware-aware selection policy (the ``prunus_select_strategy`` hook, ``trylast``).

It returns a *plan*: a strategy and the steps that turn its zeros into the speed it claims on the target, with
what it costs in quality. The rules, first match wins:

1. objective ``accuracy``: ``l1_unstructured`` masks (the finest granularity keeps the most accuracy at a
   sparsity), recovery with data. Faster only above the sparse crossover: the reason says so.
2. ``sparse_accelerator``: ``l1_unstructured`` masks (every zero is work skipped there), recovery with data.
3. ``gpu`` with 2:4 kernels (CUDA compute capability >= 8.0, unless a probe measured them slower), large Linear
   layers, and an asked sparsity within 10 points of 50 %: ``l1_nm`` (2:4) on those layers, recovery, then
   ``to_sparse`` in the 2:4 semi-structured layout.
4. ``cpu`` where the asked sparsity is at or above the CSR crossover measured there (:func:`prunus.probe`) for
   layers of the sizes of the model's Linear layers, and Linear layers hold most of the weights:
   ``l1_unstructured``, recovery, then ``to_sparse`` (CSR) for the layers sparse enough. Objective ``memory``
   above 50 % (CSR is smaller than dense there): ``l1_unstructured`` and recovery.
5. anything else: *structural removal*: ``shrink`` with ``l1_aligned`` (``l1_structured`` on an unknown target)
   removes coupled channel groups through the dependency graph (residual branches, BatchNorms, attention heads
   and key/value groups, FFN neurons), the number kept rounded to what dense kernels like there (8 on a GPU,
   the float32 vector width on a CPU). For latency every group loses the same fraction (each layer's time
   shrinks alike; amounts by sensitivity, measured before recovery, kept channels in the early high-resolution
   layers where they cost the most time, and recovered no better: docs/auto.md); for memory, with data, the
   amount is spread over the groups by measured sensitivity. With data, BatchNorm statistics are recalibrated
   and the model distilled toward the dense one (soft targets, and hard labels when given) for at least
   :data:`RECOVERY_STEPS` optimizer steps under a cosine learning-rate schedule (a transformer at
   :data:`TRANSFORMER_RECOVERY_LR`, ten times lower than a CNN's or an MLP's).
   The model's output layer is left whole; a transformer's hidden size too (LayerNorm / RMSNorm statistics).

Quality is part of the choice (:func:`model_kind` says what the model is):

* a language model with calibration data is pruned by a data-aware one-shot strategy when a plugin registers one
  (:data:`DATA_AWARE_STRATEGIES`: ``sparsegpt_nm`` where 2:4 pays on the GPU, else the first unstructured one
  registered); prunus itself ships none, so the plan never depends on them;
* otherwise a language model is never given structural removal (rows of its weight matrices chosen by magnitude)
  above :data:`LM_STRUCTURED_LIMIT`, nor unstructured magnitude pruning above :data:`LM_MAGNITUDE_LIMIT`: the
  plan is *refused* (``prune`` raises :class:`~prunus.errors.QualityError`, the model unchanged), naming the
  data-aware strategies to use instead and whether any is registered; below those limits it warns.
* without data a structural plan warns that nothing recalibrates or recovers the model; above
  :data:`HEAVY_STRUCTURED` it warns that much of the accuracy goes.

A third-party plugin that implements the hook and returns a selection wins over this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from prunus.plugin_api import (
    HardwareProfile,
    PlanStep,
    Registry,
    Selection,
    hookimpl,
    model_kind,
    select_targets,
)

LARGE_LINEAR_MIN_DIM = 512
"""A Linear layer is large enough for 2:4 kernels to pay off when both dims are at least this ..."""
LARGE_LINEAR_MIN_NUMEL = 2**20
"""... its weight has at least this many entries ..."""
SEMI_STRUCTURED_MULTIPLE = 64
"""... and both dims are multiples of this (what torch's 2:4 kernels accept in float16)."""
NM_TOLERANCE = 0.1
"""2:4 removes exactly 50 %; it is selected when the asked sparsity is this close to it."""
LM_STRUCTURED_LIMIT = 0.1
"""The most of a language model's heads and neurons a plan removes structurally; above, it is refused."""
LM_MAGNITUDE_LIMIT = 0.3
"""The most of a language model's weights a plan prunes by magnitude without data; above, it is refused."""
HEAVY_STRUCTURED = 0.7
"""Structural removal at or above this fraction is warned about even with data."""
RECOVERY_EPOCHS = "auto"
"""Epochs of distillation in the built-in recovery: ``auto``, enough epochs of the data for at least
``prunus.autoplan.RECOVERY_STEPS`` optimizer steps (``recover={"epochs": n}`` sets them)."""

TRANSFORMER_KINDS = ("encoder", "language_model")
"""Model kinds whose recovery trains at :data:`TRANSFORMER_RECOVERY_LR`."""
TRANSFORMER_RECOVERY_LR = 3e-4
"""Adam's learning rate when a pretrained transformer is distilled after pruning. The default for CNNs and MLPs
(3e-3) undoes a pretrained encoder: all-MiniLM-L6-v2 with 30 % of its heads and FFN neurons removed ended
further from the dense model than with no recovery at all, where 3e-4 brought it closer (docs/auto.md)."""

DATA_AWARE_STRATEGIES: tuple[str, ...] = (
    "sparsegpt_unstructured",
    "wanda_unstructured",
    "wanda_row",
    "sparsegpt_nm",
)
"""Data-aware one-shot strategies for language models, supplied by plugins, the unstructured ones in order of
preference. A plan names one only when it is registered and data is given."""


def data_aware_advice(available: Sequence[str], data: Any) -> str:
    """What to do instead of pruning a language model by magnitude, naming what is registered here."""
    if available:
        first = next((n for n in available if n != "sparsegpt_nm"), available[0])
        registered = ", ".join(repr(n) for n in available)
        then = (
            f"pass calibration data (data=batches) and prune(model, 'auto', ...) plans {first!r}"
            if data is None
            else f"prune(model, {first!r}, amount=..., data=batches) prunes with it directly"
        )
        return (
            f"a data-aware one-shot strategy keeps a language model working, and {registered} "
            f"{'is' if len(available) == 1 else 'are'} registered here: {then}"
        )
    names = ", ".join(repr(n) for n in DATA_AWARE_STRATEGIES)
    return (
        f"data-aware one-shot strategies ({names}) rank weights by the activations of calibration data and "
        "keep a language model working, but none is registered here: install a plugin that provides one, then "
        "prune(model, 'auto', sparsity=..., data=batches) plans it; or prune less: "
        f"prune(model, 'auto', objective='accuracy', sparsity={LM_MAGNITUDE_LIMIT}) proceeds with a warning"
    )


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


def _output_layer(model: nn.Module) -> str | None:
    names = [name for name, _, _ in select_targets(model)]
    return names[-1].rsplit(".", 1)[0] if len(names) >= 2 else None


def _recovery(data: Any, why: str, kind: str) -> PlanStep:
    epochs = RECOVERY_EPOCHS if data is not None else 0
    settings: dict[str, Any] = {"epochs": epochs}
    if kind in TRANSFORMER_KINDS:
        settings["lr"] = TRANSFORMER_RECOVERY_LR
    lr = (
        f" ({TRANSFORMER_RECOVERY_LR:g}, a pretrained transformer's fine-tuning rate)"
        if "lr" in settings
        else ""
    )
    return PlanStep(
        kind="recover",
        settings=settings,
        reason=(
            f"{why}: BatchNorm statistics measured again on the data, then distillation toward the dense "
            "model's outputs (and the labels when given) for enough epochs of the data to take at least "
            f"RECOVERY_STEPS optimizer steps, the learning rate{lr} on a cosine schedule; BatchNorm statistics "
            "measured again after it (recover={'epochs': n} sets the epochs, recover=False skips it)"
            if data is not None
            else f"{why}: needs data (skipped without it)"
        ),
    )


def _structural(
    model: nn.Module,
    profile: HardwareProfile,
    sparsity: float,
    why: str,
    kind: str,
    data: Any,
    aligned: bool = True,
    objective: str = "latency",
) -> Selection:
    """Coupled channel groups removed physically, then recovery.

    With data and objective ``memory`` the amounts are spread by measured sensitivity; for latency every group
    loses the same fraction (see the module docstring).
    """
    multiple = profile.alignment
    strategy = "l1_aligned" if aligned else "l1_structured"
    options: dict[str, Any] = (
        {"amount": sparsity, "round_to": multiple} if aligned else {"amount": sparsity}
    )
    output = _output_layer(model)
    note = f"; {output} (the output layer) is left whole" if output else ""
    if kind in ("language_model", "encoder"):
        note += "; the hidden size is kept (its LayerNorm / RMSNorm statistics would change)"
    warnings = []
    if data is None:
        warnings.append(
            f"no data: the {sparsity:.0%} of channels removed are chosen by weight magnitude alone, and nothing "
            "recalibrates BatchNorm statistics or recovers the model afterwards; expect a large loss of accuracy. "
            "Pass data=<a few hundred inputs, labels optional> to allocate by sensitivity and recover"
        )
    if sparsity >= HEAVY_STRUCTURED:
        warnings.append(
            f"removing {sparsity:.0%} of the channels of every group leaves little of the model: expect a large "
            "loss even after recovery (more epochs help: recover={'epochs': 10})"
        )
    rounding = f", the number kept rounded to a multiple of {multiple}" if aligned else ""
    allocation = "sensitivity" if data is not None and objective == "memory" else "uniform"
    spread = (
        "amounts spread over the groups by measured sensitivity (total weighted by MACs)"
        if allocation == "sensitivity"
        else "the same amount in every group (no data to measure sensitivity)"
        if data is None
        else "the same amount in every group, so each layer's time shrinks alike"
    )
    return Selection(
        strategy=strategy,
        options=options,
        reason=(
            f"{why}: whole channel groups removed physically (coupled through the dependency graph: residual "
            f"branches, BatchNorms, attention heads, FFN neurons) leave a smaller dense model, faster on any "
            f"hardware{rounding}, the width dense kernels handle best there{note}"
        ),
        steps=[
            PlanStep(
                kind="shrink",
                strategy=strategy,
                options=options,
                settings={"normalized": False},
                allocation=allocation,
                reason=f"remove {sparsity:.0%} of the channels of each group, {spread}",
            ),
            _recovery(data, "structural removal changes what every later layer sees", kind),
        ],
        warnings=warnings,
    )


def _unstructured(
    model: nn.Module,
    sparsity: float,
    reason: str,
    kind: str,
    data: Any,
    *,
    sparse: PlanStep | None = None,
    include: list[str] | None = None,
) -> Selection:
    """Unstructured masks (optionally converted to a sparse format), then recovery."""
    options: dict[str, Any] = {"amount": sparsity}
    steps = [
        PlanStep(
            kind="prune",
            strategy="l1_unstructured",
            options=options,
            include=include,
            allocation="sensitivity"
            if data is not None and kind != "language_model"
            else "uniform",
            reason=f"zero {sparsity:.0%} of the weights, the smallest first",
        ),
        _recovery(data, "the model is tuned around its zeros (masks stay enforced)", kind),
    ]
    if sparse is not None:
        steps.append(sparse)
    return Selection(
        strategy="l1_unstructured",
        options=options,
        include=include,
        reason=reason,
        steps=steps,
    )


def nm_obstacles(model: nn.Module, profile: HardwareProfile, sparsity: float) -> list[str]:
    """Why 2:4 semi-structured sparsity would not pay for ``model`` on ``profile`` (empty when it would)."""
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
    return obstacles


def _gpu(
    model: nn.Module,
    profile: HardwareProfile,
    sparsity: float,
    kind: str,
    data: Any,
    strategy: str = "l1_nm",
) -> Selection:
    """2:4 on the large Linear layers where the GPU runs it, else structural removal.

    ``strategy`` is the N:M strategy: ``l1_nm`` (magnitude, then recovery), or a data-aware one registered by a
    plugin (``sparsegpt_nm``: it reconstructs the weights it keeps, so no recovery follows).
    """
    large = large_linear_weights(model)
    measured = profile.semi_structured_speedup
    obstacles = nm_obstacles(model, profile, sparsity)
    if obstacles:
        return _structural(
            model,
            profile,
            sparsity,
            f"GPU without 2:4 semi-structured sparsity here ({'; '.join(obstacles)})",
            kind,
            data,
        )
    speed = (
        f"measured {measured:.2f}x faster than dense there"
        if measured is not None
        else "not measured here: prunus.probe('cuda') on the GPU measures it"
    )
    modules = [name.rsplit(".", 1)[0] if "." in name else "" for name in large]
    prune_step = PlanStep(
        kind="prune",
        strategy=strategy,
        options={"n_keep": 2, "m_group": 4},
        include=large,
        reason="keep the 2 largest of every 4 consecutive input weights"
        if strategy == "l1_nm"
        else f"keep 2 of every 4 consecutive input weights, chosen by {strategy} on the data",
    )
    recovery = (
        [_recovery(data, "the model is tuned around its 2:4 zeros (masks stay enforced)", kind)]
        if strategy == "l1_nm"
        else []
    )
    return Selection(
        strategy=strategy,
        options={"n_keep": 2, "m_group": 4},
        include=large,
        reason=(
            f"GPU with 2:4 semi-structured sparse kernels and {len(large)} large Linear layer"
            f"{'s' * (len(large) > 1)}: 2:4 removes exactly 50 % of their weights in a pattern the sparse "
            f"tensor cores execute ({speed}); other layers are left whole"
        ),
        predicted_speedup=measured if measured is not None and measured > 1.0 else None,
        steps=[
            prune_step,
            *recovery,
            PlanStep(
                kind="to_sparse",
                include=modules,
                settings={"layout": "semi_structured"},
                reason="2:4 semi-structured storage, executed by the sparse tensor cores (float16 / bfloat16)",
            ),
        ],
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


def _cpu(
    model: nn.Module,
    profile: HardwareProfile,
    objective: str,
    sparsity: float,
    kind: str,
    data: Any,
) -> Selection:
    crossover, linear_share = model_crossover(model, profile)
    if objective == "memory":
        if sparsity > 0.5:
            return _unstructured(
                model,
                sparsity,
                f"objective memory at {sparsity:.0%}: unstructured pruning stored in CSR with 32-bit indices "
                "(8 bytes per kept float32 weight) is smaller than dense once more than half the weights are "
                "zero; save it with prunus.save_compressed(model, path) or convert with prunus.to_sparse(model)",
                kind,
                data,
            )
        return _structural(
            model,
            profile,
            sparsity,
            f"objective memory at {sparsity:.0%} (CSR would not be smaller)",
            kind,
            data,
            objective=objective,
        )
    if linear_share < 0.5:
        return _structural(
            model,
            profile,
            sparsity,
            f"CPU, and most of the weights ({1 - linear_share:.0%}) are in convolutions, which have no "
            "sparse kernel there",
            kind,
            data,
        )
    if crossover is None:
        return _structural(
            model,
            profile,
            sparsity,
            "CPU with no measured sparse crossover (run prunus.probe() to measure where CSR sparse "
            "execution beats dense here)",
            kind,
            data,
        )
    source = f" ({profile.crossover_source})" if profile.crossover_source else ""
    sized = "for layers of the sizes of this model's Linear layers"
    if crossover >= 1.0:
        return _structural(
            model,
            profile,
            sparsity,
            f"CPU where CSR sparse execution was faster at no sparsity measured {sized}{source}",
            kind,
            data,
        )
    if sparsity >= crossover:
        convert = PlanStep(
            kind="to_sparse",
            settings={"layout": "csr", "min_sparsity": round(crossover, 4)},
            reason=f"CSR for the layers at least {crossover:.0%} sparse, where it measured faster",
        )
        return _unstructured(
            model,
            sparsity,
            f"CPU where CSR sparse execution was measured faster than dense above {crossover:.1%} sparsity "
            f"{sized}{source}, and {sparsity:.0%} was asked: unstructured pruning keeps the most accuracy "
            f"and runs faster once converted with prunus.to_sparse(model, min_sparsity={crossover:.2f})",
            kind,
            data,
            sparse=convert,
        )
    return _structural(
        model,
        profile,
        sparsity,
        f"CPU where CSR sparse execution was measured faster than dense only above {crossover:.1%} "
        f"sparsity {sized}{source}; unstructured zeros at {sparsity:.0%} would not run faster",
        kind,
        data,
    )


def _data_aware(
    model: nn.Module,
    profile: HardwareProfile,
    objective: str,
    sparsity: float,
    data: Any,
    available: Sequence[str],
) -> Selection | None:
    """A language model's plan through a registered data-aware strategy, or ``None`` when none fits."""
    if (
        "sparsegpt_nm" in available
        and objective == "latency"
        and profile.kind == "gpu"
        and not nm_obstacles(model, profile, sparsity)
    ):
        return _gpu(model, profile, sparsity, "language_model", data, strategy="sparsegpt_nm")
    name = next((n for n in available if n != "sparsegpt_nm"), None)
    if name is None:
        return None
    options: dict[str, Any] = {"amount": sparsity}
    faster = (
        ""
        if objective != "latency"
        else "; unstructured zeros make it smaller once saved compressed (prunus.save_compressed), not faster "
        "on dense kernels"
    )
    return Selection(
        strategy=name,
        options=options,
        reason=(
            f"a language model with calibration data: {name!r} ranks weights by the activations the data "
            f"produces and keeps the model working where magnitude alone would not{faster}"
        ),
        steps=[
            PlanStep(
                kind="prune",
                strategy=name,
                options=options,
                reason=f"zero {sparsity:.0%} of the weights, chosen by {name} on the data",
            )
        ],
    )


def _guard_language_model(
    selection: Selection, sparsity: float, data: Any, available: Sequence[str]
) -> Selection:
    """Refuse or warn about a magnitude plan for a language model (see the module's documentation)."""
    if selection.refusal is not None:
        return selection
    advice = data_aware_advice(available, data)
    kinds = {step.kind for step in selection.plan()}
    if "shrink" in kinds:
        what = (
            f"removing {sparsity:.0%} of a language model's attention heads and FFN neurons (rows of its weight "
            "matrices chosen by magnitude)"
        )
        if sparsity > LM_STRUCTURED_LIMIT:
            refusal = (
                f"{what} without retraining ruins it (structural removal above {LM_STRUCTURED_LIMIT:.0%} is not "
                f"planned for language models); {advice}"
            )
            return selection.model_copy(update={"refusal": refusal, "steps": []})
        warning = (
            f"{what} costs quality even at this amount; measure perplexity afterwards. {advice}"
        )
    elif selection.strategy == "l1_nm":
        warning = f"2:4 by magnitude costs a language model much of its quality; {advice}"
    else:
        if sparsity > LM_MAGNITUDE_LIMIT:
            without = ", without calibration data," if data is None else ""
            refusal = (
                f"pruning {sparsity:.0%} of a language model's weights by magnitude alone{without} ruins it "
                f"(magnitude pruning above {LM_MAGNITUDE_LIMIT:.0%} is not planned for language models); "
                f"{advice}"
            )
            return selection.model_copy(update={"refusal": refusal, "steps": []})
        warning = f"magnitude pruning of a language model loses much of its quality; {advice}"
    return selection.model_copy(update={"warnings": [*selection.warnings, warning]})


@hookimpl(trylast=True)
def prunus_select_strategy(
    model: nn.Module,
    hardware: HardwareProfile,
    objective: str,
    sparsity: float,
    data: Any,
    registry: Registry | None,
) -> Selection:
    """The built-in policy (see the module's documentation)."""
    kind = model_kind(model)
    if kind != "language_model":
        return _policy(model, hardware, objective, sparsity, kind, data)
    available = [n for n in DATA_AWARE_STRATEGIES if registry is not None and n in registry]
    if data is not None and available:
        planned = _data_aware(model, hardware, objective, sparsity, data, available)
        if planned is not None:
            return planned
    selection = _policy(model, hardware, objective, sparsity, kind, data)
    return _guard_language_model(selection, sparsity, data, available)


def _policy(
    model: nn.Module,
    profile: HardwareProfile,
    objective: str,
    sparsity: float,
    kind: str,
    data: Any,
) -> Selection:
    """The hardware rules, 1 to 5 of the module's documentation."""
    if objective == "accuracy":
        return _unstructured(
            model,
            sparsity,
            "objective accuracy: unstructured pruning, the finest granularity, removes the least important "
            "weights one by one and keeps the most accuracy at a given sparsity; it is faster only with "
            "sparse execution above the hardware's crossover (see prunus.analyze)",
            kind,
            data,
        )
    if profile.kind == "sparse_accelerator":
        return _unstructured(
            model,
            sparsity,
            "sparse accelerator: it skips zero weights one by one, so unstructured pruning, which keeps the "
            "most accuracy at a given sparsity, turns every zero into work saved",
            kind,
            data,
        )
    if profile.kind == "gpu":
        return _gpu(model, profile, sparsity, kind, data)
    if profile.kind == "cpu":
        return _cpu(model, profile, objective, sparsity, kind, data)
    return _structural(
        model, profile, sparsity, f"{profile.kind} hardware", kind, data, aligned=False
    )
