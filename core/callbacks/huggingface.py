"""A Hugging Face ``Trainer`` callback that prunes on a schedule and checkpoints the pruning state.

>>> pruner = prunus.GradualPruner(model, "l1_unstructured", schedule="cubic",
...                               final_sparsity=0.7, start=0, end=200, every=20)      # doctest: +SKIP
>>> trainer = Trainer(model=model, args=args, train_dataset=data,
...                   callbacks=[PruningCallback(pruner)])                             # doctest: +SKIP
>>> trainer.train()                                                                  # doctest: +SKIP
>>> trainer.train(resume_from_checkpoint=True)   # masks and schedule position come back exactly

The pruner's steps are the Trainer's optimizer steps (``state.global_step``). Every checkpoint directory gets a
``prunus_pruning.safetensors`` beside the Trainer's files; on resume the callback loads the one of the
checkpoint the Trainer resumed from. The sparsity is logged with the Trainer's logs (``prunus/sparsity``) and
kept per step in :attr:`PruningCallback.sparsity_log`. Needs the optional ``transformers`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..engine import is_pruned
from ..persistence.huggingface import STATE_FILE
from ..persistence.state import load_pruned, save_pruned
from ..workflow.gradual import GradualPruner
from .driver import DrivenCallback, PruningDriver

__all__ = ["PruningCallback"]

LOG_KEY = "prunus/sparsity"


class PruningCallback(DrivenCallback, TrainerCallback):
    """Runs ``pruner``'s schedule in a ``Trainer``, logs the sparsity, and saves it with every checkpoint.

    Args:
        pruner: a :class:`~prunus.GradualPruner` on the model the Trainer trains.
        resume_from: a pruning-state file to load at the start of training instead of the one in the
            checkpoint the Trainer resumes from.
    """

    def __init__(self, pruner: GradualPruner, *, resume_from: str | Path | None = None) -> None:
        self.driver = PruningDriver(pruner)
        self.resume_from = Path(resume_from) if resume_from is not None else None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        source = self.resume_from
        if source is None and state.global_step > 0:
            source = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}" / STATE_FILE
        if source is not None and source.is_file() and not is_pruned(self.pruner.model):
            load_pruned(self.pruner.model, source, pruner=self.pruner)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.driver.before_step(state.global_step)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.driver.after_step(state.global_step - 1)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        value = round(self.driver.sparsity, 6)
        if logs is not None:
            logs[LOG_KEY] = value
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1][LOG_KEY] = value

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        directory = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if directory.is_dir():
            save_pruned(
                self.pruner.model, directory / STATE_FILE, weights=False, pruner=self.pruner
            )
