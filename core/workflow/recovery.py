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
from .evaluation import input_batches, to_device
from .gradual import FineTuneResult, GradualPruner, fine_tune

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


class _TeacherBatches:
    """``(inputs, teacher output)`` batches, shuffled anew at each pass, for :func:`prunus.fine_tune`."""

    def __init__(self, teacher: nn.Module, data: Any, batch_size: int, seed: int) -> None:
        self.teacher, self.data, self.batch_size, self.seed = teacher, data, batch_size, seed
        self.passes = 0
        self.length = sum(1 for _ in input_batches(data, batch_size))
        if self.length == 0:
            raise ConfigError("data is empty: nothing to distil on")

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[Any, Tensor]]:
        self.passes += 1
        device = _device(self.teacher)
        batches = input_batches(
            self.data, self.batch_size, shuffle=True, seed=self.seed + self.passes
        )
        for batch in batches:
            with torch.no_grad(), evaluation_mode(self.teacher):
                target = _first_tensor(call_model(self.teacher, to_device(batch, device)))
            yield batch, target


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
    optimizer: torch.optim.Optimizer | None = None,
    pruner: GradualPruner | None = None,
    seed: int = 0,
    progress_bar: bool = False,
) -> FineTuneResult:
    """Train ``student`` toward ``teacher``'s outputs on the inputs of ``data``, labels unused.

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

    The other keywords (``epochs``, ``lr``, ``batch_size``, ``optimizer``, ``pruner``, ``seed``,
    ``progress_bar``) are those of :func:`prunus.fine_tune`.

    Returns:
        The :class:`~prunus.FineTuneResult` (the mean distillation loss of each epoch).
    """
    if loss not in ("auto", "kl", "mse"):
        raise ConfigError(f"loss={loss!r} is not one of 'auto', 'kl', 'mse'")
    if not temperature > 0:
        raise ConfigError(f"temperature={temperature!r} must be > 0")

    def objective(output: Any, target: Tensor) -> Tensor:
        return distillation_loss(_first_tensor(output), target, loss=loss, temperature=temperature)

    return fine_tune(
        student,
        _TeacherBatches(teacher, data, batch_size, seed),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        loss_fn=objective,
        pruner=pruner,
        seed=seed,
        progress_bar=progress_bar,
    )
