"""Carrying out a plan: the steps of a :class:`~prunus.Selection` in order, then what they gave.

:func:`carry_out` is what ``prune(model, "auto", ...)`` ends in (through the ``prunus_carry_out`` hook):

1. the plan's warnings are emitted (:class:`~prunus.errors.QualityWarning`);
2. a dense copy of the model is kept: the teacher of the recovery, the reference of the quality figures and of
   the measured speed-up, and what a failure puts back;
3. each step runs: ``prune`` (masks; amounts by sensitivity with data), ``shrink`` (coupled channel groups
   removed; amounts by sensitivity with data), ``recover`` (BatchNorm statistics, then distillation toward the
   dense model), ``to_sparse`` (sparse layers where the plan says they pay);
4. the outcome is measured: parameters and MACs, the predicted speed-up (from the MACs of the smaller model, or
   the plan's), the measured one (the dense copy and the result timed side by side on the example inputs), and
   the quality figures on the data.

Everything happens in one transaction: if a step raises, the model gets back its modules, parameters, buffers
and values, and no mask is left.
"""

from __future__ import annotations

import copy
import glob
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import prune
from ..errors import ConfigError, QualityWarning, TargetError
from ..forward import call_model, evaluation_mode
from ..hardware.sparse import to_sparse
from ..hardware.timing import measure_speedup
from ..registration import Registry
from ..report import AutoOutcome, ParameterReport, PruneReport, QualityFigure, StepReport
from ..selection import AutoRequest, PlanStep, Selection
from ..shrinking.channels import shrink
from ..shrinking.tracing import count_macs
from ..targets import DEFAULT_LAYERS, select_targets
from ..transaction import ModuleSnapshot, transaction
from ..workflow.evaluation import input_batches
from ..workflow.recovery import distill, recalibrate_batchnorm
from .quality import Reference
from .ratios import Allocation, group_amounts, layer_amounts

__all__ = ["DEFAULT_RECOVERY", "EXAMPLE_ROWS", "RECOVERY_STEPS", "carry_out"]

EXAMPLE_ROWS = 8
"""Rows of the first batch of ``data`` used as example inputs when none are given."""

DEFAULT_RECOVERY: dict[str, Any] = {
    "batchnorm": True,
    "epochs": 0,
    "lr": 3e-3,
    "lr_schedule": "cosine",
    "batch_size": 64,
    "temperature": 2.0,
    "label_weight": 0.5,
}
"""A ``recover`` step's settings unless the plan or ``recover=`` says otherwise."""

_RECOVERY_KEYS = frozenset(DEFAULT_RECOVERY)

RECOVERY_STEPS = 500
"""Optimizer steps the distillation takes at least when a recovery's ``epochs`` is ``"auto"``: as many epochs
of the data as that needs (a small data set gets more; one epoch of a large one may take more steps)."""


@dataclass
class _Run:
    """What the steps share while they run."""

    model: nn.Module
    dense: nn.Module
    selection: Selection
    request: AutoRequest
    registry: Registry
    example: Any
    reference: Reference | None
    parameters: dict[str, ParameterReport] = field(default_factory=dict)
    steps: list[StepReport] = field(default_factory=list)
    pruned_quality: dict[str, float] | None = None
    shrank: bool = False


def _example_inputs(request: AutoRequest) -> Any:
    if request.example_inputs is not None:
        return request.example_inputs
    if request.data is None:
        return None
    return next(input_batches(request.data, EXAMPLE_ROWS), None)


def _macs(model: nn.Module, example: Any) -> int | None:
    return None if example is None else count_macs(model, example)


def _user_targets(run: _Run) -> list[tuple[str, nn.Module, str]] | None:
    request = run.request
    if request.include is None and request.exclude is None and request.filter_fn is None:
        return None
    return select_targets(
        run.model, include=request.include, exclude=request.exclude, filter_fn=request.filter_fn
    )


def _error(run: _Run) -> Callable[[nn.Module], float]:
    assert run.reference is not None
    return run.reference.error


