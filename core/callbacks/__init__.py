"""Training-framework callbacks that drive a :class:`prunus.GradualPruner` and checkpoint it with the model.

* :mod:`prunus.callbacks.huggingface`: ``PruningCallback`` for the Hugging Face ``Trainer`` (the optional
  ``transformers`` extra);
* :mod:`prunus.callbacks.lightning`: ``PruningCallback`` for Lightning (the optional ``lightning`` extra);
* :mod:`prunus.callbacks.driver`: what both share, usable from any loop.

Each prunes on the pruner's schedule at the first micro-batch of every optimizer step (so gradient accumulation
never mixes gradients from before and after a prune), logs the sparsity at every step, keeps pruned weights at
zero through the optimizer (prunus's step hook; under mixed precision the masks apply to the fp32 master
weights), and saves the masks, restore data and pruner state with each checkpoint so that a resumed run prunes
exactly as an uninterrupted one. Importing this package imports no framework.
"""
