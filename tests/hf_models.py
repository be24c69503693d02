"""Tiny Hugging Face models with random weights, built from configs (no download): a Llama with grouped-query
attention, a GPT-2 (transposed ``Conv1D`` layers), a BERT encoder and an OPT decoder, with calibration batches."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

transformers = pytest.importorskip("transformers")

VOCAB = 64
WIDTH = 32


def _quiet() -> None:
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="transformers")


def _build(seed: int, model: str, config: str, **options: object) -> nn.Module:
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="transformers")
    torch.manual_seed(seed)
    built: nn.Module = getattr(transformers, model)(getattr(transformers, config)(**options))
    return built.eval()


def llama(seed: int = 0, layers: int = 3) -> nn.Module:
    """A Llama: 4 query heads sharing 2 key/value heads (GQA), SwiGLU MLP, RMSNorm, untied head."""
    return _build(
        seed,
        "LlamaForCausalLM",
        "LlamaConfig",
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )


def gpt2(seed: int = 0, layers: int = 3) -> nn.Module:
    """A GPT-2: ``Conv1D`` layers with ``(in, out)`` weights, its head tied to the embedding."""
    return _build(
        seed,
        "GPT2LMHeadModel",
        "GPT2Config",
        vocab_size=VOCAB,
        n_embd=WIDTH,
        n_layer=layers,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )


def bert(seed: int = 0, layers: int = 3) -> nn.Module:
    """A BERT encoder with its pooler."""
    return _build(
        seed,
        "BertModel",
        "BertConfig",
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )


def opt(seed: int = 0, layers: int = 3) -> nn.Module:
    """An OPT decoder (learned positions, ReLU MLP, LayerNorm), its head tied to the embedding."""
    return _build(
        seed,
        "OPTForCausalLM",
        "OPTConfig",
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=layers,
        ffn_dim=48,
        num_attention_heads=4,
        max_position_embeddings=64,
        word_embed_proj_dim=WIDTH,
    )


MODELS: dict[str, Callable[..., nn.Module]] = {
    "llama": llama,
    "gpt2": gpt2,
    "bert": bert,
    "opt": opt,
}


def batches(count: int = 3, length: int = 9, seed: int = 1) -> list[Tensor]:
    """``count`` batches of 2 token sequences each."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, length), generator=generator) for _ in range(count)]


def padded_batches(seed: int = 1) -> list[dict[str, Tensor]]:
    """Tokenizer-style batches: ``input_ids`` and an ``attention_mask`` with padding at the end."""
    out = []
    for index, ids in enumerate(batches(seed=seed)):
        mask = torch.ones_like(ids)
        mask[1, 9 - 2 - index :] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out
