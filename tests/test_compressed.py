"""Compressed state dicts: compressed-tensors' sparse-bitmask layout, bit-for-bit decompression, old files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tensor_bytes
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import prunus
from prunus.persistence.compressed import FORMAT, LEGACY_FORMAT


def reference_decompress(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """compressed-tensors' documented sparse-bitmask decoder (its ``BitmaskTensor.decompress``), written out."""
    out = {}
    prefixes = {k[: -len(".compressed")] for k in tensors if k.endswith(".compressed")}
    for key, value in tensors.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in prefixes and leaf in ("shape", "compressed", "bitmask", "row_offsets"):
            if leaf == "compressed":
                shape = tensors[f"{prefix}.shape"].tolist()
                bits = np.unpackbits(
                    tensors[f"{prefix}.bitmask"].numpy(),
                    axis=-1,
                    count=shape[-1],
                    bitorder="little",
                )
                mask = torch.from_numpy(bits.reshape(shape).astype(bool))
                dense = torch.zeros(shape, dtype=value.dtype)
                dense[mask] = value
                out[f"{prefix}.weight"] = dense
        else:
            out[key] = value
    return out


def reference_compress(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """compressed-tensors' documented sparse-bitmask encoder (``bitmask_compress``) for 2-D weights."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.endswith(".weight"):
            out[key] = value
            continue
        prefix = key[: -len(".weight")]
        keep = value != 0
        counts = keep.sum(dim=-1)
        out[f"{prefix}.shape"] = torch.tensor(list(value.shape))
        out[f"{prefix}.compressed"] = value[keep]
        out[f"{prefix}.bitmask"] = torch.from_numpy(
            np.packbits(keep.numpy(), axis=-1, bitorder="little")
        )
        out[f"{prefix}.row_offsets"] = torch.cumsum(counts, 0) - counts
    return out


def test_linear_weights_are_in_the_sparse_bitmask_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    prunus.prune(model, "l1_unstructured", amount=0.8)
    prunus.remove(model)
    path = tmp_path / "c.safetensors"
    size = prunus.save_compressed(model, path)
    assert size == path.stat().st_size
    tensors = load_file(str(path))
    assert {"0.compressed", "0.bitmask", "0.shape", "0.row_offsets", "0.bias"} <= set(tensors)
    assert tensors["0.bitmask"].shape == (48, math.ceil(64 / 8))
    assert tensors["0.compressed"].numel() == int(model[0].weight.count_nonzero())
    # What a compressed-tensors reader makes of the file is the model's state dict.
    decoded = reference_decompress(tensors)
    for key, value in model.state_dict().items():
        assert torch.equal(decoded[key], value), key
    # And prunus reads a file compressed-tensors wrote (no prunus metadata).
    save_file(reference_compress(dict(model.state_dict())), str(tmp_path / "theirs.safetensors"))
    theirs = prunus.load_compressed(tmp_path / "theirs.safetensors")
    assert sorted(theirs) == sorted(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key


def test_compressed_tensors_reads_and_writes_the_same_files(tmp_path: Path) -> None:
    sparse_bitmask = pytest.importorskip(
        "compressed_tensors.compressors.sparse_compressors.sparse_bitmask"
    )
    from compressed_tensors import BitmaskConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    prunus.prune(model, "l1_unstructured", amount=0.8)
    prunus.save_compressed(model, tmp_path / "ours.safetensors")
    compressor = sparse_bitmask.BitmaskCompressor(config=BitmaskConfig())
    theirs = dict(compressor.decompress(str(tmp_path / "ours.safetensors")))
    assert sorted(theirs) == sorted(model.state_dict())
    assert all(torch.equal(theirs[k], v) for k, v in model.state_dict().items())
    save_file(compressor.compress(dict(model.state_dict())), str(tmp_path / "theirs.safetensors"))
    ours = prunus.load_compressed(tmp_path / "theirs.safetensors")
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_decompression_is_bit_for_bit(dtype: torch.dtype, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(32, 4, 3, 3, generator=generator).to(dtype)  # a conv kernel: rows of 4*3*3
    weight[torch.rand(weight.shape, generator=generator) < 0.85] = 0
    weight.view(-1)[:3] = torch.tensor([-0.0, float("nan"), float("-inf")], dtype=dtype)
    state = {
        "conv.weight": weight,
        "conv.bias": torch.zeros(32, dtype=dtype),
        "step": torch.tensor(7),
    }
    prunus.save_compressed(state, tmp_path / "c.safetensors")
    loaded = prunus.load_compressed(tmp_path / "c.safetensors")
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert tensor_bytes(loaded[key]) == tensor_bytes(value), key
    stored = load_file(str(tmp_path / "c.safetensors"))
    group = sum(
        stored[f"conv.{g}"].nbytes for g in ("shape", "compressed", "bitmask", "row_offsets")
    )
    assert group < weight.nbytes / 2  # rows of 4*3*3 entries: one bitmask byte per 8 of them


def test_tied_weights_and_nested_entries_round_trip(tmp_path: Path) -> None:
    from conftest import TiedLM

    model = TiedLM()
    prunus.prune(model, "l1_unstructured", amount=0.9, include="hidden.weight")
    state = model.state_dict()
    state["extra"] = (torch.arange(3), torch.float16, None, {"k": 1.5})  # type: ignore[assignment]
    prunus.save_compressed(state, tmp_path / "c.safetensors")
    loaded = prunus.load_compressed(tmp_path / "c.safetensors")
    assert loaded["embed.weight"] is loaded["head.weight"]
    assert torch.equal(loaded["extra"][0], torch.arange(3)) and loaded["extra"][1:] == (
        torch.float16,
        None,
        {"k": 1.5},
    )
    fresh = TiedLM()
    fresh.load_state_dict({k: v for k, v in loaded.items() if k != "extra"})
    assert torch.equal(fresh.hidden.weight, model.hidden.weight)


def test_files_of_the_previous_format_still_load(tmp_path: Path) -> None:
    # What save_compressed wrote before: torch.save of bits packed MSB first, values and a fill.
    weight = torch.tensor([[0.0, 1.5, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, -1.0]])
    keep = (weight != 0).reshape(-1)
    padded = torch.cat([keep, keep.new_zeros(7)]).to(torch.uint8).reshape(-1, 8)
    bits = (padded * torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)).sum(
        1, dtype=torch.uint8
    )
    legacy = {
        "format": LEGACY_FORMAT,
        "state": {
            "w": {
                "__prunus__": "sparse",
                "shape": [1, 9],
                "bits": bits,
                "values": weight[weight != 0],
                "fill": 0,
            }
        },
        "metadata": None,
    }
    torch.save(legacy, tmp_path / "old.pt")
    assert torch.equal(prunus.load_compressed(tmp_path / "old.pt")["w"], weight)


def test_unknown_format_and_unstorable_entries_are_refused(tmp_path: Path) -> None:
    save_file(
        {"a": torch.zeros(2)},
        str(tmp_path / "f.safetensors"),
        metadata={"prunus.format": "prunus.compressed/9"},
    )
    with pytest.raises(prunus.StateError, match="upgrade prunus"):
        prunus.load_compressed(tmp_path / "f.safetensors")
    with pytest.raises(prunus.StateError, match="object"):
        prunus.save_compressed({"a": object()}, tmp_path / "g.safetensors")
    assert not (tmp_path / "g.safetensors").exists()
    (tmp_path / "h.safetensors").write_bytes(b"not a file at all")
    with pytest.raises(prunus.StateError):
        prunus.load_compressed(tmp_path / "h.safetensors")
    assert FORMAT.startswith("prunus.compressed/")