def _prune_step(run: _Run, step: PlanStep) -> StepReport:
    assert step.strategy is not None
    chosen = _user_targets(run)
    include: Any = step.include if chosen is None else [glob.escape(n) for n, _, _ in chosen]
    options = dict(step.options)
    allocation: Allocation | None = None
    if step.allocation == "sensitivity" and run.reference is not None and "amount" in options:
        allocation = layer_amounts(
            run.model,
            step.strategy,
            options,
            float(options["amount"]),
            _error(run),
            include=include,
            registry=run.registry,
        )
    if allocation is not None:
        amounts = {k: v for k, v in allocation.amounts.items() if v > 0}
        options.pop("amount")
        if not amounts:
            return StepReport(kind="prune", summary="sensitivity left every layer whole")
        options["amounts"] = amounts
    report = prune(
        run.model,
        step.strategy,
        include=include,
        data=run.request.data,
        restorable=run.request.restorable,
        registry=run.registry,
        **options,
    )
    for parameter in report.parameters:
        run.parameters[parameter.name] = parameter
    how = " (amounts by sensitivity)" if allocation is not None else ""
    return StepReport(
        kind="prune",
        summary=(
            f"{report.strategy} pruned {report.pruned:,} of {report.numel:,} weights "
            f"({report.sparsity:.1%}) in {len(report.parameters)} parameters{how}"
        ),
        detail=allocation.describe() if allocation is not None else "",
    )


def _ignored_layers(run: _Run) -> list[str]:
    """Layers a shrink must leave alone because the user's include / exclude / filter_fn left them out."""
    chosen = _user_targets(run)
    if chosen is None:
        return []
    kept = {id(module) for _, module, _ in chosen}
    return [
        glob.escape(name)
        for name, module in run.model.named_modules()
        if isinstance(module, DEFAULT_LAYERS) and id(module) not in kept
    ]


def _weights(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {
        f"{name}.weight" if name else "weight": tuple(module.weight.shape)
        for name, module in model.named_modules()
        if isinstance(module, DEFAULT_LAYERS) and isinstance(module.weight, Tensor)
    }


def _shrink_step(run: _Run, step: PlanStep) -> StepReport:
    assert step.strategy is not None
    if run.example is None:
        raise ConfigError(
            f"the plan removes channels ({step}), which needs example inputs to trace the model: pass "
            "example_inputs=<a batch the model takes> or data=..."
        )
    settings = dict(step.settings)
    ignore = [*_as_list(settings.pop("ignore", None)), *_ignored_layers(run)]
    if ignore:
        settings["ignore"] = ignore
    options = dict(step.options)
    allocation: Allocation | None = None
    if step.allocation == "sensitivity" and run.reference is not None and "amount" in options:
        allocation = group_amounts(
            run.model,
            run.example,
            step.strategy,
            options,
            settings,
            float(options["amount"]),
            _error(run),
            data=run.request.data,
            registry=run.registry,
        )
    before = _weights(run.model)
    if allocation is not None:
        options["amount"] = 0
        settings["amounts"] = allocation.amounts
    report = shrink(
        run.model,
        run.example,
        step.strategy,
        data=run.request.data,
        registry=run.registry,
        **options,
        **settings,
    )
    after = _weights(run.model)
    for name, shape in before.items():
        numel = math.prod(shape)
        kept = math.prod(after.get(name, ()) or (0,)) if name in after else 0
        if kept < numel:
            run.parameters[name] = ParameterReport(
                name=name, shape=shape, numel=numel, pruned=numel - kept, newly_pruned=numel - kept
            )
    run.shrank = run.shrank or report.removed_channels > 0
    how = " (amounts by sensitivity)" if allocation is not None else ""
    summary = (
        f"{step.strategy} removed {report.removed_channels:,} channels in "
        f"{sum(1 for g in report.groups if g.removed)} groups{how}: parameters "
        f"{report.params_before:,} -> {report.params_after:,}, MACs {report.mac_ratio:.1%} of before"
        if report.removed_channels
        else f"nothing removed: {report.reason}"
    )
    detail = str(report)
    if allocation is not None:
        detail = f"{allocation.describe()}\n{detail}"
    return StepReport(kind="shrink", summary=summary, detail=detail)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _recovery_settings(run: _Run, step: PlanStep) -> dict[str, Any] | None:
    """The recovery settings: the defaults, the plan's, then the user's ``recover=`` (``None``: no recovery)."""
    recover = run.request.recover
    if recover is False:
        return None
    settings = {**DEFAULT_RECOVERY, **step.settings}
    if isinstance(recover, Mapping):
        settings.update(recover)
    unknown = sorted(set(settings) - _RECOVERY_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown recovery settings {unknown}; recovery takes {', '.join(sorted(_RECOVERY_KEYS))}"
        )
    epochs = settings["epochs"]
    if epochs != "auto" and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0):
        raise ConfigError(f"recovery epochs={epochs!r} must be an int >= 0 or 'auto'")
    return settings


