"""Recovery after pruning: BatchNorm statistics recalibrated, and distillation toward the dense model.

>>> dense = copy.deepcopy(model)                                              # doctest: +SKIP
>>> prunus.shrink(model, x[:8], "l1_structured", amount=0.5)                   # doctest: +SKIP
>>> prunus.recalibrate_batchnorm(model, x_train)                               # doctest: +SKIP
>>> prunus.distill(model, dense, x_train, epochs=3)                            # doctest: +SKIP

Removing channels changes what every later layer sees, so the running mean and variance a BatchNorm learned on
the dense model no longer describe its inputs; :func:`recalibrate_batchnorm` measures them again on data, with
no training (a forward pass in batches). :func:`distill` trains the pruned model toward the dense model's
outputs on unlabelled inputs, through :func:`prunus.fine_tune` (so a :class:`prunus.GradualPruner` schedule can
drive it, and prunus masks stay enforced).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..forward import call_model, evaluation_mode, output_tensors
from .evaluation import batches, input_batches, to_device
from .gradual import FineTuneResult, GradualPruner, LrSchedule, fine_tune

__all__ = ["DistillLoss", "distill", "distillation_loss", "recalibrate_batchnorm"]

DistillLoss = Literal["auto", "kl", "mse"]


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def recalibrate_batchnorm(
    model: nn.Module, data: Any, *, batch_size: int = 64, max_batches: int | None = None
) -> int:
    """Measure every BatchNorm's running mean and variance again on ``data``; returns how many were reset.

    Each BatchNorm that tracks running statistics is reset and then accumulates an exact average over the
    batches (``momentum=None``) while the rest of the model runs in eval mode (Dropout off). Nothing is trained;
    training flags and momenta are put back.

    Args:
        model: the model, changed in place (its BatchNorm buffers only).
        data: inputs, as :func:`prunus.workflow.evaluation.input_batches` reads them (labels are ignored).
        batch_size: rows per forward pass.
        max_batches: stop after this many batches (default: all of ``data``).
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    flags = [(m, m.training) for m in model.modules()]
    device = _device(model)
    model.eval()  # Dropout off; only the BatchNorms gather statistics (and keep them: no measurement here)
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        with torch.no_grad():
            seen = 0
            for batch in input_batches(data, batch_size):
                call_model(model, to_device(batch, device))
                seen += 1
                if max_batches is not None and seen >= max_batches:
                    break
        if seen == 0:
            raise ConfigError("data is empty: no batch to recalibrate BatchNorm statistics on")
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in flags:
            module.training = training
    return len(norms)


def _first_tensor(output: Any) -> Tensor:
    tensors = output_tensors(output)
    if not tensors:
        raise ConfigError(
            f"the model returned {type(output).__name__}, which holds no tensor to distil"
        )
    return tensors[0]


def _kind(output: Tensor, loss: DistillLoss) -> str:
    if loss != "auto":
        return loss
    # Class logits (batch, classes) and language-model logits (batch, tokens, vocabulary) are distributions;
    # anything else (hidden states, embeddings, images) is matched value by value.
    if output.dim() == 2 or (output.dim() == 3 and output.shape[-1] >= 1000):
        return "kl"
    return "mse"


