"""Language models from files, for pruning with calibration text: load, tokenize, measure, write back.

* :func:`load_causal_lm`: a Hugging Face model directory or a GGUF file (dequantized to the dtype asked) with
  its tokenizer;
* :func:`text_batches`: calibration (or evaluation) batches of token ids from text: whole lines, or the text
  cut into windows of ``length`` tokens;
* :func:`perplexity`: the model's perplexity on such batches;
* :func:`save_causal_lm`: the pruned model written as a directory ``from_pretrained`` loads (a model read from a
  GGUF file too), with its tokenizer and prunus's pruning state.

Needs the ``llm`` extra (transformers, and gguf for GGUF files); nothing here is imported by ``import prunus``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..arguments import check_int, check_path, optional
from ..errors import ConfigError, MissingDependencyError
from ..report import PruneReport

__all__ = ["load_causal_lm", "load_tokenizer", "perplexity", "save_causal_lm", "text_batches"]


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(
            "language models need transformers: pip install 'prunus[llm]'"
        ) from None
    return transformers


def load_causal_lm(
    path: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, Any]:
    """A causal language model and its tokenizer, from a Hugging Face directory or a ``.gguf`` file.

    A GGUF file's quantized weights are dequantized to ``dtype`` by transformers' GGUF loader (which needs the
    ``gguf`` package). The model is in eval mode.

    Raises:
        ConfigError: ``path`` is neither a model directory nor a GGUF file.
        MissingDependencyError: transformers (or gguf) is not installed.
    """
    source = Path(check_path("path", path))
    transformers = _transformers()
    if source.is_dir():
        where: dict[str, Any] = {"pretrained_model_name_or_path": str(source)}
    elif source.is_file() and source.suffix.lower() == ".gguf":
        where = {"pretrained_model_name_or_path": str(source.parent), "gguf_file": source.name}
    else:
        raise ConfigError(
            f"{source} is neither a Hugging Face model directory (with config.json) nor a .gguf file"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(**where)
        model = transformers.AutoModelForCausalLM.from_pretrained(**where, dtype=dtype)
    except ImportError as error:
        raise MissingDependencyError(f"loading {source} needs {error}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot load a language model from {source}: {error}") from None
    return model.eval(), tokenizer


def load_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved in a Hugging Face model directory (to cut calibration text for it).

    Raises:
        ConfigError: the directory holds no tokenizer that transformers can load.
        MissingDependencyError: transformers is not installed.
    """
    source = Path(check_path("directory", directory))
    try:
        return _transformers().AutoTokenizer.from_pretrained(
            str(source if source.is_dir() else source.parent)
        )
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(
            f"cannot load a tokenizer from {source} ({error}); give calibration data as token ids in a "
            ".safetensors file instead"
        ) from None


def text_batches(
    tokenizer: Any,
    text: str | Sequence[str],
    *,
    length: int = 256,
    samples: int | None = None,
    per_line: bool = False,
) -> list[Tensor]:
    """Batches of token ids (each ``(1, tokens)``) from text, for ``prune(..., data=...)`` or :func:`perplexity`.

    Args:
        tokenizer: the model's tokenizer.
        text: one text, or several documents.
        length: the most tokens per batch.
        samples: the most batches (``None``: all).
        per_line: each non-empty line (or document) is one batch, cut to ``length`` tokens; otherwise the whole
            text is tokenized and cut into consecutive windows of ``length`` tokens (a last shorter one kept if it
            is at least half as long, or the only one).

    Raises:
        ConfigError: ``length`` or ``samples`` is below 1, or the text gives no tokens.
        ConfigTypeError: ``length`` or ``samples`` is not an int.
    """
    check_int("length", length, minimum=1)
    optional(check_int, "samples", samples, minimum=1)
    documents = [text] if isinstance(text, str) else list(text)
    batches: list[Tensor] = []
    if per_line:
        lines = [line for doc in documents for line in doc.splitlines() if line.strip()]
        for line in lines:
            ids = tokenizer(line, return_tensors="pt").input_ids[:, :length]
            if ids.shape[1] >= 2:
                batches.append(ids)
            if samples is not None and len(batches) >= samples:
                break
    else:
        ids = tokenizer("\n\n".join(documents), return_tensors="pt").input_ids
        for start in range(0, ids.shape[1], length):
            window = ids[:, start : start + length]
            # A short tail after full windows is dropped; a text shorter than one window is one batch.
            if window.shape[1] >= (2 if start == 0 else max(2, length // 2)):
                batches.append(window)
            if samples is not None and len(batches) >= samples:
                break
    if not batches:
        raise ConfigError("the calibration text gives no sequence of at least 2 tokens")
    return batches


def perplexity(model: nn.Module, batches: Sequence[Tensor]) -> float:
    """``exp`` of the mean next-token loss over every predicted token of ``batches`` (token ids)."""
    total = 0.0
    count = 0
    with torch.no_grad():
        for ids in batches:
            loss = model(ids, labels=ids, use_cache=False).loss
            tokens = ids.shape[1] - 1
            total += float(loss) * tokens
            count += tokens
    return math.exp(total / count) if count else math.nan


def save_causal_lm(
    model: nn.Module, tokenizer: Any, directory: str | Path, reports: Sequence[PruneReport] = ()
) -> None:
    """Write ``model`` and ``tokenizer`` as a directory ``AutoModelForCausalLM.from_pretrained`` loads.

    The weights carry their zeros; ``prunus_pruning.safetensors`` beside them holds the masks and restore data
    (see :func:`prunus.save_pretrained`). A model read from a GGUF file is written as a plain one (its
    dequantized weights; transformers refuses to write a model it still marks as GGUF-quantized).
    """
    from ..persistence.huggingface import save_pretrained

    config = getattr(model, "config", None)
    if getattr(model, "hf_quantizer", None) is not None and _is_gguf(config):
        # The weights were dequantized on load: nothing is quantized any more.
        setattr(model, "hf_quantizer", None)  # noqa: B010 (not an attribute nn.Module declares)
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    target = Path(directory)
    save_pretrained(model, target, reports=reports)
    tokenizer.save_pretrained(str(target))


def _is_gguf(config: Any) -> bool:
    quantization = getattr(config, "quantization_config", None)
    method = getattr(quantization, "quant_method", None)
    if method is None and isinstance(quantization, dict):
        method = quantization.get("quant_method")
    return method is None or str(method).lower().endswith("gguf")
