"""What a model is, read from its modules: a language model, an encoder, a CNN, an MLP.

Hardware-aware selection reads it because what a model tolerates depends on it: a convolutional classifier loses
half its channels and recovers in a few epochs, a language model loses a quarter of its FFN neurons and its
perplexity goes from 30 to millions. :func:`model_kind` needs no import of ``transformers``: it looks at the
module types and at the attributes the common implementations share.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

__all__ = ["MODEL_KINDS", "ModelKind", "model_kind"]

ModelKind = Literal["language_model", "encoder", "cnn", "mlp", "other"]
MODEL_KINDS: tuple[str, ...] = ("language_model", "encoder", "cnn", "mlp", "other")

_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_ATTENTION_LAYOUTS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("c_attn",))


def _has_attention(model: nn.Module) -> bool:
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            return True
        if any(all(hasattr(module, name) for name in names) for names in _ATTENTION_LAYOUTS):
            return True
    return False


def _causal_lm(model: nn.Module) -> bool:
    """A decoder that predicts tokens: its class or config says so, or its last layer maps to the vocabulary."""
    config = getattr(model, "config", None)
    names = [type(model).__name__, *(getattr(config, "architectures", None) or [])]
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names if isinstance(n, str)):
        return True
    if getattr(config, "is_decoder", False) is True:
        return True
    vocab = {m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)}
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return bool(heads) and heads[-1].out_features in vocab and heads[-1].out_features >= 1000


def model_kind(model: nn.Module) -> ModelKind:
    """What ``model`` is, for choosing how to prune it.

    * ``language_model``: token embeddings, attention, and an output layer over the vocabulary (or a Hugging Face
      config naming a causal language model);
    * ``encoder``: attention without a language-model head (BERT, sentence encoders, ViT);
    * ``cnn``: convolutions hold most of the Linear and Conv weights;
    * ``mlp``: Linear layers only;
    * ``other``: anything else (e.g. recurrent layers beside Linear ones).
    """
    if _has_attention(model):
        embedded = any(isinstance(m, nn.Embedding) for m in model.modules())
        return "language_model" if embedded and _causal_lm(model) else "encoder"
    conv = linear = 0
    others = False
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.RNNBase | nn.Embedding):
            others = True
        elif isinstance(module, _CONV) and isinstance(weight, Tensor):
            conv += weight.numel()
        elif isinstance(module, nn.Linear) and isinstance(weight, Tensor):
            linear += weight.numel()
    if conv and conv >= linear:
        return "cnn"
    if linear and not conv and not others:
        return "mlp"
    if conv:
        return "cnn"
    return "other"