def _epochs(settings: dict[str, Any], data: Any) -> int:
    """The recovery's epochs; ``auto``: enough for :data:`RECOVERY_STEPS` optimizer steps over ``data``."""
    if settings["epochs"] != "auto":
        return int(settings["epochs"])
    per_epoch = sum(1 for _ in input_batches(data, int(settings["batch_size"])))
    return max(1, math.ceil(RECOVERY_STEPS / max(per_epoch, 1)))


def _recover_step(run: _Run, step: PlanStep) -> StepReport:
    settings = _recovery_settings(run, step)
    if settings is None:
        return StepReport(kind="recover", summary="skipped: recover=False")
    data = run.request.data
    if data is None:
        return StepReport(
            kind="recover",
            summary="skipped: no data (pass data=... to recalibrate BatchNorm statistics and distil)",
        )
    if run.reference is not None:
        run.pruned_quality = run.reference.figures(run.model)
    done = []
    batch_size = int(settings["batch_size"])
    if settings["batchnorm"]:
        count = recalibrate_batchnorm(run.model, data, batch_size=batch_size)
        if count:
            done.append(f"recalibrated {count} BatchNorm layers")
    epochs = _epochs(settings, data)
    if epochs:
        result = distill(
            run.model,
            run.dense,
            data,
            epochs=epochs,
            lr=float(settings["lr"]),
            batch_size=batch_size,
            temperature=float(settings["temperature"]),
            label_weight=float(settings["label_weight"]),
            lr_schedule=settings["lr_schedule"],
        )
        losses = ", ".join(f"{loss:.4g}" for loss in result.losses)
        done.append(
            f"distilled toward the dense model for {epochs} epochs "
            f"({result.steps} steps, loss per epoch {losses})"
        )
        if settings["batchnorm"] and recalibrate_batchnorm(run.model, data, batch_size=batch_size):
            done.append("recalibrated the BatchNorm statistics again")
    return StepReport(kind="recover", summary="; ".join(done) or "nothing to recover")


def _to_sparse_step(run: _Run, step: PlanStep) -> StepReport:
    settings = dict(step.settings)
    device = next((p.device for p in run.model.parameters()), torch.device("cpu"))
    if settings.get("layout") == "semi_structured" and device.type != "cuda":
        return StepReport(
            kind="to_sparse",
            summary=(
                f"skipped: 2:4 semi-structured kernels run on CUDA and the model is on {device.type}: move it to "
                "the GPU in float16 or bfloat16 and call prunus.to_sparse(model) there"
            ),
        )
    try:
        converted = to_sparse(run.model, include=step.include, **settings)
    except TargetError as error:
        return StepReport(kind="to_sparse", summary=f"nothing converted: {error}")
    return StepReport(
        kind="to_sparse",
        summary=f"{len(converted)} Linear layers now run sparse ({', '.join(converted[:6])}"
        f"{', ...' if len(converted) > 6 else ''})",
    )


