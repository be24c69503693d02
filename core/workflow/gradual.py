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
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .. import masking
from ..config import jsonable
from ..engine import prune
from ..errors import ConfigError
from ..progress import progress
from ..registration import Registry, registry
from ..report import PruneReport
from ..schedules import Schedule
from ..targets import FilterFn, Patterns, select_targets
from .evaluation import Data, batches, num_batches

__all__ = ["FineTuneResult", "GradualPruner", "ScheduleStep", "fine_tune"]


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
        return masking.get_mask(self.module, self.param_name)

    def pruned(self) -> int:
        mask = self.mask
        return 0 if mask is None else self.numel - int(mask.sum())


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
        if not isinstance(strategy, str):
            raise ConfigError(
                f"GradualPruner needs a registered strategy name, not {type(strategy).__name__}; "
                "the pruner sets its amount at each step"
            )
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
        else:
            self.schedule = registry.schedule(schedule, **schedule_options)
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
        return step >= self.schedule.last_step

    def step(self, step: int) -> PruneReport | None:
        """Prune to the schedule's sparsity at ``step``; ``None`` when nothing is to be pruned.

        Any step may be given (every training step, or only some): the pruner reaches the target of the
        last schedule point at or before ``step``, and never prunes anything twice.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise ConfigError(f"step must be an int, not {type(step).__name__} ({step!r})")
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

    def _prune_to(self, target: float) -> PruneReport | None:
        common: dict[str, Any] = {
            "filter_fn": lambda module, name: name in self._names,
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
                gone = slices - int(alive.sum())
            counts[t.name] = round(target * slices) - gone
        return counts

    def _fractional(self, target: float, common: dict[str, Any]) -> PruneReport | None:
        kept = 1.0 - self.sparsity
        if target <= self.sparsity or kept <= 0:
            return None
        amount = min(1.0, (target - self.sparsity) / kept)
        return prune(self.model, self.strategy, amount=amount, **common)

    def state_dict(self) -> dict[str, Any]:
        """What a training checkpoint needs to resume this pruner exactly (JSON-serializable).

        The masks themselves live on the model: save them with :func:`prunus.save_pruned` (or
        :func:`prunus.pruning_state`), which stores this dict in its manifest when given the pruner. What is here
        identifies the pruner (strategy, options, schedule, targets) and holds its :attr:`history`.
        """
        return {
            "strategy": self.strategy,
            "strategy_options": jsonable(self.strategy_options),
            "schedule": {"name": self.schedule.name, "options": jsonable(self.schedule.options)},
            "targets": self.targets,
            "restorable": self.restorable,
            "history": [step.model_dump() for step in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back the :attr:`history` of :meth:`state_dict`, after checking it is this pruner's.

        Raises:
            ConfigError: the state is another pruner's (strategy, options, schedule or targets differ); the
                pruner is left as it was.
        """
        mine = self.state_dict()
        if not isinstance(state, Mapping) or not isinstance(state.get("history"), list):
            raise ConfigError(f"not a GradualPruner state: {state!r:.80}")
        for key in ("strategy", "strategy_options", "schedule", "targets", "restorable"):
            if state.get(key) != mine[key]:
                raise ConfigError(
                    f"the saved pruner's {key} is {state.get(key)!r:.120}, this pruner's is {mine[key]!r:.120}; "
                    "build the pruner exactly as the one that was saved"
                )
        try:
            history = [ScheduleStep.model_validate(step) for step in state["history"]]
        except ValueError as error:
            raise ConfigError(f"the saved pruner's history is damaged: {error}") from None
        self.history = history

    def __repr__(self) -> str:
        return (
            f"<GradualPruner {self.strategy} {self.schedule!r} on {len(self._targets)} parameters, "
            f"sparsity {self.sparsity:.2%}>"
        )


class FineTuneResult(BaseModel):
    """What :func:`fine_tune` did: the mean training loss of each epoch and the steps taken."""

    model_config = ConfigDict(frozen=True)

    losses: list[float]
    steps: int
    history: list[ScheduleStep]
    """The pruner's steps taken during this call (empty without a pruner)."""
    metrics: list[float]
    """``evaluate(model)`` after each epoch, when an evaluator was given."""


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
) -> FineTuneResult:
    """A plain classification training loop that prunes on a schedule as it goes.

    Before each optimizer step ``t`` (counted from ``start_step``) it calls ``pruner.step(t)``, so a
    :class:`GradualPruner`'s schedule is in optimizer steps. Pruned weights stay zero through the optimizer.

    Args:
        data: ``(inputs, labels)`` tensors (shuffled each epoch with ``seed``) or an iterable of batches.
        optimizer: by default ``Adam(model.parameters(), lr)``.
        loss_fn: by default cross-entropy.
        evaluate: called after each epoch; its results are in ``metrics``.
        progress_bar: show a progress bar over the epochs (tqdm).

    Raises:
        ConfigError: the schedule ends after the last step this loop takes (when that is known up front).
    """
    if epochs < 0:
        raise ConfigError(f"epochs={epochs} must be >= 0")
    per_epoch = num_batches(data, batch_size)
    if pruner is not None and per_epoch is not None:
        last = start_step + epochs * per_epoch - 1
        if pruner.schedule.last_step > last:
            raise ConfigError(
                f"the schedule's last pruning step is {pruner.schedule.last_step}, but {epochs} epochs of "
                f"{per_epoch} steps end at step {last}; shorten the schedule (end=) or train longer"
            )
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_fn or nn.functional.cross_entropy
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    step = start_step
    losses: list[float] = []
    metrics: list[float] = []
    taken = len(pruner.history) if pruner is not None else 0
    was_training = model.training
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
                loss = loss_fn(model(x.to(device)), y.to(device))
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                step += 1
            losses.append(total / max(count, 1))
            if evaluate is not None:
                metrics.append(float(evaluate(model)))
                model.train()
    finally:
        model.train(was_training)
    history: Sequence[ScheduleStep] = pruner.history[taken:] if pruner is not None else []
    return FineTuneResult(
        losses=losses, steps=step - start_step, history=list(history), metrics=metrics
    )
