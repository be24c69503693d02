"""What a pruned model keeps of the dense one, measured on data.

A :class:`Reference` runs the dense model once on a few batches of the data and keeps what it needs to judge a
pruned copy later:

* :meth:`Reference.figures`: the quality figures a report shows: ``accuracy`` when labels were given,
  ``agreement`` (top-1 agreement with the dense model) for classifiers, ``perplexity`` for language models,
  ``cosine`` (cosine similarity of the outputs, mean-pooled over tokens for encoders) otherwise;
* :meth:`Reference.error`: the relative squared error of the outputs against the dense ones, the loss that
  sensitivity analysis ranks layers and channel groups by (cheap, label-free, for every kind of model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..forward import call_model, evaluation_mode, output_tensors
from ..workflow.evaluation import input_batches, to_device

__all__ = ["Reference", "labels_of"]


def labels_of(data: Any) -> Tensor | None:
    """The labels of ``(inputs, labels)`` tensors, else ``None``."""
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
        and data[1].dim() == 1
        and not data[1].is_floating_point()
    ):
        labels: Tensor = data[1]
        return labels
    return None


def _first(output: Any) -> Tensor:
    tensors = output_tensors(output)
    if not tensors:
        raise TypeError(f"the model returned {type(output).__name__}, which holds no tensor")
    first: Tensor = tensors[0].detach().float()
    return first


def _pooled(output: Tensor, batch: Any) -> Tensor:
    """One vector per sample: token outputs mean-pooled over the attention mask when there is one."""
    if output.dim() == 3 and isinstance(batch, Mapping) and "attention_mask" in batch:
        mask: Tensor = batch["attention_mask"].to(output.device).unsqueeze(-1).to(output.dtype)
        return (output * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    if output.dim() == 3:
        return output.mean(1)
    return output.reshape(len(output), -1)


def _token_ids(batch: Any) -> Tensor | None:
    if isinstance(batch, Mapping):
        ids = batch.get("input_ids")
        return ids if isinstance(ids, Tensor) else None
    if isinstance(batch, Tensor) and not batch.is_floating_point():
        return batch
    return None


class Reference:
    """The dense model's outputs on a few batches of ``data``, to judge pruned copies against.

    Args:
        dense: the dense model (run once here, in eval mode).
        data: the data given to ``prune(model, "auto", data=...)``.
        kind: what the model is (:func:`prunus.model_kind`): ``language_model`` is judged by perplexity.
        batch_size: rows per batch.
        max_batches: batches kept for the figures.
        error_batches: the first of them that :meth:`error` runs on (it runs once per layer and amount tried).
    """

    def __init__(
        self,
        dense: nn.Module,
        data: Any,
        kind: str,
        *,
        batch_size: int = 32,
        max_batches: int = 16,
        error_batches: int = 4,
    ) -> None:
        self.error_batches = error_batches
        self.kind = kind
        self.device = next((p.device for p in dense.parameters()), torch.device("cpu"))
        self.batches = list(islice(input_batches(data, batch_size), max_batches))
        labels = labels_of(data)
        self.labels: list[Tensor] | None = None
        if labels is not None:
            self.labels = list(islice(input_batches(labels, batch_size), len(self.batches)))
        # A language model is judged by its perplexity on the tokens; its logits are not kept (vocabulary-wide).
        self.language = kind == "language_model" and all(
            _token_ids(b) is not None for b in self.batches
        )
        self.outputs = [] if self.language else [self._run(dense, b) for b in self.batches]
        self.classifier = not self.language and all(o.dim() == 2 for o in self.outputs)
        self.dense_figures = self.figures(dense)
        self._dense_error_perplexity = 1.0
        if self.language:
            self._dense_error_perplexity = self._perplexity(dense, self.batches[:error_batches])

    def _run(self, model: nn.Module, batch: Any) -> Tensor:
        with torch.no_grad(), evaluation_mode(model):
            return _first(call_model(model, to_device(batch, self.device)))

    def error(self, model: nn.Module) -> float:
        """Relative squared error of ``model``'s outputs against the dense ones (0: the same outputs); for a
        language model, the log of its perplexity over the dense one's."""
        if self.language:
            batches = self.batches[: self.error_batches]
            return math.log(self._perplexity(model, batches) / self._dense_error_perplexity)
        num = den = 0.0
        for batch, dense in islice(
            zip(self.batches, self.outputs, strict=True), self.error_batches
        ):
            out = self._run(model, batch)
            if out.shape != dense.shape:
                return math.inf
            num += float((out - dense).pow(2).sum())
            den += float(dense.pow(2).sum())
        return num / den if den else num

    def figures(self, model: nn.Module) -> dict[str, float]:
        """The quality figures of ``model`` on the kept batches (see the module docstring)."""
        if self.language:
            return {"perplexity": self._perplexity(model)}
        outputs = [self._run(model, batch) for batch in self.batches]
        if self.classifier:
            out: dict[str, float] = {}
            if self.labels is not None:
                correct = sum(
                    int((o.argmax(1) == y.to(o.device)).sum())
                    for o, y in zip(outputs, self.labels, strict=True)
                )
                out["accuracy"] = correct / max(sum(len(y) for y in self.labels), 1)
            same = sum(
                int((o.argmax(1) == d.argmax(1)).sum())
                for o, d in zip(outputs, self.outputs, strict=True)
            )
            out["agreement"] = same / max(sum(len(d) for d in self.outputs), 1)
            return out
        total = count = 0.0
        for batch, out_, dense in zip(self.batches, outputs, self.outputs, strict=True):
            if out_.shape != dense.shape:
                return {"cosine": math.nan}
            cosine = F.cosine_similarity(_pooled(out_, batch), _pooled(dense, batch), dim=-1)
            total += float(cosine.sum())
            count += len(cosine)
        return {"cosine": total / max(count, 1)}

    def _perplexity(self, model: nn.Module, batches: list[Any] | None = None) -> float:
        total, tokens = 0.0, 0
        for batch in self.batches if batches is None else batches:
            logits = self._run(model, batch)
            ids = _token_ids(batch)
            assert ids is not None
            ids = ids.to(logits.device)
            target = ids[:, 1:]
            keep = torch.ones_like(target, dtype=torch.bool)
            if isinstance(batch, Mapping) and "attention_mask" in batch:
                keep = batch["attention_mask"].to(logits.device)[:, 1:].bool()
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
            )
            total += float(loss[keep.reshape(-1)].sum())
            tokens += int(keep.sum())
        return math.exp(total / max(tokens, 1))
