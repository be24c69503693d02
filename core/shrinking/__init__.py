"""Physical structured removal: smaller dense models from channel-pruned ones.

* :mod:`~prunus.shrinking.channels`: :func:`prunus.shrink` and :func:`prunus.prune_channels`, channel groups
  coupled through Torch-Pruning's dependency graph and ranked by prunus criteria;
* :mod:`~prunus.shrinking.record`: :func:`prunus.shrink_state` and :func:`prunus.load_shrunk`, a shrunken
  model saved and rebuilt without pickle.

It may import the contracts and the engine (the root of :mod:`prunus`), never the other way round.
"""