def distillation_loss(
    student: Tensor, teacher: Tensor, *, loss: DistillLoss = "auto", temperature: float = 2.0
) -> Tensor:
    """The distance between a student's and a teacher's outputs that :func:`distill` minimises.

    ``kl``: the Kullback-Leibler divergence of the softened distributions (logits over the last dim, divided by
    ``temperature``), times ``temperature**2`` as Hinton et al. do; ``mse``: the mean squared difference over the
    teacher's mean square (scale-free). ``auto``: ``kl`` for class logits ``(batch, classes)`` and language-model
    logits ``(batch, tokens, >= 1000)``, else ``mse``.
    """
    if _kind(teacher, loss) == "kl":
        t = temperature
        return (
            F.kl_div(
                F.log_softmax(student.flatten(0, -2) / t, dim=-1),
                F.log_softmax(teacher.flatten(0, -2) / t, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-12)


def _pair(data: Any) -> bool:
    """Whether ``data`` is ``(inputs, labels)`` tensors (what :func:`input_batches` reads as labelled)."""
    return isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)


def _labelled(data: Any) -> bool:
    """Whether ``data`` is ``(inputs, labels)`` tensors whose labels are class indices, one per input."""
    return (
        _pair(data)
        and data[1].dim() == 1
        and not data[1].is_floating_point()
        and len(data[0]) == len(data[1])
    )


TEACHER_CACHE_ELEMENTS = 2**25
"""The most teacher output values (128 MiB in float32) :func:`distill` keeps to reuse at every epoch."""


class _TeacherBatches:
    """``(inputs, teacher output)`` batches, shuffled anew at each pass, for :func:`prunus.fine_tune`.

    The labels of the batch last yielded are in :attr:`labels_now` when ``labels`` is set (``fine_tune`` takes
    tensor targets and computes each batch's loss before it asks for the next).

    With inputs in one tensor (alone or with labels) and teacher outputs that fit
    :data:`TEACHER_CACHE_ELEMENTS`, the teacher runs once over the data and its outputs are reused at every
    epoch (it is in eval mode, so they do not change); otherwise it runs on each batch.
    """

    def __init__(
        self, teacher: nn.Module, data: Any, batch_size: int, seed: int, labels: bool
    ) -> None:
        self.teacher, self.data, self.batch_size, self.seed = teacher, data, batch_size, seed
        self.labels = labels
        self.labels_now: Tensor | None = None
        self.passes = 0
        self.length = sum(1 for _ in input_batches(data, batch_size))
        if self.length == 0:
            raise ConfigError("data is empty: nothing to distil on")
        self.cached: Tensor | None = None

    def __len__(self) -> int:
        return self.length

    def _teacher(self, batch: Any) -> Tensor:
        with torch.no_grad(), evaluation_mode(self.teacher):
            return _first_tensor(call_model(self.teacher, to_device(batch, _device(self.teacher))))

    def _inputs(self) -> Tensor | None:
        inputs = self.data[0] if _pair(self.data) else self.data
        return inputs if isinstance(inputs, Tensor) else None

    def _cache(self, inputs: Tensor) -> Tensor | None:
        """The teacher's outputs for every row of ``inputs``, or ``None`` when they would not fit."""
        first = self._teacher(inputs[: self.batch_size])
        if first.numel() // len(first) * len(inputs) > TEACHER_CACHE_ELEMENTS:
            return None
        size = self.batch_size
        rest = [self._teacher(inputs[i : i + size]) for i in range(size, len(inputs), size)]
        return torch.cat([first, *rest])

    def __iter__(self) -> Iterator[tuple[Any, Tensor]]:
        self.passes += 1
        seed = self.seed + self.passes
        inputs = self._inputs()
        if inputs is not None and self.passes == 1:
            self.cached = self._cache(inputs)
        if inputs is not None and self.cached is not None:
            order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(order), self.batch_size):
                index = order[start : start + self.batch_size]
                self.labels_now = self.data[1][index] if self.labels else None
                yield inputs[index], self.cached[index.to(self.cached.device)]
            return
        pairs: Iterator[tuple[Any, Tensor | None]] = (
            batches(self.data, self.batch_size, shuffle=True, seed=seed)
            if self.labels
            else (
                (b, None)
                for b in input_batches(self.data, self.batch_size, shuffle=True, seed=seed)
            )
        )
        for batch, labels in pairs:
            self.labels_now = labels
            yield batch, self._teacher(batch)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: Any,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 32,
    loss: DistillLoss = "auto",
    temperature: float = 2.0,
    label_weight: float = 0.0,
    lr_schedule: LrSchedule = "constant",
    optimizer: torch.optim.Optimizer | None = None,
    pruner: GradualPruner | None = None,
    seed: int = 0,
    progress_bar: bool = False,
) -> FineTuneResult:
    """Train ``student`` toward ``teacher``'s outputs on the inputs of ``data`` (and its labels, if asked).

    The teacher runs in eval mode without gradients on each batch; the student trains on
    :func:`distillation_loss` between the first tensor of each model's output (class logits, a language model's
    logits, an encoder's hidden states) through :func:`prunus.fine_tune`, so prunus masks stay enforced and a
    ``pruner`` can keep pruning on its schedule.

    Args:
        student: the pruned model, trained in place.
        teacher: the model to imitate (usually a copy of the dense model taken before pruning).
        data: inputs as :func:`prunus.workflow.evaluation.input_batches` reads them: ``(inputs, labels)``
            tensors, a tensor or dict of tensors, or an iterable of batches.
        loss: ``auto``, ``kl`` or ``mse`` (see :func:`distillation_loss`).
        temperature: the softening of ``kl``.
        label_weight: with ``(inputs, labels)`` tensors of class indices and class-logit outputs ``(batch,
            classes)``, the loss is ``(1 - label_weight) * distillation + label_weight * cross_entropy(labels)``
            (soft targets and hard labels, as Hinton et al. train); ignored for other data (``0``: labels unused).

    The other keywords (``epochs``, ``lr``, ``batch_size``, ``lr_schedule``, ``optimizer``, ``pruner``,
    ``seed``, ``progress_bar``) are those of :func:`prunus.fine_tune`.

    Raises:
        ConfigError: ``loss``, ``temperature`` or ``label_weight`` is out of range, or ``data`` is empty.

    Returns:
        The :class:`~prunus.FineTuneResult` (the mean distillation loss of each epoch).
    """
    if loss not in ("auto", "kl", "mse"):
        raise ConfigError(f"loss={loss!r} is not one of 'auto', 'kl', 'mse'")
    if not temperature > 0:
        raise ConfigError(f"temperature={temperature!r} must be > 0")
    if isinstance(label_weight, bool) or not 0 <= label_weight <= 1:
        raise ConfigError(f"label_weight={label_weight!r} must be a number from 0 to 1")

    targets = _TeacherBatches(teacher, data, batch_size, seed, label_weight > 0 and _labelled(data))

    def objective(output: Any, target: Tensor) -> Tensor:
        student_out = _first_tensor(output)
        soft = distillation_loss(student_out, target, loss=loss, temperature=temperature)
        labels = targets.labels_now
        if labels is None or student_out.dim() != 2:
            return soft
        hard = F.cross_entropy(student_out, labels.to(student_out.device))
        return (1 - label_weight) * soft + label_weight * hard

    return fine_tune(
        student,
        targets,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        loss_fn=objective,
        pruner=pruner,
        seed=seed,
        progress_bar=progress_bar,
        lr_schedule=lr_schedule,
    )
