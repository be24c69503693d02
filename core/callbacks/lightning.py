"""A Lightning callback that prunes on a schedule and checkpoints the pruning state.

>>> pruner = prunus.GradualPruner(module, "l1_unstructured", schedule="cubic",
...                               final_sparsity=0.7, start=0, end=200, every=20)      # doctest: +SKIP
>>> trainer = lightning.Trainer(callbacks=[PruningCallback(pruner)], ...)          # doctest: +SKIP
>>> trainer.fit(module, loader)                                                    # doctest: +SKIP
>>> trainer.fit(module, loader, ckpt_path="last.ckpt")   # masks and schedule position come back exactly

The pruner's steps are the trainer's optimizer steps (``trainer.global_step``). The masks, restore data and
pruner state go into every Lightning checkpoint through the callback's ``state_dict`` (tensors and a JSON
string, loadable with ``weights_only``); the sparsity is logged as ``prunus/sparsity`` at every step. Needs the
optional ``lightning`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from ..workflow.gradual import GradualPruner
from .driver import DrivenCallback, PruningDriver

__all__ = ["PruningCallback"]

LOG_KEY = "prunus/sparsity"


class PruningCallback(DrivenCallback, pl.Callback):
    """Runs ``pruner``'s schedule in a Lightning ``Trainer``, logs the sparsity, and checkpoints it.

    Args:
        pruner: a :class:`~prunus.GradualPruner` on the ``LightningModule`` (or a submodule of it).
    """

    def __init__(self, pruner: GradualPruner) -> None:
        self.driver = PruningDriver(pruner)
        self._pending: Mapping[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "prunus.PruningCallback"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Applied here rather than in load_state_dict: by now Lightning has restored the weights too.
        if self._pending is not None:
            self.driver.load(self._pending)
            self._pending = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Every micro-batch: pruning happens at the first one of a step, later calls find nothing to prune.
        self.driver.before_step(trainer.global_step)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        done = trainer.global_step - 1  # the optimizer step just taken, if one was
        if done < 0 or (self.sparsity_log and self.sparsity_log[-1][0] >= done):
            return  # inside an accumulated step: no optimizer step since the last record
        value = self.driver.after_step(done)
        pl_module.log(LOG_KEY, value, on_step=True, on_epoch=False, prog_bar=False)

    def state_dict(self) -> dict[str, Any]:
        return self.driver.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
