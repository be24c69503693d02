"""Pruning on a schedule from a training loop: :class:`GradualPruner` and a small :func:`fine_tune` loop.

>>> pruner = prunus.GradualPruner(model, "l1_unstructured", schedule="cubic",
...                               final_sparsity=0.9, start=0, end=1000, every=100)   # doctest: +SKIP
>>> for step, (x, y) in enumerate(loader):                                          # doctest: +SKIP
...     pruner.step(step)            # prunes when the schedule says so, else does nothing
...     loss = loss_fn(model(x), y); optimizer.zero_grad(); loss.backward(); optimizer.step()

Each call reaches exactly the sparsity the schedule gives for that step. The schedule's sparsity is a fraction
of *all* the targeted entries, while ``prune`` counts an amount among the entries *still kept*; the pruner
converts one to the other with integer counts: per parameter (``target_zeros - current_zeros`` entries, or
slices for a structured strategy), or across all targets for a global strategy. Masks compose, nothing is
revived, and pruned weights stay zero through ``optimizer.step()``.

A training job checkpoints the pruning with the model and resumes it exactly:

>>> torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
...             "pruning": prunus.pruning_state(model, pruner=pruner), "step": step}, "ckpt.pt")  # doctest: +SKIP
>>> # ... in a new process, the model, the optimizer and the pruner built as before:
>>> ckpt = torch.load("ckpt.pt", weights_only=True)                                 # doctest: +SKIP
>>> model.load_state_dict(ckpt["model"])                                            # doctest: +SKIP
>>> prunus.load_pruning_state(model, ckpt["pruning"], pruner=pruner)  # masks, restore data, history

From there every later step prunes exactly what the uninterrupted run prunes. A pruner (its schedule and
strategy included) also pickles and deep-copies; :meth:`GradualPruner.state_dict` is its JSON part.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from .. import masking
from ..arguments import (
    check_bool,
    check_callable,
    check_int,
    check_model,
    check_number,
    check_options,
)
from ..config import config_error, jsonable
from ..distributed import count_true
from ..engine import prune
from ..errors import ConfigError, ConfigTypeError, brief
from ..forward import call_model
from ..progress import progress
from ..registration import Registry, registry
from ..report import PruneReport
from ..schedules import Schedule
from ..targets import FilterFn, Patterns, select_targets
from .evaluation import Data, batches, measure_with, num_batches, to_device

__all__ = ["STATE_FORMAT", "FineTuneResult", "GradualPruner", "ScheduleStep", "fine_tune"]


class ScheduleStep(BaseModel):
    """One pruning step a :class:`GradualPruner` took."""

    model_config = ConfigDict(frozen=True)

    step: int
    target: float
    """The schedule's sparsity at this step."""
    sparsity: float
    """The sparsity reached over the targeted entries (the exact rounding of ``target``)."""
    pruned: int
    """Entries pruned in total over the targeted parameters."""
    newly_pruned: int


@dataclass(frozen=True)
class _Tracked:
    name: str
    module: nn.Module
    param_name: str

    @property
    def numel(self) -> int:
        param = self.module._parameters[self.param_name]
        assert param is not None
        return param.numel()

    @property
    def mask(self) -> Tensor | None:
        return masking.follow_sharding(self.module, self.param_name)

    def pruned(self) -> int:
        mask = self.mask
        return 0 if mask is None else self.numel - count_true(mask)


STATE_FORMAT = "prunus.gradual/1"
"""The ``format`` field of :meth:`GradualPruner.state_dict`."""


