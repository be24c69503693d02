"""What hardware-aware selection returns: a :class:`Selection`, the answer of the ``prunus_select_strategy`` hook.

A selection is a *plan*: the strategy that ranks what to remove, and the steps that turn the removal into the
speed the selection claims on its target (:class:`PlanStep`: ``prune`` masks, ``shrink`` removes coupled channel
groups physically, ``to_sparse`` converts layers to a sparse format, ``recover`` recalibrates and distils). A
selection without steps (what plugins written before plans return) is the one-step plan "prune with
``strategy``". It is part of the plugin contract; :func:`prunus.select` (in :mod:`prunus.auto`) asks the plugins
for one and ``prunus.prune(model, "auto", ...)`` carries it out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .hardware_profile import HardwareProfile

__all__ = [
    "AUTO",
    "OBJECTIVES",
    "STEP_KINDS",
    "AutoRequest",
    "Objective",
    "PlanStep",
    "Selection",
    "StepKind",
]

AUTO = "auto"
"""The strategy name ``prune`` reads as "select one for the hardware"."""

Objective = Literal["latency", "memory", "accuracy"]
OBJECTIVES: tuple[str, ...] = ("latency", "memory", "accuracy")

StepKind = Literal["prune", "shrink", "to_sparse", "recover"]
STEP_KINDS: tuple[str, ...] = ("prune", "shrink", "to_sparse", "recover")


class PlanStep(BaseModel):
    """One step of a plan, carried out in order by ``prune(model, "auto", ...)``.

    Attributes:
        kind: what the step does:

            * ``prune``: ``prunus.prune(model, strategy, include=include, **options)``: masks (zeros in place);
            * ``shrink``: ``prunus.shrink(model, example_inputs, strategy, **options, **settings)``: coupled channel
              groups (whole heads, key/value groups, FFN neurons) ranked by the strategy's criterion and removed
              physically, every coupled layer following;
            * ``to_sparse``: ``prunus.to_sparse(model, include=include, **settings)``: pruned Linear layers stored
              and executed sparse (CSR on a CPU above the measured crossover, 2:4 semi-structured on a GPU);
            * ``recover``: BatchNorm statistics recalibrated on the data, then ``settings["epochs"]`` epochs of
              distillation toward the dense model's outputs and the labels (:func:`prunus.distill`; ``"auto"``:
              enough epochs for ``prunus.autoplan.RECOVERY_STEPS`` optimizer steps), BatchNorm statistics
              recalibrated again; skipped without data.
        strategy: the registered strategy of a ``prune`` or ``shrink`` step.
        options: that strategy's options (``registry.get(strategy, **options)``; ``amount`` is the fraction).
        include: the parameters (``prune``) or modules (``to_sparse``) the step touches; ``None``: the default.
        settings: the step's own keywords: for ``shrink`` those of :func:`prunus.shrink` (``ignore``,
            ``normalized``, ``min_keep``, ``max_layer_sparsity``); for ``to_sparse`` those of
            :func:`prunus.to_sparse` (``layout``, ``min_sparsity``); for ``recover`` ``batchnorm`` (bool),
            ``epochs`` (an int or ``"auto"``), ``lr``, ``lr_schedule``, ``batch_size``, ``temperature``,
            ``label_weight`` (see :func:`prunus.distill`).
        allocation: how ``amount`` is spread over layers: ``uniform`` (every layer or group at ``amount``) or
            ``sensitivity``: with data, each layer (``prune``) or channel group (``shrink``) is pruned alone at a
            few amounts, the loss of fidelity to the dense model's outputs measured, and the amounts spread so the
            least sensitive lose the most while the total stays ``amount`` (weighted by parameters, or by MACs for
            channel groups). Without data it is uniform.
        reason: why the step is there, in words.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: StepKind
    strategy: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    include: list[str] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    allocation: str = "uniform"
    reason: str = ""

    def __str__(self) -> str:
        parts: list[str] = [self.kind]
        if self.strategy:
            options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
            parts.append(f"{self.strategy}({options})")
        if self.include is not None:
            parts.append(f"on {', '.join(self.include)}")
        if self.settings:
            parts.append(", ".join(f"{k}={v!r}" for k, v in self.settings.items()))
        if self.allocation != "uniform":
            parts.append(f"amounts by {self.allocation}")
        return " ".join(parts)


