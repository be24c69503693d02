"""Pruning states on disk: save -> load into a fresh instance (in a fresh process too) gives back the same
weights, masks, restore data, pruner and next training step; what does not fit is refused and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import prunus
from prunus import masking
from prunus.persistence.state import MANIFEST_KEY, STATE_FORMAT

TESTS = Path(__file__).parent


def train_step(model: nn.Module, x: Tensor) -> None:
    """One SGD step on a fixed loss: what a resumed fine-tuning run does next."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    model(x).float().pow(2).mean().backward()
    optimizer.step()


def everything(model: nn.Module) -> dict[str, Tensor]:
    """Weights, masks and restore data of ``model``, by name (for bit-for-bit comparisons)."""
    out = {f"state:{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for name, module, pname in masking.masked_parameters(model):
        mask = masking.get_mask(module, pname)
        assert mask is not None
        out[f"mask:{name}"] = mask.clone()
        values = masking.saved_values(module, pname)
        if values is not None:
            out[f"pruned:{name}"] = values.clone()
    return out


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(
            a[key].reshape(-1).view(torch.uint8), b[key].reshape(-1).view(torch.uint8)
        ), key


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet", "tied"])
def test_round_trip_in_memory_is_exact(
    name: str,
    make_model: Callable[..., nn.Module],
    example_input: Callable[..., Tensor],
    tmp_path: Path,
) -> None:
    model = make_model(name)
    report = prunus.prune(model, "l1_unstructured", amount=0.6)
    prunus.prune(
        model, "random_unstructured", amount=0.3, seed=3
    )  # masks compose; restore must undo both
    manifest = prunus.save_pruned(model, tmp_path / "p.safetensors", reports=[report])
    assert manifest.format == STATE_FORMAT and manifest.weights
    fresh = make_model(name, seed=11)
    loaded = prunus.load_pruned(fresh, tmp_path / "p.safetensors")
    assert loaded == manifest
    assert_same(everything(fresh), everything(model))
    x = example_input(name)
    train_step(model.train(), x)
    train_step(fresh.train(), x)
    assert_same(everything(fresh), everything(model))  # the next step keeps the same zeros
    prunus.restore(model)
    prunus.restore(fresh)
    assert_same(everything(fresh), everything(model))


def test_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    from conftest import _inputs, build

    model = build("lenet")
    prunus.prune(model, "l1_structured", amount=0.5, include="conv*.weight")
    prunus.prune(model, "l1_unstructured", amount=0.7, include="fc*.weight", restorable=False)
    prunus.save_pruned(model, tmp_path / "state.safetensors")
    child = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        from safetensors.torch import save_file
        import prunus
        from conftest import build, _inputs
        from test_persistence import everything, train_step

        model = build("lenet", seed=5)
        prunus.load_pruned(model, {str(tmp_path / "state.safetensors")!r})
        out = {{"loaded." + k: v for k, v in everything(model).items()}}
        train_step(model.train(), _inputs("lenet"))
        out.update({{"stepped." + k: v for k, v in everything(model).items()}})
        save_file({{k: v.contiguous() for k, v in out.items()}}, {str(tmp_path / "child.safetensors")!r})
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    theirs = load_file(str(tmp_path / "child.safetensors"))
    assert_same(
        {k[len("loaded.") :]: v for k, v in theirs.items() if k.startswith("loaded.")},
        everything(model),
    )
    train_step(model.train(), _inputs("lenet"))
    assert_same(
        {k[len("stepped.") :]: v for k, v in theirs.items() if k.startswith("stepped.")},
        everything(model),
    )


def test_manifest_records_versions_strategies_and_layers(
    make_model: Callable[..., nn.Module], tmp_path: Path
) -> None:
    model = make_model("mlp")
    report = prunus.prune(model, "l1_unstructured", amount=0.5, include="fc1.weight")
    prunus.save_pruned(model, tmp_path / "p.safetensors", reports=[report], weights=False)
    manifest = prunus.read_manifest(tmp_path / "p.safetensors")
    assert manifest.prunus_version == prunus.__version__
    assert manifest.torch_version == torch.__version__
    assert [p.name for p in manifest.parameters] == ["fc1.weight"]
    assert manifest.parameters[0].pruned == report["fc1.weight"].pruned
    assert manifest.parameters[0].restorable
    assert manifest.strategies[0]["name"] == "l1_unstructured"
    assert manifest.strategies[0]["options"] == {"amount": 0.5}
    provider = manifest.strategies[0]["provider"]
    assert provider["distribution"] == "prunus" and provider["version"] == prunus.__version__
    assert manifest.plugins[provider["plugin"]]["version"] == prunus.__version__
    assert not manifest.weights and manifest.sparsity == pytest.approx(0.5)
    # The manifest is plain JSON in the safetensors header: readable without prunus.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as f:
        raw = json.loads(f.metadata()[MANIFEST_KEY])
        assert sorted(f.keys()) == ["mask.fc1.weight", "pruned.fc1.weight"]
    assert raw["format"] == STATE_FORMAT


def test_masks_only_file_loads_beside_a_plain_state_dict(
    make_model: Callable[..., nn.Module], tmp_path: Path
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.8)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    prunus.save_pruned(model, tmp_path / "masks.safetensors", weights=False)
    fresh = make_model("mlp", seed=3)
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    prunus.load_pruned(fresh, tmp_path / "masks.safetensors")
    assert_same(everything(fresh), everything(model))
    lean = prunus.save_pruned(model, tmp_path / "lean.safetensors", restore_data=False)
    assert not any(p.restorable for p in lean.parameters)
    other = make_model("mlp", seed=3)
    prunus.load_pruned(other, tmp_path / "lean.safetensors")
    assert prunus.masks(other).keys() == prunus.masks(model).keys()
    with pytest.raises(prunus.NotPrunedError, match="restorable=False"):
        prunus.restore(other)


def test_pruning_state_travels_in_a_weights_only_checkpoint(
    make_model: Callable[..., nn.Module], tmp_path: Path
) -> None:
    model = make_model("lenet")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    torch.save(
        {"model": model.state_dict(), "pruning": prunus.pruning_state(model)}, tmp_path / "ckpt.pt"
    )
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    fresh = make_model("lenet", seed=2)
    fresh.load_state_dict(checkpoint["model"])
    prunus.load_pruning_state(fresh, checkpoint["pruning"])
    assert_same(everything(fresh), everything(model))


def test_shrunk_model_rebuilds_from_its_record(
    make_model: Callable[..., nn.Module], example_input: Callable[..., Tensor], tmp_path: Path
) -> None:
    pytest.importorskip("torch_pruning")
    model = make_model("resnet")
    x = example_input("resnet")
    prunus.shrink(model, x, "l1_structured", amount=0.5)
    prunus.prune(model, "l1_unstructured", amount=0.4)  # masks on the smaller model too
    prunus.save_pruned(model, tmp_path / "s.safetensors")
    fresh = make_model("resnet", seed=4)
    prunus.load_pruned(fresh, tmp_path / "s.safetensors")
    assert_same(everything(fresh), everything(model))
    assert torch.equal(fresh(x), model(x))
    masks_only = make_model("resnet", seed=4)
    prunus.save_pruned(model, tmp_path / "m.safetensors", weights=False)
    with pytest.raises(prunus.StateError, match="shrunk"):
        prunus.load_pruned(masks_only, tmp_path / "m.safetensors")


def test_gradual_pruner_state_is_saved_and_checked(
    make_model: Callable[..., nn.Module], tmp_path: Path
) -> None:
    def pruner_for(model: nn.Module, **changes: Any) -> prunus.GradualPruner:
        options = {"final_sparsity": 0.8, "start": 0, "end": 10, "every": 2, **changes}
        return prunus.GradualPruner(model, "l1_unstructured", schedule="linear", **options)

    model = make_model("mlp")
    pruner = pruner_for(model)
    for step in range(5):
        pruner.step(step)
    manifest = prunus.save_pruned(model, tmp_path / "p.safetensors", pruner=pruner)
    assert manifest.pruner is not None and len(manifest.pruner["history"]) == len(pruner.history)
    assert manifest.schedule is not None and manifest.schedule["name"] == "linear"
    fresh = make_model("mlp", seed=1)
    resumed = pruner_for(fresh)
    prunus.load_pruned(fresh, tmp_path / "p.safetensors", pruner=resumed)
    assert resumed.history == pruner.history
    for step in range(5, 12):
        pruner.step(step)
        resumed.step(step)
        assert_same(everything(fresh), everything(model))
    other = make_model("mlp", seed=1)
    with pytest.raises(prunus.ConfigError, match="schedule"):
        prunus.load_pruned(
            other, tmp_path / "p.safetensors", pruner=pruner_for(other, final_sparsity=0.9)
        )
    assert not prunus.is_pruned(other)  # refused before any change


def test_refusals_are_typed_and_change_nothing(
    make_model: Callable[..., nn.Module], snapshot: Callable[[nn.Module], Any], tmp_path: Path
) -> None:
    model = make_model("mlp")
    prunus.prune(model, "l1_unstructured", amount=0.5)
    path = tmp_path / "p.safetensors"
    prunus.save_pruned(model, path)

    from conftest import MLP

    other = MLP((16, 30, 24, 10))
    before = snapshot(other)
    with pytest.raises(prunus.StateError, match="fc1"):
        prunus.load_pruned(other, path)
    assert snapshot(other) == before

    half = make_model("mlp").half()
    before = snapshot(half)
    with pytest.raises(prunus.StateError):
        prunus.load_pruned(half, path)
    assert snapshot(half) == before

    pruned = make_model("mlp")
    prunus.prune(pruned, "l1_unstructured", amount=0.2)
    before = snapshot(pruned)
    with pytest.raises(prunus.StateError, match="already carries"):
        prunus.load_pruned(
            pruned,
            path,
        )
    assert snapshot(pruned) == before

    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(prunus.StateError, match="not a prunus pruning state"):
        prunus.load_pruned(make_model("mlp"), tmp_path / "plain.pt")

    tensors = load_file(str(path))
    save_file(
        tensors,
        str(tmp_path / "future.safetensors"),
        metadata={MANIFEST_KEY: json.dumps({"format": "prunus.pruning-state/9"})},
    )
    with pytest.raises(prunus.StateError, match="upgrade prunus"):
        prunus.load_pruned(make_model("mlp"), tmp_path / "future.safetensors")

    with pytest.raises(ValueError):  # every prunus error is also the builtin a caller expects
        prunus.read_manifest(tmp_path / "plain.pt")


def test_version_mismatch_refuses_to_resume_a_pruner(
    make_model: Callable[..., nn.Module], tmp_path: Path
) -> None:
    model = make_model("mlp")
    pruner = prunus.GradualPruner(model, "l1_unstructured", schedule="one_shot", sparsity=0.5)
    pruner.step(0)
    state = prunus.pruning_state(model, pruner=pruner)
    manifest = json.loads(state["manifest"])
    manifest["strategies"][-1]["provider"]["version"] = "0.0.1"
    state["manifest"] = json.dumps(manifest)
    fresh = make_model("mlp")
    resumed = prunus.GradualPruner(fresh, "l1_unstructured", schedule="one_shot", sparsity=0.5)
    with pytest.raises(prunus.StateError, match=r"0\.0\.1"):
        prunus.load_pruning_state(fresh, state, pruner=resumed)
    assert not prunus.is_pruned(fresh)
    prunus.load_pruning_state(fresh, state, pruner=resumed, check_versions=False)
    assert prunus.is_pruned(fresh)


def test_hugging_face_directory_carries_the_pruning_state(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    report = prunus.prune(model, "l1_unstructured", amount=0.5)  # the decoder's layers, not lm_head
    prunus.save_pretrained(model, tmp_path, reports=[report])
    assert (tmp_path / "prunus_pruning.safetensors").is_file()
    ids = torch.randint(0, 64, (2, 8))
    loaded = prunus.load_pretrained(transformers.AutoModelForCausalLM, tmp_path).eval()
    assert_same(everything(loaded), everything(model))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # no prunus involved
    assert not prunus.is_pruned(plain)
    assert torch.equal(plain(ids).logits, model(ids).logits)  # the zeros came with the weights


@pytest.mark.gpu
def test_round_trip_of_a_cuda_model(make_model: Callable[..., nn.Module], tmp_path: Path) -> None:
    model = make_model("lenet").cuda()
    prunus.prune(model, "l1_unstructured", amount=0.6)
    prunus.save_pruned(model, tmp_path / "p.safetensors")
    fresh = make_model("lenet", seed=3).cuda()
    prunus.load_pruned(fresh, tmp_path / "p.safetensors")
    assert all(m.device.type == "cuda" for m in prunus.masks(fresh).values())
    assert_same(
        {k: v.cpu() for k, v in everything(fresh).items()},
        {k: v.cpu() for k, v in everything(model).items()},
    )