class GradualPruner:
    """Prunes ``model`` with ``strategy`` to the sparsity a schedule gives at each training step.

    Args:
        model: the model to prune in place.
        strategy: a registered strategy name with an ``amount`` option (``l1_unstructured``, ``l1_global``,
            ``global_unstructured``, ``l1_structured``, ``random_unstructured``, ...).
        schedule: a registered schedule name (``cubic``, ``linear``, ``iterative``, ``one_shot``; see
            ``prunus.registry.schedules()``) configured by ``schedule_options``, or a built
            :class:`~prunus.schedules.Schedule`.
        include: glob patterns of the parameters to prune, as in :func:`prunus.prune` (chosen once, here).
        exclude: glob patterns of parameters to leave alone, as in :func:`prunus.prune`.
        filter_fn: ``filter_fn(module, name) -> bool``, as in :func:`prunus.prune`.
        strategy_options: the strategy's options other than ``amount`` (``{"seed": 1}``, ``{"dim": 0}``...).
        data: passed to every ``prune`` call, for data-aware criteria.
        restorable: as in :func:`prunus.prune`.
        **schedule_options: the schedule's options (``final_sparsity=0.9, start=0, end=1000, every=100``).

    The sparsity a step reaches is over the targeted parameters: each one for a per-parameter strategy
    (``*_unstructured``: every parameter reaches it; ``*_structured``: counted in slices along ``dim``), or
    their total for a global one. Other granularities get the matching fraction of the remaining entries.

    Checkpoints: :func:`prunus.pruning_state` / :func:`prunus.load_pruning_state` (or :func:`prunus.save_pruned`
    / :func:`prunus.load_pruned` for a file) save and restore the pruning: the masks, the pruned values when
    ``restorable``, and this pruner's :meth:`state_dict` (what it was built with, its history), so a resumed
    run prunes exactly as an uninterrupted one. The framework callbacks (:mod:`prunus.callbacks`) build on it:
    call :meth:`step` before each optimizer step, save the pruning state with the model's and the optimizer's,
    and on resume build the pruner with the same arguments, load the model's weights, then the pruning state.
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: str,
        /,
        *,
        schedule: str | Schedule = "cubic",
        include: Patterns = None,
        exclude: Patterns = None,
        filter_fn: FilterFn | None = None,
        strategy_options: Mapping[str, Any] | None = None,
        data: Any = None,
        restorable: bool = True,
        registry: Registry = registry,
        **schedule_options: Any,
    ) -> None:
        check_model(model)
        check_bool("restorable", restorable)
        if not isinstance(strategy, str):
            raise ConfigTypeError(
                f"GradualPruner needs a registered strategy name, not {type(strategy).__name__} "
                f"({brief(strategy)}); the pruner sets its amount at each step"
            )
        check_options("strategy_options", strategy_options)
        info = registry.info(strategy)
        options = dict(strategy_options or {})
        if "amount" not in info.config.model_fields:
            raise ConfigError(
                f"strategy {strategy!r} has no 'amount' option, so a schedule cannot drive it; "
                f"its options: {', '.join(info.config.model_fields) or '(none)'}"
            )
        if "amount" in options:
            raise ConfigError(
                "strategy_options must not hold 'amount': the schedule sets it at each step"
            )
        registry.get(strategy, amount=0, **options)  # a bad option fails now, not mid-training
        if isinstance(schedule, Schedule):
            if schedule_options:
                raise ConfigError(
                    f"schedule options {sorted(schedule_options)} were given with an already built "
                    f"schedule {schedule.name!r}; pass its name instead"
                )
            self.schedule = schedule
        elif isinstance(schedule, str):
            self.schedule = registry.schedule(schedule, **schedule_options)
        else:
            raise ConfigTypeError(
                f"schedule must be a registered schedule name or a prunus.Schedule, not "
                f"{type(schedule).__name__} ({brief(schedule)})"
            )
        self.schedule.checked_points()

        self.model = model
        self.strategy = strategy
        self.strategy_options = options
        self.granularity = info.granularity
        self.data = data
        self.restorable = restorable
        self._registry = registry
        self._targets = [
            _Tracked(name, module, pname)
            for name, module, pname in select_targets(
                model, include=include, exclude=exclude, filter_fn=filter_fn
            )
        ]
        self._names = {t.name for t in self._targets}
        self.history: list[ScheduleStep] = []
        """Every step that pruned, in order."""

    @property
    def targets(self) -> list[str]:
        """Qualified names of the parameters being pruned."""
        return [t.name for t in self._targets]

    @property
    def numel(self) -> int:
        """Entries of the targeted parameters."""
        return sum(t.numel for t in self._targets)

    @property
    def pruned(self) -> int:
        """Entries of the targeted parameters pruned so far."""
        return sum(t.pruned() for t in self._targets)

    @property
    def sparsity(self) -> float:
        """Fraction of the targeted entries pruned so far."""
        return self.pruned / self.numel

    def done(self, step: int) -> bool:
        """Whether the schedule has nothing left to prune after ``step``."""
        check_int("step", step)
        return step >= self.schedule.last_step

    def step(self, step: int) -> PruneReport | None:
        """Prune to the schedule's sparsity at ``step``; ``None`` when nothing is to be pruned.

        Any step may be given (every training step, or only some): the pruner reaches the target of the
        last schedule point at or before ``step``, and never prunes anything twice. The lookup is a binary
        search over the schedule's points.
        """
        check_int("step", step)
        target = self.schedule.sparsity(step)
        before = self.pruned
        report = self._prune_to(target)
        if report is None:
            return None
        self.history.append(
            ScheduleStep(
                step=step,
                target=target,
                sparsity=self.sparsity,
                pruned=self.pruned,
                newly_pruned=self.pruned - before,
            )
        )
        return report

    # -- checkpoints --------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a training checkpoint needs of this pruner to resume it exactly (JSON-serializable).

        ``format``, what the pruner was built with (``strategy``, ``strategy_options``, ``schedule`` with its
        ``name`` and ``options``, ``targets``, ``restorable``) and its ``history``. The masks live on the model:
        :func:`prunus.pruning_state` (for a training checkpoint) and :func:`prunus.save_pruned` (a file) save
        them with their restore data, and this dict in their manifest when given the pruner.
        """
        return {
            "format": STATE_FORMAT,
            **self._built_with(),
            "history": [step.model_dump() for step in self.history],
        }

    def _built_with(self) -> dict[str, Any]:
        """What this pruner was built with: a saved state must say the same to be loaded."""
        return {
            "strategy": self.strategy,
            "strategy_options": jsonable(self.strategy_options),
            "schedule": {"name": self.schedule.name, "options": jsonable(self.schedule.options)},
            "targets": self.targets,
            "restorable": self.restorable,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back the :attr:`history` of :meth:`state_dict`, after checking the state is this pruner's.

        Build the pruner with the arguments the saved one had; :func:`prunus.load_pruning_state` (or
        :func:`prunus.load_pruned`) calls this and puts the masks back on the model.

        Raises:
            ConfigError: ``state`` is not a pruner state (each problem named), or is of a pruner with another
                strategy, options, schedule, targets or ``restorable``; the pruner is left as it was.
        """
        parsed = _State.parse(state)
        for field, mine in self._built_with().items():
            saved = getattr(parsed, field)
            if _plain(saved) != _plain(mine):
                raise ConfigError(
                    f"the saved pruner's {field} is {brief(saved, 200)}, this pruner's is "
                    f"{brief(mine, 200)}; build the pruner exactly as the one that was saved"
                )
        self.history = list(parsed.history)

    def __repr__(self) -> str:
        return (
            f"<GradualPruner {self.strategy} {self.schedule!r} on {len(self._targets)} parameters, "
            f"sparsity {self.sparsity:.2%}>"
        )

    def _prune_to(self, target: float) -> PruneReport | None:
        common: dict[str, Any] = {
            "filter_fn": self._chosen,
            "data": self.data,
            "restorable": self.restorable,
            "registry": self._registry,
            **self.strategy_options,
        }
        if self.granularity == "global":
            wanted = round(target * self.numel) - self.pruned
            if wanted <= 0:
                return None
            return prune(self.model, self.strategy, amount=wanted, **common)
        if self.granularity == "structured":
            counts = self._slice_counts(target)
        elif self.granularity == "unstructured":
            counts = {t.name: round(target * t.numel) - t.pruned() for t in self._targets}
        else:
            return self._fractional(target, common)
        amounts = {glob.escape(name): k for name, k in counts.items() if k > 0}
        if not amounts:
            return None
        return prune(self.model, self.strategy, amounts=amounts, **common)

    def _chosen(self, module: nn.Module, name: str) -> bool:
        return name in self._names

    def _slice_counts(self, target: float) -> dict[str, int]:
        dim = self.strategy_options.get("dim", 0)
        counts = {}
        for t in self._targets:
            param = t.module._parameters[t.param_name]
            assert param is not None
            d = dim % param.dim()
            slices = param.shape[d]
            mask = t.mask
            others = tuple(i for i in range(param.dim()) if i != d)
            gone = 0
            if mask is not None:
                alive = mask.any(dim=others) if others else mask
                gone = slices - count_true(alive)
            counts[t.name] = round(target * slices) - gone
        return counts

    def _fractional(self, target: float, common: dict[str, Any]) -> PruneReport | None:
        kept = 1.0 - self.sparsity
        if target <= self.sparsity or kept <= 0:
            return None
        amount = min(1.0, (target - self.sparsity) / kept)
        return prune(self.model, self.strategy, amount=amount, **common)


class _State(BaseModel):
    """A :meth:`GradualPruner.state_dict`, checked (a checkpoint is input too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["prunus.gradual/1"] = "prunus.gradual/1"
    strategy: str
    strategy_options: dict[str, Any]
    schedule: dict[str, Any]
    targets: list[str]
    restorable: bool
    history: list[ScheduleStep]

    @classmethod
    def parse(cls, state: object) -> _State:
        if not isinstance(state, Mapping):
            raise ConfigTypeError(
                f"a GradualPruner state must be the dict state_dict() returned, not {type(state).__name__} "
                f"({brief(state)})"
            )
        try:
            return cls.model_validate(dict(state))
        except ValidationError as error:
            raise config_error("the GradualPruner state", error) from None


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists), to compare what was saved with what is built."""
    return json.loads(json.dumps(value, default=repr))


class FineTuneResult(BaseModel):
    """What :func:`fine_tune` did: the mean training loss of each epoch and the steps taken."""

    model_config = ConfigDict(frozen=True)

    losses: list[float]
    steps: int
    history: list[ScheduleStep]
    """The pruner's steps taken during this call (empty without a pruner)."""
    metrics: list[float]
    """``evaluate(model)`` after each epoch, when an evaluator was given."""


LrSchedule = Literal["constant", "cosine"]
"""How :func:`fine_tune` moves the learning rate over its steps."""


def _cosine(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay of every group's learning rate from its value to zero over ``total`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / max(total, 1)))
    )


def fine_tune(
    model: nn.Module,
    data: Data,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    pruner: GradualPruner | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    start_step: int = 0,
    seed: int = 0,
    progress_bar: bool = False,
    lr_schedule: LrSchedule = "constant",
) -> FineTuneResult:
    """A plain classification training loop that prunes on a schedule as it goes.

    Before each optimizer step ``t`` (counted from ``start_step``) it calls ``pruner.step(t)``, so a
    :class:`GradualPruner`'s schedule is in optimizer steps. Pruned weights stay zero through the optimizer.

    Args:
        data: ``(inputs, labels)`` tensors (shuffled each epoch with ``seed``) or an iterable of ``(inputs,
            targets)`` batches, where inputs may be anything the model is called on (a tensor, a tuple of
            positional arguments, a dict of keyword arguments: see :func:`prunus.forward.call_model`).
        optimizer: by default ``Adam(model.parameters(), lr)``.
        loss_fn: ``loss_fn(output, targets)``; by default cross-entropy.
        evaluate: called after each epoch; its results are in ``metrics``.
        progress_bar: show a progress bar over the epochs (tqdm).
        lr_schedule: ``constant`` keeps the optimizer's learning rate; ``cosine`` scales it by
            ``(1 + cos(pi * t / T)) / 2`` at optimizer step ``t`` of the ``T`` this call takes, from the full rate
            down to zero at the end (short recoveries converge better that way).

    Raises:
        ConfigError: the schedule ends after the last step this loop takes (when that is known up front), or
            ``lr_schedule`` is unknown, or ``cosine`` is asked of data whose length is not known up front.
    """
    check_model(model)
    check_int("epochs", epochs, minimum=0)
    check_number("lr", lr, above=0)
    check_int("batch_size", batch_size, minimum=1)
    check_int("start_step", start_step, minimum=0)
    check_int("seed", seed, minimum=0)
    check_bool("progress_bar", progress_bar)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigTypeError(
            f"optimizer must be a torch.optim.Optimizer, not {type(optimizer).__name__} ({brief(optimizer)})"
        )
    for name, function in (("loss_fn", loss_fn), ("evaluate", evaluate)):
        if function is not None:
            check_callable(name, function)
    if pruner is not None and not isinstance(pruner, GradualPruner):
        raise ConfigTypeError(
            f"pruner must be a prunus.GradualPruner, not {type(pruner).__name__} ({brief(pruner)})"
        )
    if lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule={lr_schedule!r} is not one of 'constant', 'cosine'")
    per_epoch = num_batches(data, batch_size)
    if lr_schedule == "cosine" and per_epoch is None:
        raise ConfigError(
            "lr_schedule='cosine' needs the number of steps up front: data has no len(); pass (inputs, "
            "labels) tensors or a DataLoader, or lr_schedule='constant'"
        )
    if pruner is not None and per_epoch is not None:
        last = start_step + epochs * per_epoch - 1
        if pruner.schedule.last_step > last:
            raise ConfigError(
                f"the schedule's last pruning step is {pruner.schedule.last_step}, but {epochs} epochs of "
                f"{per_epoch} steps end at step {last}; shorten the schedule (end=) or train longer"
            )
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_fn or nn.functional.cross_entropy
    scheduler = (
        _cosine(optimizer, epochs * per_epoch)
        if lr_schedule == "cosine" and per_epoch is not None
        else None
    )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    step = start_step
    losses: list[float] = []
    metrics: list[float] = []
    taken = len(pruner.history) if pruner is not None else 0
    # Each submodule's own flag comes back at the end (model.train(was_training) would set them all alike).
    flags = [(module, module.training) for module in model.modules()]
    model.train()
    try:
        for epoch in progress(
            range(epochs), enabled=progress_bar, total=epochs, desc="fine-tuning"
        ):
            total, count = 0.0, 0
            for x, y in batches(data, batch_size, shuffle=True, seed=seed + epoch):
                if pruner is not None:
                    pruner.step(step)
                optimizer.zero_grad()
                loss = loss_fn(call_model(model, to_device(x, device)), to_device(y, device))
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                step += 1
            losses.append(total / max(count, 1))
            if evaluate is not None:
                # A measurement: the model comes back in training mode, its buffers and the random stream as
                # they were, so evaluating does not change the training run.
                metrics.append(measure_with(evaluate, model))
    finally:
        for module, training in flags:
            module.training = training
    history: Sequence[ScheduleStep] = pruner.history[taken:] if pruner is not None else []
    return FineTuneResult(
        losses=losses, steps=step - start_step, history=list(history), metrics=metrics
    )
