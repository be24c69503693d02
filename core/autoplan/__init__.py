"""Carrying out a plan of ``prune(model, "auto", ...)``: the steps, the recovery, what it gave.

* :mod:`~prunus.autoplan.execute`: :func:`carry_out`, the steps of a :class:`~prunus.Selection` in order, in one
  transaction, with the speed-up predicted and measured;
* :mod:`~prunus.autoplan.quality`: what the model keeps of the dense one on the data (accuracy, agreement,
  perplexity, cosine similarity) and the output error sensitivity analysis ranks by;
* :mod:`~prunus.autoplan.ratios`: per-layer and per-group amounts allocated from measured sensitivity;
* :mod:`~prunus.autoplan.plugin`: the ``prunus_carry_out`` hook through which the engine reaches this package.

It sits above the other tools (it uses :mod:`prunus.shrinking`, :mod:`prunus.hardware` and
:mod:`prunus.workflow`), and the root of :mod:`prunus` never imports it.
"""