_STEPS: dict[str, Callable[[_Run, PlanStep], StepReport]] = {
    "prune": _prune_step,
    "shrink": _shrink_step,
    "recover": _recover_step,
    "to_sparse": _to_sparse_step,
}


def _put_back(model: nn.Module, dense: nn.Module, snapshot: ModuleSnapshot) -> Callable[[], None]:
    """The undo of a whole plan: the modules as they were, then every value copied back from the dense copy."""

    def undo() -> None:
        snapshot()
        with torch.no_grad():
            model.load_state_dict(dense.state_dict())

    return undo


def _measure(run: _Run) -> tuple[float, float, float, float] | None:
    """The dense copy and the model timed side by side: (speed-up, spread, dense seconds, seconds)."""
    if not run.request.measure or run.example is None:
        return None
    with evaluation_mode(run.dense), evaluation_mode(run.model):
        dense_call = partial(call_model, run.dense, run.example)
        call = partial(call_model, run.model, run.example)
        start = time.perf_counter()
        with torch.inference_mode():
            dense_call()
        once = max(time.perf_counter() - start, 1e-6)
        repeats = max(7, min(41, int(2.0 / once)))
        device = next((p.device for p in run.model.parameters()), torch.device("cpu"))
        speed = measure_speedup(dense_call, call, repeats=repeats, device=device)
    return speed.ratio, speed.spread, speed.reference_s, speed.candidate_s


def _quality(run: _Run) -> list[QualityFigure]:
    if run.reference is None:
        return []
    final = run.reference.figures(run.model)
    out = []
    for metric, dense in run.reference.dense_figures.items():
        pruned = run.pruned_quality.get(metric) if run.pruned_quality is not None else None
        out.append(
            QualityFigure(
                metric=metric,
                higher_is_better=metric != "perplexity",
                dense=dense,
                pruned=pruned,
                final=final[metric],
            )
        )
    return out


def carry_out(
    model: nn.Module, selection: Selection, request: AutoRequest, registry: Registry
) -> PruneReport:
    """Carry out ``selection``'s plan on ``model`` in place (see the module docstring).

    Any error a step raises propagates, the model left as it was.

    Raises:
        ConfigError: a step needs example inputs and neither ``example_inputs`` nor ``data`` was given, or the
            recovery settings are wrong.
    """
    for text in selection.warnings:
        warnings.warn(text, QualityWarning, stacklevel=5)
    example = _example_inputs(request)
    params_before = sum(p.numel() for p in model.parameters())
    macs_before = _macs(model, example)
    dense = copy.deepcopy(model)
    reference = None
    if request.data is not None:
        reference = Reference(dense, request.data, selection.model_kind)
    run = _Run(model, dense, selection, request, registry, example, reference)
    with transaction() as tx:
        tx.record(_put_back(model, dense, ModuleSnapshot(model)))
        for step in selection.plan():
            start = time.perf_counter()
            done = _STEPS[step.kind](run, step)
            run.steps.append(done.model_copy(update={"seconds": time.perf_counter() - start}))
    macs_after = _macs(model, example)
    predicted, source = selection.predicted_speedup, "the plan"
    if run.shrank and macs_before and macs_after:
        predicted, source = macs_before / macs_after, "MACs of the smaller model"
    measured = _measure(run)
    outcome = AutoOutcome(
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
        macs_before=macs_before,
        macs_after=macs_after,
        predicted_speedup=predicted,
        predicted_from=source if predicted is not None else "",
        measured_speedup=measured[0] if measured else None,
        spread=measured[1] if measured else None,
        latency_dense_s=measured[2] if measured else None,
        latency_s=measured[3] if measured else None,
        threads=torch.get_num_threads() if measured else None,
        quality=_quality(run),
    )
    return PruneReport(
        strategy=selection.strategy,
        options=selection.options,
        parameters=list(run.parameters.values()),
        model_numel=params_before,
        selection=selection,
        steps=run.steps,
        outcome=outcome,
    )
