"""A training job checkpoints its GradualPruner, is killed mid-run, and resumes: every later step prunes exactly
what the uninterrupted run prunes.

Two real processes run the same small training script: one to the end, one killed with SIGKILL at an arbitrary
moment (possibly while it writes its checkpoint) and then started again from its last checkpoint. Each logs, per
step, a digest of its masks and of its weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TRAIN = textwrap.dedent(
    """
    import hashlib, os, sys, time
    import torch
    import torch.nn.functional as F
    from torch import nn
    import prunus
    from prunus import files

    torch.set_num_threads(1)
    checkpoint, log, steps, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    strategy = sys.argv[5]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = prunus.GradualPruner(
        model, strategy, schedule="cubic", final_sparsity=0.85, start=0, end=36, every=3
    )
    data = torch.Generator().manual_seed(2)
    x = torch.randn(256, 16, generator=data)
    y = x[:, :4].argmax(dim=1)
    order = torch.Generator().manual_seed(1)
    start = 0
    if os.path.exists(checkpoint):
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        prunus.load_pruning_state(model, state["pruning"], pruner=pruner)
        order.set_state(state["order"])
        start = state["step"]

    def digest():
        h = hashlib.sha256()
        for name, mask in sorted(prunus.masks(model).items()):
            h.update(name.encode() + mask.numpy().tobytes())
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode() + p.numpy().tobytes())
        return h.hexdigest()

    for step in range(start, steps):
        pruner.step(step)
        batch = torch.randint(0, 256, (32,), generator=order)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "pruning": prunus.pruning_state(model, pruner=pruner),
            "order": order.get_state(),
            "step": step + 1,
        }
        files.write_atomic(checkpoint, lambda f: torch.save(state, f))
        with open(log, "a") as out:
            out.write(f"{step} {digest()} {pruner.sparsity:.6f}\\n")
        time.sleep(pause)
    """
)

STEPS = 45


def steps_of(log: Path) -> dict[int, tuple[str, str]]:
    out = {}
    for line in log.read_text().splitlines():
        step, digest, sparsity = line.split()
        out[int(step)] = (digest, sparsity)
    return out


def train(tmp: Path, name: str, strategy: str, pause: float = 0.0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(tmp / "train.py"),
            str(tmp / f"{name}.ckpt"),
            str(tmp / f"{name}.log"),
            str(STEPS),
            str(pause),
            strategy,
        ],
        env={**os.environ, "PRUNUS_DISABLE_PLUGIN_AUTOLOAD": "1"},
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["l1_unstructured", "l1_global"])
def test_a_killed_training_run_resumes_the_pruning_exactly(tmp_path: Path, strategy: str) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    killed = train(tmp_path, "killed", strategy, pause=0.02)
    log = tmp_path / "killed.log"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 21):
        assert killed.poll() is None and time.monotonic() < deadline, (
            "the run ended before it was killed"
        )
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    before_kill = steps_of(log)
    assert killed.returncode == -signal.SIGKILL and max(before_kill) < STEPS - 1

    resumed = train(tmp_path, "killed", strategy)
    whole = train(tmp_path, "whole", strategy)
    for process in (resumed, whole):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()

    reference = steps_of(tmp_path / "whole.log")
    assert sorted(reference) == list(range(STEPS))
    after = steps_of(log)
    assert max(after) == STEPS - 1
    for step, (digest, sparsity) in after.items():
        assert (digest, sparsity) == reference[step], (
            f"step {step} differs from the uninterrupted run"
        )
    assert float(reference[STEPS - 1][1]) == pytest.approx(0.85, abs=0.01)