class Selection(BaseModel):
    """A plan chosen for a model and a hardware target, with the reason a person can read.

    Attributes:
        strategy: the registered strategy that ranks what is removed (for a plan, the one its first ``prune`` or
            ``shrink`` step uses).
        options: the options to build it with (``registry.get(strategy, **options)``).
        reason: why this plan suits the target.
        decided_by: the plugin that made the choice (filled in by prunus).
        include: the parameters to prune (``prune(include=...)`` patterns), or ``None`` for ``prune``'s
            default (every Linear and Conv weight).
        steps: the path to the speed the selection claims (see :class:`PlanStep`); empty: prune with
            ``strategy`` only (:meth:`plan` spells that out).
        predicted_speedup: the speed-up over the dense model the plan expects on its target, when the plugin
            can tell (``None``: unknown); the report of ``prune(model, "auto")`` adds what it measured.
        warnings: what the plan costs in quality or cannot deliver, in words; ``prune(model, "auto")`` emits
            each as a :class:`~prunus.errors.QualityWarning`.
        refusal: set when carrying out the request would ruin the model: why, and what to do instead.
            ``prune(model, "auto")`` then raises :class:`~prunus.errors.QualityError` with it and changes
            nothing.
        model_kind: what the model is (``language_model``, ``encoder``, ``cnn``, ``mlp``, ``other``; filled in
            by :func:`prunus.select` from :func:`prunus.model_kind`).
        hardware: the target the selection was made for (filled in by :func:`select`).
        objective: what was optimised (filled in by :func:`select`).
        sparsity: the fraction of weights the user asked to remove (filled in by :func:`select`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str
    options: dict[str, Any] = Field(default_factory=dict)
    reason: str
    decided_by: str = ""
    include: list[str] | None = None
    steps: list[PlanStep] = Field(default_factory=list)
    predicted_speedup: float | None = Field(default=None, gt=0.0)
    warnings: list[str] = Field(default_factory=list)
    refusal: str | None = None
    model_kind: str = ""
    hardware: HardwareProfile | None = None
    objective: str = ""
    sparsity: float | None = None

    def plan(self) -> list[PlanStep]:
        """The steps to carry out: ``steps``, or for a selection without steps one ``prune`` step."""
        if self.steps:
            return list(self.steps)
        return [
            PlanStep(
                kind="prune",
                strategy=self.strategy,
                options=dict(self.options),
                include=self.include,
                reason=self.reason,
            )
        ]

    def __str__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        where = f" on {', '.join(self.include)}" if self.include is not None else ""
        by = f" (decided by {self.decided_by})" if self.decided_by else ""
        target = f" for {self.hardware.describe()}" if self.hardware is not None else ""
        head = f"{self.strategy}({options}){where}{target}{by}: {self.reason}"
        lines = [head]
        if self.refusal is not None:
            lines.append(f"refused: {self.refusal}")
        if self.steps:
            lines.extend(f"  {i}. {step}" for i, step in enumerate(self.steps, 1))
        if self.predicted_speedup is not None:
            lines.append(f"predicted speed-up: {self.predicted_speedup:.2f}x")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass(frozen=True)
class AutoRequest:
    """What a ``prune(model, "auto", ...)`` call gave besides the plan: what carrying it out works with.

    Attributes:
        example_inputs: one batch as the model takes it (see :func:`prunus.forward.call_model`), to trace coupled
            layers and to measure the speed-up; ``None``: the first batch of ``data``, if any.
        data: calibration and recovery data: ``(inputs, labels)`` tensors, inputs alone (a tensor or a dict of
            tensors, cut into batches along dim 0), or an iterable of batches.
        include, exclude, filter_fn: the user's choice of parameters, which replaces the plan's (``prune``
            steps prune those; ``shrink`` steps leave alone every layer whose weight is not among them).
        recover: ``True`` (the plan's recovery), ``False`` (none), or settings that replace the plan's
            (``{"epochs": 5, "lr": 1e-3}``).
        measure: time the dense and the resulting model side by side on ``example_inputs``.
        restorable: as in :func:`prunus.prune`, for ``prune`` steps.
    """

    example_inputs: Any = None
    data: Any = None
    include: Any = None
    exclude: Any = None
    filter_fn: Callable[[Any, str], bool] | None = None
    recover: bool | Mapping[str, Any] = True
    measure: bool = True
    restorable: bool = True
