"""The training-framework callbacks, in real short runs on CPU: a schedule driven through gradient accumulation
and bf16 autocast, the sparsity logged per step, and a run interrupted at a checkpoint and resumed that prunes
exactly as the uninterrupted one (same masks at every later step, same weights at the end)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import prunus

STEPS, SAVE_AT = 12, 6


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        logits = self.fc2(torch.relu(self.fc1(x)))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.float(), labels)
        return out


def data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(48, 16, generator=generator), torch.randint(0, 4, (48,), generator=generator)


def pruner_for(model: nn.Module) -> prunus.GradualPruner:
    return prunus.GradualPruner(
        model, "l1_unstructured", schedule="linear", final_sparsity=0.8, start=2, end=10, every=2
    )


def masks_now(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in prunus.masks(model).items()}


def assert_kept_zero(model: nn.Module) -> None:
    for name, mask in prunus.masks(model).items():
        assert not model.get_parameter(name)[~mask].any(), name


# -- Hugging Face Trainer ---------------------------------------------------------------------------------------


def run_trainer(output: Path, *, resume: bool) -> tuple[Any, list[dict[str, Tensor]], nn.Module]:
    transformers = pytest.importorskip("transformers")
    from prunus.callbacks.huggingface import PruningCallback

    x, y = data()
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    model = Net()
    callback = PruningCallback(pruner_for(model))
    seen: list[dict[str, Tensor]] = []

    class Record(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append(masks_now(model))

    args = transformers.TrainingArguments(
        output_dir=str(output),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,  # 6 optimizer steps per epoch of 48 rows
        learning_rate=1e-2,
        bf16=True,
        use_cpu=True,
        save_steps=SAVE_AT,
        logging_steps=1,
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=rows, callbacks=[callback, Record()]
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    return callback, seen, model


def test_trainer_callback_prunes_logs_and_resumes_exactly(tmp_path: Path) -> None:
    full, full_masks, full_model = run_trainer(tmp_path / "full", resume=False)
    assert full.pruner.sparsity == pytest.approx(0.8, abs=0.01)
    assert [step for step, _ in full.sparsity_log] == list(range(STEPS))
    assert full.sparsity_log[1][1] == 0.0 and full.sparsity_log[-1][1] == pytest.approx(
        0.8, abs=0.01
    )
    assert [h.step for h in full.pruner.history] == [4, 6, 8, 10]
    assert_kept_zero(full_model)  # through accumulation, bf16 autocast and AdamW
    checkpoint = tmp_path / "full" / f"checkpoint-{SAVE_AT}"
    assert (checkpoint / "prunus_pruning.safetensors").is_file()

    # Interrupted at the checkpoint of step 6: a new process would see only that directory.
    shutil.copytree(checkpoint, tmp_path / "resumed" / checkpoint.name)
    resumed, resumed_masks, resumed_model = run_trainer(tmp_path / "resumed", resume=True)
    assert resumed.pruner.history == full.pruner.history
    later = full_masks[SAVE_AT:]
    assert len(resumed_masks) == len(later)
    for ours, theirs in zip(resumed_masks, later, strict=True):
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for key, value in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


# -- Lightning ----------------------------------------------------------------------------------------------------


def run_lightning(
    path: Path, *, resume_from: Path | None
) -> tuple[Any, list[dict[str, Tensor]], nn.Module]:
    pl = pytest.importorskip("lightning.pytorch")
    from prunus.callbacks.lightning import PruningCallback

    class Module(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()

        def training_step(self, batch: Any, index: int) -> Tensor:
            x, y = batch
            return self.net(x, y)["loss"]

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    module = Module()
    callback = PruningCallback(pruner_for(module.net))
    seen: list[dict[str, Tensor]] = []

    class Record(pl.Callback):  # type: ignore[misc]
        def on_train_start(self, trainer: Any, *args: Any) -> None:
            self.last = trainer.global_step

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step != self.last:  # an optimizer step was just taken
                self.last = trainer.global_step
                seen.append(masks_now(module.net))

    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=path, save_top_k=-1, every_n_train_steps=SAVE_AT
    )
    trainer = pl.Trainer(
        max_steps=STEPS,
        accumulate_grad_batches=2,
        precision="bf16-mixed",
        accelerator="cpu",
        devices=1,
        callbacks=[callback, checkpoints, Record()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # Lightning's notices about workers and logging without a logger
        trainer.fit(module, loader, ckpt_path=str(resume_from) if resume_from else None)
    return callback, seen, module.net


def test_lightning_callback_prunes_logs_and_resumes_exactly(tmp_path: Path) -> None:
    full, full_masks, full_net = run_lightning(tmp_path / "full", resume_from=None)
    assert full.pruner.sparsity == pytest.approx(0.8, abs=0.01)
    assert [step for step, _ in full.sparsity_log] == list(range(STEPS))
    assert [h.step for h in full.pruner.history] == [4, 6, 8, 10]
    assert_kept_zero(full_net)
    checkpoint = next((tmp_path / "full").glob(f"*step={SAVE_AT}.ckpt"))
    saved = torch.load(checkpoint, weights_only=True)  # the pruning state is tensors and a string
    assert "prunus.PruningCallback" in saved["callbacks"]

    resumed, resumed_masks, resumed_net = run_lightning(
        tmp_path / "resumed", resume_from=checkpoint
    )
    assert resumed.pruner.history == full.pruner.history
    later = full_masks[SAVE_AT:]
    assert len(resumed_masks) == len(later)
    for ours, theirs in zip(resumed_masks, later, strict=True):
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    for key, value in full_net.state_dict().items():
        assert torch.equal(resumed_net.state_dict()[key], value), key


def test_driver_refuses_what_is_not_a_pruner() -> None:
    from prunus.callbacks.driver import PruningDriver

    with pytest.raises(prunus.StateError, match="GradualPruner"):
        PruningDriver(object())  # type: ignore[arg-type]
