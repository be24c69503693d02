"""How a pruned model leaves the process, and comes back: files without pickle, and deployment exports.

* :mod:`~prunus.persistence.state`: :func:`prunus.save_pruned` / :func:`prunus.load_pruned`, the masks (one bit
  per entry), restore data, weights and a manifest in one safetensors file; :func:`prunus.pruning_state` /
  :func:`prunus.load_pruning_state` for training checkpoints;
* :mod:`~prunus.persistence.compressed`: :func:`prunus.save_compressed` / :func:`prunus.load_compressed`, a
  state dict in compressed-tensors' sparse-bitmask safetensors layout;
* :mod:`~prunus.persistence.huggingface`: Hugging Face model directories that carry the pruning state;
* :mod:`~prunus.persistence.export`: ``torch.export`` and ONNX, with the checks that say what cannot export;
* :mod:`~prunus.persistence.bits`, :mod:`~prunus.persistence.files`: packed bits, whole-file writes.

It may import the contracts and the engine, :mod:`prunus.shrinking` and :mod:`prunus.hardware`; the workflow
tools import it (``prunus.model_size`` measures :func:`prunus.save_compressed`'s files).
"""
