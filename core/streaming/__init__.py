"""Pruning checkpoints that do not fit in memory: safetensors shards streamed from disk, one group at a time.

>>> report = prunus.prune_checkpoint("Llama-3-8B/", "Llama-3-8B-pruned/", "l1_nm")  # doctest: +SKIP

* :mod:`prunus.streaming.checkpoint`: the source (a Hugging Face directory, shards and their index, or one
  file), checked before anything is written; the destination, written in full or not at all;
* :mod:`prunus.streaming.skeleton`: the model on the meta device and the groups its tensors stream in;
* :mod:`prunus.streaming.pruning`: :func:`prune_checkpoint`, separable strategies in one pass, global
  rankings in two, and calibrated (data-aware) strategies block by block, each block calibrated on the outputs
  of the blocks before it, already pruned.

Needs the ``streaming`` extra (safetensors), and ``transformers`` for a Hugging Face directory without ``model=``.
"""

from __future__ import annotations

from .pruning import prune_checkpoint

__all__ = ["prune_checkpoint"]
