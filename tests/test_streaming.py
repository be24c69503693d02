"""Streamed pruning of safetensors checkpoints: equal to pruning in memory, atomic, and clear about bad sources.

The checkpoints are small (a few hundred KB, cut into several shards) so that every mechanism runs: shards and
their index, groups per block, tied weights, the two passes of a global ranking, a process killed half way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import prunus
from prunus import chunked_ranking
from prunus.cli.commands import main as cli

safetensors_torch = pytest.importorskip("safetensors.torch")
transformers = pytest.importorskip("transformers")

STRATEGIES = [
    ("l1_unstructured", {"amount": 0.5}),
    ("l1_nm", {}),
    ("l1_global", {"amount": 0.6}),
    ("global_unstructured", {"amount": 0.3}),
]


def llama(dtype: torch.dtype = torch.bfloat16, tied: bool = False, ties: bool = False) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(dtype)
    if ties:
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(
                    torch.randint(-3, 4, param.shape, generator=torch.Generator().manual_seed(2))
                )
    return model


def saved(model: nn.Module, path: Path) -> Path:
    model.save_pretrained(path, max_shard_size="60KB")
    assert len(list(path.glob("*.safetensors"))) > 2  # really sharded
    return path


def pruned_in_memory(
    model: nn.Module, strategy: str, options: dict
) -> tuple[dict, prunus.PruneReport]:
    report = prunus.prune(model, strategy, **options)
    prunus.remove(model)
    return model.state_dict(), report


def reloaded(path: Path, like: nn.Module) -> dict:
    got = type(like).from_pretrained(path, dtype=like.dtype)
    return got.state_dict()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved(llama(), tmp_path_factory.mktemp("src") / "llama")


@pytest.mark.parametrize(("strategy", "options"), STRATEGIES)
def test_a_streamed_checkpoint_equals_pruning_in_memory(
    source: Path, tmp_path: Path, strategy: str, options: dict
) -> None:
    report = prunus.prune_checkpoint(source, tmp_path / "out", strategy, **options)
    want, want_report = pruned_in_memory(llama(), strategy, options)
    got = reloaded(tmp_path / "out", llama())
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert report.parameters == want_report.parameters
    assert report.pruned == want_report.pruned > 0
    # The other files came along; the shards are indexed.
    assert (tmp_path / "out" / "config.json").read_text() == (source / "config.json").read_text()
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(want)


@pytest.mark.parametrize("case", ["tied", "float32", "ties"])
def test_tied_weights_float32_and_exact_ties_stream_exactly(tmp_path: Path, case: str) -> None:
    def make() -> nn.Module:
        return llama(
            dtype=torch.float32 if case == "float32" else torch.bfloat16,
            tied=case == "tied",
            ties=case == "ties",
        )

    source = saved(make(), tmp_path / "src")
    with chunked_ranking.recording() as records:
        prunus.prune_checkpoint(source, tmp_path / "out", "l1_global", amount=0.55)
    want, _ = pruned_in_memory(make(), "l1_global", {"amount": 0.55})
    got = reloaded(tmp_path / "out", make())
    assert all(torch.equal(got[k], want[k]) for k in want)
    # Half precision: one counting pass finds the threshold, the second writes. float32: one more count.
    (passes,) = [r.passes for r in records]
    assert passes[-1] == "decide"
    assert passes.count("histogram") == (2 if case == "float32" else 1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(24, 24), nn.ReLU()) for _ in range(3))
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_any_safetensors_file_with_its_model_class(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = Net()
    safetensors_torch.save_file(net.state_dict(), tmp_path / "net.safetensors")
    report = prunus.prune_checkpoint(
        tmp_path / "net.safetensors", tmp_path / "out", "l1_unstructured", amount=0.4, model=Net
    )
    state = {}
    for shard in sorted((tmp_path / "out").glob("*.safetensors")):
        state.update(safetensors_torch.load_file(shard))
    fresh = Net()
    fresh.load_state_dict(state)
    want, want_report = pruned_in_memory(net, "l1_unstructured", {"amount": 0.4})
    assert all(torch.equal(fresh.state_dict()[k], want[k]) for k in want)
    assert report.parameters == want_report.parameters
    # One shard per block of the stack, the head in a shard of its own.
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 4


def test_a_global_floor_is_held_or_refused_before_anything_is_written(tmp_path: Path) -> None:
    # The first block's weights are so small that a plain 50 % global ranking prunes all of them.
    torch.manual_seed(2)
    net = Net()
    with torch.no_grad():
        net.blocks[0][0].weight.mul_(1e-6)
    safetensors_torch.save_file(net.state_dict(), tmp_path / "net.safetensors")
    src = tmp_path / "net.safetensors"
    # The floor (min_keep=1 by default) binds: in memory it is held; streamed, it is refused, nothing written.
    held = Net()
    held.load_state_dict(net.state_dict())
    prunus.prune(held, "l1_global", amount=0.5)
    assert int(torch.count_nonzero(held.blocks[0][0].weight)) == 1
    with pytest.raises(prunus.ConfigError, match=r"'blocks\.0\.0\.weight'.*min_keep=1"):
        prunus.prune_checkpoint(src, tmp_path / "out", "l1_global", amount=0.5, model=Net)
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]
    # The plain ranking streams, equal to the plain ranking in memory.
    prunus.prune_checkpoint(src, tmp_path / "out", "l1_global", amount=0.5, min_keep=0, model=Net)
    state = {}
    for shard in sorted((tmp_path / "out").glob("*.safetensors")):
        state.update(safetensors_torch.load_file(shard))
    want, _ = pruned_in_memory(net, "l1_global", {"amount": 0.5, "min_keep": 0})
    assert int(torch.count_nonzero(state["blocks.0.0.weight"])) == 0
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)


def test_arguments_of_the_wrong_type_are_refused_by_name(source: Path, tmp_path: Path) -> None:
    cases = [
        ({"overwrite": "yes"}, "overwrite='yes'"),
        ({"show_progress": 1}, "show_progress=1"),
        ({"filter_fn": 3}, "filter_fn must be callable"),
        ({"registry": {}}, "registry must be a prunus.Registry"),
    ]
    for kwargs, message in cases:
        with pytest.raises(prunus.ConfigError, match=re.escape(message)) as caught:
            prunus.prune_checkpoint(source, tmp_path / "out", "l1_nm", **kwargs)
        assert isinstance(caught.value, TypeError)
    with pytest.raises(TypeError, match="src must be a path"):
        prunus.prune_checkpoint(3, tmp_path / "out", "l1_nm")
    with pytest.raises(TypeError, match="strategy must be a registered name"):
        prunus.prune_checkpoint(source, tmp_path / "out", 7)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_half_way_leaves_no_destination(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prunus.streaming.checkpoint import Destination

    written = []
    original = Destination.write_shard

    def failing(self: Destination, file: str, tensors: dict) -> None:
        if written:
            raise RuntimeError("disk on fire")
        written.append(file)
        original(self, file, tensors)

    monkeypatch.setattr(Destination, "write_shard", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        prunus.prune_checkpoint(source, tmp_path / "out", "l1_unstructured", amount=0.5)
    assert written and not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left either


def test_a_process_killed_half_way_leaves_no_destination(source: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        import prunus
        from prunus.streaming.checkpoint import Destination
        original = Destination.write_shard
        def slow(self, file, tensors):
            original(self, file, tensors)
            print("half", flush=True)
            time.sleep(60)
        Destination.write_shard = slow
        prunus.prune_checkpoint({str(source)!r}, {str(tmp_path / "out")!r}, "l1_unstructured", amount=0.5)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "half"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert not (tmp_path / "out").exists()
    (stale,) = list(tmp_path.iterdir())  # the dead run's staging directory, never the destination
    assert stale.name.startswith(".out.partial-")
    prunus.prune_checkpoint(source, tmp_path / "out", "l1_unstructured", amount=0.5)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the next run cleaned it up


def test_a_missing_or_corrupt_shard_is_named_before_anything_is_written(
    source: Path, tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    shards = sorted(broken.glob("*.safetensors"))
    shards[1].unlink()
    with pytest.raises(prunus.MissingShardError, match=shards[1].name):
        prunus.prune_checkpoint(broken, tmp_path / "out", "l1_unstructured", amount=0.5)
    assert not (tmp_path / "out").exists()

    shutil.copy(source / shards[1].name, shards[1])
    data = shards[2].read_bytes()
    shards[2].write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(prunus.CorruptShardError, match=shards[2].name):
        prunus.prune_checkpoint(broken, tmp_path / "out", "l1_unstructured", amount=0.5)
    shards[2].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(prunus.CorruptShardError, match=shards[2].name) as caught:
        prunus.prune_checkpoint(broken, tmp_path / "out", "l1_unstructured", amount=0.5)
    assert isinstance(caught.value, ValueError)
    assert not (tmp_path / "out").exists()


def test_bad_calls_are_refused_with_typed_errors(source: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(prunus.CheckpointError, match="already exists") as caught:
        prunus.prune_checkpoint(source, tmp_path / "out", "l1_unstructured", amount=0.5)
    assert isinstance(caught.value, OSError)
    prunus.prune_checkpoint(source, tmp_path / "out", "l1_unstructured", amount=0.5, overwrite=True)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    with pytest.raises(prunus.ConfigError, match="checkpoint itself"):
        prunus.prune_checkpoint(source, source, "l1_unstructured", amount=0.5)
    with pytest.raises(prunus.ConfigError, match="calibration"):
        prunus.prune_checkpoint(source, tmp_path / "x", "l1_unstructured", amount=0.5, data=[1])
    with pytest.raises(prunus.MissingShardError):
        prunus.prune_checkpoint(tmp_path / "nothing", tmp_path / "y", "l1_unstructured", amount=0.5)
    with pytest.raises(prunus.ConfigError, match="real weights"):
        prunus.prune_checkpoint(source, tmp_path / "z", "l1_unstructured", amount=0.5, model=Net())
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))


def test_the_command_line(source: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(
        cli,
        [
            "prune-checkpoint",
            str(source),
            str(tmp_path / "out"),
            "--strategy",
            "l1_nm",
            "--no-progress",
        ],
    )
    assert done.exit_code == 0, done.output
    want, _ = pruned_in_memory(llama(), "l1_nm", {})
    got = reloaded(tmp_path / "out", llama())
    assert all(torch.equal(got[k], want[k]) for k in want)
    failed = runner.invoke(
        cli,
        ["prune-checkpoint", str(tmp_path / "none"), str(tmp_path / "o2"), "--strategy", "l1_nm"],
    )
    assert failed.exit_code == 2 and "MissingShardError" in failed.output
    assert len(failed.output.strip().splitlines()) == 1
