"""prunus.shrink on Hugging Face transformers built from tiny configs: heads, key/value groups, FFN neurons.

Each model is built from a config (no download): a Llama with grouped-query attention, BERT, ViT and GPT-2.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import prunus

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")
safetensors_torch = pytest.importorskip("safetensors.torch")


def llama() -> tuple[nn.Module, dict[str, Tensor]]:
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=3,
        head_dim=8,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config), {"input_ids": torch.randint(0, 64, (2, 7))}


def bert() -> tuple[nn.Module, dict[str, Tensor]]:
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    ids = torch.randint(0, 64, (2, 7))
    return transformers.BertModel(config), {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
    }


def vit() -> tuple[nn.Module, dict[str, Tensor]]:
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config), {
        "pixel_values": torch.randn(2, 3, 16, 16)
    }


def gpt2() -> tuple[nn.Module, dict[str, Tensor]]:
    config = transformers.GPT2Config(
        vocab_size=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config), {"input_ids": torch.randint(0, 64, (2, 7))}


MODELS: dict[str, Callable[[], tuple[nn.Module, dict[str, Tensor]]]] = {
    "llama": llama,
    "bert": bert,
    "vit": vit,
    "gpt2": gpt2,
}
# Whether the stock config can describe removed heads (it cannot where the head width is hidden / heads).
RELOADS = {"llama": True, "vit": True, "bert": False, "gpt2": False}


def build(name: str) -> tuple[nn.Module, dict[str, Tensor]]:
    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    return model.eval(), inputs


def main_output(output: Any) -> Tensor:
    first = output[0] if isinstance(output, tuple) else next(iter(output.values()))
    assert isinstance(first, Tensor)
    return first


def head_groups(report: prunus.ShrinkReport) -> list[prunus.ChannelGroupReport]:
    return [g for g in report.groups if g.unit > 1]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shrunk_transformer_computes_what_the_masked_one_computes(name: str) -> None:
    model, inputs = build(name)
    masked = copy.deepcopy(model)
    planned = prunus.prune_channels(masked, inputs, "l1_structured", amount=0.5)
    expected = main_output(masked(**inputs))

    report = prunus.shrink(
        masked, inputs
    )  # default outputs: return_dict=True, caches on for decoders
    assert torch.allclose(main_output(masked(**inputs)), expected, rtol=1e-4, atol=1e-5)
    assert [g.removed for g in report.groups] == [g.removed for g in planned.groups]
    assert report.params_after < report.params_before

    # Every attention block lost whole key/value groups (whole heads without GQA), the same in every layer.
    heads = head_groups(report)
    assert len(heads) == 2
    for g in heads:
        assert g.removed and len(g.removed) % g.unit == 0
        blocks = {c // g.unit for c in g.removed}
        assert sorted(g.removed) == [
            c for b in sorted(blocks) for c in range(b * g.unit, (b + 1) * g.unit)
        ]
    # FFN neurons went too, and the one-call path picks the same channels.
    assert any(g.unit == 1 and g.removed for g in report.groups)
    direct, _ = build(name)
    one_call = prunus.shrink(direct, inputs, "l1_structured", amount=0.5)
    assert [g.removed for g in one_call.groups] == [g.removed for g in planned.groups]
    assert torch.allclose(main_output(direct(**inputs)), expected, rtol=1e-4, atol=1e-5)


def test_grouped_query_attention_loses_whole_key_value_groups() -> None:
    model, inputs = build("llama")
    report = prunus.shrink(model, inputs, "l1_structured", amount=0.34)  # 1 of 3 key/value groups
    for layer in model.model.layers:
        attention = layer.self_attn
        assert attention.k_proj.out_features == attention.v_proj.out_features == 2 * 8
        assert attention.q_proj.out_features == attention.o_proj.in_features == 4 * 8
    assert report.config["num_attention_heads"] == 4 and report.config["num_key_value_heads"] == 2
    assert model.config.head_dim == 8
    model(**inputs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_pretrained_then_from_pretrained(name: str, tmp_path: Path) -> None:
    model, inputs = build(name)
    report = prunus.shrink(model, inputs, "l1_structured", amount=0.5)
    expected = main_output(model(**inputs))
    assert report.reloads is not None and report.reloads.startswith(
        "yes" if RELOADS[name] else "no"
    )
    if RELOADS[name]:
        model.save_pretrained(tmp_path)  # safetensors and config.json: no pickle
        assert not list(tmp_path.glob("*.bin"))
        fresh = type(model).from_pretrained(tmp_path).eval()
    else:
        # The config cannot describe the heads: the shrink record rebuilds them on the stock class, from the
        # JSON record beside safetensors weights, or from one file of prunus.save_pruned.
        safetensors_torch.save_model(model, str(tmp_path / "model.safetensors"))
        record = json.loads(json.dumps(prunus.shrink_state(model)))
        weights = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
        fresh = prunus.load_shrunk(type(model)(model.config), weights, record).eval()
        prunus.save_pruned(model, tmp_path / "pruned.safetensors")
        again = type(model)(model.config)
        prunus.load_pruned(again, tmp_path / "pruned.safetensors")
        assert torch.allclose(main_output(again.eval()(**inputs)), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(main_output(fresh(**inputs)), expected, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in fresh.parameters()) == report.params_after


def test_uneven_layers_are_reported_as_not_reloadable() -> None:
    model, inputs = build("llama")
    report = prunus.shrink(model, inputs, "l1_global", amount=0.5)
    widths = {layer.mlp.up_proj.out_features for layer in model.model.layers}
    if len(widths) > 1:
        assert report.reloads is not None and "differs between layers" in report.reloads


def test_hidden_size_under_layer_norm_needs_asking() -> None:
    model, inputs = build("vit")
    kept = prunus.shrink(copy.deepcopy(model), inputs, "l1_structured", amount=0.25)
    hidden = next(g for g in kept.groups if g.channels == 32 and g.unit == 1)
    assert hidden.left is not None and "normalized" in hidden.left

    report = prunus.shrink(model, inputs, "l1_structured", amount=0.25, normalized=True)
    hidden = next(g for g in report.groups if g.channels == 32 and g.unit == 1)
    assert hidden.left is None and len(hidden.removed) == 8
    assert hidden.note is not None and "statistics" in hidden.note and "more norms" in hidden.note
    assert model.config.hidden_size == 24 and report.config["hidden_size"] == 24
    assert model.vit.layernorm.normalized_shape == (24,)
    assert main_output(model(**inputs)).shape == (2, 3)
    assert report.reloads is not None and report.reloads.startswith("yes")


def test_the_hidden_size_of_a_llama_goes_with_its_rms_norms(tmp_path: Path) -> None:
    model, inputs = build("llama")
    report = prunus.shrink(model, inputs, "l1_structured", amount=0.25, normalized=True)
    assert model.config.hidden_size == 36 and model.model.norm.weight.shape == (36,)
    assert report.reloads is not None and report.reloads.startswith("yes")
    model.save_pretrained(tmp_path)
    fresh = type(model).from_pretrained(tmp_path).eval()
    assert torch.allclose(fresh(**inputs).logits, model(**inputs).logits, atol=1e-6)


def test_tracing_takes_seconds_not_minutes() -> None:
    # The attention blocks are cut out of Torch-Pruning's trace: a 4-layer Llama plans in well under a minute
    # (uncut, one layer did not finish in minutes). The benchmark measures full-size models.
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    report = prunus.shrink(
        model, {"input_ids": torch.randint(0, 128, (1, 9))}, "l1_structured", amount=0.5
    )
    assert report.removed_channels > 0


def test_ignored_attention_keeps_its_heads() -> None:
    model, inputs = build("bert")
    report = prunus.shrink(model, inputs, "l1_structured", amount=0.5, ignore="encoder.layer.0.*")
    first = next(g for g in report.groups if g.name == "encoder.layer.0.attention.self")
    assert first.left is not None and "ignored" in first.left and not first.removed
    assert model.encoder.layer[0].attention.self.query.out_features == 32
