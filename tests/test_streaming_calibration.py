"""Streamed pruning with calibration data: a checkpoint's blocks loaded, calibrated, pruned and written one at a
time, equal to ``prunus.prune`` with the same data on the whole model in memory.

Tiny Hugging Face models with random weights (a Llama with grouped-query attention, a GPT-2 with its transposed
``Conv1D`` layers), saved as several shards.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

import prunus
from prunus.streaming import pruning as streamed

hf = pytest.importorskip("hf_models")
pytest.importorskip("safetensors")

CASES = [
    ("llama", "wanda_unstructured", {"amount": 0.5}),
    ("llama", "sparsegpt_nm", {}),  # reconstructs by default
    ("llama", "sparsegpt_unstructured", {"amount": 0.6, "allocation": "owl"}),
    ("gpt2", "wanda_row", {"amount": 0.4, "reconstruct": True}),
    ("gpt2", "sparsegpt_unstructured", {"amount": 0.5, "allocation": "owl"}),
]


def saved(kind: str, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    hf.MODELS[kind]().to(dtype).save_pretrained(path, max_shard_size="10KB")
    assert len(list(path.glob("*.safetensors"))) > 2  # really sharded
    return path


def in_memory(path: Path, strategy: str, data: object, options: dict) -> tuple[nn.Module, object]:
    """The checkpoint loaded whole and pruned by ``prunus.prune`` with the same data and options."""
    model = hf.transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    report = prunus.prune(model, strategy, data=data, restorable=False, **options)
    prunus.remove(model)
    return model, report


def assert_equal_states(got: nn.Module, want: nn.Module) -> None:
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in b if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize(("kind", "strategy", "options"), CASES)
def test_calibrated_streaming_equals_pruning_in_memory(
    tmp_path: Path, kind: str, strategy: str, options: dict
) -> None:
    source = saved(kind, tmp_path / "src")
    data = hf.padded_batches() if kind == "llama" else hf.batches()
    report = prunus.prune_checkpoint(source, tmp_path / "out", strategy, data=data, **options)
    want, want_report = in_memory(source, strategy, data, options)
    got = hf.transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert_equal_states(got, want)
    assert report == want_report and report.pruned > 0


def test_bfloat16_checkpoints_stream_exactly(tmp_path: Path) -> None:
    source = saved("llama", tmp_path / "src", torch.bfloat16)
    options = {"amount": 0.5}
    prunus.prune_checkpoint(
        source, tmp_path / "out", "sparsegpt_unstructured", data=hf.batches(), **options
    )
    want, _ = in_memory(source, "sparsegpt_unstructured", hf.batches(), options)
    got = hf.transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert got.dtype == torch.bfloat16
    assert_equal_states(got, want)


def test_one_block_is_in_memory_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = saved("llama", tmp_path / "src")
    seen: list[tuple[int, bool, int]] = []
    skeletons: list[nn.Module] = []
    make, block = streamed._Streamer.__init__, streamed._Streamer.block

    def init(self: streamed._Streamer, skeleton: nn.Module, *args: object) -> None:
        skeletons.append(skeleton)
        make(self, skeleton, *args)

    def watched(self: streamed._Streamer, index: int, *, final: bool):  # type: ignore[no-untyped-def]
        with block(self, index, final=final):
            layers = skeletons[0].model.layers
            resident = sum(any(not p.is_meta for p in layer.parameters()) for layer in layers)
            seen.append((index, final, resident))
            yield

    monkeypatch.setattr(streamed._Streamer, "__init__", init)
    monkeypatch.setattr(streamed._Streamer, "block", contextmanager(watched))
    prunus.prune_checkpoint(
        source, tmp_path / "out", "wanda_row", amount=0.5, allocation="owl", data=hf.batches()
    )
    # The chain check and OWL's measuring pass, then the pass that prunes and writes: one block in memory.
    assert [(i, f) for i, f, _ in seen] == [(i, False) for i in range(3)] * 2 + [
        (i, True) for i in range(3)
    ]
    assert {resident for *_, resident in seen} == {1}
    # Between the calls, every parameter is back on the meta device.
    assert all(p.is_meta for p in skeletons[0].parameters())


def test_a_failure_half_way_leaves_no_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    source = saved("gpt2", tmp_path / "src")
    written: list[str] = []
    original = safetensors.torch.save_file

    def failing(tensors: dict, path: str, metadata: dict | None = None) -> None:
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        original(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(prunus.CheckpointError, match="cannot write shard model-0000") as caught:
        prunus.prune_checkpoint(source, tmp_path / "out", "sparsegpt_nm", data=hf.batches())
    assert isinstance(caught.value, OSError)
    assert written and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_what_cannot_stream_is_refused_by_type_before_anything_is_written(tmp_path: Path) -> None:
    source = saved("llama", tmp_path / "src")
    data = hf.batches()
    cases = [
        (
            {"strategy": "wanda_global", "amount": 0.5},
            prunus.ConfigError,
            "ranks every block together",
        ),
        (
            {
                "strategy": "wanda_row",
                "amount": 0.5,
                "include": ["lm_head.weight", "model.layers.*_proj.weight"],
            },
            prunus.ConfigError,
            "lm_head.weight.*outside the model's stack",
        ),
        (
            {"strategy": "l1_unstructured", "amount": 0.5},
            prunus.ConfigError,
            "reads no calibration",
        ),
        (
            {"strategy": "wanda_row", "amount": 0.5, "data": prunus.calibrate(hf.llama(), data)},
            prunus.ConfigError,
            "must be calibration batches",
        ),
        (
            {"strategy": "wanda_row", "amount": 0.5, "data": []},
            prunus.CalibrationError,
            "holds no batch",
        ),
        (
            {"strategy": "wanda_row", "amount": 0.5, "data": [torch.full((1, 4), 10_000)]},
            prunus.CalibrationError,
            "calibration batch 0",
        ),
        (
            {"strategy": "l1_unstructured", "amount": 0.5, "allocation": "owl", "data": None},
            prunus.ConfigError,
            "give data=",
        ),
    ]
    # Built on the meta device, its rotary frequencies are there too: its blocks cannot run.
    with torch.device("meta"):
        on_meta = hf.llama()
    cases.append(
        (
            {"strategy": "wanda_row", "amount": 0.5, "model": on_meta},
            prunus.ConfigError,
            r"model\.rotary_emb\.inv_freq.*meta device",
        )
    )
    for kwargs, error, message in cases:
        kwargs = {"data": data, **kwargs}
        strategy = kwargs.pop("strategy")
        with pytest.raises(error, match=message):
            prunus.prune_checkpoint(source, tmp_path / "out", strategy, **kwargs)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], strategy
