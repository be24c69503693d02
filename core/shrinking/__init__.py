"""Physical structured removal: smaller dense models from channel-pruned ones.

* :mod:`~prunus.shrinking.channels`: :func:`prunus.shrink` and :func:`prunus.prune_channels`, the entry points;
* :mod:`~prunus.shrinking.tracing`: Torch-Pruning's dependency graph, with attention blocks cut out of it;
* :mod:`~prunus.shrinking.heads`: attention layouts (Hugging Face Llama family, BERT, ViT, GPT-2): heads and
  key/value groups as units;
* :mod:`~prunus.shrinking.planning`: groups of parameter slices, groups left alone and why, dead channels;
* :mod:`~prunus.shrinking.ranking`: criteria and amounts (structured, aligned, global);
* :mod:`~prunus.shrinking.surgery`: masks, removal, constants folded into the next layers;
* :mod:`~prunus.shrinking.configs`: Hugging Face configs that follow the shrink;
* :mod:`~prunus.shrinking.report`: :class:`prunus.ShrinkReport`;
* :mod:`~prunus.shrinking.record`: :func:`prunus.shrink_state` and :func:`prunus.load_shrunk`, a shrunken
  model saved and rebuilt without pickle.

It may import the contracts and the engine (the root of :mod:`prunus`), never the other way round.
"""
